// FakeNetwork: a packet simulator for the deterministic simulation. Every message gets a random
// delay (so messages reorder), may be dropped or duplicated, and is lost if a partition separates
// sender and receiver when it is sent or when it would arrive. All randomness comes from the PRNG
// it is given, so one seed replays the same faults.
import type { Prng } from "../../src/election/prng.ts";

export interface NetworkFaults {
  dropProbability: number;
  duplicateProbability: number;
  delayMinMs: number;
  delayMaxMs: number;
}

interface InFlight<M> {
  readonly deliverAtMs: number;
  readonly seq: number;
  readonly from: string;
  readonly to: string;
  readonly message: M;
}

export class FakeNetwork<M> {
  private inFlight: InFlight<M>[] = [];
  private seq = 0;
  /** Node → partition group; nodes in different groups cannot talk. Empty: fully connected. */
  private groupOf = new Map<string, number>();
  sentCount = 0;
  droppedCount = 0;
  duplicatedCount = 0;

  constructor(
    private readonly prng: Prng,
    public faults: NetworkFaults,
  ) {}

  connected(a: string, b: string): boolean {
    return (this.groupOf.get(a) ?? 0) === (this.groupOf.get(b) ?? 0);
  }

  /** Splits nodes into groups (each node in exactly one); `heal()` joins everyone again. */
  partition(groups: readonly (readonly string[])[]): void {
    this.groupOf = new Map();
    groups.forEach((group, i) => group.forEach((id) => this.groupOf.set(id, i)));
  }

  heal(): void {
    this.groupOf = new Map();
  }

  get partitions(): string {
    const groups = new Map<number, string[]>();
    for (const [id, g] of this.groupOf) groups.set(g, [...(groups.get(g) ?? []), id]);
    return [...groups.values()].map((g) => g.join(",")).join(" | ") || "none";
  }

  send(from: string, to: string, message: M, nowMs: number): void {
    this.sentCount++;
    if (!this.connected(from, to) || this.prng.chance(this.faults.dropProbability)) {
      this.droppedCount++;
      return;
    }
    const copies = this.prng.chance(this.faults.duplicateProbability) ? 2 : 1;
    if (copies === 2) this.duplicatedCount++;
    for (let i = 0; i < copies; i++) {
      const delayMs = this.faults.delayMinMs + this.prng.int(this.faults.delayMaxMs - this.faults.delayMinMs + 1);
      this.inFlight.push({ deliverAtMs: nowMs + delayMs, seq: this.seq++, from, to, message });
    }
  }

  /** Messages due at or before nowMs, in delivery order; those crossing a partition now are lost. */
  deliverDue(nowMs: number): InFlight<M>[] {
    if (this.inFlight.length === 0) return [];
    const due: InFlight<M>[] = [];
    const later: InFlight<M>[] = [];
    for (const m of this.inFlight) (m.deliverAtMs <= nowMs ? due : later).push(m);
    this.inFlight = later;
    due.sort((a, b) => a.deliverAtMs - b.deliverAtMs || a.seq - b.seq);
    return due.filter((m) => {
      if (this.connected(m.from, m.to)) return true;
      this.droppedCount++;
      return false;
    });
  }

  /** Forget everything in flight to or from a node (it crashed: its sockets are gone). */
  dropFor(nodeId: string): void {
    this.inFlight = this.inFlight.filter((m) => m.from !== nodeId && m.to !== nodeId);
  }

  get inFlightCount(): number {
    return this.inFlight.length;
  }
}
