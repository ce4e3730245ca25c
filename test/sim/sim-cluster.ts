// The deterministic simulation of the election + replication core: N nodes in one process on a
// fake clock and a FakeNetwork. Each node holds a RaftState and a replica State built only from
// the core's apply/restore outputs, exactly as a real node's Replica would. Checkers run after
// every step and throw SimulationError with the seed, so a failure replays with SKEIN_SEED.
import { createHash } from "node:crypto";
import type { HardState } from "../../src/election/driver.ts";
import { RaftDriver, restoredRaftState } from "../../src/election/driver.ts";
import { skeinRaftConfig, skeinRaftMessageParser } from "../../src/election/skein-log.ts";
import { Prng } from "../../src/election/prng.ts";
import type { LogEntry, RaftConfig, RaftMessage, RaftState, Snapshot } from "../../src/election/raft.ts";
import { initialRaftState, lastLogIndex } from "../../src/election/raft.ts";
import type { MessageHandler, PeerHandler, Transport } from "../../src/net/transport.ts";
import { apply } from "../../src/shared/apply.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Event, IndexedEvent } from "../../src/shared/types.ts";
import type { NetworkFaults } from "./fake-network.ts";
import { FakeNetwork } from "./fake-network.ts";

export type Payload = IndexedEvent;
export type Message = unknown;
export type RaftWireMessage = RaftMessage<Payload, State>;

export class SimulationError extends Error {
  override name = "SimulationError";
}

export interface SimOptions {
  readonly seed: number;
  readonly nodeCount: number;
  readonly faults: NetworkFaults;
  readonly tickMs?: number;
  readonly config?: Partial<Omit<RaftConfig<Payload, State>, "nodeId" | "voterIds">>;
  /** Hash State after every apply and compare across nodes (off for very long logs: end-check only). */
  readonly checkStateEveryApply?: boolean;
}

/** The production driver's Transport, backed by the FakeNetwork; the sim delivers into it. */
class FakeTransport implements Transport {
  private handlers: MessageHandler[] = [];
  constructor(
    readonly nodeId: NodeId,
    private readonly sim: SimCluster,
  ) {}
  send(to: NodeId, message: unknown): boolean {
    this.sim.network.send(this.nodeId, to, message, this.sim.nowMs);
    return true;
  }
  onMessage(handler: MessageHandler): void {
    this.handlers.push(handler);
  }
  onPeer(_handler: PeerHandler): void {}
  connectedPeers(): NodeId[] {
    return this.sim.nodes.map((n) => n.id).filter((id) => id !== this.nodeId && this.sim.network.connected(this.nodeId, id));
  }
  deliver(from: NodeId, message: unknown): void {
    for (const handler of this.handlers) handler(from, message);
  }
}

class SimNode {
  driver: RaftDriver<Payload, State>;
  transport: FakeTransport;
  replica: State = emptyState();
  crashed = false;
  /** What the persist hook wrote: all a crashed node gets back. */
  persisted: HardState<Payload, State>;

  constructor(
    readonly id: NodeId,
    readonly config: RaftConfig<Payload, State>,
    private readonly sim: SimCluster,
    initial: RaftState<Payload, State>,
  ) {
    this.persisted = { term: initial.term, votedFor: initial.votedFor, snapshot: initial.snapshot, log: initial.log };
    [this.driver, this.transport] = this.boot(initial);
  }

  get raft(): RaftState<Payload, State> {
    return this.driver.state;
  }

  /** A fresh driver and transport (a restart), starting from `initial`. */
  boot(initial: RaftState<Payload, State>): [RaftDriver<Payload, State>, FakeTransport] {
    const transport = new FakeTransport(this.id, this.sim);
    // The production wire check runs on every 16th message (zod on every entry would cut the seeds
    // a sweep covers by more than half); the others pass through as the fake network delivered them.
    const parse = skeinRaftMessageParser(this.config.entriesPerMessageMax);
    let count = 0;
    const driver = new RaftDriver<Payload, State>({
      config: this.config,
      transport,
      clock: { nowMs: () => this.sim.nowMs },
      initial,
      parseMessage: (raw) => {
        if (count++ % 16 !== 0) return raw as RaftWireMessage;
        return parse(raw);
      },
      onApply: (entries) => this.sim.onApply(this, entries),
      onRestore: (snapshot) => this.sim.onRestore(this, snapshot),
      onRoleChanged: (role, term) => this.sim.onRoleChanged(this, role, term),
      persist: (hard) => (this.persisted = hard),
    });
    this.driver = driver;
    this.transport = transport;
    return [driver, transport];
  }
}

/** skein's own log configuration, with the sim's short timeouts and small batches (so compaction and snapshots happen). */
export const simRaftConfig = (nodeId: NodeId, voterIds: readonly NodeId[], overrides: SimOptions["config"] = {}): RaftConfig<Payload, State> =>
  skeinRaftConfig(nodeId, voterIds, {
    electionTimeoutMinMs: 150,
    electionTimeoutMaxMs: 300,
    heartbeatIntervalMs: 50,
    entriesPerMessageMax: 64,
    logTailKeep: 32,
    compactionBatch: 32,
    logEntriesInMemoryMax: 256,
    uncommittedEntriesMax: 512,
    ...overrides,
  });

export class SimCluster {
  readonly prng: Prng;
  readonly network: FakeNetwork<Message>;
  readonly nodes: SimNode[];
  nowMs = 0;
  readonly tickMs: number;
  /** Checker state: one leader per term, the committed log, and State hashes per idx. */
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly committed: { term: number; key: string }[] = [];
  private readonly stateHashAt = new Map<number, string>();
  private readonly checkStateEveryApply: boolean;
  readonly stats = { elections: 0, snapshotsInstalled: 0, snapshotMessages: 0, proposed: 0, refused: 0 };
  private workloadCounter = 0;

  constructor(readonly options: SimOptions) {
    this.prng = new Prng(options.seed);
    this.network = new FakeNetwork(new Prng(options.seed ^ 0x9e3779b9), { ...options.faults });
    this.tickMs = options.tickMs ?? 10;
    this.checkStateEveryApply = options.checkStateEveryApply ?? true;
    const ids = Array.from({ length: options.nodeCount }, (_, i) => `n${i}` as NodeId);
    const empty: Snapshot<State> = { lastIndex: -1, lastTerm: 0, state: emptyState() };
    this.nodes = ids.map((id, i) => {
      const config = simRaftConfig(id, ids, options.config);
      return new SimNode(id, config, this, initialRaftState(config, empty, options.seed + i * 7919, 0));
    });
  }

  fail(message: string): never {
    throw new SimulationError(`seed ${this.options.seed} at ${this.nowMs} ms: ${message}`);
  }

  node(id: string): SimNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) this.fail(`no node ${id}`);
    return n;
  }

  // ── driving ───────────────────────────────────────────────────────────────────────────────────

  /** Advances the clock by one tick: delivers due messages, then ticks every live node. */
  advance(): void {
    this.nowMs += this.tickMs;
    for (const m of this.network.deliverDue(this.nowMs)) {
      const to = this.node(m.to);
      if (to.crashed) continue;
      if ((m.message as { message?: { type?: string } }).message?.type === "InstallSnapshot") this.stats.snapshotMessages++;
      to.transport.deliver(m.from as NodeId, m.message);
    }
    for (const n of this.nodes) if (!n.crashed) n.driver.tick();
    const dropped = this.nodes.reduce((sum, n) => sum + n.driver.droppedMessages, 0);
    if (dropped > 0) this.fail(`${dropped} well-formed messages failed wire validation`);
  }

  onRoleChanged(n: SimNode, role: string, term: number): void {
    if (role === "leader") this.checkLeader(term, n.id);
    if (role === "candidate") this.stats.elections++;
  }

  onApply(n: SimNode, entries: readonly LogEntry<Payload>[]): void {
    for (const entry of entries) this.checkAndApply(n, entry);
  }

  onRestore(n: SimNode, snapshot: Snapshot<State>): void {
    this.checkRestore(n, snapshot);
  }

  /** Proposes `count` workload events to `n` if it thinks it leads; returns whether it did. */
  propose(n: SimNode, count: number): boolean {
    if (n.crashed || n.raft.role !== "leader") return false;
    const first = lastLogIndex(n.raft) + 1;
    const payloads = Array.from({ length: count }, (_, i) => ({ idx: first + i, atMs: this.nowMs, event: this.workloadEvent() }));
    const result = n.driver.propose(payloads);
    if (result.ok) this.stats.proposed += count;
    else this.stats.refused++;
    return result.ok;
  }

  private workloadEvent(): Event {
    const k = this.workloadCounter++;
    const nodeId = `w${this.prng.int(8)}` as NodeId;
    const other = `w${this.prng.int(8)}` as NodeId;
    switch (this.prng.int(4)) {
      case 0:
        return {
          type: "NodeGatheredInfo",
          info: { nodeId, hostname: `h${k}`, memoryTotalBytes: 1 << 30, memoryAvailableBytes: this.prng.int(1 << 30), cores: 2, addresses: [], apiPort: 1, clusterPort: 2 },
        };
      case 1:
        return { type: "TopologyEdgeCreated", fromNodeId: nodeId, toNodeId: other, latencyMs: k % 7 };
      case 2:
        return { type: "TopologyEdgeDeleted", fromNodeId: nodeId, toNodeId: other };
      default:
        return { type: "NodeTimedOut", nodeId };
    }
  }

  crash(n: SimNode): void {
    n.crashed = true;
    this.network.dropFor(n.id);
  }

  /** Restarts with what Raft keeps on disk (term, vote, snapshot, log); everything else starts over. */
  restart(n: SimNode): void {
    n.crashed = false;
    const persisted = n.persisted;
    const fresh = initialRaftState(n.config, persisted.snapshot, this.prng.int(2 ** 31), this.nowMs);
    n.boot(restoredRaftState(fresh, persisted, n.config));
    n.replica = persisted.snapshot.state;
  }

  // ── checkers ──────────────────────────────────────────────────────────────────────────────────

  private checkLeader(term: number, id: NodeId): void {
    const existing = this.leaderOfTerm.get(term);
    if (existing !== undefined && existing !== id) this.fail(`two leaders in term ${term}: ${existing} and ${id}`);
    this.leaderOfTerm.set(term, id);
  }

  private checkAndApply(n: SimNode, entry: LogEntry<Payload>): void {
    const expectedIdx = n.replica.lastIdx + 1;
    if (entry.index !== expectedIdx) this.fail(`${n.id} applied entry ${entry.index}, expected ${expectedIdx}`);
    if (entry.payload.idx !== entry.index) this.fail(`entry ${entry.index} carries event idx ${entry.payload.idx}`);
    const key = JSON.stringify(entry.payload.event);
    const known = this.committed[entry.index];
    if (known === undefined) {
      if (entry.index !== this.committed.length) this.fail(`committed entry ${entry.index} leaves a gap at ${this.committed.length}`);
      this.committed.push({ term: entry.term, key });
    } else if (known.term !== entry.term || known.key !== key) {
      this.fail(`${n.id} committed a different entry at ${entry.index}: term ${entry.term} vs ${known.term}`);
    }
    n.replica = apply(n.replica, entry.payload);
    if (this.checkStateEveryApply) this.checkStateHash(n.id, n.replica);
  }

  private checkRestore(n: SimNode, snapshot: Snapshot<State>): void {
    this.stats.snapshotsInstalled++;
    if (snapshot.lastIndex >= this.committed.length) this.fail(`${n.id} restored a snapshot at ${snapshot.lastIndex} beyond the committed ${this.committed.length - 1}`);
    if (snapshot.state.lastIdx !== snapshot.lastIndex) this.fail(`snapshot at ${snapshot.lastIndex} holds State at ${snapshot.state.lastIdx}`);
    n.replica = snapshot.state;
    this.checkStateHash(n.id, n.replica);
  }

  private checkStateHash(id: string, state: State): void {
    const hash = hashState(state);
    const known = this.stateHashAt.get(state.lastIdx);
    if (known === undefined) this.stateHashAt.set(state.lastIdx, hash);
    else if (known !== hash) this.fail(`${id} holds a different State at idx ${state.lastIdx}`);
  }

  // ── liveness ──────────────────────────────────────────────────────────────────────────────────

  /** One leader every live node follows, and every node has applied all of its log. */
  converged(): { leader: NodeId; commitIndex: number } | null {
    const live = this.nodes.filter((n) => !n.crashed);
    const leader = live.find((n) => n.raft.role === "leader");
    if (leader === undefined) return null;
    const last = lastLogIndex(leader.raft);
    if (leader.raft.commitIndex !== last) return null;
    for (const n of live) {
      if (n.raft.term !== leader.raft.term || n.raft.leaderId !== leader.id) return null;
      if (n.raft.appliedIndex !== last || n.replica.lastIdx !== last) return null;
    }
    return { leader: leader.id, commitIndex: last };
  }

  /** Every live node's State deep-equal (by canonical hash) and at the same idx. */
  checkFinalStates(): void {
    const live = this.nodes.filter((n) => !n.crashed);
    const first = live[0]!;
    const hash = hashState(first.replica);
    for (const n of live) {
      if (n.replica.lastIdx !== first.replica.lastIdx) this.fail(`${n.id} at idx ${n.replica.lastIdx}, ${first.id} at ${first.replica.lastIdx}`);
      if (hashState(n.replica) !== hash) this.fail(`${n.id} and ${first.id} hold different States at idx ${n.replica.lastIdx}`);
    }
    this.checkStateHash(first.id, first.replica);
  }

  get committedCount(): number {
    return this.committed.length;
  }
}

/** JSON with sorted keys, so two equal States hash alike whatever order their maps were built in. */
export function hashState(state: State): string {
  return createHash("sha256").update(canonicalJson(state)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "undefined";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.keys(value as object)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(",")}}`;
}
