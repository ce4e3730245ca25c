// Benchmark models: random weights in the exact shapes and tensor types of real GGUF files, so
// both engines read the same bytes a user's download would make them read.
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { GgmlType } from "../src/engine/gguf/ggml-types.ts";
import { GgufValueType } from "../src/engine/gguf/gguf-types.ts";
import { writeGguf, type GgufMetadataEntry, type GgufTensorToWrite } from "../src/engine/gguf/writer.ts";
import { quantize } from "../src/engine/quant/index.ts";
import { fixtureVocabulary } from "../test/support/gguf-model-fixture.ts";

export const BENCH_CACHE_DIR = join(homedir(), ".cache", "skein-bench");

/** Quantization mixes, named after llama.cpp's file types. */
export type BenchMix = "q4_0" | "q8_0" | "q4_k_m";
export const BENCH_MIXES: readonly BenchMix[] = ["q4_0", "q4_k_m", "q8_0"];

/** Qwen2.5-0.5B: 24 layers, 896 wide, 14 heads (2 KV heads), FFN 4864, tied 151936-token head. */
const QWEN05 = { nLayer: 24, nEmbd: 896, nHead: 14, nHeadKv: 2, nFf: 4864, vocab: 151936, context: 32768 };

// llama.cpp's own choice per tensor. Rows of 896 are not a multiple of 256, so in the K mix the
// 896-wide matrices fall back to legacy types exactly as llama-quantize does (Q4_K→Q5_0, Q6_K→Q8_0).
function typeFor(mix: BenchMix, role: string, layer: number): GgmlType {
  if (mix === "q8_0") return GgmlType.Q8_0;
  if (role === "token_embd") return GgmlType.Q8_0;
  if (mix === "q4_0") return GgmlType.Q4_0;
  const n = QWEN05.nLayer;
  const moreBits = layer < n / 8 || layer >= (7 * n) / 8 || (layer - Math.floor(n / 8)) % 3 === 2;
  if (role === "attn_v") return moreBits ? GgmlType.Q8_0 : GgmlType.Q5_0;
  if (role === "ffn_down") return moreBits ? GgmlType.Q6_K : GgmlType.Q4_K;
  return GgmlType.Q5_0;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(n: number, random: () => number, center: number, half: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = center + (random() * 2 - 1) * half;
  return v;
}

// Quantizing 500 M random floats in TypeScript takes a while; a matrix repeats a quantized tile of
// distinct rows instead (the file still has every byte, so memory traffic is the real one).
const TILE_ROWS = 1024;
function matrix(type: GgmlType, cols: number, rows: number, random: () => number): Uint8Array {
  const tileRows = Math.min(rows, TILE_ROWS);
  const tile = quantize(type, uniform(cols * tileRows, random, 0, Math.sqrt(3 / cols)));
  const rowBytes = tile.length / tileRows;
  const out = new Uint8Array(rowBytes * rows);
  for (let r = 0; r < rows; r += tileRows) out.set(tile.subarray(0, Math.min(tileRows, rows - r) * rowBytes), r * rowBytes);
  return out;
}

/** Writes (once) and returns the path of the Qwen2.5-0.5B-shaped GGUF for the mix. */
export function ensureBenchModel(mix: BenchMix, log: (line: string) => void = () => {}): string {
  mkdirSync(BENCH_CACHE_DIR, { recursive: true });
  const path = join(BENCH_CACHE_DIR, `qwen2.5-0.5b-shape-${mix}.gguf`);
  if (existsSync(path)) return path;
  log(`writing ${path} …`);
  const v = fixtureVocabulary("qwen3");
  const tokens = [...v.tokens];
  const types = [...v.tokenTypes];
  while (tokens.length < QWEN05.vocab) {
    tokens.push(`[PAD${tokens.length}]`);
    types.push(4);
  }
  const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GgufValueType.Uint32, value });
  const f32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GgufValueType.Float32, value });
  const str = (key: string, value: string): GgufMetadataEntry => ({ key, type: GgufValueType.String, value });
  const a = "qwen2";
  const metadata: GgufMetadataEntry[] = [
    str("general.architecture", a),
    str("general.name", `skein-bench-qwen2.5-0.5b-shape-${mix}`),
    u32(`${a}.context_length`, QWEN05.context),
    u32(`${a}.embedding_length`, QWEN05.nEmbd),
    u32(`${a}.block_count`, QWEN05.nLayer),
    u32(`${a}.feed_forward_length`, QWEN05.nFf),
    u32(`${a}.attention.head_count`, QWEN05.nHead),
    u32(`${a}.attention.head_count_kv`, QWEN05.nHeadKv),
    f32(`${a}.attention.layer_norm_rms_epsilon`, 1e-6),
    f32(`${a}.rope.freq_base`, 1_000_000),
    u32("general.file_type", mix === "q4_0" ? 2 : mix === "q8_0" ? 7 : 15),
    str("tokenizer.ggml.model", "gpt2"),
    str("tokenizer.ggml.pre", v.pre ?? "qwen2"),
    { key: "tokenizer.ggml.tokens", type: GgufValueType.Array, elementType: GgufValueType.String, value: tokens },
    { key: "tokenizer.ggml.token_type", type: GgufValueType.Array, elementType: GgufValueType.Int32, value: types },
    { key: "tokenizer.ggml.merges", type: GgufValueType.Array, elementType: GgufValueType.String, value: [...v.merges] },
    u32("tokenizer.ggml.bos_token_id", v.bosTokenId),
    u32("tokenizer.ggml.eos_token_id", v.eosTokenId),
    { key: "tokenizer.ggml.add_bos_token", type: GgufValueType.Bool, value: false },
    str("tokenizer.chat_template", v.chatTemplate),
  ];
  const random = rng(20240601);
  const { nEmbd, nFf, nHead, nHeadKv, nLayer } = QWEN05;
  const hd = nEmbd / nHead;
  const tensors: GgufTensorToWrite[] = [];
  const vec = (name: string, n: number, center: number, half: number): GgufTensorToWrite => ({
    name,
    type: GgmlType.F32,
    dims: [n],
    data: new Uint8Array(uniform(n, random, center, half).buffer),
  });
  // One set of matrices per type and shape, shared by every layer that uses that type.
  const shared = new Map<string, Uint8Array>();
  const mat = (name: string, role: string, layer: number, cols: number, rows: number): GgufTensorToWrite => {
    const type = typeFor(mix, role, layer);
    const key = `${role}:${type}`;
    let data = shared.get(key);
    if (data === undefined) {
      data = matrix(type, cols, rows, random);
      shared.set(key, data);
    }
    return { name, type, dims: [cols, rows], data };
  };
  tensors.push(mat("token_embd.weight", "token_embd", -1, nEmbd, QWEN05.vocab));
  for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}`;
    tensors.push(vec(`${p}.attn_norm.weight`, nEmbd, 1, 0.1));
    tensors.push(mat(`${p}.attn_q.weight`, "attn_q", l, nEmbd, nHead * hd));
    tensors.push(mat(`${p}.attn_k.weight`, "attn_k", l, nEmbd, nHeadKv * hd));
    tensors.push(mat(`${p}.attn_v.weight`, "attn_v", l, nEmbd, nHeadKv * hd));
    tensors.push(vec(`${p}.attn_q.bias`, nHead * hd, 0, 0.05));
    tensors.push(vec(`${p}.attn_k.bias`, nHeadKv * hd, 0, 0.05));
    tensors.push(vec(`${p}.attn_v.bias`, nHeadKv * hd, 0, 0.05));
    tensors.push(mat(`${p}.attn_output.weight`, "attn_output", l, nHead * hd, nEmbd));
    tensors.push(vec(`${p}.ffn_norm.weight`, nEmbd, 1, 0.1));
    tensors.push(mat(`${p}.ffn_gate.weight`, "ffn_gate", l, nEmbd, nFf));
    tensors.push(mat(`${p}.ffn_up.weight`, "ffn_up", l, nEmbd, nFf));
    tensors.push(mat(`${p}.ffn_down.weight`, "ffn_down", l, nFf, nEmbd));
  }
  tensors.push(vec("output_norm.weight", nEmbd, 1, 0.1));
  const tmp = `${path}.tmp-${process.pid}`;
  writeGguf(tmp, { metadata, tensors });
  renameSync(tmp, path);
  return path;
}
