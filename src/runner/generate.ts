// The engine-agnostic generation loop. It drives an Engine one prefill chunk or one decode step at a
// time and, between any two engine calls, yields to the event loop and checks for cancellation — so
// the IPC `cancel` message can arrive while a synchronous engine computes, and a cancelled task stops
// before its next step (never "every N tokens").
import { EngineInputError, StageFailedError } from "../engine/engine.ts";
import type { Engine, SampledToken, Sequence } from "../engine/engine.ts";
import type { TaskId } from "../shared/ids.ts";
import { performance } from "node:perf_hooks";
import { GENERATION_TOKENS_MAX } from "../shared/limits.ts";
import type { PrefillChunkTiming } from "./prefill-chunks.ts";
import { nextPrefillChunkTokens } from "./prefill-chunks.ts";
import type { Chunk, FailureCode, FinishReason, GenerationParams } from "../shared/types.ts";
import { StopStringFilter } from "./stop-strings.ts";

export interface GenerationTask {
  readonly taskId: TaskId;
  readonly params: GenerationParams;
}

export interface GenerationHooks {
  /** Polled before every prefill chunk and every decode step. */
  isCancelled(): boolean;
  onPrefillProgress(processedTokens: number, totalTokens: number): void;
  onChunk(chunk: Chunk): void;
}

export interface GenerateOptions {
  /**
   * false skips the per-step cancel check and event-loop yield. Only the benchmark sets it, to measure
   * what they cost; a task run this way cannot be cancelled.
   */
  readonly cancelChecks: boolean;
  /** Milliseconds from an arbitrary origin, for sizing prefill chunks; default performance.now (tests pass a fake clock). */
  readonly nowMs?: () => number;
}

export const DEFAULT_GENERATE_OPTIONS: GenerateOptions = { cancelChecks: true };

interface Counts {
  /** Tokens in the encoded prompt (0 when the task ended before encoding). */
  readonly promptTokens: number;
  /** Tokens sampled and counted as output (end-of-generation tokens are not). */
  readonly tokensGenerated: number;
}

export type GenerationOutcome =
  | (Counts & { readonly status: "Complete"; readonly finishReason: "stop" | "length" })
  | (Counts & { readonly status: "Cancelled"; readonly finishReason: "cancelled" })
  | (Counts & {
      readonly status: "Failed";
      readonly finishReason: "error";
      readonly failureCode: FailureCode;
      readonly failureReason: string;
      /** True when the engine threw something other than EngineInputError: its state may be corrupt. */
      readonly engineBroken: boolean;
    });

/** Mutable progress, shared with the error path so a failure still reports real counts. */
interface Progress {
  promptTokens: number;
  tokensGenerated: number;
  sequence: Sequence | null;
}

export async function generate(
  engine: Engine,
  task: GenerationTask,
  hooks: GenerationHooks,
  options: GenerateOptions = DEFAULT_GENERATE_OPTIONS,
): Promise<GenerationOutcome> {
  const progress: Progress = { promptTokens: 0, tokensGenerated: 0, sequence: null };
  let outcome: GenerationOutcome;
  try {
    outcome = await runGeneration(engine, task, hooks, options, progress);
  } catch (error) {
    // A cancel interrupts a wait on other pipeline stages: that is the cancel taking effect, not a failure.
    outcome = isStageFailedError(error) && options.cancelChecks && hooks.isCancelled() ? cancelled(progress) : failure(progress, error);
  }
  const freeError = freeSequence(progress.sequence);
  if (freeError !== null) return failure(progress, freeError);
  return outcome;
}

async function runGeneration(
  engine: Engine,
  task: GenerationTask,
  hooks: GenerationHooks,
  options: GenerateOptions,
  progress: Progress,
): Promise<GenerationOutcome> {
  const shouldStop = async (): Promise<boolean> => {
    if (!options.cancelChecks) return false;
    // Let queued IPC messages (a cancel) be handled before deciding.
    await yieldToEventLoop();
    return hooks.isCancelled();
  };

  if (options.cancelChecks && hooks.isCancelled()) return cancelled(progress);
  const promptTokenIds = engine.encodeChat(task.params.messages, task.params.tools ?? []);
  progress.promptTokens = promptTokenIds.length;
  const sequence = engine.openSequence(task.params, promptTokenIds.length);
  progress.sequence = sequence;

  const nowMs = options.nowMs ?? (() => performance.now());
  let lastChunk: PrefillChunkTiming | null = null;
  for (let start = 0; start < promptTokenIds.length; ) {
    if (await shouldStop()) return cancelled(progress);
    const end = Math.min(start + nextPrefillChunkTokens(lastChunk), promptTokenIds.length);
    const startedAtMs = nowMs();
    await sequence.prefill(promptTokenIds.slice(start, end));
    lastChunk = { tokens: end - start, elapsedMs: nowMs() - startedAtMs };
    hooks.onPrefillProgress(end, promptTokenIds.length);
    start = end;
  }
  if (await shouldStop()) return cancelled(progress);

  const emitter = new ChunkEmitter(task.params, sequence, hooks);
  const tokensMax = task.params.maxTokens ?? GENERATION_TOKENS_MAX;
  for (;;) {
    const sampled = await sequence.sample();
    if (sequence.isEndOfGeneration(sampled.tokenId)) {
      emitter.flush(progress.tokensGenerated);
      return complete(progress, "stop");
    }
    progress.tokensGenerated += 1;
    if (emitter.push(sampled, progress.tokensGenerated)) return complete(progress, "stop");
    if (progress.tokensGenerated >= tokensMax) {
      emitter.flush(progress.tokensGenerated);
      return complete(progress, "length");
    }
    // The check sits right before the expensive call, so a cancel that arrived while the last token
    // was computed or emitted costs no further decode step.
    if (await shouldStop()) return cancelled(progress);
    await sequence.decode(sampled.tokenId);
  }
}

type ChunkLogprob = NonNullable<Chunk["logprobs"]>[number];

/** Turns sampled tokens into numbered chunks, applying stop strings and carrying logprobs along. */
class ChunkEmitter {
  private readonly stopFilter: StopStringFilter;
  private chunkIndex = 0;
  /** Logprobs of tokens whose text is not yet emitted (held back or split characters). */
  private pendingLogprobs: ChunkLogprob[] = [];

  constructor(
    private readonly params: GenerationParams,
    private readonly sequence: Sequence,
    private readonly hooks: GenerationHooks,
  ) {
    this.stopFilter = new StopStringFilter(params.stop);
  }

  /** Returns true when a stop string completed. */
  push(sampled: SampledToken, tokensGenerated: number): boolean {
    const text = this.sequence.detokenize(sampled.tokenId);
    if (this.params.logprobs) this.pendingLogprobs.push(this.logprobOf(sampled));
    const scan = this.stopFilter.push(text);
    this.emit(scan.emit, tokensGenerated);
    return scan.stopped;
  }

  flush(tokensGenerated: number): void {
    this.emit(this.stopFilter.flush(), tokensGenerated);
  }

  private emit(text: string, tokensGenerated: number): void {
    if (text === "") return;
    const logprobs = this.params.logprobs ? this.pendingLogprobs : null;
    this.pendingLogprobs = [];
    this.hooks.onChunk({ index: this.chunkIndex, text, tokensGenerated, logprobs });
    this.chunkIndex += 1;
  }

  private logprobOf(sampled: SampledToken): ChunkLogprob {
    return {
      token: this.sequence.tokenText(sampled.tokenId),
      // An engine that computes no probabilities still reports a number the schema accepts.
      logprob: sampled.logprob ?? 0,
      top: sampled.topLogprobs
        .slice(0, this.params.topLogprobs)
        .map((t) => ({ token: this.sequence.tokenText(t.tokenId), logprob: t.logprob })),
    };
  }
}

function complete(progress: Progress, finishReason: "stop" | "length"): GenerationOutcome {
  return { status: "Complete", finishReason, promptTokens: progress.promptTokens, tokensGenerated: progress.tokensGenerated };
}

function cancelled(progress: Progress): GenerationOutcome {
  return { status: "Cancelled", finishReason: "cancelled", promptTokens: progress.promptTokens, tokensGenerated: progress.tokensGenerated };
}

function failure(progress: Progress, error: unknown): GenerationOutcome {
  const stageError = isStageFailedError(error);
  const inputError = isEngineInputError(error) || (stageError && (error as { inputError?: unknown }).inputError === true);
  return {
    status: "Failed",
    finishReason: "error" satisfies FinishReason,
    failureCode: inputError ? "bad_request" : "runner_failed",
    // Another stage's failure is reported in its own words, not as this engine's exception.
    failureReason: stageError ? (error as Error).message : errorMessage(error),
    engineBroken: !inputError && !stageError,
    promptTokens: progress.promptTokens,
    tokensGenerated: progress.tokensGenerated,
  };
}

function freeSequence(sequence: Sequence | null): unknown {
  if (sequence === null) return null;
  try {
    sequence.free();
    return null;
  } catch (error) {
    return error ?? new Error("Sequence.free threw a nullish value");
  }
}

/** By class, or by name when the engine module loaded its own copy of engine.ts (e.g. from dist/). */
export function isEngineInputError(error: unknown): boolean {
  return error instanceof EngineInputError || (error instanceof Error && error.name === "EngineInputError");
}

/** A pipeline stage elsewhere failed; by name for the same reason as isEngineInputError. */
export function isStageFailedError(error: unknown): boolean {
  return error instanceof StageFailedError || (error instanceof Error && error.name === "StageFailedError");
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
