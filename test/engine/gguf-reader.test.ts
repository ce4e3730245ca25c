import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GgmlType, ggmlTypeTraits } from "../../src/engine/gguf/ggml-types.ts";
import {
  GgufError,
  GgufValueType,
  getArray,
  getBool,
  getF32,
  getInteger,
  getNumberArray,
  getString,
  getStringArray,
  getU32,
  readGguf,
} from "../../src/engine/gguf/reader.ts";
import { writeGguf, type GgufMetadataEntry, type GgufTensorToWrite } from "../../src/engine/gguf/writer.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-gguf-"));
process.on("exit", () => rmSync(directory, { recursive: true, force: true }));
let fileCounter = 0;
function tempPath(): string {
  return join(directory, `f${fileCounter++}.gguf`);
}

function bytesCounting(length: number, salt: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let index = 0; index < length; index++) data[index] = (index * 31 + salt) & 0xff;
  return data;
}

const METADATA: GgufMetadataEntry[] = [
  { key: "general.architecture", type: GgufValueType.String, value: "llama" },
  { key: "u8", type: GgufValueType.Uint8, value: 200 },
  { key: "i8", type: GgufValueType.Int8, value: -100 },
  { key: "u16", type: GgufValueType.Uint16, value: 60000 },
  { key: "i16", type: GgufValueType.Int16, value: -30000 },
  { key: "u32", type: GgufValueType.Uint32, value: 4_000_000_000 },
  { key: "i32", type: GgufValueType.Int32, value: -2_000_000_000 },
  { key: "f32", type: GgufValueType.Float32, value: 0.5 },
  { key: "f64", type: GgufValueType.Float64, value: 1e-300 },
  { key: "bool", type: GgufValueType.Bool, value: true },
  { key: "u64", type: GgufValueType.Uint64, value: 2n ** 63n + 5n },
  { key: "u64.small", type: GgufValueType.Uint64, value: 4096n },
  { key: "i64", type: GgufValueType.Int64, value: -(2n ** 62n) },
  { key: "unicode ✓", type: GgufValueType.String, value: "héllo 世界 🙂" },
  { key: "tokens", type: GgufValueType.Array, elementType: GgufValueType.String, value: ["a", "", "Ġthe", "<|im_end|>"] },
  { key: "scores", type: GgufValueType.Array, elementType: GgufValueType.Float32, value: [0, -1.5, 2] },
  { key: "types", type: GgufValueType.Array, elementType: GgufValueType.Int32, value: [1, 3, -2] },
  { key: "empty", type: GgufValueType.Array, elementType: GgufValueType.Uint8, value: [] },
  // Larger than the writer's first buffer and the reader's read chunk, so both must grow and refill.
  {
    key: "many",
    type: GgufValueType.Array,
    elementType: GgufValueType.String,
    value: Array.from({ length: 120_000 }, (_, index) => `token-${index}-${"x".repeat(index % 13)}`),
  },
];

function tensorsOfEachShape(): GgufTensorToWrite[] {
  return [
    { name: "token_embd.weight", type: GgmlType.Q4_0, dims: [64, 3], data: bytesCounting(ggmlTypeTraits(GgmlType.Q4_0).blockSizeBytes * 6, 1) },
    { name: "output_norm.weight", type: GgmlType.F32, dims: [5], data: bytesCounting(20, 2) },
    { name: "blk.0.ffn_down.weight", type: GgmlType.Q6_K, dims: [256, 2, 1], data: bytesCounting(210 * 2, 3) },
    { name: "blk.0.attn_q.weight", type: GgmlType.F16, dims: [3, 1, 1, 2], data: bytesCounting(12, 4) },
  ];
}

function readBytesAt(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, offset);
    return new Uint8Array(buffer);
  } finally {
    closeSync(fd);
  }
}

for (const alignment of [undefined, 64]) {
  test(`the reader returns what the writer wrote (alignment ${alignment ?? "default"})`, () => {
    const path = tempPath();
    const tensors = tensorsOfEachShape();
    writeGguf(path, { metadata: METADATA, tensors, ...(alignment === undefined ? {} : { alignment }) });
    const file = readGguf(path);
    assert.equal(file.version, 3);
    assert.equal(file.alignment, alignment ?? 32);
    assert.equal(file.fileSizeBytes, readFileSync(path).length);
    assert.equal(file.tensorDataOffset % file.alignment, 0);
    for (const entry of METADATA) {
      const { key, ...value } = entry;
      const read = file.metadata.get(key);
      // Arrays of strings are read as compact tables; compare their decoded strings.
      const decoded = read?.type === GgufValueType.Array && read.elementType === GgufValueType.String ? { ...read, value: read.value.toArray() } : read;
      assert.deepEqual(decoded, value, key);
    }
    assert.deepEqual([...file.tensors.keys()], tensors.map((tensor) => tensor.name));
    for (const tensor of tensors) {
      const info = file.tensors.get(tensor.name);
      assert.ok(info);
      assert.equal(info.type, tensor.type);
      assert.deepEqual(info.dims, tensor.dims);
      assert.equal(info.elementCount, tensor.dims.reduce((a, b) => a * b, 1));
      assert.equal(info.sizeBytes, tensor.data.length);
      assert.equal(info.fileOffset % file.alignment, 0);
      assert.deepEqual(readBytesAt(path, info.fileOffset, info.sizeBytes), tensor.data);
    }
  });
}

test("typed getters convert compatible widths and name the key when it is missing or mistyped", () => {
  const path = tempPath();
  writeGguf(path, { metadata: METADATA, tensors: [] });
  const file = readGguf(path);
  assert.equal(getU32(file, "u32"), 4_000_000_000);
  assert.equal(getU32(file, "u64.small"), 4096);
  assert.equal(getU32(file, "u8"), 200);
  assert.equal(getInteger(file, "i32"), -2_000_000_000);
  assert.equal(getF32(file, "f32"), 0.5);
  assert.equal(getF32(file, "u16"), 60000);
  assert.equal(getBool(file, "bool"), true);
  assert.equal(getString(file, "unicode ✓"), "héllo 世界 🙂");
  assert.deepEqual(getStringArray(file, "tokens"), ["a", "", "Ġthe", "<|im_end|>"]);
  assert.deepEqual(getNumberArray(file, "types"), [1, 3, -2]);
  assert.deepEqual(getArray(file, "empty"), []);
  assert.equal(getU32(file, "absent", 7), 7);
  assert.equal(getString(file, "absent", "x"), "x");
  assert.throws(() => getU32(file, "llama.block_count"), (error: unknown) => {
    assert.ok(error instanceof GgufError);
    assert.match(error.message, /missing metadata key "llama\.block_count"/);
    return true;
  });
  assert.throws(() => getU32(file, "i32"), /"i32" should be an unsigned 32-bit integer but is Int32/);
  assert.throws(() => getU32(file, "u64"), /"u64"/);
  assert.throws(() => getString(file, "u8"), /"u8" should be a string but is Uint8/);
  assert.throws(() => getStringArray(file, "scores"), /"scores" should be an array of strings but is array of Float32/);
});

// Byte offsets in a file written with no metadata and one tensor named "t" of 1 dimension:
// 24-byte header, then name length (8) + "t" (1), dim count (4), one dim (8), type (4), offset (8).
const TENSOR_TYPE_OFFSET = 24 + 9 + 4 + 8;
const TENSOR_DATA_OFFSET_FIELD = TENSOR_TYPE_OFFSET + 4;

function writeOneTensorFile(): string {
  const path = tempPath();
  writeGguf(path, { metadata: [], tensors: [{ name: "t", type: GgmlType.Q8_0, dims: [64], data: bytesCounting(68, 9) }] });
  return path;
}

function patch(path: string, offset: number, bytes: Uint8Array): void {
  const content = readFileSync(path);
  content.set(bytes, offset);
  writeFileSync(path, content);
}

function u32Bytes(value: number): Uint8Array {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value);
  return buffer;
}

function u64Bytes(value: bigint): Uint8Array {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(value);
  return buffer;
}

function assertGgufError(path: string, pattern: RegExp): void {
  assert.throws(() => readGguf(path), (error: unknown) => {
    assert.ok(error instanceof GgufError, `expected a GgufError, got ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  });
}

test("a file with the wrong magic is refused", () => {
  const path = writeOneTensorFile();
  patch(path, 0, new TextEncoder().encode("GGML"));
  assertGgufError(path, /not a GGUF file: bad magic/);
  const empty = tempPath();
  writeFileSync(empty, "");
  assertGgufError(empty, /not a GGUF file/);
});

test("unsupported versions are refused with the version named", () => {
  const path = writeOneTensorFile();
  patch(path, 4, u32Bytes(1));
  assertGgufError(path, /unsupported GGUF version 1\b/);
  patch(path, 4, u32Bytes(3 << 24));
  assertGgufError(path, /big-endian/);
});

test("a file truncated anywhere before its tensor data ends is refused", () => {
  const originalPath = writeOneTensorFile();
  const original = readFileSync(originalPath);
  const dataEnd = readGguf(originalPath).tensorDataOffset + 68;
  for (const length of [6, 20, 30, TENSOR_TYPE_OFFSET + 2, dataEnd - 1]) {
    const path = tempPath();
    writeFileSync(path, original.subarray(0, length));
    assertGgufError(path, length < dataEnd - 1 ? /truncated/ : /out of bounds/);
  }
  const metadataPath = tempPath();
  writeGguf(metadataPath, { metadata: METADATA, tensors: [] });
  const size = readFileSync(metadataPath).length;
  truncateSync(metadataPath, Math.floor(size / 2));
  assertGgufError(metadataPath, /truncated file/);
});

test("an unknown tensor type is refused with its id", () => {
  const path = writeOneTensorFile();
  patch(path, TENSOR_TYPE_OFFSET, u32Bytes(4));
  assertGgufError(path, /tensor "t" has unknown ggml type id 4/);
  patch(path, TENSOR_TYPE_OFFSET, u32Bytes(1000));
  assertGgufError(path, /unknown ggml type id 1000/);
});

test("tensor data outside the file is refused", () => {
  const path = writeOneTensorFile();
  patch(path, TENSOR_DATA_OFFSET_FIELD, u64Bytes(1024n));
  assertGgufError(path, /tensor "t" data \(68 bytes at offset \d+\) is out of bounds/);
  patch(path, TENSOR_DATA_OFFSET_FIELD, u64Bytes(2n ** 63n));
  assertGgufError(path, /data offset of tensor "t" is \d+, over the limit/);
  patch(path, TENSOR_DATA_OFFSET_FIELD, u64Bytes(3n));
  assertGgufError(path, /not aligned/);
});

test("tensors that share bytes are refused", () => {
  const path = tempPath();
  writeGguf(path, {
    metadata: [],
    tensors: [
      { name: "a", type: GgmlType.F32, dims: [16], data: bytesCounting(64, 1) },
      { name: "b", type: GgmlType.F32, dims: [16], data: bytesCounting(64, 2) },
    ],
  });
  // Tensor "b"'s offset field: header 24, "a" info 8+1+4+8+4+8 = 33, then "b"'s name, dims and type.
  patch(path, 24 + 33 + 9 + 4 + 8 + 4, u64Bytes(32n));
  assertGgufError(path, /tensors "a" and "b" overlap/);
});

test("absurd counts and lengths fail before anything large is allocated", () => {
  const path = writeOneTensorFile();
  patch(path, 8, u64Bytes(2n ** 40n));
  assertGgufError(path, /tensor count is 1099511627776, over the limit/);

  const arrayPath = tempPath();
  writeGguf(arrayPath, { metadata: [{ key: "k", type: GgufValueType.Array, elementType: GgufValueType.Uint32, value: [1] }], tensors: [] });
  patch(arrayPath, 24 + 9 + 4 + 4, u64Bytes(1_000_000n));
  assertGgufError(arrayPath, /"k" claims 1000000 elements/);
  patch(arrayPath, 24 + 9 + 4 + 4, u64Bytes(2n ** 60n));
  assertGgufError(arrayPath, /element count of "k" is \d+, over the limit/);

  const stringPath = tempPath();
  writeGguf(stringPath, { metadata: [{ key: "k", type: GgufValueType.String, value: "v" }], tensors: [] });
  patch(stringPath, 24 + 9 + 4, u64Bytes(2n ** 50n));
  assertGgufError(stringPath, /length of value of "k" is \d+, over the limit/);

  const dimsPath = writeOneTensorFile();
  patch(dimsPath, 24 + 9, u32Bytes(9));
  assertGgufError(dimsPath, /tensor "t" has 9 dimensions/);
});

test("the writer refuses data whose size does not match the type and shape", () => {
  assert.throws(
    () => writeGguf(tempPath(), { metadata: [], tensors: [{ name: "t", type: GgmlType.Q4_K, dims: [256, 2], data: new Uint8Array(144) }] }),
    /has 144 bytes of data, expected 288/,
  );
  assert.throws(
    () => writeGguf(tempPath(), { metadata: [], tensors: [{ name: "t", type: GgmlType.Q4_0, dims: [48], data: new Uint8Array(27) }] }),
    /not a multiple of the block size 32/,
  );
});
