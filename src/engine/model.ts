// Architecture configuration from GGUF metadata, and the list of tensors a shard needs. Pure
// functions over the parsed file: no I/O beyond what the reader already did.
import { getF32, getString, getU32, hasKey, type GgufFile, type GgufTensorInfo } from "./gguf/reader.ts";
import { GgmlType, ggmlTypeName } from "./gguf/ggml-types.ts";
import type { NativeModelConfig, NativeTensorDesc } from "./native.ts";

export const SUPPORTED_ARCHITECTURES = ["llama", "qwen2", "qwen3"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Matrix types the native kernels run (each has a row in the addon's traits table). */
export const SUPPORTED_TENSOR_TYPES: ReadonlySet<GgmlType> = new Set([
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
]);

export interface ModelArch {
  readonly architecture: Architecture;
  readonly layerCount: number;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly nFf: number;
  readonly vocabSize: number;
  /** Context the model was trained for. */
  readonly contextLength: number;
  readonly rmsEpsilon: number;
  readonly ropeDims: number;
  /** NeoX ordering rotates (x[i], x[i + d/2]); the normal ordering rotates (x[2i], x[2i+1]). */
  readonly ropeNeox: boolean;
  readonly ropeFreqBase: number;
  readonly ropeFreqScale: number;
  /** Llama 3.x frequency factors stored as rope_freqs.weight. */
  readonly hasRopeFreqs: boolean;
  /** No output.weight: the head is token_embd.weight. */
  readonly tiedOutput: boolean;
}

/** The model is well-formed GGUF but not something this engine can run. */
export class UnsupportedModelError extends Error {
  override name = "UnsupportedModelError";
}

export function readModelArch(file: GgufFile): ModelArch {
  const architecture = getString(file, "general.architecture");
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw new UnsupportedModelError(
      `${file.path}: architecture "${architecture}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`,
    );
  }
  const a = architecture as Architecture;
  const nEmbd = getU32(file, `${a}.embedding_length`);
  const nHead = getU32(file, `${a}.attention.head_count`);
  const nHeadKv = getU32(file, `${a}.attention.head_count_kv`, nHead);
  const headDim = getU32(file, `${a}.attention.key_length`, nHead > 0 ? Math.floor(nEmbd / nHead) : 0);
  const valueDim = getU32(file, `${a}.attention.value_length`, headDim);
  if (nHead === 0 || nHeadKv === 0 || nHead % nHeadKv !== 0 || headDim === 0 || headDim % 2 !== 0) {
    throw new UnsupportedModelError(`${file.path}: unsupported attention shape (${nHead} heads, ${nHeadKv} KV heads, head size ${headDim})`);
  }
  if (valueDim !== headDim) throw new UnsupportedModelError(`${file.path}: value head size ${valueDim} differs from key head size ${headDim}`);
  const embd = file.tensors.get("token_embd.weight");
  const vocabSize = embd?.dims[1] ?? getU32(file, `${a}.vocab_size`);
  const scalingType = hasKey(file, `${a}.rope.scaling.type`) ? getString(file, `${a}.rope.scaling.type`) : "none";
  let ropeFreqScale = 1;
  if (scalingType === "linear") {
    const factor = getF32(file, `${a}.rope.scaling.factor`, 1);
    ropeFreqScale = factor > 0 ? 1 / factor : 1;
  } else if (scalingType !== "none" && scalingType !== "") {
    throw new UnsupportedModelError(`${file.path}: rope scaling "${scalingType}" is not supported (supported: none, linear, llama3 frequency factors)`);
  }
  return {
    architecture: a,
    layerCount: getU32(file, `${a}.block_count`),
    nEmbd,
    nHead,
    nHeadKv,
    headDim,
    nFf: getU32(file, `${a}.feed_forward_length`),
    vocabSize,
    contextLength: getU32(file, `${a}.context_length`, 4096),
    rmsEpsilon: getF32(file, `${a}.attention.layer_norm_rms_epsilon`, 1e-5),
    ropeDims: getU32(file, `${a}.rope.dimension_count`, headDim),
    ropeNeox: a === "qwen2" || a === "qwen3",
    ropeFreqBase: getF32(file, `${a}.rope.freq_base`, 10000),
    ropeFreqScale,
    hasRopeFreqs: file.tensors.has("rope_freqs.weight"),
    tiedOutput: !file.tensors.has("output.weight"),
  };
}

export interface ShardRange {
  readonly layerStart: number;
  readonly layerEnd: number;
}

export function checkShardRange(arch: ModelArch, range: ShardRange): void {
  const { layerStart, layerEnd } = range;
  if (!Number.isInteger(layerStart) || !Number.isInteger(layerEnd) || layerStart < 0 || layerEnd > arch.layerCount || layerStart >= layerEnd) {
    throw new RangeError(`invalid layer range [${layerStart}, ${layerEnd}) for a model of ${arch.layerCount} layers`);
  }
}

export function nativeConfig(arch: ModelArch, range: ShardRange): NativeModelConfig {
  return {
    nEmbd: arch.nEmbd,
    nHead: arch.nHead,
    nHeadKv: arch.nHeadKv,
    headDim: arch.headDim,
    nFf: arch.nFf,
    nVocab: arch.vocabSize,
    nLayer: arch.layerCount,
    layerStart: range.layerStart,
    layerEnd: range.layerEnd,
    eps: arch.rmsEpsilon,
    ropeDims: arch.ropeDims,
    ropeNeox: arch.ropeNeox,
    ropeBase: arch.ropeFreqBase,
    ropeFreqScale: arch.ropeFreqScale,
  };
}

const LAYER_TENSORS: readonly { readonly suffix: string; readonly role: string; readonly required: boolean; readonly matrix: boolean }[] = [
  { suffix: "attn_norm.weight", role: "attn_norm", required: true, matrix: false },
  { suffix: "attn_q.weight", role: "attn_q", required: true, matrix: true },
  { suffix: "attn_k.weight", role: "attn_k", required: true, matrix: true },
  { suffix: "attn_v.weight", role: "attn_v", required: true, matrix: true },
  { suffix: "attn_output.weight", role: "attn_output", required: true, matrix: true },
  { suffix: "attn_q.bias", role: "attn_q_bias", required: false, matrix: false },
  { suffix: "attn_k.bias", role: "attn_k_bias", required: false, matrix: false },
  { suffix: "attn_v.bias", role: "attn_v_bias", required: false, matrix: false },
  { suffix: "attn_q_norm.weight", role: "attn_q_norm", required: false, matrix: false },
  { suffix: "attn_k_norm.weight", role: "attn_k_norm", required: false, matrix: false },
  { suffix: "ffn_norm.weight", role: "ffn_norm", required: true, matrix: false },
  { suffix: "ffn_gate.weight", role: "ffn_gate", required: true, matrix: true },
  { suffix: "ffn_up.weight", role: "ffn_up", required: true, matrix: true },
  { suffix: "ffn_down.weight", role: "ffn_down", required: true, matrix: true },
];

function describe(file: GgufFile, name: string, role: string, layer: number, matrix: boolean): NativeTensorDesc {
  const t: GgufTensorInfo | undefined = file.tensors.get(name);
  if (t === undefined) throw new UnsupportedModelError(`${file.path}: missing tensor "${name}"`);
  if (!SUPPORTED_TENSOR_TYPES.has(t.type)) {
    throw new UnsupportedModelError(`${file.path}: tensor "${name}" has type ${ggmlTypeName(t.type)}, which the engine does not support`);
  }
  if (matrix && t.dims.length !== 2) throw new UnsupportedModelError(`${file.path}: tensor "${name}" is not a matrix`);
  const ne0 = t.dims[0] ?? 1;
  return { role, layer, offset: t.fileOffset, sizeBytes: t.sizeBytes, type: t.type, ne0, ne1: t.elementCount / ne0 };
}

/**
 * Bytes of the tensors only the last stage maps: the final norm and the output head (the token
 * embedding when the head is tied to it). Stage 0 reads its embedding rows from the file on demand,
 * so an untied token embedding costs it next to no memory or time and is not counted here.
 */
export function headBytesOf(file: GgufFile): number {
  const head = file.tensors.get("output.weight") ?? file.tensors.get("token_embd.weight");
  return (head?.sizeBytes ?? 0) + (file.tensors.get("output_norm.weight")?.sizeBytes ?? 0);
}

/** Exactly the tensors the shard needs: embeddings on stage 0, norm and head on the last stage. */
export function shardTensors(file: GgufFile, arch: ModelArch, range: ShardRange): NativeTensorDesc[] {
  checkShardRange(arch, range);
  const out: NativeTensorDesc[] = [];
  const first = range.layerStart === 0;
  const last = range.layerEnd === arch.layerCount;
  if (first) out.push(describe(file, "token_embd.weight", "token_embd", -1, true));
  if (arch.hasRopeFreqs) out.push(describe(file, "rope_freqs.weight", "rope_freqs", -1, false));
  for (let layer = range.layerStart; layer < range.layerEnd; layer++) {
    for (const spec of LAYER_TENSORS) {
      const name = `blk.${layer}.${spec.suffix}`;
      if (!spec.required && !file.tensors.has(name)) continue;
      out.push(describe(file, name, spec.role, layer, spec.matrix));
    }
  }
  if (last) {
    out.push(describe(file, "output_norm.weight", "output_norm", -1, false));
    out.push(describe(file, arch.tiedOutput ? "token_embd.weight" : "output.weight", "output", -1, true));
  }
  return out;
}
