// The seams between a node's parts. The API and the worker see the cluster only through these, so
// the same code runs whether the master is in this process (single node) or across the network.
import type { NodeId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import type { Command, IndexedEvent, WorkerEvent } from "../shared/types.ts";

/** Sends a command to the master, wherever it is. Never throws; delivery is at-least-once. */
export interface CommandSink {
  sendCommand(command: Command): void;
}

/** Reports what a worker observed about its own runners and tasks to the master. */
export interface WorkerEventSink {
  sendWorkerEvent(event: WorkerEvent): void;
}

export type StateListener = (event: IndexedEvent, state: State) => void;

/** This node's replica of State, updated in idx order. */
export interface StateView {
  readonly state: State;
  /** Called after each event is applied, with the State that includes it. Returns an unsubscribe. */
  subscribe(listener: StateListener): () => void;
  /** Events with idx ≥ sinceIdx still held in memory (for GET /events replay). */
  eventsSince(sinceIdx: number): readonly IndexedEvent[] | null;
}

/** Everything the API needs from its node. */
export interface ClusterPort extends CommandSink, StateView {
  readonly nodeId: NodeId;
}
