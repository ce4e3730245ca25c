// Placing an instance from the API: send PlaceInstance and watch State for the instance the master
// creates. The master says nothing when a placement is impossible, so the wait is bounded and its
// end is the 503.
import type { ClusterPort, StateView } from "../node/cluster-port.ts";
import type { InstanceId, ModelId } from "../shared/ids.ts";
import { newCommandId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import { instancesOfModel } from "../shared/state.ts";
import type { ModelPlacementInfo, Sharding } from "../shared/types.ts";
import { previewPlacements } from "../master/placement.ts";
import { ApiError, RETRY_AFTER_SECONDS } from "./errors.ts";

/** How long POST /instance and a request's auto-placement wait for InstanceCreated. */
export const PLACEMENT_TIMEOUT_MS = 10_000;

/**
 * Resolves with the first non-undefined `pick(state)`, checked now and after every event; undefined
 * when timeoutMs passes or `signal` aborts. Subscribes synchronously, so a command sent right after
 * the call cannot be answered unseen.
 */
export function waitForState<T>(
  view: StateView,
  pick: (state: State) => T | undefined,
  timeoutMs: number,
  signal: AbortSignal | null = null,
): Promise<T | undefined> {
  return new Promise((resolve) => {
    const now = pick(view.state);
    if (now !== undefined) {
      resolve(now);
      return;
    }
    let unsubscribe: () => void = () => {};
    const done = (value: T | undefined): void => {
      clearTimeout(timer);
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
      resolve(value);
    };
    const onAbort = (): void => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    unsubscribe = view.subscribe((_event, state) => {
      const value = pick(state);
      if (value !== undefined) done(value);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted === true) done(undefined);
  });
}

export interface PlaceRequest {
  readonly model: ModelPlacementInfo;
  readonly minNodes: number;
  readonly sharding: Sharding;
}

export function placementFailed(modelId: string, reason: string): ApiError {
  return new ApiError(503, { message: `could not place model ${modelId}: ${reason}`, code: "no_instance" }, { "Retry-After": String(RETRY_AFTER_SECONDS) });
}

export const placementTimedOutReason = (timeoutMs: number): string => `no instance was created within ${timeoutMs} ms`;

/**
 * Why the model cannot be placed on at least minNodes nodes now, or null when it can. The master
 * answers an impossible PlaceInstance with silence, so asking the same pure placement first turns
 * a timeout into an immediate, explained 503.
 */
export function whyUnplaceable(state: State, model: ModelPlacementInfo, minNodes: number): string | null {
  const previews = previewPlacements(state, model);
  if (previews.some((p) => p.ok && p.nodeCount >= minNodes)) return null;
  const reasons = previews.filter((p) => p.nodeCount >= minNodes).flatMap((p) => (p.ok ? [] : [p.reason]));
  return reasons[reasons.length - 1] ?? `the cluster has fewer than ${minNodes} node(s)`;
}

/** Sends PlaceInstance and resolves with the id of the instance it created (matched by command id). */
export async function placeInstance(
  cluster: ClusterPort,
  request: PlaceRequest,
  timeoutMs: number,
  signal: AbortSignal | null = null,
): Promise<InstanceId | undefined> {
  const commandId = newCommandId();
  const pickMine = (state: State): InstanceId | undefined =>
    instancesOfModel(state, request.model.modelId).find((i) => i.placedByCommandId === commandId)?.instanceId;
  const created = waitForState(cluster, pickMine, timeoutMs, signal);
  cluster.sendCommand({ type: "PlaceInstance", commandId, model: request.model, minNodes: request.minNodes, sharding: request.sharding });
  return created;
}

/**
 * Auto-placement for requests: concurrent requests for a model that has no instance share one
 * PlaceInstance, instead of asking for one instance each.
 */
export class AutoPlacer {
  private readonly inFlight = new Map<ModelId, Promise<InstanceId | undefined>>();

  constructor(
    private readonly cluster: ClusterPort,
    private readonly timeoutMs: number,
  ) {}

  /** Resolves when the model has an instance; throws the 503 when none appeared in time. */
  async ensureInstance(model: ModelPlacementInfo, signal: AbortSignal | null): Promise<void> {
    if (instancesOfModel(this.cluster.state, model.modelId).length > 0) return;
    let pending = this.inFlight.get(model.modelId);
    if (pending === undefined) {
      const why = whyUnplaceable(this.cluster.state, model, 1);
      if (why !== null) throw placementFailed(model.modelId, why);
      pending = placeInstance(this.cluster, { model, minNodes: 1, sharding: "pipeline" }, this.timeoutMs);
      this.inFlight.set(model.modelId, pending);
      void pending.finally(() => this.inFlight.delete(model.modelId));
    }
    const instanceId = await raceAbort(pending, signal);
    if (instanceId === undefined && !(signal?.aborted ?? false)) throw placementFailed(model.modelId, placementTimedOutReason(this.timeoutMs));
  }
}

function raceAbort<T>(promise: Promise<T | undefined>, signal: AbortSignal | null): Promise<T | undefined> {
  if (signal === null) return promise;
  return new Promise((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
