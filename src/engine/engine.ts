// The contract between a runner and whatever computes tokens. The runner's generation loop
// (src/runner/generate.ts) drives it one prefill chunk or one decode step at a time, and checks for
// cancellation between calls — so every call must return after a bounded amount of work.
import type { ChatMessage, GenerationParams, ToolDefinition } from "../shared/types.ts";

/** Which part of which model an engine holds. A single-node instance is one shard [0, layerCount). */
export interface EngineShardSpec {
  readonly modelId: string;
  /** The GGUF file, or null for engines that need none (test doubles). */
  readonly modelPath: string | null;
  readonly layerStart: number;
  readonly layerEnd: number;
  readonly layerCount: number;
  /** KV cache size in tokens; null = the model's own, capped by memory. */
  readonly contextSize: number | null;
  /** Compute threads; null = one per core. */
  readonly threads: number | null;
  /** Free-form options for the engine (e.g. a test double's per-token delay). */
  readonly options: Readonly<Record<string, unknown>>;
}

export interface SampledToken {
  readonly tokenId: number;
  /** Natural log of the token's probability; null when the engine does not compute it. */
  readonly logprob: number | null;
  readonly topLogprobs: readonly { readonly tokenId: number; readonly logprob: number }[];
}

/**
 * One generation in progress: owns a KV-cache slot and the sampler's state. prefill, sample and
 * decode may return promises: a pipeline's first stage waits there for the other stages.
 */
export interface Sequence {
  /** Runs one chunk of the prompt through the model, appending it to the KV cache. */
  prefill(tokenIds: readonly number[]): void | Promise<void>;
  /** Samples the next token from the logits at the current position. */
  sample(): SampledToken | Promise<SampledToken>;
  /** Appends a sampled token and computes the logits for the next position. */
  decode(tokenId: number): void | Promise<void>;
  /** True for end-of-generation tokens (EOS, EOT, <|im_end|> …). */
  isEndOfGeneration(tokenId: number): boolean;
  /** Streaming-safe detokenizing: returns only complete UTF-8 text ("" while a character is split). */
  detokenize(tokenId: number): string;
  /** Text for a token in isolation (for logprobs). */
  tokenText(tokenId: number): string;
  /** Releases the KV slot. Safe to call twice. */
  free(): void;
}

/** A Sequence computed in this process: every call returns its result directly. */
export interface LocalSequence extends Sequence {
  prefill(tokenIds: readonly number[]): void;
  sample(): SampledToken;
  decode(tokenId: number): void;
}

export interface Engine {
  /** Loads weights for the shard, reporting each layer as it becomes usable. */
  load(onProgress: (layersLoaded: number, layerCount: number) => void): Promise<void>;
  /** Runs a tiny generation so the first real request does not pay one-off costs. */
  warmup(): Promise<void>;
  /**
   * Renders the model's chat template and tokenizes it. Throws EngineInputError if it cannot fit.
   * `tools` (absent or empty: none) are offered to the model through the template.
   */
  encodeChat(messages: readonly ChatMessage[], tools?: readonly ToolDefinition[]): number[];
  /** Opens a sequence; throws EngineInputError when the prompt cannot fit the context. */
  openSequence(params: GenerationParams, promptTokenCount: number): Sequence;
  /** Releases every resource. */
  close(): void;
  /**
   * Pipeline engines only (a shard that is not the whole model): one sequence's slot on this stage.
   * Absent: the engine serves whole models only.
   */
  openStageSequence?(params: SamplingParams): StageSequence;
}

/** The part of a request a pipeline's last stage needs to sample (the prompt stays on the first stage). */
export type SamplingParams = Pick<
  GenerationParams,
  "temperature" | "topK" | "topP" | "minP" | "repetitionPenalty" | "presencePenalty" | "frequencyPenalty" | "seed" | "logprobs" | "topLogprobs"
>;

/** What a pipeline stage receives: token ids on the first stage, the previous stage's hidden states after. */
export type StageStepInput = { readonly tokens: readonly number[] } | { readonly hidden: Float32Array; readonly nTokens: number };

/** One sequence on one pipeline stage: its KV slot, and on the last stage its sampler. */
export interface StageSequence {
  /** Floats per token in the hidden states this stage passes on. */
  readonly hiddenSize: number;
  readonly isFirstStage: boolean;
  readonly isLastStage: boolean;
  /**
   * Runs this stage's layers over the step; `tokenIds` are the step's tokens (the last stage's
   * sampler records them for its penalties). Returns the hidden states (nTokens × hiddenSize).
   */
  forward(input: StageStepInput, tokenIds: readonly number[]): { readonly hidden: Float32Array; readonly nTokens: number };
  /** Last stage only: samples from the last row of `hidden`. */
  sample(hidden: Float32Array, nTokens: number): SampledToken;
  /** First stage: the same text services a whole-model Sequence offers. */
  isEndOfGeneration(tokenId: number): boolean;
  detokenize(tokenId: number): string;
  tokenText(tokenId: number): string;
  /** Releases the KV slot. Safe to call twice. */
  free(): void;
}

/** An error caused by the request (too long a prompt, bad template input): the task fails, the runner stays Ready. */
export class EngineInputError extends Error {
  override name = "EngineInputError";
}

/**
 * Another pipeline stage failed or vanished: the task fails (runner_failed, or bad_request when that
 * stage refused the input), but this runner's own engine is intact and it stays Ready.
 */
export class StageFailedError extends Error {
  override name = "StageFailedError";
  constructor(
    message: string,
    readonly inputError: boolean = false,
  ) {
    super(message);
  }
}

/** What a module named by a runner's `engineModule` exports. */
export interface EngineModule {
  createEngine(spec: EngineShardSpec): Engine;
}
