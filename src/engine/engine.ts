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

/** One generation in progress: owns a KV-cache slot and the sampler's state. */
export interface Sequence {
  /** Runs one chunk of the prompt through the model, appending it to the KV cache. */
  prefill(tokenIds: readonly number[]): void;
  /** Samples the next token from the logits at the current position. */
  sample(): SampledToken;
  /** Appends a sampled token and computes the logits for the next position. */
  decode(tokenId: number): void;
  /** True for end-of-generation tokens (EOS, EOT, <|im_end|> …). */
  isEndOfGeneration(tokenId: number): boolean;
  /** Streaming-safe detokenizing: returns only complete UTF-8 text ("" while a character is split). */
  detokenize(tokenId: number): string;
  /** Text for a token in isolation (for logprobs). */
  tokenText(tokenId: number): string;
  /** Releases the KV slot. Safe to call twice. */
  free(): void;
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
}

/** An error caused by the request (too long a prompt, bad template input): the task fails, the runner stays Ready. */
export class EngineInputError extends Error {
  override name = "EngineInputError";
}

/** What a module named by a runner's `engineModule` exports. */
export interface EngineModule {
  createEngine(spec: EngineShardSpec): Engine;
}
