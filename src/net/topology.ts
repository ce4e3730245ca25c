// Pure decisions that turn what the links observe into cluster events for the master: topology
// edges with their latency and bandwidth, and nodes to time out. The leader runs these over its own links; the
// master's handleClusterEvent indexes the result. No I/O, no clock (nowMs comes in).
import type { NodeId } from "../shared/ids.ts";
import type { EventOf } from "../shared/types.ts";

/** A node unreachable for this long is timed out, its instances re-placed (stale nodes must not linger). */
export const NODE_UNREACHABLE_TIMEOUT_MS = 10_000;
/** Latency changes smaller than this (relative) are not worth an event per heartbeat. */
export const EDGE_LATENCY_CHANGE_RATIO_MIN = 0.5;
/** ... nor absolute changes under this many ms (loopback jitter). */
export const EDGE_LATENCY_CHANGE_MS_MIN = 1;
/** Bandwidth changes smaller than this (relative) are probe noise, not a different link. */
export const EDGE_BANDWIDTH_CHANGE_RATIO_MIN = 0.5;

export type TopologyEvent = EventOf<"TopologyEdgeCreated" | "TopologyEdgeDeleted">;

export interface Edge {
  readonly fromNodeId: NodeId;
  readonly toNodeId: NodeId;
  readonly latencyMs: number | null;
  /** Absent in edges indexed before bandwidth was measured. */
  readonly bandwidthBytesPerSecond?: number | null;
}

export interface LinkObservation {
  readonly nodeId: NodeId;
  readonly rttMs: number | null;
  readonly bandwidthBytesPerSecond: number | null;
}

/**
 * Events that make State's edges from `selfId` match the open links: a new link or a material
 * latency or bandwidth change creates (or replaces) an edge, a link that is gone deletes it.
 * Latency is half the round trip, rounded to 0.01 ms; bandwidth is the link's probe (bytes/s).
 */
export function edgeEvents(selfId: NodeId, edges: readonly Edge[], links: readonly LinkObservation[]): TopologyEvent[] {
  const events: TopologyEvent[] = [];
  const mine = new Map(edges.filter((e) => e.fromNodeId === selfId).map((e) => [e.toNodeId, e]));
  for (const link of links) {
    const latencyMs = link.rttMs === null ? null : Math.round((link.rttMs / 2) * 100) / 100;
    const bandwidthBytesPerSecond = link.bandwidthBytesPerSecond === null ? null : Math.round(link.bandwidthBytesPerSecond);
    const existing = mine.get(link.nodeId);
    if (
      existing === undefined ||
      latencyChanged(existing.latencyMs, latencyMs) ||
      bandwidthChanged(existing.bandwidthBytesPerSecond ?? null, bandwidthBytesPerSecond)
    ) {
      events.push({ type: "TopologyEdgeCreated", fromNodeId: selfId, toNodeId: link.nodeId, latencyMs, bandwidthBytesPerSecond });
    }
    mine.delete(link.nodeId);
  }
  for (const gone of mine.keys()) events.push({ type: "TopologyEdgeDeleted", fromNodeId: selfId, toNodeId: gone });
  return events;
}

function latencyChanged(before: number | null, after: number | null): boolean {
  if (before === null || after === null) return before !== after;
  const deltaMs = Math.abs(after - before);
  return deltaMs >= EDGE_LATENCY_CHANGE_MS_MIN && deltaMs >= EDGE_LATENCY_CHANGE_RATIO_MIN * before;
}

function bandwidthChanged(before: number | null, after: number | null): boolean {
  if (before === null || after === null) return before !== after;
  return Math.abs(after - before) >= EDGE_BANDWIDTH_CHANGE_RATIO_MIN * before;
}

/**
 * Known nodes (other than self) with no open link since `unreachableSinceMs` for longer than the
 * timeout. A node never seen linked counts from when the tracker first saw it in State.
 */
export function nodesToTimeOut(
  selfId: NodeId,
  knownNodeIds: readonly NodeId[],
  unreachableSinceMs: ReadonlyMap<NodeId, number>,
  nowMs: number,
  timeoutMs: number = NODE_UNREACHABLE_TIMEOUT_MS,
): NodeId[] {
  return knownNodeIds.filter((id) => {
    if (id === selfId) return false;
    const sinceMs = unreachableSinceMs.get(id);
    return sinceMs !== undefined && nowMs - sinceMs >= timeoutMs;
  });
}

/** Updates "unreachable since" from the currently linked peers (pure: returns a new map). */
export function trackReachability(
  previous: ReadonlyMap<NodeId, number>,
  knownNodeIds: readonly NodeId[],
  linkedNodeIds: ReadonlySet<NodeId>,
  nowMs: number,
): Map<NodeId, number> {
  const next = new Map<NodeId, number>();
  for (const id of knownNodeIds) {
    if (linkedNodeIds.has(id)) continue;
    next.set(id, previous.get(id) ?? nowMs);
  }
  return next;
}
