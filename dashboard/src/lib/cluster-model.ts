// The dashboard's copy of the cluster State and how one indexed event changes it. Pure: the store in
// cluster.svelte.ts does the I/O (GET /state, GET /events) and holds the reactive copy.
import { formatBandwidth } from "./format.ts";

export interface RunnerStatus {
  kind: string;
  layersLoaded?: number;
  layerCount?: number;
  /** Running: the requests in progress (a pipeline's first stage interleaves several). */
  taskIds?: string[];
  reason?: string;
}
export interface NodeInfo {
  nodeId: string;
  hostname: string;
  memoryTotalBytes: number;
  memoryAvailableBytes: number;
  cores: number;
  addresses: string[];
  apiPort: number;
}
export interface Shard {
  runnerId: string;
  nodeId: string;
  layerStart: number;
  layerEnd: number;
}
export interface Instance {
  instanceId: string;
  modelId: string;
  layerCount: number;
  sizeBytes?: number;
  shards: Shard[];
}
export interface Runner {
  runnerId: string;
  instanceId: string;
  nodeId: string;
  status: RunnerStatus;
}
export interface Task {
  taskId: string;
  instanceId: string | null;
  modelId: string;
  status: string;
  tokensGenerated: number;
}
export interface DownloadProgress {
  modelId: string;
  status: "pending" | "downloading" | "complete" | "failed";
  downloadedBytes: number;
  totalBytes: number;
  error: string | null;
}
export interface Edge {
  fromNodeId: string;
  toNodeId: string;
  latencyMs: number | null;
  /** Absent from nodes that predate bandwidth probes. */
  bandwidthBytesPerSecond?: number | null;
}
export interface ClusterState {
  master_node_id: string | null;
  last_idx: number;
  nodes: Record<string, NodeInfo>;
  instances: Record<string, Instance>;
  runners: Record<string, Runner>;
  tasks: Record<string, Task>;
  downloads: Record<string, Record<string, DownloadProgress>>;
  edges: Edge[];
}

export interface IndexedEvent {
  idx: number;
  event: { type: string; [key: string]: unknown };
}

/** Events that only report progress of a generation: the cluster view does not draw them. */
const IGNORED_EVENTS = new Set(["ChunkGenerated", "TaskPrefillProgress"]);

/**
 * What one event from /events does to `state` (mutated in place when "applied"): "stale" = already
 * in it; "gap" = an event was missed, re-read /state; "refetch" = structural, re-read /state.
 */
export function applyEvent(state: ClusterState, indexed: IndexedEvent): "stale" | "gap" | "applied" | "refetch" {
  if (indexed.idx <= state.last_idx) return "stale";
  if (indexed.idx !== state.last_idx + 1) return "gap";
  state.last_idx = indexed.idx;
  if (IGNORED_EVENTS.has(indexed.event.type)) return "applied";
  return applyInPlace(state, indexed.event) ? "applied" : "refetch";
}

/** Applies the events whose effect is a field update; false = refetch the State instead. */
function applyInPlace(state: ClusterState, event: IndexedEvent["event"]): boolean {
  switch (event.type) {
    case "RunnerStatusUpdated": {
      const runner = state.runners[event["runnerId"] as string];
      if (runner === undefined) return false;
      runner.status = event["status"] as RunnerStatus;
      return true;
    }
    case "NodeDownloadProgress": {
      const nodeId = event["nodeId"] as string;
      const progress = event["progress"] as DownloadProgress;
      state.downloads[nodeId] = { ...(state.downloads[nodeId] ?? {}), [progress.modelId]: progress };
      return true;
    }
    case "TaskStatusUpdated": {
      const task = state.tasks[event["taskId"] as string];
      if (task === undefined) return false;
      task.status = event["status"] as string;
      return true;
    }
    case "TaskCreated": {
      const task = event["task"] as Task;
      state.tasks[task.taskId] = task;
      return true;
    }
    case "TaskClientFinished":
      return true;
    case "NodeGatheredInfo": {
      const info = event["info"] as NodeInfo;
      state.nodes[info.nodeId] = info;
      return true;
    }
    case "MasterChanged":
      state.master_node_id = event["nodeId"] as string;
      return true;
    case "TaskDeleted":
      delete state.tasks[event["taskId"] as string];
      return true;
    default:
      return false;
  }
}

/** "0.05 ms · 2.1 GB/s": latency, then bandwidth once the link has measured it. */
export function edgeLabel(edge: Edge): string {
  const latency = edge.latencyMs === null ? "—" : `${edge.latencyMs.toFixed(2)} ms`;
  const bandwidth = edge.bandwidthBytesPerSecond;
  return bandwidth === null || bandwidth === undefined ? latency : `${latency} · ${formatBandwidth(bandwidth)}`;
}

export function runnerLabel(status: RunnerStatus): string {
  switch (status.kind) {
    case "Loading":
      return `Loading ${status.layersLoaded ?? 0}/${status.layerCount ?? "?"}`;
    case "WarmingUp":
      return "Warming up";
    case "ShuttingDown":
      return "Shutting down";
    case "Running":
      return status.taskIds !== undefined && status.taskIds.length > 1 ? `Running ${status.taskIds.length} requests` : "Running";
    default:
      return status.kind;
  }
}

export function runnerTone(status: RunnerStatus): "ok" | "busy" | "warn" | "bad" | "idle" {
  switch (status.kind) {
    case "Ready":
      return "ok";
    case "Running":
      return "busy";
    case "Loading":
    case "Loaded":
    case "WarmingUp":
      return "warn";
    case "Failed":
      return "bad";
    default:
      return "idle";
  }
}
