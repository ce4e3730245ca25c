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
import { configChangePending, initialRaftState, lastLogIndex, replicationLag, withoutVoter, withVoter } from "../../src/election/raft.ts";
import type { MessageHandler, PeerHandler, Transport } from "../../src/net/transport.ts";
import { apply } from "../../src/shared/apply.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Event, IndexedEvent } from "../../src/shared/types.ts";
import { join } from "node:path";
import { RaftStore } from "../../src/election/raft-store.ts";
import type { NetworkFaults } from "./fake-network.ts";
import { FakeNetwork } from "./fake-network.ts";

export type Payload = IndexedEvent;
export type Message = unknown;
export type RaftWireMessage = RaftMessage<Payload, State>;

/** A learner this close behind the leader is promoted to voter. */
const LEARNER_LAG_TO_PROMOTE = 16;

export class SimulationError extends Error {
  override name = "SimulationError";
}

export interface SimOptions {
  readonly seed: number;
  /** Voters from the start (a static configuration). */
  readonly nodeCount: number;
  /** Further nodes that start as non-voters with an empty log, waiting for the leader to add them. */
  readonly joinerCount?: number;
  readonly faults: NetworkFaults;
  readonly tickMs?: number;
  readonly config?: Partial<Omit<RaftConfig<Payload, State>, "nodeId" | "voterIds">>;
  /**
   * Persist through a real RaftStore per node under this directory; a restart reads the hard state
   * back from disk (the old store abandoned unclosed, as after kill -9) and checks it against memory.
   */
  readonly storeDir?: string;
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
  store: RaftStore | null = null;

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
      persist: (hard) => {
        this.persisted = hard;
        this.store?.persist(hard);
      },
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
  readonly stats = { elections: 0, snapshotsInstalled: 0, snapshotMessages: 0, proposed: 0, refused: 0, joinsProposed: 0, removalsProposed: 0, configsCommitted: 0, configsRefused: 0, learnersSet: 0 };
  /** The voters of the latest committed configuration (the static one before any). */
  private committedVoters: readonly NodeId[];
  /** Nodes some leader proposed to remove: they may live on with a stale configuration, outside the cluster. */
  readonly removed = new Set<NodeId>();
  private workloadCounter = 0;

  constructor(readonly options: SimOptions) {
    this.prng = new Prng(options.seed);
    this.network = new FakeNetwork(new Prng(options.seed ^ 0x9e3779b9), { ...options.faults });
    this.tickMs = options.tickMs ?? 10;
    this.checkStateEveryApply = options.checkStateEveryApply ?? true;
    const ids = Array.from({ length: options.nodeCount }, (_, i) => `n${i}` as NodeId);
    this.committedVoters = ids;
    const joinerIds = Array.from({ length: options.joinerCount ?? 0 }, (_, i) => `n${options.nodeCount + i}` as NodeId);
    const empty: Snapshot<State> = { lastIndex: -1, lastTerm: 0, state: emptyState() };
    this.nodes = [...ids, ...joinerIds].map((id, i) => {
      // A joiner's static configuration leaves it out: it must never elect itself before it is added.
      const config = simRaftConfig(id, ids.includes(id) ? ids : [], options.config);
      return new SimNode(id, config, this, initialRaftState(config, empty, options.seed + i * 7919, 0));
    });
    if (options.storeDir !== undefined) for (const n of this.nodes) n.store = RaftStore.open(join(options.storeDir, n.id)).store;
  }

  /** Closes every node's store (a simulation with storeDir). */
  async closeStores(): Promise<void> {
    for (const n of this.nodes) await n.store?.close();
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
    const refused = this.nodes.find((n) => n.driver.refusedMessages > 0);
    if (refused !== undefined) this.fail(`${refused.id} refused a message as contradicting Raft's invariants: ${refused.driver.lastRefusal}`);
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

  /** The live node that leads in the highest term, if any. */
  leader(): SimNode | undefined {
    const leaders = this.nodes.filter((n) => !n.crashed && n.raft.role === "leader");
    return leaders.sort((a, b) => b.raft.term - a.raft.term)[0];
  }

  /**
   * What a master does with membership, one change at a time: add a live joiner it can reach, or
   * remove a voter that is down (the leader itself with probability `removeLeaderChance`).
   * Returns what it proposed, or null.
   */
  changeMembership(removeLeaderChance: number): string | null {
    const leader = this.leader();
    if (leader === undefined) return null;
    // Half the time the operator does not look: the core itself must refuse a second pending change.
    if (configChangePending(leader.raft) && this.prng.chance(0.5)) return null;
    const voters = leader.raft.voters;
    const joiner = this.nodes.find((n) => !voters.includes(n.id) && !this.removed.has(n.id) && !n.crashed && this.network.connected(leader.id, n.id));
    if (joiner !== undefined && this.prng.chance(0.5)) {
      // Half the joiners first catch up as learners and are added once close behind; the others
      // are added at once and catch up as voters.
      if (this.prng.chance(0.5)) {
        if (!leader.raft.learners.includes(joiner.id)) {
          leader.driver.setLearners([...leader.raft.learners, joiner.id]);
          this.stats.learnersSet++;
          return `learner ${joiner.id}`;
        }
        const lag = replicationLag(leader.raft, joiner.id);
        if (lag === null || lag > LEARNER_LAG_TO_PROMOTE) return null;
      }
      if (!this.proposeMembers(leader, withVoter(voters, joiner.id))) return null;
      this.stats.joinsProposed++;
      return `add ${joiner.id}`;
    }
    if (voters.length <= 3) return null;
    const dead = this.nodes.find((n) => voters.includes(n.id) && n.crashed);
    const victim = dead?.id ?? (this.prng.chance(removeLeaderChance) && voters.includes(leader.id) ? leader.id : undefined);
    if (victim === undefined) return null;
    if (!this.proposeMembers(leader, withoutVoter(voters, victim))) return null;
    this.removed.add(victim);
    this.stats.removalsProposed++;
    return `remove ${victim}`;
  }

  private proposeMembers(leader: SimNode, members: readonly NodeId[]): boolean {
    const pending = configChangePending(leader.raft);
    const idx = lastLogIndex(leader.raft) + 1;
    const result = leader.driver.propose([{ idx, atMs: this.nowMs, event: { type: "ClusterMembersChanged", clusterId: "sim", members: [...members] } }]);
    if (pending && result.ok) this.fail(`${leader.id} accepted a configuration change while another was uncommitted`);
    if (!result.ok) this.stats.configsRefused++;
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
    let persisted = n.persisted;
    if (this.options.storeDir !== undefined) {
      // The old store is dropped without a flush: only what persist() wrote counts.
      const abandoned = n.store;
      const opened = RaftStore.open(join(this.options.storeDir, n.id));
      if (opened.warning !== null) this.fail(`${n.id}: store warning on a clean restart: ${opened.warning}`);
      const fromDisk = opened.hard ?? { term: 0, votedFor: null, snapshot: { lastIndex: -1, lastTerm: 0, state: emptyState() }, log: [] };
      if (canonicalJson(fromDisk) !== canonicalJson(persisted)) this.fail(`${n.id}: the store read back another hard state than was persisted`);
      persisted = fromDisk;
      n.store = opened.store;
      // Its fd goes once the event loop turns; nothing it does after this point can reach the disk's content.
      void abandoned?.close().catch(() => {});
    }
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
      if (entry.payload.event.type === "ClusterMembersChanged") {
        this.stats.configsCommitted++;
        // Single-server changes: each committed configuration differs from the one before by at
        // most one voter, or two majorities could be disjoint.
        const next = entry.payload.event.members;
        const previous = this.committedVoters;
        const changed = next.filter((id) => !previous.includes(id)).length + previous.filter((id) => !next.includes(id)).length;
        if (changed > 1) this.fail(`committed configuration at ${entry.index} [${next.join(",")}] changes ${changed} voters of [${previous.join(",")}]`);
        this.committedVoters = next;
      }
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

  /**
   * One leader every live voter of its configuration follows, no configuration change pending, and
   * every such voter has applied all of the leader's log. Nodes outside the configuration (removed,
   * or joiners not added yet) are not part of the cluster and need not follow.
   */
  converged(): { leader: NodeId; commitIndex: number } | null {
    const leader = this.leader();
    if (leader === undefined) return null;
    const last = lastLogIndex(leader.raft);
    if (leader.raft.commitIndex !== last || configChangePending(leader.raft)) return null;
    for (const n of this.members(leader)) {
      if (n.raft.term !== leader.raft.term || n.raft.leaderId !== leader.id) return null;
      if (n.raft.appliedIndex !== last || n.replica.lastIdx !== last) return null;
    }
    return { leader: leader.id, commitIndex: last };
  }

  /** The live nodes of `leader`'s configuration. */
  members(leader: SimNode): SimNode[] {
    return this.nodes.filter((n) => !n.crashed && leader.raft.voters.includes(n.id));
  }

  /** Every live member's State deep-equal (by canonical hash) and at the same idx. */
  checkFinalStates(): void {
    const leader = this.leader();
    if (leader === undefined) this.fail("no leader at the end");
    const live = this.members(leader);
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
