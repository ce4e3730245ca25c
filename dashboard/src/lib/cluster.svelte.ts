// A live copy of the cluster State: GET /state once, then GET /events (SSE) from last_idx+1. Small,
// frequent events are applied here; structural ones trigger one debounced refetch of /state. No polling.

import { apiFetch, auth, withKey } from "./api.svelte.ts";
import type { ClusterState, IndexedEvent } from "./cluster-model.ts";
import { applyEvent } from "./cluster-model.ts";

export type { ClusterState, DownloadProgress, Instance, NodeInfo, Runner, RunnerStatus, Task } from "./cluster-model.ts";
export { runnerLabel, runnerTone } from "./cluster-model.ts";

const REFETCH_DEBOUNCE_MS = 100;
const RECONNECT_DELAY_MS = 1_000;

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
    if (this.state === null) return;
    switch (applyEvent(this.state, indexed)) {
      case "stale":
        return;
      case "gap":
        // Some event was missed: the State is re-read rather than guessed.
        this.scheduleRefetch(0);
        return;
      case "refetch":
        this.scheduleRefetch();
        break;
      case "applied":
        break;
    }
    this.version += 1;
  }
}

export const cluster = new ClusterStore();
