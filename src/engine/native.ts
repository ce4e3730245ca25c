// Loads the compiled addon (build/Release/skein_native.node at the repository root, built by
// `node-gyp rebuild` during `npm ci`). The same relative path works from src/engine under tsx and
// from dist/engine after tsc.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

/** One tensor handed to the native model: where it lies in the file and what role it plays. */
export interface NativeTensorDesc {
  readonly role: string;
  /** Layer index, or -1 for global tensors (token_embd, output_norm, output, rope_freqs). */
  readonly layer: number;
  readonly offset: number;
  readonly sizeBytes: number;
  readonly type: number;
  readonly ne0: number;
  readonly ne1: number;
}

export interface NativeModelConfig {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
  readonly nLayer: number;
  readonly layerStart: number;
  readonly layerEnd: number;
  readonly eps: number;
  readonly ropeDims: number;
  readonly ropeNeox: boolean;
  readonly ropeBase: number;
  readonly ropeFreqScale: number;
}

export interface NativeModel {
  /** Writes n rows of nEmbd floats. */
  embed(tokens: Int32Array, out: Float32Array): void;
  /** Runs one layer in place over nTokens hidden states at positions pos..pos+nTokens-1. */
  forwardLayer(layer: number, cache: NativeKvCache, hidden: Float32Array, nTokens: number, pos: number): void;
  /** Final norm and output head for rows [firstRow, nTokens); logits are written row after row. */
  head(hidden: Float32Array, nTokens: number, firstRow: number, logits: Float32Array): void;
  prefetchLayer(layer: number): void;
  prefetchRest(): void;
  close(): void;
  readonly mappedBytes: number;
}

export interface NativeKvCache {
  free(): void;
  readonly bytes: number;
  readonly size: number;
}

export interface NativeTypeRow {
  readonly name: string;
  readonly blockElems: number;
  readonly blockBytes: number;
  readonly partner: number;
  readonly hasDot: boolean;
}

export interface NativeAddon {
  Model: new (path: string, config: NativeModelConfig, tensors: readonly NativeTensorDesc[]) => NativeModel;
  KvCache: new (model: NativeModel, nCtx: number, f16: boolean) => NativeKvCache;
  /** Resizes the compute pool; n <= 0 = one thread per core. Returns the size. */
  setThreads(n: number): number;
  threads(): number;
  /** "avx2", "neon" or "generic": the kernels chosen for this CPU. */
  isa(): string;
  typeTable(): Record<string, NativeTypeRow>;
  /** Row dot products of quantized weights with x, through the generic (simd=false) or selected kernels. */
  testDot(type: number, weights: Uint8Array, rows: number, cols: number, x: Float32Array, simd: boolean): Float32Array;
  dequantize(type: number, bytes: Uint8Array, n: number): Float32Array;
  /** Threaded matmul: x is n rows of cols floats; the result is n rows of `rows` floats. */
  matmul(type: number, weights: Uint8Array, rows: number, cols: number, x: Float32Array, n: number, packed?: boolean): Float32Array;
  /** Benchmark form: the fastest of `reps` runs, in milliseconds. */
  matmul(type: number, weights: Uint8Array, rows: number, cols: number, x: Float32Array, n: number, packed: boolean, reps: number): number;
  blockSizes(): Record<string, number>;
}

const ADDON_RELATIVE = ["..", "..", "build", "Release", "skein_native.node"];

let cached: NativeAddon | null = null;

export function addonPath(): string {
  return path.join(path.dirname(fileURLToPath(import.meta.url)), ...ADDON_RELATIVE);
}

/** The addon, loaded once. Throws with the fix when it has not been built. */
export function loadNative(): NativeAddon {
  if (cached !== null) return cached;
  const file = addonPath();
  if (!existsSync(file)) {
    throw new Error(`native engine addon not found at ${file}: run \`npx node-gyp rebuild\` in the repository root`);
  }
  const require = createRequire(import.meta.url);
  cached = require(file) as NativeAddon;
  return cached;
}
