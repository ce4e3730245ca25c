// MemoryMasterLog: a test double for the master's log — the events in an array. A "restart" in a
// test is a new Master over the same object. (Nodes keep the master's events in the replicated
// log, src/election/; this double stands in for it where a test drives a Master directly.)
import type { MasterLog } from "../../src/master/master.ts";
import { EVENT_LOG_PAGE_MAX } from "../../src/shared/limits.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";

export class MemoryMasterLog implements MasterLog {
  readonly events: IndexedEvent[] = [];

  get count(): number {
    return this.events.length;
  }

  /** idx of the last event; -1 when empty. */
  get lastIdx(): number {
    return this.events.length - 1;
  }

  readSince(sinceIdx: number, limit: number = EVENT_LOG_PAGE_MAX): IndexedEvent[] {
    return this.events.slice(sinceIdx, sinceIdx + Math.min(limit, EVENT_LOG_PAGE_MAX));
  }

  append(events: readonly IndexedEvent[]): void {
    for (const event of events) {
      if (event.idx !== this.events.length) throw new Error(`append of idx ${event.idx} to a log of ${this.events.length}`);
      this.events.push(event);
    }
  }
}
