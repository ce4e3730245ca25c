// Stage 0 of a pipeline drives a task with the runner's ordinary generation loop (generate.ts): it
// gets a Sequence whose prefill and decode run the local layers and send the activation on, and whose
// sample() waits for the token the last stage sends back. Detokenizing, stop strings and chunks stay
// here. Every wait on the other stages is bounded; a stage that vanishes fails the task with its name.
import { StageFailedError } from "../engine/engine.ts";
import type { Engine, SampledToken, SamplingParams, Sequence, StageSequence } from "../engine/engine.ts";
import type { TaskId } from "../shared/ids.ts";
import { PIPELINE_PREFILL_CHUNKS_IN_FLIGHT_MAX, PIPELINE_STAGE_REPLY_TIMEOUT_MS } from "../shared/limits.ts";
import type { GenerationParams } from "../shared/types.ts";
import type { Downstream } from "./downstream.ts";
import type { UpstreamMessage } from "./messages.ts";
import { hiddenToBytes } from "./messages.ts";

export interface FirstStageOptions {
  readonly downstream: Downstream;
  readonly replyTimeoutMs?: number;
  readonly prefillChunksInFlightMax?: number;
  readonly onSlotCountChanged: (openSlotCount: number) => void;
}

/** Routes the last stage's answers to the sequence of their task; one per stage-0 runner. */
export class FirstStage {
  private readonly sequences = new Map<TaskId, FirstStageSequence>();

  constructor(private readonly options: FirstStageOptions) {}

  get openSlotCount(): number {
    return this.sequences.size;
  }

  /** An Engine for one task: the runner's engine, with openSequence going through the pipeline. */
  engineForTask(engine: Engine, taskId: TaskId, isCancelled: () => boolean): Engine {
    const openStage = engine.openStageSequence?.bind(engine);
    if (openStage === undefined) throw new Error("this engine cannot run a pipeline stage (no openStageSequence)");
    return {
      load: (onProgress) => engine.load(onProgress),
      warmup: () => engine.warmup(),
      encodeChat: (messages, tools) => engine.encodeChat(messages, tools),
      close: () => engine.close(),
      openSequence: (params: GenerationParams, promptTokenCount: number): Sequence => {
        const sequence = new FirstStageSequence(taskId, openStage(params), params, promptTokenCount, isCancelled, this.options, () => {
          this.sequences.delete(taskId);
          this.options.onSlotCountChanged(this.sequences.size);
        });
        this.sequences.set(taskId, sequence);
        this.options.onSlotCountChanged(this.sequences.size);
        return sequence;
      },
    };
  }

  onUpstream(message: UpstreamMessage): void {
    this.sequences.get(message.taskId)?.onUpstream(message);
  }

  /**
   * The task was cancelled while stage 0 may be waiting on the other stages: stop waiting now (the
   * loop then ends the task Cancelled and sends `end`), rather than after the remote step.
   */
  onCancel(taskId: TaskId): void {
    this.sequences.get(taskId)?.interrupt();
  }

  /** The next stage's link closed: every task in flight fails with its name. */
  onDownstreamGone(stage: string, reason: string): void {
    for (const sequence of this.sequences.values()) sequence.failWith(new StageFailedError(`${stage} is gone: ${reason}`));
  }
}

interface Waiter {
  readonly ready: () => boolean;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

class FirstStageSequence implements Sequence {
  private step = 0;
  private processedPromptTokens = 0;
  /** Steps of prefill chunks sent and not yet acknowledged by the last stage. */
  private readonly acksOutstanding = new Set<number>();
  /** The step whose token sample() returns next, and the token once it arrived. */
  private tokenStep: number | null = null;
  private token: SampledToken | null = null;
  private failure: Error | null = null;
  private waiter: Waiter | null = null;
  private opened: Promise<void> | null = null;
  private freed = false;

  constructor(
    private readonly taskId: TaskId,
    private readonly local: StageSequence,
    private readonly sampling: SamplingParams,
    private readonly promptTokenCount: number,
    private readonly isCancelled: () => boolean,
    private readonly options: FirstStageOptions,
    private readonly onFree: () => void,
  ) {}

  async prefill(tokenIds: readonly number[]): Promise<void> {
    await this.openDownstream();
    this.processedPromptTokens += tokenIds.length;
    const sample = this.processedPromptTokens >= this.promptTokenCount;
    const step = this.send(tokenIds, sample);
    if (sample) return;
    this.acksOutstanding.add(step);
    const inFlightMax = this.options.prefillChunksInFlightMax ?? PIPELINE_PREFILL_CHUNKS_IN_FLIGHT_MAX;
    // Send ahead (the stages below compute while this one does), but only so far: the link's queue is bounded.
    await this.waitFor(() => this.acksOutstanding.size < inFlightMax, "acknowledge a prompt chunk");
  }

  async sample(): Promise<SampledToken> {
    if (this.tokenStep === null) throw new Error("nothing to sample from: prefill the prompt first");
    await this.waitFor(() => this.token !== null, "send the next token");
    return this.token!;
  }

  async decode(tokenId: number): Promise<void> {
    await this.openDownstream();
    this.send([tokenId], true);
  }

  isEndOfGeneration(tokenId: number): boolean {
    return this.local.isEndOfGeneration(tokenId);
  }

  detokenize(tokenId: number): string {
    return this.local.detokenize(tokenId);
  }

  tokenText(tokenId: number): string {
    return this.local.tokenText(tokenId);
  }

  /** The task is over here (complete, cancelled or failed): `end` in place of the next activation. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    // Always, even after a failure here (a reply timeout): the stages below must free their slots.
    // Stages that already dropped the task ignore it.
    if (this.opened !== null) {
      const reason = this.failure !== null ? "failed" : this.isCancelled() ? "cancelled" : "complete";
      this.options.downstream.send({ type: "end", taskId: this.taskId, reason });
    }
    this.failWith(new StageFailedError("the sequence was freed"));
    this.local.free();
    this.onFree();
  }

  onUpstream(message: UpstreamMessage): void {
    switch (message.type) {
      case "token":
        if (message.step !== this.tokenStep) return; // an answer to a step this sequence no longer waits for
        this.token = { tokenId: message.tokenId, logprob: message.logprob, topLogprobs: message.topLogprobs };
        break;
      case "ack":
        this.acksOutstanding.delete(message.step);
        break;
      case "failed":
        this.failWith(new StageFailedError(message.reason, message.inputError));
        return;
    }
    this.wake();
  }

  /** Ends a wait in progress without failing the sequence (a cancel): the waiting call throws. */
  interrupt(): void {
    const waiter = this.waiter;
    if (waiter === null) return;
    this.waiter = null;
    clearTimeout(waiter.timer);
    waiter.reject(new StageFailedError("cancelled while waiting for the other pipeline stages"));
  }

  failWith(error: Error): void {
    this.failure ??= error;
    const waiter = this.waiter;
    if (waiter === null) return;
    this.waiter = null;
    clearTimeout(waiter.timer);
    waiter.reject(this.failure);
  }

  private openDownstream(): Promise<void> {
    this.opened ??= this.options.downstream.open().then(() => {
      this.check();
      const sent = this.options.downstream.send({ type: "open", taskId: this.taskId, sampling: pickSampling(this.sampling), promptTokenCount: this.promptTokenCount });
      if (!sent) throw new StageFailedError(`${this.options.downstream.stageName} is gone`);
    });
    return this.opened;
  }

  /** Runs the local layers over the step and sends the activation on; returns the step's number. */
  private send(tokenIds: readonly number[], sample: boolean): number {
    this.check();
    const out = this.local.forward({ tokens: tokenIds }, tokenIds);
    const step = this.step++;
    if (sample) {
      this.tokenStep = step;
      this.token = null;
    }
    const sent = this.options.downstream.send({
      type: "activation",
      taskId: this.taskId,
      step,
      tokenIds: [...tokenIds],
      hidden: hiddenToBytes(out.hidden),
      nTokens: out.nTokens,
      sample,
    });
    if (!sent) this.failWith(new StageFailedError(`${this.options.downstream.stageName} is gone`));
    this.check();
    return step;
  }

  private check(): void {
    if (this.failure !== null) throw this.failure;
  }

  private waitFor(ready: () => boolean, what: string): Promise<void> {
    this.check();
    if (ready()) return Promise.resolve();
    if (this.isCancelled()) return Promise.reject(new StageFailedError("cancelled before the other pipeline stages answered"));
    const timeoutMs = this.options.replyTimeoutMs ?? PIPELINE_STAGE_REPLY_TIMEOUT_MS;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.failWith(new StageFailedError(`${this.options.downstream.stageName} and the stages after it did not ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { ready, resolve, reject, timer };
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter === null || !waiter.ready()) return;
    this.waiter = null;
    clearTimeout(waiter.timer);
    waiter.resolve();
  }
}

/** Only the sampler's settings travel (the prompt stays here). */
function pickSampling(p: SamplingParams): SamplingParams {
  return {
    temperature: p.temperature,
    topK: p.topK,
    topP: p.topP,
    minP: p.minP,
    repetitionPenalty: p.repetitionPenalty,
    presencePenalty: p.presencePenalty,
    frequencyPenalty: p.frequencyPenalty,
    seed: p.seed,
    logprobs: p.logprobs,
    topLogprobs: p.topLogprobs,
  };
}
