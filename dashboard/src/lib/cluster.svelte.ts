// A live copy of the cluster State: GET /state once, then GET /events (SSE) from last_idx+1. Small,
// frequent events are applied here; structural ones trigger one debounced refetch of /state. No polling.

import { apiFetch, auth, withKey } from "./api.svelte.ts";

export interface RunnerStatus {
  kind: string;
  layersLoaded?: number;
  layerCount?: number;
  taskId?: string;
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

interface IndexedEvent {
  idx: number;
  event: { type: string; [key: string]: unknown };
}

const REFETCH_DEBOUNCE_MS = 100;
const RECONNECT_DELAY_MS = 1_000;
/** Events that only report progress of a generation: the cluster view does not draw them. */
const IGNORED_EVENTS = new Set(["ChunkGenerated", "TaskPrefillProgress"]);

export type Connection = "connecting" | "live" | "offline";

class ClusterStore {
  state = $state<ClusterState | null>(null);
  connection = $state<Connection>("connecting");
  /** Bumped on every applied event, so views can react to "something changed". */
  version = $state(0);
  private source: EventSource | null = null;
  private refetchTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private started = false;

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.connect();
  }

  /** Re-read /state now (after an action of ours whose events may still be on their way). */
  refresh(): void {
    this.scheduleRefetch(0);
  }

  private async connect(): Promise<void> {
    this.source?.close();
    this.source = null;
    try {
      await this.fetchState();
    } catch {
      this.connection = "offline";
      this.scheduleReconnect();
      return;
    }
    const since = (this.state?.last_idx ?? -1) + 1;
    const source = new EventSource(withKey(`/events?since=${since}`));
    this.source = source;
    source.onopen = () => {
      this.connection = "live";
    };
    source.onmessage = (message: MessageEvent<string>) => this.onEvent(JSON.parse(message.data) as IndexedEvent);
    // Both a dropped connection and the server's "error" event (fell behind): start over from /state.
    source.onerror = () => {
      source.close();
      if (this.source !== source) return;
      this.source = null;
      this.connection = "offline";
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    // Without the key every retry fails the same way; saving the key reloads the page.
    if (this.reconnectTimer !== null || auth.needed) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, RECONNECT_DELAY_MS);
  }

  private async fetchState(): Promise<void> {
    const response = await apiFetch("/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /state answered ${response.status}`);
    const next = (await response.json()) as ClusterState;
    if (this.state === null || next.last_idx >= this.state.last_idx) {
      this.state = next;
      this.version += 1;
    }
  }

  private scheduleRefetch(delayMs = REFETCH_DEBOUNCE_MS): void {
    if (this.refetchTimer !== null) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = null;
      this.fetchState().catch(() => undefined);
    }, delayMs);
  }

  private onEvent(indexed: IndexedEvent): void {
    const state = this.state;
    if (state === null || indexed.idx <= state.last_idx) return;
    if (indexed.idx !== state.last_idx + 1) {
      // A gap: some event was missed; the State is re-read rather than guessed.
      this.scheduleRefetch(0);
      return;
    }
    state.last_idx = indexed.idx;
    const event = indexed.event;
    if (IGNORED_EVENTS.has(event.type)) return;
    if (!applyInPlace(state, event)) this.scheduleRefetch();
    this.version += 1;
  }
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
    case "TaskClientFinished":
      return true;
    case "TaskDeleted":
      delete state.tasks[event["taskId"] as string];
      return true;
    default:
      return false;
  }
}

export const cluster = new ClusterStore();

export function runnerLabel(status: RunnerStatus): string {
  switch (status.kind) {
    case "Loading":
      return `Loading ${status.layersLoaded ?? 0}/${status.layerCount ?? "?"}`;
    case "WarmingUp":
      return "Warming up";
    case "ShuttingDown":
      return "Shutting down";
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
