// Reads a GGUF file's header, metadata and tensor table with positioned reads. The tensor data is
// never read here: the weight store maps it. Every count and size read from the file is checked
// against a named bound and against the bytes that remain, so a corrupt file fails with a
// GgufError instead of a crash or a huge allocation.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { GgmlTypeError, ggmlTypeName, ggmlTypeTraits, isKnownGgmlType } from "./ggml-types.ts";
import {
  GGUF_ALIGNMENT_DEFAULT,
  GGUF_ALIGNMENT_KEY,
  GGUF_ALIGNMENT_MAX,
  GGUF_ARRAY_ELEMENTS_MAX,
  GGUF_MAGIC,
  GGUF_METADATA_ENTRIES_MAX,
  GGUF_NAME_BYTES_MAX,
  GGUF_STRING_BYTES_MAX,
  GGUF_TENSOR_DIMS_MAX,
  GGUF_TENSORS_MAX,
  GGUF_VERSIONS_SUPPORTED,
  GgufError,
  GgufValueType,
  alignUp,
  ggufValueTypeName,
  type GgufFile,
  type GgufMetadataValue,
  type GgufScalar,
  type GgufScalarType,
  type GgufTensorInfo,
} from "./gguf-types.ts";
import { GgufStringTable } from "./string-table.ts";

export * from "./gguf-types.ts";
export { GgufStringTable } from "./string-table.ts";

const READ_CHUNK_BYTES = 1 << 20;
// ignoreBOM: a leading U+FEFF is text to keep, not a marker to strip.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * What is being read, for error messages only. A function for per-element reads: a vocabulary has
 * ~150k elements, and a message string built for each would be megabytes of garbage.
 */
type What = string | (() => string);
const describe = (what: What): string => (typeof what === "string" ? what : what());

/** Sequential reader over a file descriptor, refilling a buffer with positioned reads. */
class FileCursor {
  private buffer = Buffer.alloc(READ_CHUNK_BYTES);
  private bufferStart = 0;
  private bufferLength = 0;
  position = 0;

  constructor(
    private readonly fd: number,
    readonly fileSizeBytes: number,
    private readonly path: string,
  ) {}

  get remainingBytes(): number {
    return this.fileSizeBytes - this.position;
  }

  /** Makes `byteCount` bytes at `position` available and returns their offset in `buffer`. */
  private take(byteCount: number, what: What): number {
    if (byteCount > this.remainingBytes) {
      throw new GgufError(
        `${this.path}: truncated file: ${describe(what)} needs ${byteCount} bytes at offset ${this.position}, ` +
          `but the file is only ${this.fileSizeBytes} bytes`,
      );
    }
    const end = this.position + byteCount;
    if (this.position < this.bufferStart || end > this.bufferStart + this.bufferLength) {
      const wantBytes = Math.min(Math.max(byteCount, READ_CHUNK_BYTES), this.remainingBytes);
      if (wantBytes > this.buffer.length) this.buffer = Buffer.alloc(wantBytes);
      let filledBytes = 0;
      while (filledBytes < wantBytes) {
        const readBytes = readSync(this.fd, this.buffer, filledBytes, wantBytes - filledBytes, this.position + filledBytes);
        if (readBytes === 0) break;
        filledBytes += readBytes;
      }
      if (filledBytes < byteCount) {
        throw new GgufError(`${this.path}: truncated file: short read of ${describe(what)} at offset ${this.position}`);
      }
      this.bufferStart = this.position;
      this.bufferLength = filledBytes;
    }
    const at = this.position - this.bufferStart;
    this.position = end;
    return at;
  }

  u8(what: What): number {
    return this.buffer.readUInt8(this.take(1, what));
  }
  i8(what: What): number {
    return this.buffer.readInt8(this.take(1, what));
  }
  u16(what: What): number {
    return this.buffer.readUInt16LE(this.take(2, what));
  }
  i16(what: What): number {
    return this.buffer.readInt16LE(this.take(2, what));
  }
  u32(what: What): number {
    return this.buffer.readUInt32LE(this.take(4, what));
  }
  i32(what: What): number {
    return this.buffer.readInt32LE(this.take(4, what));
  }
  f32(what: What): number {
    return this.buffer.readFloatLE(this.take(4, what));
  }
  f64(what: What): number {
    return this.buffer.readDoubleLE(this.take(8, what));
  }
  u64(what: What): bigint {
    return this.buffer.readBigUInt64LE(this.take(8, what));
  }
  i64(what: What): bigint {
    return this.buffer.readBigInt64LE(this.take(8, what));
  }

  /** A u64 count or size that must fit `max` (and therefore a JS number). */
  boundedU64(what: What, max: number): number {
    const value = this.u64(what);
    if (value > BigInt(max)) {
      throw new GgufError(`${this.path}: ${describe(what)} is ${value}, over the limit of ${max} (corrupt file?)`);
    }
    return Number(value);
  }

  string(what: What, maxBytes: number): string {
    return utf8.decode(this.stringBytes(what, maxBytes));
  }

  /** A string's UTF-8 bytes: a view into the read buffer, valid until the next read. */
  stringBytes(what: What, maxBytes: number): Uint8Array {
    const byteCount = this.boundedU64(() => `length of ${describe(what)}`, maxBytes);
    const at = this.take(byteCount, what);
    return this.buffer.subarray(at, at + byteCount);
  }
}

/** Smallest encoded size of one value of a type: lets us refuse counts the file cannot hold. */
function minEncodedBytes(type: GgufScalarType): number {
  switch (type) {
    case GgufValueType.Uint8:
    case GgufValueType.Int8:
    case GgufValueType.Bool:
      return 1;
    case GgufValueType.Uint16:
    case GgufValueType.Int16:
      return 2;
    case GgufValueType.Uint32:
    case GgufValueType.Int32:
    case GgufValueType.Float32:
      return 4;
    case GgufValueType.Uint64:
    case GgufValueType.Int64:
    case GgufValueType.Float64:
    case GgufValueType.String:
      return 8;
  }
}

function readScalar(cursor: FileCursor, type: GgufScalarType, what: What): GgufScalar {
  switch (type) {
    case GgufValueType.Uint8:
      return cursor.u8(what);
    case GgufValueType.Int8:
      return cursor.i8(what);
    case GgufValueType.Uint16:
      return cursor.u16(what);
    case GgufValueType.Int16:
      return cursor.i16(what);
    case GgufValueType.Uint32:
      return cursor.u32(what);
    case GgufValueType.Int32:
      return cursor.i32(what);
    case GgufValueType.Float32:
      return cursor.f32(what);
    case GgufValueType.Bool:
      return cursor.u8(what) !== 0;
    case GgufValueType.String:
      return cursor.string(what, GGUF_STRING_BYTES_MAX);
    case GgufValueType.Uint64:
      return cursor.u64(what);
    case GgufValueType.Int64:
      return cursor.i64(what);
    case GgufValueType.Float64:
      return cursor.f64(what);
  }
}

function readValueType(cursor: FileCursor, what: string, path: string): GgufValueType {
  const type = cursor.u32(what);
  if (type > GgufValueType.Float64) {
    throw new GgufError(`${path}: ${what} has unknown GGUF value type ${type} (corrupt file?)`);
  }
  return type as GgufValueType;
}

/** Offsets in a string table are u32: more text than this in one array is refused. */
const STRING_TABLE_BYTES_MAX = 0xffffffff;

/** Copies the array's UTF-8 bytes into one buffer; no JS string is made (see GgufStringTable). */
function readStringTable(cursor: FileCursor, key: string, elementCount: number, path: string): GgufStringTable {
  const ends = new Uint32Array(elementCount);
  // Grows by doubling; the final table is copied to its exact size.
  let bytes = new Uint8Array(Math.min(cursor.remainingBytes, Math.max(64, elementCount * 16)));
  let used = 0;
  for (let index = 0; index < elementCount; index++) {
    const text = cursor.stringBytes(() => `element ${index} of "${key}"`, GGUF_STRING_BYTES_MAX);
    if (used + text.length > STRING_TABLE_BYTES_MAX) {
      throw new GgufError(`${path}: metadata "${key}" holds more than ${STRING_TABLE_BYTES_MAX} bytes of strings`);
    }
    if (used + text.length > bytes.length) {
      const grown = new Uint8Array(Math.min(STRING_TABLE_BYTES_MAX, Math.max(bytes.length * 2, used + text.length)));
      grown.set(bytes.subarray(0, used));
      bytes = grown;
    }
    bytes.set(text, used);
    used += text.length;
    ends[index] = used;
  }
  return new GgufStringTable(bytes.slice(0, used), ends);
}

function readValue(cursor: FileCursor, key: string, path: string): GgufMetadataValue {
  const type = readValueType(cursor, `type of "${key}"`, path);
  if (type !== GgufValueType.Array) {
    return { type, value: readScalar(cursor, type, `value of "${key}"`) };
  }
  const elementType = readValueType(cursor, `element type of "${key}"`, path);
  if (elementType === GgufValueType.Array) {
    throw new GgufError(`${path}: metadata "${key}" is an array of arrays, which GGUF readers do not support`);
  }
  const elementCount = cursor.boundedU64(`element count of "${key}"`, GGUF_ARRAY_ELEMENTS_MAX);
  if (elementCount * minEncodedBytes(elementType) > cursor.remainingBytes) {
    throw new GgufError(
      `${path}: truncated file: metadata "${key}" claims ${elementCount} elements, more than the ` +
        `${cursor.remainingBytes} bytes left can hold`,
    );
  }
  if (elementType === GgufValueType.String) {
    return { type, elementType, value: readStringTable(cursor, key, elementCount, path) };
  }
  const values = new Array<GgufScalar>(elementCount);
  for (let index = 0; index < elementCount; index++) {
    values[index] = readScalar(cursor, elementType, () => `element ${index} of "${key}"`);
  }
  return { type, elementType, value: values };
}

function readAlignment(metadata: ReadonlyMap<string, GgufMetadataValue>, path: string): number {
  const entry = metadata.get(GGUF_ALIGNMENT_KEY);
  if (entry === undefined) return GGUF_ALIGNMENT_DEFAULT;
  const alignment = entry.value;
  if (
    entry.type !== GgufValueType.Uint32 ||
    typeof alignment !== "number" ||
    alignment === 0 ||
    alignment > GGUF_ALIGNMENT_MAX ||
    (alignment & (alignment - 1)) !== 0
  ) {
    throw new GgufError(`${path}: ${GGUF_ALIGNMENT_KEY} must be a u32 power of two up to ${GGUF_ALIGNMENT_MAX}`);
  }
  return alignment;
}

interface RawTensorInfo {
  readonly name: string;
  readonly typeId: number;
  readonly dims: number[];
  readonly relativeOffset: number;
}

function readTensorInfo(cursor: FileCursor, index: number, path: string): RawTensorInfo {
  const name = cursor.string(`name of tensor ${index}`, GGUF_NAME_BYTES_MAX);
  const dimCount = cursor.u32(`dimension count of tensor "${name}"`);
  if (dimCount === 0 || dimCount > GGUF_TENSOR_DIMS_MAX) {
    throw new GgufError(`${path}: tensor "${name}" has ${dimCount} dimensions; GGUF allows 1 to ${GGUF_TENSOR_DIMS_MAX}`);
  }
  const dims: number[] = [];
  for (let d = 0; d < dimCount; d++) {
    dims.push(cursor.boundedU64(`dimension ${d} of tensor "${name}"`, Number.MAX_SAFE_INTEGER));
  }
  const typeId = cursor.u32(`type of tensor "${name}"`);
  const relativeOffset = cursor.boundedU64(`data offset of tensor "${name}"`, Number.MAX_SAFE_INTEGER);
  return { name, typeId, dims, relativeOffset };
}

function resolveTensor(raw: RawTensorInfo, tensorDataOffset: number, alignment: number, fileSizeBytes: number, path: string): GgufTensorInfo {
  const { name, typeId, dims } = raw;
  if (!isKnownGgmlType(typeId)) {
    throw new GgufError(`${path}: tensor "${name}" has unknown ggml type id ${typeId} (${ggmlTypeName(typeId)})`);
  }
  const traits = ggmlTypeTraits(typeId);
  let elementCount = 1;
  for (const dim of dims) {
    elementCount *= dim;
    if (elementCount > Number.MAX_SAFE_INTEGER) {
      throw new GgufError(`${path}: tensor "${name}" has an absurd shape [${dims.join(", ")}]`);
    }
  }
  const rowLength = dims[0] ?? 0;
  if (rowLength % traits.blockSizeElements !== 0) {
    throw new GgufError(
      `${path}: tensor "${name}" of type ${traits.name} has rows of ${rowLength} elements, ` +
        `not a multiple of the block size ${traits.blockSizeElements}`,
    );
  }
  if (raw.relativeOffset % alignment !== 0) {
    throw new GgufError(`${path}: tensor "${name}" data offset ${raw.relativeOffset} is not aligned to ${alignment}`);
  }
  const sizeBytes = (elementCount / traits.blockSizeElements) * traits.blockSizeBytes;
  const fileOffset = tensorDataOffset + raw.relativeOffset;
  if (fileOffset + sizeBytes > fileSizeBytes) {
    throw new GgufError(
      `${path}: tensor "${name}" data (${sizeBytes} bytes at offset ${fileOffset}) is out of bounds: ` +
        `the file is ${fileSizeBytes} bytes (truncated download?)`,
    );
  }
  return { name, type: typeId, dims, elementCount, fileOffset, sizeBytes };
}

/** Two tensors sharing bytes means a corrupt table (llama.cpp insists on consecutive tensors). */
function assertNoOverlap(tensors: GgufTensorInfo[], path: string): void {
  const byOffset = tensors.filter((tensor) => tensor.sizeBytes > 0).sort((a, b) => a.fileOffset - b.fileOffset);
  for (let index = 1; index < byOffset.length; index++) {
    const previous = byOffset[index - 1]!;
    const current = byOffset[index]!;
    if (previous.fileOffset + previous.sizeBytes > current.fileOffset) {
      throw new GgufError(`${path}: tensors "${previous.name}" and "${current.name}" overlap in the file (corrupt tensor table)`);
    }
  }
}

/** Reads the header, metadata and tensor table of a GGUF file. Throws GgufError on any defect. */
export function readGguf(path: string): GgufFile {
  const fd = openSync(path, "r");
  try {
    const fileSizeBytes = fstatSync(fd).size;
    const cursor = new FileCursor(fd, fileSizeBytes, path);
    if (fileSizeBytes < 4) throw new GgufError(`${path}: not a GGUF file: only ${fileSizeBytes} bytes`);
    const magic = cursor.u32("magic");
    if (magic !== GGUF_MAGIC) {
      throw new GgufError(`${path}: not a GGUF file: bad magic 0x${magic.toString(16).padStart(8, "0")}`);
    }
    const version = cursor.u32("version");
    if (!GGUF_VERSIONS_SUPPORTED.includes(version)) {
      const hint = (version & 0xffff) === 0 ? " (a big-endian file?)" : "";
      throw new GgufError(
        `${path}: unsupported GGUF version ${version}${hint}; supported: ${GGUF_VERSIONS_SUPPORTED.join(", ")}`,
      );
    }
    const tensorCount = cursor.boundedU64("tensor count", GGUF_TENSORS_MAX);
    const metadataCount = cursor.boundedU64("metadata entry count", GGUF_METADATA_ENTRIES_MAX);

    const metadata = new Map<string, GgufMetadataValue>();
    for (let index = 0; index < metadataCount; index++) {
      const key = cursor.string(`key of metadata entry ${index}`, GGUF_NAME_BYTES_MAX);
      if (metadata.has(key)) throw new GgufError(`${path}: duplicate metadata key "${key}"`);
      metadata.set(key, readValue(cursor, key, path));
    }
    const alignment = readAlignment(metadata, path);

    const rawTensors: RawTensorInfo[] = [];
    for (let index = 0; index < tensorCount; index++) rawTensors.push(readTensorInfo(cursor, index, path));
    const tensorDataOffset = alignUp(cursor.position, alignment);

    const tensors = new Map<string, GgufTensorInfo>();
    for (const raw of rawTensors) {
      if (tensors.has(raw.name)) throw new GgufError(`${path}: duplicate tensor name "${raw.name}"`);
      tensors.set(raw.name, resolveTensor(raw, tensorDataOffset, alignment, fileSizeBytes, path));
    }
    assertNoOverlap([...tensors.values()], path);
    return { path, version, metadata, tensors, tensorDataOffset, alignment, fileSizeBytes };
  } catch (error) {
    if (error instanceof GgmlTypeError) throw new GgufError(`${path}: ${error.message}`);
    throw error;
  } finally {
    closeSync(fd);
  }
}

// ---- Typed metadata getters. Each throws a GgufError naming the key when it is missing or of the
// wrong type; pass `fallback` for keys that are optional.

function entryOf(file: GgufFile, key: string): GgufMetadataValue {
  const entry = file.metadata.get(key);
  if (entry === undefined) throw new GgufError(`${file.path}: missing metadata key "${key}"`);
  return entry;
}

function wrongType(file: GgufFile, key: string, wanted: string, entry: GgufMetadataValue): GgufError {
  const got = entry.type === GgufValueType.Array ? `array of ${ggufValueTypeName(entry.elementType)}` : ggufValueTypeName(entry.type);
  return new GgufError(`${file.path}: metadata "${key}" should be ${wanted} but is ${got}`);
}

export function hasKey(file: GgufFile, key: string): boolean {
  return file.metadata.has(key);
}

function toInteger(value: GgufScalar): number | null {
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : null;
  }
  if (typeof value === "number" && Number.isInteger(value)) return value;
  return null;
}

function isIntegerType(type: GgufValueType): boolean {
  return type !== GgufValueType.Float32 && type !== GgufValueType.Float64 && type !== GgufValueType.Bool &&
    type !== GgufValueType.String && type !== GgufValueType.Array;
}

/**
 * An unsigned 32-bit value. Accepts any integer type whose value fits, because converters disagree
 * on widths (context_length appears as u32 and as u64 in real files).
 */
export function getU32(file: GgufFile, key: string, fallback?: number): number {
  if (fallback !== undefined && !file.metadata.has(key)) return fallback;
  const entry = entryOf(file, key);
  const value = entry.type === GgufValueType.Array || !isIntegerType(entry.type) ? null : toInteger(entry.value);
  if (value === null || value < 0 || value > 0xffffffff) throw wrongType(file, key, "an unsigned 32-bit integer", entry);
  return value;
}

/** A signed integer of any width that fits a JS number (token ids may be stored as i32). */
export function getInteger(file: GgufFile, key: string, fallback?: number): number {
  if (fallback !== undefined && !file.metadata.has(key)) return fallback;
  const entry = entryOf(file, key);
  const value = entry.type === GgufValueType.Array || !isIntegerType(entry.type) ? null : toInteger(entry.value);
  if (value === null) throw wrongType(file, key, "an integer", entry);
  return value;
}

/** Any numeric scalar as a float (rope_freq_base is f32 in most files). */
export function getF32(file: GgufFile, key: string, fallback?: number): number {
  if (fallback !== undefined && !file.metadata.has(key)) return fallback;
  const entry = entryOf(file, key);
  if (entry.type === GgufValueType.Array || typeof entry.value === "string" || typeof entry.value === "boolean") {
    throw wrongType(file, key, "a number", entry);
  }
  return Number(entry.value);
}

export function getBool(file: GgufFile, key: string, fallback?: boolean): boolean {
  if (fallback !== undefined && !file.metadata.has(key)) return fallback;
  const entry = entryOf(file, key);
  if (entry.type !== GgufValueType.Bool) throw wrongType(file, key, "a bool", entry);
  return entry.value as boolean;
}

export function getString(file: GgufFile, key: string, fallback?: string): string {
  if (fallback !== undefined && !file.metadata.has(key)) return fallback;
  const entry = entryOf(file, key);
  if (entry.type !== GgufValueType.String) throw wrongType(file, key, "a string", entry);
  return entry.value as string;
}

/** Any array; strings are decoded afresh on every call (see getStringTable). */
export function getArray(file: GgufFile, key: string): readonly GgufScalar[] {
  const entry = entryOf(file, key);
  if (entry.type !== GgufValueType.Array) throw wrongType(file, key, "an array", entry);
  return entry.elementType === GgufValueType.String ? entry.value.toArray() : entry.value;
}

/** An array of strings in its compact form: nothing is decoded until asked for. */
export function getStringTable(file: GgufFile, key: string): GgufStringTable {
  const entry = entryOf(file, key);
  if (entry.type !== GgufValueType.Array || entry.elementType !== GgufValueType.String) {
    throw wrongType(file, key, "an array of strings", entry);
  }
  return entry.value;
}

/** An array of strings, decoded afresh on every call: the caller owns it, the file keeps no copy. */
export function getStringArray(file: GgufFile, key: string): string[] {
  return getStringTable(file, key).toArray();
}

/** A numeric array as plain numbers (64-bit elements are converted; they must fit). */
export function getNumberArray(file: GgufFile, key: string): readonly number[] {
  const entry = entryOf(file, key);
  if (entry.type !== GgufValueType.Array || entry.elementType === GgufValueType.String || entry.elementType === GgufValueType.Bool) {
    throw wrongType(file, key, "an array of numbers", entry);
  }
  if (entry.elementType !== GgufValueType.Uint64 && entry.elementType !== GgufValueType.Int64) {
    return entry.value as readonly number[];
  }
  return entry.value.map((value) => Number(value));
}

export function getTensor(file: GgufFile, name: string): GgufTensorInfo {
  const tensor = file.tensors.get(name);
  if (tensor === undefined) throw new GgufError(`${file.path}: missing tensor "${name}"`);
  return tensor;
}
