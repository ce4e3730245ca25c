// The GGUF container format (see llama.cpp's gguf.cpp / docs/gguf.md): a header, typed key/value
// metadata, a table of tensor descriptions, then aligned tensor data. Shared by reader and writer.
import type { GgmlType } from "./ggml-types.ts";
import type { GgufStringTable } from "./string-table.ts";

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
/** Version 1 used 32-bit counts and is long gone; 2 and 3 share the layout (3 allows big-endian, which we refuse). */
export const GGUF_VERSIONS_SUPPORTED: readonly number[] = [2, 3];
export const GGUF_VERSION_WRITTEN = 3;
export const GGUF_ALIGNMENT_DEFAULT = 32;
export const GGUF_ALIGNMENT_KEY = "general.alignment";

// Bounds, so that a corrupt or hostile file fails fast instead of making us allocate gigabytes.
/** Tensors in one file; the largest real models have a few thousand. */
export const GGUF_TENSORS_MAX = 1 << 20;
export const GGUF_METADATA_ENTRIES_MAX = 1 << 20;
/** Elements of one metadata array; real vocabularies are ~256k tokens and merges. */
export const GGUF_ARRAY_ELEMENTS_MAX = 1 << 24;
/** One metadata string (chat templates are the longest, tens of KiB). */
export const GGUF_STRING_BYTES_MAX = 16 * 1024 * 1024;
/** Keys and tensor names. */
export const GGUF_NAME_BYTES_MAX = 65_535;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_TENSOR_DIMS_MAX = 4;
export const GGUF_ALIGNMENT_MAX = 1 << 20;

export enum GgufValueType {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
}

/** 64-bit integers are bigint so no value is silently rounded; every other number is a number. */
export type GgufScalar = number | bigint | boolean | string;
export type GgufScalarType = Exclude<GgufValueType, GgufValueType.Array>;

/** A metadata value as written. */
export type GgufValue =
  | { readonly type: GgufScalarType; readonly value: GgufScalar }
  | { readonly type: GgufValueType.Array; readonly elementType: GgufScalarType; readonly value: readonly GgufScalar[] };

/**
 * A metadata value as read: arrays of strings stay compact (see GgufStringTable); the typed getters
 * (getStringArray, getStringTable) are the way to read them.
 */
export type GgufMetadataValue =
  | { readonly type: GgufScalarType; readonly value: GgufScalar }
  | { readonly type: GgufValueType.Array; readonly elementType: Exclude<GgufScalarType, GgufValueType.String>; readonly value: readonly GgufScalar[] }
  | { readonly type: GgufValueType.Array; readonly elementType: GgufValueType.String; readonly value: GgufStringTable };

export interface GgufTensorInfo {
  readonly name: string;
  readonly type: GgmlType;
  /** ggml order: dims[0] (ne0) is the contiguous row length. */
  readonly dims: readonly number[];
  readonly elementCount: number;
  /** Absolute offset of the tensor's first byte in the file. */
  readonly fileOffset: number;
  readonly sizeBytes: number;
}

export interface GgufFile {
  readonly path: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufMetadataValue>;
  /** In file order. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  /** Absolute offset where the tensor data section starts. */
  readonly tensorDataOffset: number;
  readonly alignment: number;
  readonly fileSizeBytes: number;
}

/** A file that is not a GGUF we can read, or metadata that is missing or of the wrong type. */
export class GgufError extends Error {
  override name = "GgufError";
}

export function ggufValueTypeName(type: number): string {
  return GgufValueType[type] ?? `unknown value type ${type}`;
}

export function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}
