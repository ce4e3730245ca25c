// The one place where a client's request turns into TaskCancelled and TaskFinished (exo had the
// "send TaskCancelled shielded, then TaskFinished" block four times; see STYLE.md).
//
// A TaskStream subscribes to the node's StateView BEFORE it sends the TextGeneration command (so no
// event can slip between the two), follows the task through its events and hands the adapter a
// bounded queue of updates. Whatever ends it — the cluster reporting a terminal status, the client
// going away, the consumer stopping early, POST /v1/cancel, server shutdown or a master that never
// answers — `finish` runs exactly once: TaskCancelled if the task has not ended (and was not already
// cancelled), then always TaskFinished. It does not wait for the consumer, so a handler that is
// stuck writing to a dead socket cannot lose either message.
import { assert } from "../shared/assert.ts";
import type { CommandId, TaskId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import { TASKS_MAX } from "../shared/limits.ts";
import { runnerTaskSlots } from "../shared/task-slots.ts";
import type { Chunk, CommandOf, Event, FailureCode, FinishReason, IndexedEvent, Task } from "../shared/types.ts";
import { isTaskTerminal } from "../shared/types.ts";
import type { ClusterPort } from "../node/cluster-port.ts";
import { failureToApiError } from "./errors.ts";
import type { ApiLogger } from "./logger.ts";
import { silentLogger } from "./logger.ts";

/** Updates buffered for a consumer that reads slower than tokens arrive; beyond it chunks merge. */
export const TASK_STREAM_BUFFER_MAX = 1024;
/** How long the master has to answer TextGeneration with TaskCreated before the request fails. */
export const TASK_CREATED_TIMEOUT_MS = 30_000;

export type TaskEndedBy = "cluster" | "client" | "shutdown" | "timeout";

export interface TaskUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export interface TaskEnd {
  readonly type: "end";
  readonly status: "Complete" | "Cancelled" | "Failed";
  readonly finishReason: FinishReason | null;
  readonly failureCode: FailureCode | null;
  readonly failureReason: string | null;
  readonly usage: TaskUsage;
  /** "cluster": State reached a terminal status; otherwise this node ended the stream itself. */
  readonly endedBy: TaskEndedBy;
}

export type TaskUpdate =
  | { readonly type: "created"; readonly task: Task }
  /** Waiting behind other tasks of its instance; 1 = next to start. Sent when the position changes. */
  | { readonly type: "queued"; readonly position: number }
  | { readonly type: "loading"; readonly layersLoaded: number; readonly layerCount: number }
  | { readonly type: "prefill"; readonly processedTokens: number; readonly totalTokens: number }
  | { readonly type: "chunk"; readonly chunk: Chunk }
  | TaskEnd;

export type TextGenerationCommand = CommandOf<"TextGeneration">;

export interface TaskStreamOptions {
  readonly createdTimeoutMs?: number;
  readonly bufferMax?: number;
  readonly logger?: ApiLogger;
}

type Waiter = (result: IteratorResult<TaskUpdate, undefined>) => void;

const DONE: IteratorResult<TaskUpdate, undefined> = { done: true, value: undefined };

/**
 * Counts come from State (the runner's end report); a task ended by the master (cancel, failure)
 * may not have them yet, so tokens already streamed to the client are the floor.
 */
function usageOf(task: Task | null, tokensStreamed: number): TaskUsage {
  return { promptTokens: task?.promptTokens ?? 0, completionTokens: Math.max(task?.tokensGenerated ?? 0, tokensStreamed) };
}

function endFromTask(task: Task, tokensStreamed: number, endedBy: TaskEndedBy): TaskEnd {
  return {
    type: "end",
    status: task.status === "Complete" || task.status === "Cancelled" ? task.status : "Failed",
    finishReason: task.finishReason,
    failureCode: task.failureCode,
    failureReason: task.failureReason,
    usage: usageOf(task, tokensStreamed),
    endedBy,
  };
}

/**
 * Where a Pending task waits: 1 + the Pending tasks of its instance created before it (the worker
 * starts them oldest first), or null when it does not wait: its instance has a free task slot for it
 * (runnerTaskSlots: one on a single node, one per stage plus one on a pipeline), or it is not Pending.
 */
export function queuePositionOf(state: State, taskId: TaskId): number | null {
  const task = state.tasks[taskId];
  if (task === undefined || task.status !== "Pending" || task.instanceId === null) return null;
  let pendingAhead = 0;
  let running = 0;
  let seenSelf = false;
  // Object order is TaskCreated order (ids are not integer-like keys), as plan.ts relies on too.
  for (const other of Object.values(state.tasks)) {
    if (other.taskId === taskId) seenSelf = true;
    if (other.instanceId !== task.instanceId) continue;
    if (other.status === "Pending" && !seenSelf) pendingAhead++;
    else if (other.status === "Running") running++;
  }
  const slots = runnerTaskSlots(state.instances[task.instanceId]?.shards.length ?? 1);
  return pendingAhead + running < slots ? null : pendingAhead + 1;
}

/** Events that can move a task in its queue. */
const QUEUE_EVENT_TYPES: ReadonlySet<Event["type"]> = new Set(["TaskCreated", "TaskStatusUpdated", "TaskDeleted", "InstanceDeleted"]);

/** Consecutive chunks folded into one, for a consumer that fell TASK_STREAM_BUFFER_MAX behind. */
export function mergeChunks(earlier: Chunk, later: Chunk): Chunk {
  const logprobs = earlier.logprobs === null && later.logprobs === null ? null : [...(earlier.logprobs ?? []), ...(later.logprobs ?? [])];
  return { index: later.index, text: earlier.text + later.text, tokensGenerated: later.tokensGenerated, logprobs };
}

export class TaskStream implements AsyncIterableIterator<TaskUpdate, undefined> {
  readonly commandId: CommandId;
  private taskId: TaskId | null = null;
  private lastTask: Task | null = null;
  private readonly buffer: TaskUpdate[] = [];
  private waiter: Waiter | null = null;
  private nextChunkIndex = 0;
  private queuePosition: number | null = null;
  /** Highest token count carried by a chunk handed to the consumer. */
  private tokensStreamed = 0;
  private endQueued = false;
  private terminalSeen = false;
  private cancelSent = false;
  private finished = false;
  private unsubscribe: (() => void) | null = null;
  private createdTimer: NodeJS.Timeout | null = null;
  private readonly onSignalAbort = (): void => this.abort("client", "client disconnected");

  constructor(
    private readonly cluster: ClusterPort,
    private readonly command: TextGenerationCommand,
    private readonly signal: AbortSignal | null,
    private readonly options: Required<TaskStreamOptions>,
    private readonly onFinished: (stream: TaskStream) => void,
  ) {
    this.commandId = command.commandId;
  }

  /** Subscribe, then send: TaskCreated cannot arrive before we listen, even when delivered synchronously. */
  start(): void {
    this.unsubscribe = this.cluster.subscribe((event, state) => this.onEvent(event, state));
    this.signal?.addEventListener("abort", this.onSignalAbort, { once: true });
    this.createdTimer = setTimeout(() => this.onCreatedTimeout(), this.options.createdTimeoutMs);
    this.cluster.sendCommand(this.command);
    if (this.signal?.aborted === true) this.abort("client", "client disconnected");
  }

  get isFinished(): boolean {
    return this.finished;
  }

  /** The task as last seen in State (null until TaskCreated). */
  get task(): Task | null {
    return this.lastTask;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<TaskUpdate, undefined>> {
    const update = this.buffer.shift();
    if (update !== undefined) return Promise.resolve({ done: false, value: update });
    if (this.finished) return Promise.resolve(DONE);
    // One reader at a time: a second pending next() would strand the first.
    assert(this.waiter === null, "TaskStream.next() called while a previous next() is pending");
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** The consumer stopped (break, throw, or its client went away): cancel if needed, then finish. */
  return(): Promise<IteratorResult<TaskUpdate, undefined>> {
    this.buffer.length = 0;
    this.finish();
    this.wake();
    return Promise.resolve(DONE);
  }

  /**
   * POST /v1/cancel: ask the cluster to cancel but keep following the task, so the client still gets
   * the final "cancelled" chunk with usage. Idempotent.
   */
  requestCancel(): void {
    if (this.finished || this.terminalSeen) return;
    this.sendCancelOnce();
  }

  /** End the stream here (client gone, shutdown, timeout): the consumer gets one end update. */
  abort(endedBy: Exclude<TaskEndedBy, "cluster">, reason: string, failureCode: FailureCode | null = null): void {
    if (this.finished) return;
    // A vanished client reads nothing more; a shutdown still lets a live client see what was buffered.
    if (endedBy === "client") this.buffer.length = 0;
    const usage = usageOf(this.lastTask, this.tokensStreamed);
    const failed = endedBy === "timeout";
    this.pushEnd({
      type: "end",
      status: failed ? "Failed" : "Cancelled",
      finishReason: failed ? "error" : "cancelled",
      failureCode,
      failureReason: reason,
      usage,
      endedBy,
    });
    this.finish();
  }

  private onCreatedTimeout(): void {
    this.createdTimer = null;
    if (this.taskId !== null) return;
    this.abort("timeout", `the cluster did not accept the request within ${this.options.createdTimeoutMs} ms`, "internal");
  }

  private onEvent(indexed: IndexedEvent, state: State): void {
    if (this.finished) return;
    try {
      this.route(indexed.event, state);
    } catch (error) {
      // A listener must never throw into the StateView: log and end this stream only.
      this.options.logger.error({ err: error, commandId: this.commandId }, "task stream failed on an event");
      this.abort("timeout", "internal error while following the task", "internal");
    }
  }

  private route(event: Event, state: State): void {
    if (this.taskId === null) {
      if (event.type !== "TaskCreated" || event.task.commandId !== this.commandId) return;
      this.taskId = event.task.taskId;
      this.clearCreatedTimer();
      this.lastTask = state.tasks[event.task.taskId] ?? event.task;
      this.push({ type: "created", task: this.lastTask });
      this.checkTerminal(state);
      this.checkQueuePosition(state, this.taskId);
      return;
    }
    this.routeTaskEvent(event, state, this.taskId);
    this.checkTerminal(state);
    if (QUEUE_EVENT_TYPES.has(event.type)) this.checkQueuePosition(state, this.taskId);
  }

  private checkQueuePosition(state: State, taskId: TaskId): void {
    if (this.endQueued) return;
    const position = queuePositionOf(state, taskId);
    if (position === this.queuePosition) return;
    this.queuePosition = position;
    if (position !== null) this.push({ type: "queued", position });
  }

  private routeTaskEvent(event: Event, state: State, taskId: TaskId): void {
    switch (event.type) {
      case "ChunkGenerated":
        // At-least-once delivery upstream: a repeated chunk index is dropped, never shown twice.
        if (event.taskId !== taskId || event.chunk.index < this.nextChunkIndex) return;
        this.nextChunkIndex = event.chunk.index + 1;
        this.tokensStreamed = Math.max(this.tokensStreamed, event.chunk.tokensGenerated);
        this.push({ type: "chunk", chunk: event.chunk });
        return;
      case "TaskPrefillProgress":
        if (event.taskId !== taskId) return;
        this.push({ type: "prefill", processedTokens: event.processedTokens, totalTokens: event.totalTokens });
        return;
      case "RunnerStatusUpdated": {
        if (event.status.kind !== "Loading" || this.nextChunkIndex > 0) return;
        const runner = state.runners[event.runnerId];
        if (runner === undefined || runner.instanceId !== this.lastTask?.instanceId) return;
        this.push({ type: "loading", layersLoaded: event.status.layersLoaded, layerCount: event.status.layerCount });
        return;
      }
      default:
        return;
    }
  }

  /** After every event: a terminal status (from any cause, cascades included) or a vanished task ends us. */
  private checkTerminal(state: State): void {
    if (this.taskId === null || this.endQueued) return;
    const task = state.tasks[this.taskId];
    if (task === undefined) {
      this.terminalSeen = true;
      this.abortDeleted();
      return;
    }
    this.lastTask = task;
    if (!isTaskTerminal(task.status)) return;
    this.terminalSeen = true;
    this.pushEnd(endFromTask(task, this.tokensStreamed, "cluster"));
    this.finish();
  }

  private abortDeleted(): void {
    const task = this.lastTask;
    this.pushEnd({
      type: "end",
      status: "Failed",
      finishReason: "error",
      failureCode: "internal",
      failureReason: "the task was deleted before it ended",
      usage: usageOf(task, this.tokensStreamed),
      endedBy: "cluster",
    });
    this.finish();
  }

  private push(update: TaskUpdate): void {
    if (this.endQueued) return;
    const tail = this.buffer[this.buffer.length - 1];
    if ((update.type === "prefill" || update.type === "loading" || update.type === "queued") && tail?.type === update.type) {
      this.buffer[this.buffer.length - 1] = update;
    } else if (this.buffer.length >= this.options.bufferMax) {
      // Bounded: progress is dropped, chunks fold into the tail chunk; text is never lost.
      if (update.type === "chunk" && tail?.type === "chunk") {
        this.buffer[this.buffer.length - 1] = { type: "chunk", chunk: mergeChunks(tail.chunk, update.chunk) };
      } else if (update.type === "chunk" || update.type === "created") {
        this.buffer.push(update);
      }
    } else {
      this.buffer.push(update);
    }
    this.wake();
  }

  private pushEnd(end: TaskEnd): void {
    if (this.endQueued) return;
    this.buffer.push(end);
    this.endQueued = true;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter === null) return;
    this.waiter = null;
    const update = this.buffer.shift();
    waiter(update === undefined ? DONE : { done: false, value: update });
  }

  private sendCancelOnce(): void {
    if (this.cancelSent) return;
    this.cancelSent = true;
    this.cluster.sendCommand({ type: "TaskCancelled", cancelledCommandId: this.commandId });
  }

  /** Exactly once: stop listening, cancel a task that has not ended, then always TaskFinished. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.clearCreatedTimer();
    this.signal?.removeEventListener("abort", this.onSignalAbort);
    try {
      if (!this.terminalSeen) this.sendCancelOnce();
    } finally {
      this.cluster.sendCommand({ type: "TaskFinished", finishedCommandId: this.commandId });
      this.onFinished(this);
      this.wake();
    }
  }

  private clearCreatedTimer(): void {
    if (this.createdTimer === null) return;
    clearTimeout(this.createdTimer);
    this.createdTimer = null;
  }
}

/** The live TaskStreams of one API, bounded by TASKS_MAX, so shutdown and POST /v1/cancel reach them. */
export class TaskStreams {
  private readonly live = new Map<CommandId, TaskStream>();
  private readonly options: Required<TaskStreamOptions>;

  constructor(
    private readonly cluster: ClusterPort,
    options: TaskStreamOptions = {},
  ) {
    this.options = {
      createdTimeoutMs: options.createdTimeoutMs ?? TASK_CREATED_TIMEOUT_MS,
      bufferMax: options.bufferMax ?? TASK_STREAM_BUFFER_MAX,
      logger: options.logger ?? silentLogger,
    };
  }

  get liveCount(): number {
    return this.live.size;
  }

  /** Sends the command and follows its task. `signal` aborting means the client is gone. */
  open(command: TextGenerationCommand, signal: AbortSignal | null): TaskStream {
    if (this.live.size >= TASKS_MAX) {
      throw failureToApiError("too_many_tasks", `this node already follows ${TASKS_MAX} requests`);
    }
    const stream = new TaskStream(this.cluster, command, signal, this.options, (s) => this.live.delete(s.commandId));
    this.live.set(command.commandId, stream);
    stream.start();
    return stream;
  }

  /**
   * POST /v1/cancel. A stream of this node keeps following its task to the "cancelled" end; a task
   * whose client is on another node is cancelled directly (TaskCancelled is idempotent upstream).
   */
  cancelByCommandId(commandId: CommandId): void {
    const stream = this.live.get(commandId);
    if (stream !== undefined) {
      stream.requestCancel();
      return;
    }
    this.cluster.sendCommand({ type: "TaskCancelled", cancelledCommandId: commandId });
  }

  isLive(commandId: CommandId): boolean {
    return this.live.has(commandId);
  }

  /** Server shutdown: every live stream cancels its task and finishes. */
  cancelAll(reason: string): void {
    for (const stream of [...this.live.values()]) stream.abort("shutdown", reason);
  }
}
