// OpenAI adapter: POST /v1/chat/completions (SSE and JSON) and GET /v1/models. Everything about the
// task's life (cancel on disconnect, TaskFinished) lives in task-stream.ts; this file only turns
// task updates into OpenAI's wire format.
import { Hono } from "hono";
import type { SSEStreamingApi } from "hono/streaming";
import { streamSSE } from "hono/streaming";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ModelId } from "../shared/ids.ts";
import { newCommandId } from "../shared/ids.ts";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../shared/limits.ts";
import type { State } from "../shared/state.ts";
import { instancesOfModel, tasksOfInstance } from "../shared/state.ts";
import type { Chunk, Task } from "../shared/types.ts";
import { isTaskTerminal } from "../shared/types.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import { ApiError, failureToApiError, RETRY_AFTER_SECONDS } from "./errors.ts";
import { jsonBody } from "./middleware/json-body.ts";
import type { CompletionIdentity } from "./openai-format.ts";
import {
  completionJson,
  contentChunk,
  finalChunk,
  parseChatCompletionRequest,
  roleChunk,
  toGenerationParams,
} from "./openai-format.ts";
import type { TaskEnd, TaskStream, TaskUpdate } from "./task-stream.ts";

/** 499 is nginx's "client closed request": nobody reads it, but logs should not say 200. */
const STATUS_CLIENT_CLOSED = 499 as ContentfulStatusCode;

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
  if (end.endedBy === "client") return new ApiError(STATUS_CLIENT_CLOSED, { message: "client closed the request", code: "client_closed" });
  if (end.endedBy === "shutdown") {
    return new ApiError(503, { message: `server is shutting down: ${end.failureReason ?? "request cancelled"}`, code: "server_shutdown" }, { "Retry-After": String(RETRY_AFTER_SECONDS) });
  }
  if (end.status === "Failed") return failureToApiError(end.failureCode, end.failureReason);
  return null;
}

function clientGone(): ApiError {
  return new ApiError(STATUS_CLIENT_CLOSED, { message: "client closed the request", code: "client_closed" });
}

/** 404 for a model nobody knows; auto-placement when it has no instance; 429 when its queues are full. */
async function prepareModel(deps: ApiDeps, requested: string, signal: AbortSignal): Promise<ModelId> {
  const card = deps.models.get(requested);
  const running = instancesOfModel(deps.cluster.state, requested);
  const modelId = card?.modelId ?? running[0]?.modelId;
  if (modelId === undefined) {
    throw new ApiError(404, { message: `model ${JSON.stringify(requested)} does not exist`, type: "invalid_request_error", param: "model", code: "model_not_found" });
  }
  if (running.length === 0 && card !== undefined) {
    await deps.placer.ensureInstance({ modelId, layerCount: card.layerCount, sizeBytes: card.sizeBytes }, signal);
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
async function firstDecisiveUpdate(stream: TaskStream): Promise<TaskUpdate> {
  let result = await stream.next();
  if (!result.done && result.value.type === "created" && isTaskTerminal(result.value.task.status)) result = await stream.next();
  if (result.done) throw new ApiError(500, { message: "task stream ended without an outcome", code: "internal" });
  return result.value;
}

export function openAiRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();

  router.get("/models", (c) => c.json({ object: "list", data: servableModels(deps) }));

  router.post("/chat/completions", jsonBody(), async (c) => {
    const request = parseChatCompletionRequest(c.var.jsonBody);
    const params = toGenerationParams(request);
    // node-server aborts this signal when the socket closes, for JSON and SSE responses alike.
    const signal = c.req.raw.signal;
    const modelId = await prepareModel(deps, request.model, signal);
    const commandId = newCommandId();
    const who: CompletionIdentity = { id: commandId, model: request.model, createdSeconds: Math.floor(deps.clock.nowMs() / 1000) };
    const stream = deps.streams.open({ type: "TextGeneration", commandId, modelId, originNodeId: deps.cluster.nodeId, params }, signal);
    let first: TaskUpdate;
    try {
      first = await firstDecisiveUpdate(stream);
      if (first.type === "end") {
        const error = endToError(first);
        if (error !== null) throw error;
      }
    } catch (error) {
      await stream.return();
      throw error;
    }
    deps.logger.debug({ requestId: c.var.requestId, commandId, modelId, stream: request.stream === true }, "chat completion started");
    if (request.stream === true) {
      return streamSSE(c, (sse) => pumpSse(deps, sse, stream, first, who, params.logprobs));
    }
    return c.json(await collectCompletion(stream, first, who));
  });

  return router;
}

function servableModels(deps: ApiDeps): Record<string, unknown>[] {
  const seen = new Set<string>();
  const data: Record<string, unknown>[] = [];
  for (const card of deps.models.list()) {
    if (seen.has(card.modelId)) continue;
    seen.add(card.modelId);
    data.push({ id: card.modelId, object: "model", created: 0, owned_by: "skein", name: card.name, context_length: card.contextLength });
  }
  for (const instance of Object.values(deps.cluster.state.instances)) {
    if (seen.has(instance.modelId)) continue;
    seen.add(instance.modelId);
    data.push({ id: instance.modelId, object: "model", created: 0, owned_by: "skein" });
  }
  return data;
}

async function collectCompletion(stream: TaskStream, first: TaskUpdate, who: CompletionIdentity): Promise<Record<string, unknown>> {
  let text = "";
  const logprobs: NonNullable<Chunk["logprobs"]> = [];
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
        return completionJson(who, text, sawLogprobs ? logprobs : null, update);
      }
      const result = await stream.next();
      if (result.done) throw new ApiError(500, { message: "task stream ended without an outcome", code: "internal" });
      update = result.value;
    }
  } finally {
    await stream.return();
  }
}

const KEEP_ALIVE_COMMENT = ": keep-alive\n\n";

/**
 * The next update; while none arrives, a keep-alive comment every keepAliveMs. Mostly that is the
 * wait for the first token (queue, loading, prefill), but a pipeline stall mid-answer must not let
 * an idle-timeout proxy cut the stream either.
 */
async function nextWithKeepAlive(stream: TaskStream, sse: SSEStreamingApi, keepAliveMs: number): Promise<IteratorResult<TaskUpdate, undefined>> {
  const pending = stream.next();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<"tick">((resolve) => {
      timer = setTimeout(() => resolve("tick"), keepAliveMs);
    });
    const result = await Promise.race([pending, tick]);
    clearTimeout(timer);
    if (result !== "tick") return result;
    await sse.write(KEEP_ALIVE_COMMENT);
  }
}

function loadingComment(state: State, task: Task): string | null {
  for (const runner of Object.values(state.runners)) {
    if (runner.instanceId === task.instanceId && runner.status.kind === "Loading") {
      return `: loading ${runner.status.layersLoaded}/${runner.status.layerCount} layers\n\n`;
    }
  }
  return null;
}

async function writeEnd(sse: SSEStreamingApi, who: CompletionIdentity, end: TaskEnd): Promise<void> {
  if (end.endedBy === "client") return;
  const error = endToError(end);
  if (error !== null) {
    await sse.writeSSE({ data: JSON.stringify({ error: error.body }) });
    return;
  }
  await sse.writeSSE({ data: JSON.stringify(finalChunk(who, end)) });
  await sse.writeSSE({ data: "[DONE]" });
}

async function pumpSse(
  deps: ApiDeps,
  sse: SSEStreamingApi,
  stream: TaskStream,
  first: TaskUpdate,
  who: CompletionIdentity,
  withLogprobs: boolean,
): Promise<void> {
  // Registered before the first write: Hono's writes to a gone client are silent no-ops.
  sse.onAbort(() => stream.abort("client", "client disconnected"));
  try {
    await sse.writeSSE({ data: JSON.stringify(roleChunk(who)) });
    let result: IteratorResult<TaskUpdate, undefined> = { done: false, value: first };
    for (;;) {
      if (result.done) return;
      const update = result.value;
      switch (update.type) {
        case "created": {
          const comment = loadingComment(deps.cluster.state, update.task);
          if (comment !== null) await sse.write(comment);
          break;
        }
        case "loading":
          await sse.write(`: loading ${update.layersLoaded}/${update.layerCount} layers\n\n`);
          break;
        case "prefill":
          await sse.write(`: prefill ${update.processedTokens}/${update.totalTokens} tokens\n\n`);
          break;
        case "chunk":
          await sse.writeSSE({ data: JSON.stringify(contentChunk(who, update.chunk, withLogprobs)) });
          break;
        case "end":
          await writeEnd(sse, who, update);
          return;
      }
      result = await nextWithKeepAlive(stream, sse, deps.keepAliveMs);
    }
  } catch (error) {
    deps.logger.error({ err: error, commandId: stream.commandId }, "chat completion stream failed");
    await sse.writeSSE({ data: JSON.stringify({ error: { message: "internal error while streaming", type: "server_error", param: null, code: "internal" } }) });
  } finally {
    await stream.return();
  }
}
