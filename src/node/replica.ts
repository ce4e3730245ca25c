// A node's copy of State. Events may arrive duplicated or out of order (the network does that);
// the replica applies them strictly in idx order, holds a bounded number that arrived early, and
// asks for the log when it sees a gap, instead of waiting forever (exo issue #2094).
import { apply } from "../shared/apply.ts";
import { EVENT_HISTORY_IN_MEMORY_MAX, EVENT_REORDER_MAX } from "../shared/limits.ts";
import type { State } from "../shared/state.ts";
import { emptyState } from "../shared/state.ts";
import type { IndexedEvent } from "../shared/types.ts";
import type { StateListener, StateView } from "./cluster-port.ts";

export interface ReplicaOptions {
  /** Called when a gap is seen: the caller fetches events from `sinceIdx` and feeds them back. */
  readonly requestEventLog: (sinceIdx: number) => void;
  readonly historyMax?: number;
}

export class Replica implements StateView {
  private current: State = emptyState();
  private readonly early = new Map<number, IndexedEvent>();
  private readonly listeners = new Set<StateListener>();
  /** Ring of the most recent events for GET /events replay. */
  private history: IndexedEvent[] = [];
  private readonly historyMax: number;

  constructor(private readonly options: ReplicaOptions) {
    this.historyMax = options.historyMax ?? EVENT_HISTORY_IN_MEMORY_MAX;
  }

  get state(): State {
    return this.current;
  }

  /** Starts from a snapshot (e.g. the master's State after replaying its log). */
  reset(snapshot: State): void {
    this.current = snapshot;
    this.early.clear();
    this.history = [];
  }

  subscribe(listener: StateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  eventsSince(sinceIdx: number): readonly IndexedEvent[] | null {
    const oldest = this.history[0]?.idx ?? this.current.lastIdx + 1;
    if (sinceIdx < oldest) return null;
    // History is contiguous in idx, so the position is arithmetic.
    return this.history.slice(sinceIdx - oldest);
  }

  receive(event: IndexedEvent): void {
    const expected = this.current.lastIdx + 1;
    if (event.idx < expected) return; // duplicate
    if (event.idx > expected) {
      this.holdEarly(event, expected);
      return;
    }
    this.applyOne(event);
    for (let next = this.early.get(this.current.lastIdx + 1); next !== undefined; next = this.early.get(this.current.lastIdx + 1)) {
      this.early.delete(next.idx);
      this.applyOne(next);
    }
  }

  private holdEarly(event: IndexedEvent, expected: number): void {
    if (this.early.size >= EVENT_REORDER_MAX) {
      // Holding more would be unbounded; drop the early ones, the log request brings them back.
      this.early.clear();
    }
    const firstGap = !this.early.has(event.idx) && this.early.size === 0;
    this.early.set(event.idx, event);
    if (firstGap) this.options.requestEventLog(expected);
  }

  private applyOne(event: IndexedEvent): void {
    this.current = apply(this.current, event);
    this.history.push(event);
    // Trim in batches so the cost per event stays constant.
    if (this.history.length > this.historyMax * 1.25) this.history = this.history.slice(-this.historyMax);
    for (const listener of [...this.listeners]) listener(event, this.current);
  }
}
