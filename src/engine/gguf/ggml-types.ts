// ggml's tensor element types, with the numeric ids that GGUF files store. The ids are part of the
// file format: never renumber. Ids 4, 5 and 31–33, 36–38 were removed from ggml and have no row.

export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
  Q2_0 = 42,
}

export interface GgmlTypeTraits {
  readonly type: GgmlType;
  /** ggml's own lower-case name ("q4_K"), as llama.cpp prints it. */
  readonly name: string;
  /** Elements per block; a row's length must be a multiple of it. */
  readonly blockSizeElements: number;
  readonly blockSizeBytes: number;
}

/** Elements per K-quant super-block. */
export const QK_K = 256;

function row(type: GgmlType, name: string, blockSizeElements: number, blockSizeBytes: number): GgmlTypeTraits {
  return { type, name, blockSizeElements, blockSizeBytes };
}

// Byte sizes follow the block structs in ggml-common.h (static_asserts there give the formulas).
const TRAITS_ROWS: readonly GgmlTypeTraits[] = [
  row(GgmlType.F32, "f32", 1, 4),
  row(GgmlType.F16, "f16", 1, 2),
  row(GgmlType.Q4_0, "q4_0", 32, 2 + 16),
  row(GgmlType.Q4_1, "q4_1", 32, 2 + 2 + 16),
  row(GgmlType.Q5_0, "q5_0", 32, 2 + 4 + 16),
  row(GgmlType.Q5_1, "q5_1", 32, 2 + 2 + 4 + 16),
  row(GgmlType.Q8_0, "q8_0", 32, 2 + 32),
  row(GgmlType.Q8_1, "q8_1", 32, 2 + 2 + 32),
  row(GgmlType.Q2_K, "q2_K", QK_K, 2 * 2 + QK_K / 16 + QK_K / 4),
  row(GgmlType.Q3_K, "q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
  row(GgmlType.Q4_K, "q4_K", QK_K, 2 * 2 + 12 + QK_K / 2),
  row(GgmlType.Q5_K, "q5_K", QK_K, 2 * 2 + 12 + QK_K / 2 + QK_K / 8),
  row(GgmlType.Q6_K, "q6_K", QK_K, 2 + QK_K / 16 + (3 * QK_K) / 4),
  row(GgmlType.Q8_K, "q8_K", QK_K, 4 + QK_K + (QK_K / 16) * 2),
  row(GgmlType.IQ2_XXS, "iq2_xxs", QK_K, 2 + (QK_K / 8) * 2),
  row(GgmlType.IQ2_XS, "iq2_xs", QK_K, 2 + (QK_K / 8) * 2 + QK_K / 32),
  row(GgmlType.IQ3_XXS, "iq3_xxs", QK_K, 2 + 3 * (QK_K / 8)),
  row(GgmlType.IQ1_S, "iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16),
  row(GgmlType.IQ4_NL, "iq4_nl", 32, 2 + 16),
  row(GgmlType.IQ3_S, "iq3_s", QK_K, 2 + 13 * (QK_K / 32) + QK_K / 64),
  row(GgmlType.IQ2_S, "iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16),
  row(GgmlType.IQ4_XS, "iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2),
  row(GgmlType.I8, "i8", 1, 1),
  row(GgmlType.I16, "i16", 1, 2),
  row(GgmlType.I32, "i32", 1, 4),
  row(GgmlType.I64, "i64", 1, 8),
  row(GgmlType.F64, "f64", 1, 8),
  row(GgmlType.IQ1_M, "iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
  row(GgmlType.BF16, "bf16", 1, 2),
  row(GgmlType.TQ1_0, "tq1_0", QK_K, 2 + QK_K / 64 + (QK_K - (4 * QK_K) / 64) / 5),
  row(GgmlType.TQ2_0, "tq2_0", QK_K, 2 + QK_K / 4),
  row(GgmlType.MXFP4, "mxfp4", 32, 1 + 16),
  row(GgmlType.NVFP4, "nvfp4", 64, 4 + 32),
  row(GgmlType.Q1_0, "q1_0", 128, 2 + 128 / 8),
  row(GgmlType.Q2_0, "q2_0", 64, 2 + 64 / 4),
];

export const GGML_TYPE_TRAITS: ReadonlyMap<GgmlType, GgmlTypeTraits> = new Map(TRAITS_ROWS.map((r) => [r.type, r]));

/** An unknown or removed ggml type id. */
export class GgmlTypeError extends Error {
  override name = "GgmlTypeError";
}

export function isKnownGgmlType(id: number): id is GgmlType {
  return GGML_TYPE_TRAITS.has(id as GgmlType);
}

export function ggmlTypeTraits(type: GgmlType | number): GgmlTypeTraits {
  const traits = GGML_TYPE_TRAITS.get(type as GgmlType);
  if (traits === undefined) {
    throw new GgmlTypeError(`unknown or unsupported ggml tensor type id ${type}`);
  }
  return traits;
}

export function ggmlTypeName(type: GgmlType | number): string {
  return GGML_TYPE_TRAITS.get(type as GgmlType)?.name ?? `unknown type id ${type}`;
}

/** Bytes that `elementCount` elements of `type` occupy; the count must be a whole number of blocks. */
export function ggmlRowSizeBytes(type: GgmlType, elementCount: number): number {
  const traits = ggmlTypeTraits(type);
  if (elementCount % traits.blockSizeElements !== 0) {
    throw new GgmlTypeError(
      `${traits.name}: ${elementCount} elements is not a multiple of the block size ${traits.blockSizeElements}`,
    );
  }
  return (elementCount / traits.blockSizeElements) * traits.blockSizeBytes;
}
