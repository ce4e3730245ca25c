// Cluster endpoints: cancel by id, State, the event stream, node id and instance management.
import { Hono } from "hono";
import type { SSEStreamingApi } from "hono/streaming";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { previewPlacements } from "../master/placement.ts";
import { ID_LENGTH_MAX, newCommandId, parseCommandId, parseInstanceId } from "../shared/ids.ts";
import { EVENT_LOG_PAGE_MAX } from "../shared/limits.ts";
import { findTaskByCommandId, stateToJson } from "../shared/state.ts";
import type { IndexedEvent, ModelPlacementInfo } from "../shared/types.ts";
import { ShardingSchema } from "../shared/types.ts";
import { placementInfoOfCard } from "../models/model-card.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import { ApiError } from "./errors.ts";
import { placeInstance, placementFailed, placementTimedOutReason, whyUnplaceable } from "./instances.ts";
import { jsonBody } from "./middleware/json-body.ts";
import { invalidRequest } from "./openai-format.ts";

/** Live events queued for one GET /events client; a client further behind must reconnect with since. */
export const EVENTS_STREAM_BUFFER_MAX = EVENT_LOG_PAGE_MAX;
/** Nodes an instance may be asked to span; far above any real cluster, it only bounds the input. */
export const INSTANCE_NODES_MAX = 256;

const PlaceInstanceBodySchema = z.object({
  model: z.string().min(1).max(ID_LENGTH_MAX),
  min_nodes: z.number().int().min(1).max(INSTANCE_NODES_MAX).nullish(),
  sharding: ShardingSchema.nullish(),
});

/** `since` of GET /events: a non-negative integer, or absent (live events only). */
export function parseSince(raw: string | undefined, liveIdx: number): number {
  if (raw === undefined) return liveIdx;
  if (!/^\d{1,15}$/.test(raw)) {
    throw new ApiError(400, { message: `since must be a non-negative integer event index, got ${JSON.stringify(raw.slice(0, 40))}`, param: "since", code: "invalid_since" });
  }
  return Number(raw);
}

function unknownModel(model: string): ApiError {
  return new ApiError(404, { message: `model ${JSON.stringify(model)} does not exist`, param: "model", code: "model_not_found" });
}

function placementInfoOf(deps: ApiDeps, model: string): ModelPlacementInfo {
  const card = deps.models.get(model);
  if (card === undefined) throw unknownModel(model);
  return placementInfoOfCard(card);
}

export function clusterRouter(deps: ApiDeps): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();
  const { cluster } = deps;

  router.post("/v1/cancel/:id", (c) => {
    const raw = c.req.param("id");
    const commandId = parseCommandId(raw);
    if (commandId === null) throw new ApiError(400, { message: `malformed completion id ${JSON.stringify(raw.slice(0, ID_LENGTH_MAX))}`, param: "id", code: "invalid_id" });
    const task = findTaskByCommandId(cluster.state, commandId);
    // A request of this node whose TaskCreated is still in flight is cancellable too.
    if (task === undefined && !deps.streams.isLive(commandId)) {
      throw new ApiError(404, { message: `no task with id ${commandId}`, param: "id", code: "task_not_found" });
    }
    const status = task?.status ?? "Pending";
    deps.streams.cancelByCommandId(commandId);
    return c.json({ id: commandId, object: "chat.completion.cancellation", cancelled: true, status });
  });

  router.get("/state", (c) => c.json(stateToJson(cluster.state)));

  router.get("/node_id", (c) => c.json({ node_id: cluster.nodeId }));

  router.get("/events", (c) => {
    const since = parseSince(c.req.query("since"), cluster.state.lastIdx + 1);
    // Subscribe before reading history: an event applied in between is in one or the other.
    const live = new LiveEventQueue(EVENTS_STREAM_BUFFER_MAX);
    const unsubscribe = cluster.subscribe((event) => live.push(event));
    const replay = cluster.eventsSince(since);
    if (replay === null) {
      unsubscribe();
      throw new ApiError(410, {
        message: `events before idx ${since} are no longer held in memory; read GET /state and reconnect with since=last_idx+1`,
        param: "since",
        code: "events_gone",
      });
    }
    return streamSSE(c, async (sse) => {
      const stop = new AbortController();
      sse.onAbort(() => stop.abort());
      const onShutdown = (): void => stop.abort();
      deps.shutdownSignal.addEventListener("abort", onShutdown, { once: true });
      if (deps.shutdownSignal.aborted) stop.abort();
      try {
        await pumpEvents(sse, replay, live, since, stop.signal, deps.keepAliveMs);
      } finally {
        unsubscribe();
        deps.shutdownSignal.removeEventListener("abort", onShutdown);
        live.close();
      }
    });
  });

  router.post("/instance", jsonBody(), async (c) => {
    const parsed = PlaceInstanceBodySchema.safeParse(c.var.jsonBody);
    if (!parsed.success) throw invalidRequest(parsed.error);
    const model = placementInfoOf(deps, parsed.data.model);
    const minNodes = parsed.data.min_nodes ?? 1;
    const why = whyUnplaceable(cluster.state, model, minNodes);
    if (why !== null) throw placementFailed(model.modelId, why);
    const request = { model, minNodes, sharding: parsed.data.sharding ?? "pipeline" } as const;
    const instanceId = await placeInstance(cluster, request, deps.placementTimeoutMs, c.req.raw.signal);
    if (instanceId === undefined) throw placementFailed(model.modelId, placementTimedOutReason(deps.placementTimeoutMs));
    return c.json({ instance_id: instanceId });
  });

  // Registered before /instance/:id so "previews" is never read as an instance id.
  router.get("/instance/previews", (c) => {
    const model = c.req.query("model");
    if (model === undefined || model === "") throw new ApiError(400, { message: "query parameter model is required", param: "model", code: "invalid_request" });
    const info = placementInfoOf(deps, model);
    return c.json({ model: info.modelId, previews: previewPlacements(cluster.state, info) });
  });

  router.delete("/instance/:id", (c) => {
    const raw = c.req.param("id");
    const instanceId = parseInstanceId(raw);
    if (instanceId === null) throw new ApiError(400, { message: `malformed instance id ${JSON.stringify(raw.slice(0, ID_LENGTH_MAX))}`, param: "id", code: "invalid_id" });
    if (cluster.state.instances[instanceId] === undefined) {
      throw new ApiError(404, { message: `no instance with id ${instanceId}`, param: "id", code: "instance_not_found" });
    }
    cluster.sendCommand({ type: "DeleteInstance", commandId: newCommandId(), instanceId });
    return c.json({ instance_id: instanceId, deleted: true });
  });

  return router;
}

/** Bounded queue between the StateView listener and one SSE writer. */
class LiveEventQueue {
  private readonly events: IndexedEvent[] = [];
  private waiter: (() => void) | null = null;
  overflowed = false;
  closed = false;

  constructor(private readonly max: number) {}

  push(event: IndexedEvent): void {
    if (this.closed || this.overflowed) return;
    if (this.events.length >= this.max) this.overflowed = true;
    else this.events.push(event);
    this.wake();
  }

  shift(): IndexedEvent | undefined {
    return this.events.shift();
  }

  /** Resolves on the next push, close, or after timeoutMs ("tick"). */
  wait(timeoutMs: number, signal: AbortSignal): Promise<"event" | "tick"> {
    if (this.events.length > 0 || this.overflowed || this.closed || signal.aborted) return Promise.resolve("event");
    return new Promise((resolve) => {
      const onAbort = (): void => finish("event");
      const timer = setTimeout(() => finish("tick"), timeoutMs);
      const finish = (why: "event" | "tick"): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.waiter = null;
        resolve(why);
      };
      this.waiter = () => finish("event");
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  close(): void {
    this.closed = true;
    this.events.length = 0;
    this.wake();
  }

  private wake(): void {
    this.waiter?.();
  }
}

async function writeEvent(sse: SSEStreamingApi, event: IndexedEvent): Promise<void> {
  await sse.writeSSE({ id: String(event.idx), data: JSON.stringify(event) });
}

async function pumpEvents(
  sse: SSEStreamingApi,
  replay: readonly IndexedEvent[],
  live: LiveEventQueue,
  since: number,
  signal: AbortSignal,
  keepAliveMs: number,
): Promise<void> {
  let nextIdx = since;
  for (const event of replay) {
    if (signal.aborted) return;
    if (event.idx < nextIdx) continue;
    await writeEvent(sse, event);
    nextIdx = event.idx + 1;
  }
  while (!signal.aborted) {
    for (let event = live.shift(); event !== undefined && !signal.aborted; event = live.shift()) {
      if (event.idx < nextIdx) continue; // already sent from the replay
      await writeEvent(sse, event);
      nextIdx = event.idx + 1;
    }
    if (live.overflowed) {
      const message = `this client fell more than ${EVENTS_STREAM_BUFFER_MAX} events behind; reconnect with since=${nextIdx}`;
      await sse.writeSSE({ event: "error", data: JSON.stringify({ error: { message, type: "server_error", param: "since", code: "events_overflow" } }) });
      return;
    }
    if ((await live.wait(keepAliveMs, signal)) === "tick") await sse.write(": keep-alive\n\n");
  }
}
