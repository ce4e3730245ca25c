// What every generating adapter (chat completions, responses, Claude messages, Ollama) does the same
// way: resolve and place the model, open the task through task-stream.ts (the only place that
// sends TaskCancelled / TaskFinished), wait for the update that decides the HTTP status, read on
// with keep-alives, and collect a whole answer for non-streaming requests.
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { CommandId, ModelId } from "../shared/ids.ts";
import { newCommandId } from "../shared/ids.ts";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../shared/limits.ts";
import type { State } from "../shared/state.ts";
import { instancesOfModel, tasksOfInstance } from "../shared/state.ts";
import type { Chunk, GenerationParams } from "../shared/types.ts";
import { isTaskTerminal } from "../shared/types.ts";
import { placementInfoOfCard } from "../models/model-card.ts";
import type { ApiDeps } from "./deps.ts";
import { ApiError, failureToApiError, RETRY_AFTER_SECONDS } from "./errors.ts";
import type { TaskEnd, TaskStream, TaskUpdate } from "./task-stream.ts";

/** 499 is nginx's "client closed request": nobody reads it, but logs should not say 200. */
export const STATUS_CLIENT_CLOSED = 499 as ContentfulStatusCode;

/**
 * The master admits a task to the instance of the model with the fewest live tasks and refuses it
 * when that one's queue is full; the same rule here answers 429 without a round trip.
 */
export function isQueueFull(state: State, modelId: string, pendingMax = TASKS_PENDING_PER_INSTANCE_MAX): boolean {
  let best: { liveCount: number; pendingCount: number } | null = null;
  for (const instance of instancesOfModel(state, modelId)) {
    const tasks = tasksOfInstance(state, instance.instanceId);
    const liveCount = tasks.filter((t) => !isTaskTerminal(t.status)).length;
    const pendingCount = tasks.filter((t) => t.status === "Pending").length;
    if (best === null || liveCount < best.liveCount) best = { liveCount, pendingCount };
  }
  return best !== null && best.pendingCount >= pendingMax;
}

/** The error a stream's end becomes, or null when the end is a normal answer (complete or cancelled by id). */
export function endToError(end: TaskEnd): ApiError | null {
  if (end.endedBy === "client") return clientGone();
  if (end.endedBy === "shutdown") {
    return new ApiError(503, { message: `server is shutting down: ${end.failureReason ?? "request cancelled"}`, code: "server_shutdown" }, { "Retry-After": String(RETRY_AFTER_SECONDS) });
  }
  if (end.status === "Failed") return failureToApiError(end.failureCode, end.failureReason);
  return null;
}

export function clientGone(): ApiError {
  return new ApiError(STATUS_CLIENT_CLOSED, { message: "client closed the request", code: "client_closed" });
}

/** 404 for a model nobody knows; auto-placement when it has no instance; 429 when its queues are full. */
export async function prepareModel(deps: ApiDeps, requested: string, signal: AbortSignal): Promise<ModelId> {
  const card = deps.models.get(requested);
  const running = instancesOfModel(deps.cluster.state, requested);
  const modelId = card?.modelId ?? running[0]?.modelId;
  if (modelId === undefined) {
    throw new ApiError(404, { message: `model ${JSON.stringify(requested)} does not exist`, type: "invalid_request_error", param: "model", code: "model_not_found" });
  }
  if (running.length === 0 && card !== undefined) {
    await deps.placer.ensureInstance(placementInfoOfCard(card), signal);
    if (signal.aborted) throw clientGone();
  }
  if (isQueueFull(deps.cluster.state, modelId)) {
    throw failureToApiError("queue_full", `every instance of ${modelId} already has ${TASKS_PENDING_PER_INSTANCE_MAX} requests waiting`);
  }
  return modelId;
}

/**
 * Reads up to the first update that decides the HTTP status: past `created` (unless the task was
 * created already terminal), so a queue_full / no_instance failure is a real 429 / 503.
 */
export async function firstDecisiveUpdate(stream: TaskStream): Promise<TaskUpdate> {
  let result = await stream.next();
  if (!result.done && result.value.type === "created" && isTaskTerminal(result.value.task.status)) result = await stream.next();
  if (result.done) throw new ApiError(500, { message: "task stream ended without an outcome", code: "internal" });
  return result.value;
}

/**
 * An answer longer than the model's whole context can never be produced: refused before anything is
 * placed or queued, naming both numbers. (The prompt's length needs the tokenizer; the engine
 * refuses a prompt that does not fit with a bad_request.)
 */
export function contextOverflow(modelId: string, contextLength: number, maxTokens: number | null): ApiError | null {
  if (maxTokens === null || maxTokens <= contextLength) return null;
  return new ApiError(400, {
    message: `max_tokens is ${maxTokens}, but model ${modelId} is served with a context of ${contextLength} tokens (prompt and answer together); ask for at most ${contextLength}`,
    param: "max_tokens",
    code: "context_length_exceeded",
  });
}

export interface StartedGeneration {
  readonly commandId: CommandId;
  readonly modelId: ModelId;
  readonly stream: TaskStream;
  /** The update that decided the HTTP status; not yet handed to the client. */
  readonly first: TaskUpdate;
}

/**
 * Places the model if needed, opens the task and waits for the update that decides the status.
 * A failure here is thrown (the adapter's error shape, the right status) and the stream is closed.
 * `signal` is the request's: node-server aborts it when the socket closes, for JSON and streams alike.
 */
export async function startGeneration(deps: ApiDeps, model: string, params: GenerationParams, signal: AbortSignal): Promise<StartedGeneration> {
  const card = deps.models.get(model);
  const overflow = card === undefined ? null : contextOverflow(card.modelId, deps.contextSize ?? card.contextLength, params.maxTokens);
  if (overflow !== null) throw overflow;
  const modelId = await prepareModel(deps, model, signal);
  const commandId = newCommandId();
  const stream = deps.streams.open({ type: "TextGeneration", commandId, modelId, originNodeId: deps.cluster.nodeId, params }, signal);
  try {
    const first = await firstDecisiveUpdate(stream);
    if (first.type === "end") {
      const error = endToError(first);
      if (error !== null) throw error;
    }
    return { commandId, modelId, stream, first };
  } catch (error) {
    await stream.return();
    throw error;
  }
}

type LogprobEntry = NonNullable<Chunk["logprobs"]>[number];

export interface CollectedAnswer {
  readonly text: string;
  /** null when the runner sent none (logprobs were not asked for). */
  readonly logprobs: readonly LogprobEntry[] | null;
  readonly end: TaskEnd;
}

/** A non-streaming request: every chunk up to the end; a failed end is thrown. Always closes the stream. */
export async function collectAnswer(stream: TaskStream, first: TaskUpdate): Promise<CollectedAnswer> {
  let text = "";
  const logprobs: LogprobEntry[] = [];
  let sawLogprobs = false;
  try {
    let update: TaskUpdate = first;
    for (;;) {
      if (update.type === "chunk") {
        text += update.chunk.text;
        if (update.chunk.logprobs !== null) {
          sawLogprobs = true;
          logprobs.push(...update.chunk.logprobs);
        }
      } else if (update.type === "end") {
        const error = endToError(update);
        if (error !== null) throw error;
        return { text, logprobs: sawLogprobs ? logprobs : null, end: update };
      }
      const result = await stream.next();
      if (result.done) throw new ApiError(500, { message: "task stream ended without an outcome", code: "internal" });
      update = result.value;
    }
  } finally {
    await stream.return();
  }
}

/**
 * The next update; while none arrives, `onIdle` every keepAliveMs. Mostly that is the wait for the
 * first token (queue, loading, prefill), but a pipeline stall mid-answer must not let an
 * idle-timeout proxy cut the stream either.
 */
export async function nextWithKeepAlive(stream: TaskStream, keepAliveMs: number, onIdle: () => Promise<void>): Promise<IteratorResult<TaskUpdate, undefined>> {
  const pending = stream.next();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<"tick">((resolve) => {
      timer = setTimeout(() => resolve("tick"), keepAliveMs);
    });
    const result = await Promise.race([pending, tick]);
    clearTimeout(timer);
    if (result !== "tick") return result;
    await onIdle();
  }
}

/** Where a streaming adapter writes; each turns task updates into its own wire events. */
export interface UpdateSink {
  /** Loading / prefill progress as a line for people (SSE writes a comment; NDJSON drops it). */
  progress(note: string): Promise<void>;
  chunk(chunk: Chunk): Promise<void>;
  /** The last update; a client that went away (end.endedBy "client") gets nothing more. */
  end(end: TaskEnd): Promise<void>;
  /** Nothing arrived for keepAliveMs. */
  idle(): Promise<void>;
  /** A bug while streaming: tell the client in the API's error shape. */
  failed(): Promise<void>;
}

function progressNote(deps: ApiDeps, update: TaskUpdate): string | null {
  switch (update.type) {
    case "created":
      for (const runner of Object.values(deps.cluster.state.runners)) {
        if (runner.instanceId === update.task.instanceId && runner.status.kind === "Loading") {
          return `loading ${runner.status.layersLoaded}/${runner.status.layerCount} layers`;
        }
      }
      return null;
    case "loading":
      return `loading ${update.layersLoaded}/${update.layerCount} layers`;
    case "prefill":
      return `prefill ${update.processedTokens}/${update.totalTokens} tokens`;
    case "queued":
      return `queue position ${update.position}`;
    default:
      return null;
  }
}

/**
 * Feeds a started generation's updates to a sink until the end, then closes the stream (which
 * cancels the task if it has not ended). The caller registers its transport's abort first.
 */
export async function pumpUpdates(deps: ApiDeps, stream: TaskStream, first: TaskUpdate, sink: UpdateSink): Promise<void> {
  try {
    let result: IteratorResult<TaskUpdate, undefined> = { done: false, value: first };
    while (!result.done) {
      const update = result.value;
      if (update.type === "chunk") await sink.chunk(update.chunk);
      else if (update.type === "end") {
        if (update.endedBy !== "client") await sink.end(update);
        return;
      } else {
        const note = progressNote(deps, update);
        if (note !== null) await sink.progress(note);
      }
      result = await nextWithKeepAlive(stream, deps.keepAliveMs, () => sink.idle());
    }
  } catch (error) {
    deps.logger.error({ err: error, commandId: stream.commandId }, "streaming an answer failed");
    await sink.failed();
  } finally {
    await stream.return();
  }
}
