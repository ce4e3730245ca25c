// Writes a GGUF v3 file (little-endian). Used by test fixtures and benchmarks to build models; the
// layout mirrors what the reader accepts, including general.alignment when it is not the default.
import { closeSync, openSync, writeSync } from "node:fs";
import { ggmlRowSizeBytes, ggmlTypeName, type GgmlType } from "./ggml-types.ts";
import {
  GGUF_ALIGNMENT_DEFAULT,
  GGUF_ALIGNMENT_KEY,
  GGUF_MAGIC,
  GGUF_TENSOR_DIMS_MAX,
  GGUF_VERSION_WRITTEN,
  GgufError,
  GgufValueType,
  alignUp,
  ggufValueTypeName,
  type GgufScalar,
  type GgufScalarType,
  type GgufValue,
} from "./gguf-types.ts";

export type GgufMetadataEntry = { readonly key: string } & GgufValue;

export interface GgufTensorToWrite {
  readonly name: string;
  readonly type: GgmlType;
  /** ggml order, ne0 first. */
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

export interface GgufWriteSpec {
  readonly metadata: readonly GgufMetadataEntry[];
  readonly tensors: readonly GgufTensorToWrite[];
  readonly alignment?: number;
}

const utf8 = new TextEncoder();

/** Growable little-endian byte sink for the header part. */
class ByteSink {
  private buffer = Buffer.alloc(1 << 16);
  length = 0;

  /** Grows the buffer; callers must read `this.buffer` only after calling it (it may be replaced). */
  private reserve(byteCount: number): number {
    if (this.length + byteCount > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + byteCount));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += byteCount;
    return at;
  }

  u8(value: number): void {
    const at = this.reserve(1);
    this.buffer.writeUInt8(value, at);
  }
  i8(value: number): void {
    const at = this.reserve(1);
    this.buffer.writeInt8(value, at);
  }
  u16(value: number): void {
    const at = this.reserve(2);
    this.buffer.writeUInt16LE(value, at);
  }
  i16(value: number): void {
    const at = this.reserve(2);
    this.buffer.writeInt16LE(value, at);
  }
  u32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeUInt32LE(value, at);
  }
  i32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeInt32LE(value, at);
  }
  f32(value: number): void {
    const at = this.reserve(4);
    this.buffer.writeFloatLE(value, at);
  }
  f64(value: number): void {
    const at = this.reserve(8);
    this.buffer.writeDoubleLE(value, at);
  }
  u64(value: number | bigint): void {
    const at = this.reserve(8);
    this.buffer.writeBigUInt64LE(BigInt(value), at);
  }
  i64(value: number | bigint): void {
    const at = this.reserve(8);
    this.buffer.writeBigInt64LE(BigInt(value), at);
  }
  string(value: string): void {
    const bytes = utf8.encode(value);
    this.u64(bytes.length);
    const at = this.reserve(bytes.length);
    this.buffer.set(bytes, at);
  }
  zeros(byteCount: number): void {
    const at = this.reserve(byteCount);
    this.buffer.fill(0, at, this.length);
  }
  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GgufScalarType, value: GgufScalar, key: string): void {
  const fail = (): never => {
    throw new GgufError(`metadata "${key}": value ${String(value)} does not fit type ${ggufValueTypeName(type)}`);
  };
  switch (type) {
    case GgufValueType.String:
      return typeof value === "string" ? sink.string(value) : fail();
    case GgufValueType.Bool:
      return typeof value === "boolean" ? sink.u8(value ? 1 : 0) : fail();
    case GgufValueType.Uint64:
      return typeof value === "bigint" || typeof value === "number" ? sink.u64(value) : fail();
    case GgufValueType.Int64:
      return typeof value === "bigint" || typeof value === "number" ? sink.i64(value) : fail();
  }
  if (typeof value !== "number") return fail();
  switch (type) {
    case GgufValueType.Uint8:
      return sink.u8(value);
    case GgufValueType.Int8:
      return sink.i8(value);
    case GgufValueType.Uint16:
      return sink.u16(value);
    case GgufValueType.Int16:
      return sink.i16(value);
    case GgufValueType.Uint32:
      return sink.u32(value);
    case GgufValueType.Int32:
      return sink.i32(value);
    case GgufValueType.Float32:
      return sink.f32(value);
    case GgufValueType.Float64:
      return sink.f64(value);
  }
}

function writeEntry(sink: ByteSink, entry: GgufMetadataEntry): void {
  sink.string(entry.key);
  sink.u32(entry.type);
  if (entry.type === GgufValueType.Array) {
    sink.u32(entry.elementType);
    sink.u64(entry.value.length);
    for (const element of entry.value) writeScalar(sink, entry.elementType, element, entry.key);
  } else {
    writeScalar(sink, entry.type, entry.value, entry.key);
  }
}

/** Writes `spec` to `path`, replacing it. Tensor data must be exactly the size its type and dims imply. */
export function writeGguf(path: string, spec: GgufWriteSpec): void {
  const alignment = spec.alignment ?? GGUF_ALIGNMENT_DEFAULT;
  const metadata = [...spec.metadata.filter((entry) => entry.key !== GGUF_ALIGNMENT_KEY)];
  if (alignment !== GGUF_ALIGNMENT_DEFAULT) {
    metadata.push({ key: GGUF_ALIGNMENT_KEY, type: GgufValueType.Uint32, value: alignment });
  }
  const keys = new Set<string>();
  for (const entry of metadata) {
    if (keys.has(entry.key)) throw new GgufError(`duplicate metadata key "${entry.key}"`);
    keys.add(entry.key);
  }

  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION_WRITTEN);
  sink.u64(spec.tensors.length);
  sink.u64(metadata.length);
  for (const entry of metadata) writeEntry(sink, entry);

  let relativeOffset = 0;
  const names = new Set<string>();
  for (const tensor of spec.tensors) {
    if (names.has(tensor.name)) throw new GgufError(`duplicate tensor name "${tensor.name}"`);
    names.add(tensor.name);
    if (tensor.dims.length === 0 || tensor.dims.length > GGUF_TENSOR_DIMS_MAX) {
      throw new GgufError(`tensor "${tensor.name}": ${tensor.dims.length} dimensions`);
    }
    const elementCount = tensor.dims.reduce((product, dim) => product * dim, 1);
    const expectedBytes = ggmlRowSizeBytes(tensor.type, tensor.dims[0] ?? 0) * (elementCount / (tensor.dims[0] || 1));
    if (tensor.data.length !== expectedBytes) {
      throw new GgufError(
        `tensor "${tensor.name}" (${ggmlTypeName(tensor.type)} [${tensor.dims.join(", ")}]) has ` +
          `${tensor.data.length} bytes of data, expected ${expectedBytes}`,
      );
    }
    sink.string(tensor.name);
    sink.u32(tensor.dims.length);
    for (const dim of tensor.dims) sink.u64(dim);
    sink.u32(tensor.type);
    sink.u64(relativeOffset);
    relativeOffset = alignUp(relativeOffset + tensor.data.length, alignment);
  }
  sink.zeros(alignUp(sink.length, alignment) - sink.length);

  const fd = openSync(path, "w");
  try {
    writeAll(fd, sink.bytes());
    const padding = new Uint8Array(alignment);
    for (const tensor of spec.tensors) {
      writeAll(fd, tensor.data);
      const paddingBytes = alignUp(tensor.data.length, alignment) - tensor.data.length;
      if (paddingBytes > 0) writeAll(fd, padding.subarray(0, paddingBytes));
    }
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let writtenBytes = 0;
  while (writtenBytes < bytes.length) {
    writtenBytes += writeSync(fd, bytes, writtenBytes, bytes.length - writtenBytes);
  }
}
