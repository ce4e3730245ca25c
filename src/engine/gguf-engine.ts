// The built-in engine: GGUF files on CPU through the native addon. A runner loads it by module path
// (src/node/node.ts: defaultEngineModulePath) and calls createEngine(spec).
//
// A spec covering every layer is a complete single-node model (embed → layers → head → sample). A
// spec covering part of the layers is a pipeline stage: it maps only its own tensors, and
// openStage() gives the hidden-state API (forwardHidden) that the pipeline transport drives.
import { totalmem } from "node:os";
import type { ChatMessage, ToolDefinition } from "../shared/types.ts";
import { ChatTemplateError, chatTemplateOf, encodeChat, type ChatTemplate } from "./chat-template.ts";
import { EngineInputError, type Engine, type EngineShardSpec, type LocalSequence, type SampledToken, type SamplingParams, type StageSequence, type StageStepInput } from "./engine.ts";
import { ShardForward, type StageInput } from "./forward.ts";
import { readGguf, type GgufFile } from "./gguf/reader.ts";
import { readModelArch, type ModelArch } from "./model.ts";
import { loadNative, type NativeKvCache } from "./native.ts";
import { Sampler, samplerParamsOf, type SamplerParams } from "./sampler.ts";
import { Tokenizer, type StreamingDetokenizer } from "./tokenizer/tokenizer.ts";

/** Share of the machine's memory the KV caches of one engine may reserve when the context is the model's own. */
const KV_MEMORY_SHARE = 0.25;
/**
 * Share of the machine's memory an explicit --ctx-size may claim for one shard's KV cache; beyond it
 * the load is refused with the numbers, instead of an allocation the OS answers by killing the runner.
 */
const KV_MEMORY_SHARE_EXPLICIT_MAX = 0.75;
/** Lower bound on the default context, whatever the memory says. */
const CONTEXT_DEFAULT_MIN = 512;

/** KV-cache bytes per token for the shard's layers (f16 keys and values). */
export function kvBytesPerToken(arch: ModelArch, layerCount: number): number {
  return 2 * layerCount * arch.nHeadKv * arch.headDim * 2;
}

/** The context to allocate: the spec's, or the model's own capped by memory. */
export function chooseContextSize(arch: ModelArch, spec: EngineShardSpec, memoryBytes = totalmem()): number {
  if (spec.contextSize !== null) {
    if (!Number.isInteger(spec.contextSize) || spec.contextSize < 1) throw new RangeError(`invalid context size ${spec.contextSize}`);
    const layerCount = spec.layerEnd - spec.layerStart;
    const kvBytes = kvBytesPerToken(arch, layerCount) * spec.contextSize;
    if (kvBytes > memoryBytes * KV_MEMORY_SHARE_EXPLICIT_MAX) {
      const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
      throw new RangeError(
        `a context of ${spec.contextSize} tokens (--ctx-size) needs ${gib(kvBytes)} of KV cache for ${layerCount} layer(s) of ${spec.modelId}; ` +
          `this machine has ${gib(memoryBytes)} of memory and a KV cache may use at most ${Math.round(KV_MEMORY_SHARE_EXPLICIT_MAX * 100)}% of it`,
      );
    }
    return spec.contextSize;
  }
  const perToken = kvBytesPerToken(arch, spec.layerEnd - spec.layerStart);
  const byMemory = Math.floor((memoryBytes * KV_MEMORY_SHARE) / Math.max(1, perToken));
  return Math.max(Math.min(CONTEXT_DEFAULT_MIN, arch.contextLength), Math.min(arch.contextLength, byMemory));
}


/** What turns text into tokens and back: only the first stage (stage 0) has it. */
interface TextServices {
  readonly tokenizer: Tokenizer;
  readonly template: ChatTemplate;
}

interface Loaded {
  readonly shard: ShardForward;
  /** Null on a later pipeline stage: it sees hidden states and samples ids, never text. */
  readonly text: TextServices | null;
  readonly contextSize: number;
}

/** The first stage's tokenizer and template; a later stage has none (see StageSequence). */
function textOf(loaded: Loaded): TextServices {
  if (loaded.text === null) {
    const { layerStart, layerEnd } = loaded.shard.range;
    throw new Error(`shard [${layerStart}, ${layerEnd}) is a later pipeline stage: the first stage tokenizes and detokenizes`);
  }
  return loaded.text;
}

export class GgufEngine implements Engine {
  private loaded: Loaded | null = null;
  private readonly sequences = new Set<{ free(): void }>();

  constructor(readonly spec: EngineShardSpec) {
    if (spec.modelPath === null) throw new Error(`model ${spec.modelId}: the GGUF engine needs a model file`);
  }

  async load(onProgress: (layersLoaded: number, layerCount: number) => void): Promise<void> {
    if (this.loaded !== null) return;
    const path = this.spec.modelPath!;
    loadNative().setThreads(this.spec.threads ?? 0);
    const file = readGguf(path);
    const arch = readModelArch(file);
    if (this.spec.layerCount !== arch.layerCount) {
      throw new Error(`${path}: the model has ${arch.layerCount} layers, the shard spec says ${this.spec.layerCount}`);
    }
    const shard = ShardForward.open(path, { layerStart: this.spec.layerStart, layerEnd: this.spec.layerEnd }, file);
    try {
      // A later stage never sees text: no tokenizer (several MB for a 150k vocabulary) is built for it.
      const text = shard.isFirst ? textServicesOf(file) : null;
      const contextSize = chooseContextSize(arch, this.spec);
      // Page the weights in layer by layer so progress is real and the first token is not slowed by faults.
      const total = this.spec.layerEnd - this.spec.layerStart;
      let reported = 0;
      shard.prefetch((done) => {
        reported = done;
        onProgress(done, total);
      });
      if (reported === 0) onProgress(total, total);
      this.loaded = { shard, text, contextSize };
    } catch (error) {
      shard.close();
      throw error;
    }
  }

  private need(): Loaded {
    if (this.loaded === null) throw new Error("engine is not loaded");
    return this.loaded;
  }

  get contextSize(): number {
    return this.need().contextSize;
  }
  /** The first stage's tokenizer; throws on a later stage. */
  get tokenizer(): Tokenizer {
    return textOf(this.need()).tokenizer;
  }

  async warmup(): Promise<void> {
    const loaded = this.need();
    if (!loaded.shard.isFirst || !loaded.shard.isLast) return;
    const first = textOf(loaded).tokenizer.vocabulary.bosTokenId ?? 0;
    const sequence = this.openSequenceWith(
      { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, penaltyLastN: 0, seed: 0, logprobs: false, topLogprobs: 0 },
      2,
    );
    try {
      sequence.prefill([first]);
      sequence.decode(sequence.sample().tokenId);
      sequence.sample();
    } finally {
      sequence.free();
    }
  }

  encodeChat(messages: readonly ChatMessage[], tools?: readonly ToolDefinition[]): number[] {
    const loaded = this.need();
    const { tokenizer, template } = textOf(loaded);
    const contextSize = loaded.contextSize;
    let tokens: number[];
    try {
      tokens = encodeChat(tokenizer, template, messages, tools !== undefined && tools.length > 0 ? tools : undefined);
    } catch (error) {
      if (error instanceof ChatTemplateError) throw new EngineInputError(error.message);
      throw error;
    }
    if (tokens.length >= contextSize) {
      throw new EngineInputError(`the prompt has ${tokens.length} tokens; the context holds ${contextSize} (prompt plus at least one generated token)`);
    }
    return tokens;
  }

  /** Takes GenerationParams as the Engine interface says; only the sampling fields are read. */
  openSequence(params: SamplingParams, promptTokenCount: number): LocalSequence {
    return this.openSequenceWith(samplerParamsOf(params), promptTokenCount);
  }

  private openSequenceWith(params: SamplerParams, promptTokenCount: number): GgufSequence {
    const loaded = this.need();
    if (!loaded.shard.isFirst || !loaded.shard.isLast) {
      throw new Error(`shard [${this.spec.layerStart}, ${this.spec.layerEnd}) is a pipeline stage: drive it with openStage()`);
    }
    if (promptTokenCount >= loaded.contextSize) {
      throw new EngineInputError(`the prompt has ${promptTokenCount} tokens; the context holds ${loaded.contextSize}`);
    }
    const sequence = new GgufSequence(loaded, params, () => this.sequences.delete(sequence));
    this.sequences.add(sequence);
    return sequence;
  }

  /** A pipeline stage's own KV slot and hidden-state forward pass (any shard, first to last). */
  openStage(): StageSlot {
    const loaded = this.need();
    return new StageSlot(loaded.shard, loaded.contextSize);
  }

  /** One sequence's slot on this pipeline stage (any shard); the last stage also samples. */
  openStageSequence(params: SamplingParams): StageSequence {
    const loaded = this.need();
    const sequence = new GgufStageSequence(loaded, samplerParamsOf(params), () => this.sequences.delete(sequence));
    this.sequences.add(sequence);
    return sequence;
  }

  close(): void {
    for (const s of [...this.sequences]) s.free();
    this.loaded?.shard.close();
    this.loaded = null;
  }
}

/**
 * One sequence's KV cache on one pipeline stage. Stage 0 takes token ids, later stages take the
 * previous stage's hidden states; the last stage can produce logits.
 */
export class StageSlot {
  private readonly cache: NativeKvCache;
  private position = 0;
  private freed = false;

  constructor(
    private readonly shard: ShardForward,
    readonly contextSize: number,
  ) {
    this.cache = shard.createCache(contextSize);
  }

  get pos(): number {
    return this.position;
  }

  /** Runs this stage over the next tokens; returns its output hidden states (nTokens × nEmbd). See ShardForward.forwardHidden for `embedInto`. */
  forwardHidden(input: StageInput, embedInto?: Float32Array): { hidden: Float32Array; nTokens: number } {
    if (this.freed) throw new Error("stage slot was freed");
    const n = "tokens" in input ? input.tokens.length : input.nTokens;
    if (this.position + n > this.contextSize) {
      throw new EngineInputError(`${this.position + n} tokens do not fit the context of ${this.contextSize}`);
    }
    const out = this.shard.forwardHidden(this.cache, input, this.position, embedInto);
    this.position += n;
    return out;
  }

  /** Last stage only: logits of the last row of `hidden`, into `into` when given (vocabSize floats). */
  logits(hidden: Float32Array, nTokens: number, into?: Float32Array): Float32Array {
    return this.shard.logits(hidden, nTokens, false, into);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.cache.free();
  }
}

class GgufSequence implements LocalSequence {
  private readonly slot: StageSlot;
  private readonly sampler: Sampler;
  private readonly tokenizer: Tokenizer;
  private readonly detokenizer: StreamingDetokenizer;
  /** The last hidden row; logits are computed only when sampled (not after every prefill chunk). */
  private lastHidden: Float32Array | null = null;
  private logits: Float32Array | null = null;
  /** Reused for every token: a fresh vocabulary-sized array per token is garbage the GC collects late. */
  private readonly logitsBuffer: Float32Array;
  /** Token embeddings of the current chunk, reused likewise (grown to the largest chunk). */
  private embedBuffer = new Float32Array(0);
  private freed = false;

  constructor(
    private readonly loaded: Loaded,
    params: SamplerParams,
    private readonly onFree: () => void,
  ) {
    this.slot = new StageSlot(loaded.shard, loaded.contextSize);
    this.sampler = new Sampler(params);
    this.tokenizer = textOf(loaded).tokenizer;
    this.detokenizer = this.tokenizer.createStreamingDetokenizer();
    this.logitsBuffer = new Float32Array(loaded.shard.arch.vocabSize);
  }

  private run(tokenIds: readonly number[]): void {
    if (this.freed) throw new Error("sequence was freed");
    if (tokenIds.length === 0) return;
    checkTokenIds(this.tokenizer, tokenIds);
    const nEmbd = this.loaded.shard.arch.nEmbd;
    if (this.embedBuffer.length < tokenIds.length * nEmbd) this.embedBuffer = new Float32Array(tokenIds.length * nEmbd);
    const { hidden, nTokens } = this.slot.forwardHidden({ tokens: tokenIds }, this.embedBuffer);
    this.lastHidden = hidden.slice((nTokens - 1) * nEmbd, nTokens * nEmbd);
    this.logits = null;
    for (const id of tokenIds) this.sampler.accept(id);
  }

  prefill(tokenIds: readonly number[]): void {
    this.run(tokenIds);
  }

  sample(): SampledToken {
    if (this.freed) throw new Error("sequence was freed");
    if (this.lastHidden === null) throw new Error("nothing to sample from: prefill the prompt first");
    this.logits ??= this.slot.logits(this.lastHidden, 1, this.logitsBuffer);
    return this.sampler.sample(this.logits);
  }

  decode(tokenId: number): void {
    this.run([tokenId]);
  }

  isEndOfGeneration(tokenId: number): boolean {
    return this.tokenizer.isEndOfGeneration(tokenId);
  }

  detokenize(tokenId: number): string {
    return this.detokenizer.push(tokenId);
  }

  tokenText(tokenId: number): string {
    return this.tokenizer.tokenText(tokenId);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.slot.free();
    this.onFree();
  }
}

/** Ids from outside the engine (a client, another stage) must name tokens of this model's vocabulary. */
function checkTokenIds(tokenizer: Tokenizer, tokenIds: readonly number[]): void {
  const vocab = tokenizer.tokenCount;
  for (const id of tokenIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new EngineInputError(`token id ${id} is outside the vocabulary`);
  }
}

class GgufStageSequence implements StageSequence {
  private readonly slot: StageSlot;
  /** Only the last stage samples; earlier stages keep no sampler state. */
  private readonly sampler: Sampler | null;
  private readonly detokenizer: StreamingDetokenizer | null;
  /** The last stage's logits, reused for every token (see GgufSequence). */
  private readonly logitsBuffer: Float32Array | null;
  private freed = false;

  constructor(
    private readonly loaded: Loaded,
    params: SamplerParams,
    private readonly onFree: () => void,
  ) {
    this.slot = new StageSlot(loaded.shard, loaded.contextSize);
    this.sampler = loaded.shard.isLast ? new Sampler(params) : null;
    this.detokenizer = loaded.text === null ? null : loaded.text.tokenizer.createStreamingDetokenizer();
    this.logitsBuffer = loaded.shard.isLast ? new Float32Array(loaded.shard.arch.vocabSize) : null;
  }

  get hiddenSize(): number {
    return this.loaded.shard.arch.nEmbd;
  }
  get isFirstStage(): boolean {
    return this.loaded.shard.isFirst;
  }
  get isLastStage(): boolean {
    return this.loaded.shard.isLast;
  }

  forward(input: StageStepInput, tokenIds: readonly number[]): { hidden: Float32Array; nTokens: number } {
    if (this.freed) throw new Error("stage sequence was freed");
    if ("tokens" in input) checkTokenIds(textOf(this.loaded).tokenizer, input.tokens);
    const out = this.slot.forwardHidden(input);
    if (this.sampler !== null) for (const id of tokenIds) this.sampler.accept(id);
    return out;
  }

  sample(hidden: Float32Array, nTokens: number): SampledToken {
    if (this.freed) throw new Error("stage sequence was freed");
    if (this.sampler === null || this.logitsBuffer === null) {
      throw new Error(`shard [${this.loaded.shard.range.layerStart}, ${this.loaded.shard.range.layerEnd}) is not the last stage: it cannot sample`);
    }
    return this.sampler.sample(this.slot.logits(hidden, nTokens, this.logitsBuffer));
  }

  isEndOfGeneration(tokenId: number): boolean {
    return textOf(this.loaded).tokenizer.isEndOfGeneration(tokenId);
  }

  detokenize(tokenId: number): string {
    if (this.detokenizer === null) throw new Error("only the first stage detokenizes");
    return this.detokenizer.push(tokenId);
  }

  tokenText(tokenId: number): string {
    return textOf(this.loaded).tokenizer.tokenText(tokenId);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.slot.free();
    this.onFree();
  }
}

function textServicesOf(file: GgufFile): TextServices {
  const tokenizer = Tokenizer.fromGguf(file);
  return { tokenizer, template: chatTemplateOf(tokenizer.vocabulary) };
}

export function createEngine(spec: EngineShardSpec): GgufEngine {
  return new GgufEngine(spec);
}
