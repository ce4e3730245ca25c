// A node's view of the cluster when the master is elected: the election core (RaftDriver) replicates
// the master's events; every node's Replica is fed only by committed entries (and snapshots); the
// Master object exists only on the leader and is rebuilt from the replicated log each time this node
// wins an election, so a new master continues from exactly what the old one left (instances, tasks,
// downloads). Commands and worker reports go through the ordered Outbox to whoever leads.
//
// Cluster formation (see membership.ts): a fresh node founds a cluster of one and leads it at once;
// nodes gossip which cluster they are in; the junior cluster's nodes drop their State and wait to be
// added to the senior one; the leader adds linked joiners and removes timed-out members one voter at
// a time. A node that hears no leader for ALONE_TIMEOUT_MS founds a new cluster with the State it
// had (a majority is gone: serving what it holds beats serving nothing), and merges back by seniority
// when the others return.
import { z } from "zod";
import { RaftDriver, restoredRaftState } from "../election/driver.ts";
import type { HardState } from "../election/driver.ts";
import type { RaftConfig, RaftState, Snapshot } from "../election/raft.ts";
import { initialRaftState } from "../election/raft.ts";
import { skeinRaftConfig, skeinRaftMessageParser } from "../election/skein-log.ts";
import type { MasterLog, MasterLogger } from "../master/master.ts";
import { Master } from "../master/master.ts";
import type { PeerLinkInfo, Transport } from "../net/transport.ts";
import { edgeEvents, nodesToTimeOut, NODE_UNREACHABLE_TIMEOUT_MS, trackReachability } from "../net/topology.ts";
import type { Clock } from "../shared/clock.ts";
import type { NodeId } from "../shared/ids.ts";
import { NodeIdSchema } from "../shared/ids.ts";
import { apply } from "../shared/apply.ts";
import { EVENT_LOG_PAGE_MAX } from "../shared/limits.ts";
import type { Logger } from "../shared/logger.ts";
import type { State } from "../shared/state.ts";
import { emptyState } from "../shared/state.ts";
import type { Command, Event, IndexedEvent, WorkerEvent } from "../shared/types.ts";
import type { ClusterPort, StateListener, WorkerEventSink } from "./cluster-port.ts";
import { FORWARD_ACK_TOPIC, FORWARD_TOPIC, ForwardAckSchema, ForwardMessageSchema, Inbox, Outbox } from "./forwarding.ts";
import type { ClusterDescriptor, PeerView } from "./membership.ts";
import { joiners, newClusterId, nextMembersChange, shouldJoin } from "./membership.ts";
import { Replica } from "./replica.ts";

export type SkeinHardState = HardState<IndexedEvent, State>;

/** Where the election's hard state lives (src/election/raft-store.ts on a real node). */
export interface HardStateStore {
  persist(hard: SkeinHardState): void;
}

/** How often the election core gets a clock tick. */
const RAFT_TICK_MS = 20;
/** How often the leader looks at links (membership, timeouts, edges) and nodes gossip their cluster. */
const MEMBERSHIP_TICK_MS = 250;
const GOSSIP_INTERVAL_MS = 1_000;
/** A joiner within this many entries of the leader's log is added as a voter. */
export const JOINER_CAUGHT_UP_LAG_MAX = 64;
/** No leader heard for this long: found a cluster of one with the State this node holds. */
export const ALONE_TIMEOUT_MS = 15_000;

export const CLUSTER_TOPIC = "cluster";
const HelloSchema = z.object({
  topic: z.literal(CLUSTER_TOPIC),
  clusterId: z.string().min(1).max(128).nullable(),
  memberCount: z.number().int().min(0).max(1_000),
  leaderId: NodeIdSchema.nullable(),
});

export interface ReplicatedClusterOptions {
  readonly nodeId: NodeId;
  readonly transport: Transport & { peerLinks?(): PeerLinkInfo[] };
  readonly clock: Clock;
  readonly logger: Logger;
  /** What the store held at start; null for a node that never ran. */
  readonly hard: SkeinHardState | null;
  readonly store: HardStateStore | null;
  /** Election timing overrides (tests). */
  readonly raft?: Partial<RaftConfig<IndexedEvent, State>>;
  readonly aloneTimeoutMs?: number;
  readonly nodeTimeoutMs?: number;
  /** Seed of the election core's randomness (default: random). */
  readonly seed?: number;
}

export class ReplicatedCluster implements ClusterPort, WorkerEventSink {
  readonly nodeId: NodeId;
  readonly replica: Replica;
  private driver: RaftDriver<IndexedEvent, State>;
  private raftHandler: ((from: NodeId, message: unknown) => void) | null = null;
  private master: Master | null = null;
  private readonly outbox: Outbox;
  private readonly inbox = new Inbox();
  private flushQueued = false;
  /** Cluster this node asked to join (its State was dropped); null once it is in a cluster's log. */
  private joining: ClusterDescriptor | null = null;
  private readonly peerClusters = new Map<NodeId, ClusterDescriptor | null>();
  private unreachableSince = new Map<NodeId, number>();
  /** The learners last given to the election core (joiners catching up before they vote). */
  private learnersKey = "";
  private lastLeaderSeenMs: number;
  private lastGossipMs = 0;
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private readonly parseRaft = skeinRaftMessageParser();

  constructor(private readonly options: ReplicatedClusterOptions) {
    this.nodeId = options.nodeId;
    this.lastLeaderSeenMs = options.clock.nowMs();
    this.replica = new Replica({
      // Committed entries arrive in order; a gap would be a bug in the election core.
      requestEventLog: (sinceIdx) => options.logger.error({ sinceIdx }, "replica saw a gap in committed entries"),
    });
    this.outbox = new Outbox({
      send: (to, message) => options.transport.send(to, message),
      nowMs: () => options.clock.nowMs(),
      onDropped: (count) => options.logger.warn({ count }, "dropped unacknowledged commands/reports: no master answered"),
    });
    const hard = options.hard;
    // A node with a history follows its log's configuration. One whose log names none (fresh, or it
    // stopped before its founding committed, or while it waited to join another cluster) founds a
    // cluster of one; gossip merges it into a senior cluster again if one is around.
    this.driver = this.newDriver([this.nodeId], hard);
    options.transport.onMessage((from, message) => this.onMessage(from, message));
    options.transport.onPeer((peerId, up) => this.onPeer(peerId, up));
  }

  // ── ClusterPort ───────────────────────────────────────────────────────────────────────────────

  get state(): State {
    return this.replica.state;
  }
  subscribe(listener: StateListener): () => void {
    return this.replica.subscribe(listener);
  }
  eventsSince(sinceIdx: number): readonly IndexedEvent[] | null {
    return this.replica.eventsSince(sinceIdx);
  }
  sendCommand(command: Command): void {
    this.outbox.push({ kind: "command", command });
    this.queueFlush();
  }
  sendWorkerEvent(event: WorkerEvent): void {
    this.outbox.push({ kind: "workerEvent", event });
    this.queueFlush();
  }

  /** For tests and the dashboard. */
  get role(): RaftState<IndexedEvent, State>["role"] {
    return this.driver.state.role;
  }
  get leaderId(): NodeId | null {
    return this.driver.state.leaderId;
  }
  get term(): number {
    return this.driver.state.term;
  }
  get voters(): readonly NodeId[] {
    return this.driver.voters;
  }
  get pendingForwards(): number {
    return this.outbox.size;
  }

  start(): void {
    this.replica.reset(this.driver.state.snapshot.state);
    this.timers.push(setInterval(() => this.tick(), RAFT_TICK_MS));
    this.timers.push(setInterval(() => this.membershipTick(), MEMBERSHIP_TICK_MS));
    for (const t of this.timers) t.unref();
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    this.master = null;
  }

  // ── election core ─────────────────────────────────────────────────────────────────────────────

  private config(bootstrapVoters: readonly NodeId[]): RaftConfig<IndexedEvent, State> {
    return skeinRaftConfig(this.nodeId, bootstrapVoters, this.options.raft ?? {});
  }

  private newDriver(bootstrapVoters: readonly NodeId[], hard: SkeinHardState | null): RaftDriver<IndexedEvent, State> {
    const config = this.config(bootstrapVoters);
    const nowMs = this.options.clock.nowMs();
    const seed = this.options.seed ?? Math.floor(Math.random() * 2 ** 31);
    const empty: Snapshot<State> = { lastIndex: -1, lastTerm: 0, state: emptyState() };
    const fresh = initialRaftState(config, hard?.snapshot ?? empty, seed, nowMs);
    let initial = hard === null ? fresh : restoredRaftState(fresh, hard, config);
    // Alone in its configuration: no one to wait for, lead at the first tick (a single node serves at once).
    if (initial.voters.length === 1 && initial.voters[0] === this.nodeId) initial = { ...initial, electionDeadlineMs: nowMs };
    const proxy: Transport = {
      nodeId: this.nodeId,
      send: (to, message) => this.options.transport.send(to, message),
      onMessage: (handler) => {
        this.raftHandler = handler;
      },
      onPeer: () => {},
      connectedPeers: () => this.options.transport.connectedPeers(),
    };
    return new RaftDriver<IndexedEvent, State>({
      config,
      transport: proxy,
      clock: this.options.clock,
      initial,
      parseMessage: this.parseRaft,
      onApply: (entries) => {
        for (const entry of entries) this.replica.receive(entry.payload);
      },
      onRestore: (snapshot) => {
        this.options.logger.info({ lastIdx: snapshot.lastIndex }, "state restored from the leader's snapshot");
        this.replica.reset(snapshot.state);
      },
      onRoleChanged: (role, term, leaderId) => queueMicrotask(() => this.onRoleChanged(role, term, leaderId)),
      ...(this.options.store === null ? {} : { persist: (h: SkeinHardState) => this.options.store!.persist(h) }),
      logger: this.options.logger.child({ component: "election" }),
    });
  }

  private tick(): void {
    if (this.stopped) return;
    this.driver.tick();
    if (this.driver.state.leaderId !== null) this.lastLeaderSeenMs = this.options.clock.nowMs();
    this.flush();
  }

  private onRoleChanged(role: string, term: number, leaderId: NodeId | null): void {
    if (this.stopped) return;
    if (role === "leader" && this.driver.state.role === "leader" && this.driver.state.term === term) {
      this.becomeMaster(term);
    } else if (role !== "leader" && this.master !== null) {
      this.options.logger.info({ term, leaderId }, "no longer the master");
      this.master = null;
    }
    this.flush();
  }

  private becomeMaster(term: number): void {
    const driver = this.driver;
    const log: MasterLog = {
      readSince: (sinceIdx, limit = EVENT_LOG_PAGE_MAX) => {
        const first = driver.state.snapshot.lastIndex + 1;
        const from = Math.max(sinceIdx, first) - first;
        return driver.state.log.slice(from, from + Math.min(limit, EVENT_LOG_PAGE_MAX)).map((e) => e.payload);
      },
      append: (events) => {
        const result = driver.propose(events);
        if (!result.ok) throw new ProposalRefusedError(result.reason);
      },
    };
    const logger = this.options.logger.child({ component: "master" });
    const master = new Master({
      nodeId: this.nodeId,
      log,
      clock: this.options.clock,
      logger: logger as unknown as MasterLogger,
      // Replicas (this node's too) are fed by committed entries, not by the master directly.
      publish: () => {},
      term,
      initialState: driver.state.snapshot.state,
      announceOnStart: false,
      // The API of this process kept serving: its clients are still connected.
      cleanUpOwnOrphansOnStart: false,
    });
    master.start();
    this.master = master;
    this.inbox.reset();
    this.learnersKey = "";
    logger.info({ term, lastIdx: master.state.lastIdx, members: master.state.members }, "this node is the master");
  }

  // ── forwarding ────────────────────────────────────────────────────────────────────────────────

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.stopped) return;
    const leaderId = this.driver.state.leaderId;
    if (leaderId === null) return;
    if (leaderId !== this.nodeId) {
      this.outbox.flush(leaderId);
      return;
    }
    if (this.master === null) return;
    for (const item of this.outbox.drain()) {
      if (!this.handleLocally(item.kind === "command" ? { command: item.command } : { event: item.event }, this.nodeId)) {
        // Leadership was lost while handling: what is left goes to the next leader.
        this.outbox.push(item);
      }
    }
  }

  /** Runs one command or report through this node's master; false when this node stopped leading. */
  private handleLocally(item: { command: Command } | { event: Event }, from: NodeId): boolean {
    const master = this.master;
    if (master === null) return false;
    try {
      if ("command" in item) master.handleCommand(item.command);
      else master.handleWorkerEvent(item.event, from);
      return true;
    } catch (error) {
      if (!(error instanceof ProposalRefusedError)) throw error;
      this.options.logger.warn({ reason: error.message }, "the replicated log refused the master's events");
      if (this.driver.state.role !== "leader") this.master = null;
      return this.master !== null;
    }
  }

  // ── messages ──────────────────────────────────────────────────────────────────────────────────

  private onMessage(from: NodeId, message: unknown): void {
    if (this.stopped) return;
    const topic = (message as { topic?: unknown } | null)?.topic;
    if (topic === "raft") {
      this.raftHandler?.(from, message);
      if (this.driver.state.leaderId !== null) this.lastLeaderSeenMs = this.options.clock.nowMs();
      this.flush();
      return;
    }
    if (topic === FORWARD_TOPIC) return this.onForward(from, message);
    if (topic === FORWARD_ACK_TOPIC) {
      const ack = ForwardAckSchema.safeParse(message);
      if (ack.success) this.outbox.acknowledge(ack.data.epoch, ack.data.seq);
      return;
    }
    if (topic === CLUSTER_TOPIC) return this.onHello(from, message);
  }

  private onForward(from: NodeId, message: unknown): void {
    const parsed = ForwardMessageSchema.safeParse(message);
    if (!parsed.success) {
      this.options.logger.warn({ from }, "dropped a malformed forwarded message");
      return;
    }
    if (this.master === null) return; // not the master (any more): the sender re-sends to the leader
    const { epoch, seq, item } = parsed.data;
    const verdict = this.inbox.judge(from, epoch, seq);
    if (verdict === "early") return;
    if (verdict === "handle") {
      const handled = this.handleLocally(item.kind === "command" ? { command: item.command as Command } : { event: item.event as Event }, from);
      if (!handled) return;
    }
    this.options.transport.send(from, { topic: FORWARD_ACK_TOPIC, epoch, seq });
  }

  private onPeer(peerId: NodeId, up: boolean): void {
    if (this.stopped) return;
    if (!up) {
      this.peerClusters.delete(peerId);
      return;
    }
    this.peerClusters.set(peerId, this.peerClusters.get(peerId) ?? null);
    this.sendHello(peerId);
    this.flush();
  }

  // ── membership ────────────────────────────────────────────────────────────────────────────────

  /** The cluster this node is in (its log's), or the one it is joining; null before founding. */
  private descriptor(): ClusterDescriptor | null {
    const state = this.master?.state ?? this.replica.state;
    if (state.clusterId !== null) return { clusterId: state.clusterId, memberCount: Math.max(1, state.members.length) };
    return this.joining;
  }

  private sendHello(peerId: NodeId): void {
    const own = this.descriptor();
    this.options.transport.send(peerId, {
      topic: CLUSTER_TOPIC,
      clusterId: own?.clusterId ?? null,
      memberCount: own?.memberCount ?? 0,
      leaderId: this.driver.state.leaderId,
    });
  }

  private onHello(from: NodeId, message: unknown): void {
    const parsed = HelloSchema.safeParse(message);
    if (!parsed.success) {
      this.options.logger.warn({ from }, "dropped a malformed cluster hello");
      return;
    }
    const { clusterId, memberCount } = parsed.data;
    if (clusterId === null || memberCount === 0) {
      this.peerClusters.set(from, null);
      return;
    }
    const peer: ClusterDescriptor = { clusterId, memberCount };
    this.peerClusters.set(from, peer);
    const own = this.descriptor();
    if (own !== null && own.clusterId === clusterId) return;
    if (!shouldJoin(own, peer)) return;
    this.join(peer, from);
  }

  /** Leaves this node's cluster (dropping its State) to be added to the senior one. */
  private join(target: ClusterDescriptor, via: NodeId): void {
    this.options.logger.info({ clusterId: target.clusterId, via, left: this.descriptor()?.clusterId ?? null }, "joining a senior cluster");
    this.restartElection(null, []);
    this.joining = target;
    for (const peerId of this.options.transport.connectedPeers()) this.sendHello(peerId);
  }

  /** Replaces the election core's state: a fresh empty log (join) or this node's committed State alone (found). */
  private restartElection(snapshot: Snapshot<State> | null, voters: readonly NodeId[]): void {
    this.master = null;
    const term = this.driver.state.term;
    const hard: SkeinHardState | null =
      snapshot === null ? null : { term: term + 1, votedFor: null, snapshot, log: [] };
    this.driver = this.newDriver(voters, hard);
    this.options.store?.persist({ term: this.driver.state.term, votedFor: null, snapshot: this.driver.state.snapshot, log: [] });
    this.replica.reset(this.driver.state.snapshot.state);
    this.lastLeaderSeenMs = this.options.clock.nowMs();
  }

  private membershipTick(): void {
    if (this.stopped) return;
    const nowMs = this.options.clock.nowMs();
    if (nowMs - this.lastGossipMs >= GOSSIP_INTERVAL_MS) {
      this.lastGossipMs = nowMs;
      for (const peerId of this.options.transport.connectedPeers()) this.sendHello(peerId);
    }
    if (this.master !== null) {
      this.leaderDuties(this.master, nowMs);
      return;
    }
    const aloneMs = this.options.aloneTimeoutMs ?? ALONE_TIMEOUT_MS;
    if (this.driver.state.leaderId === null && nowMs - this.lastLeaderSeenMs >= aloneMs) this.foundAlone();
  }

  /** No leader for long: lead a cluster of one, keeping the committed State (instances on this node go on). */
  private foundAlone(): void {
    // Everything this node's log holds, not only what it knows to be committed (after a restart that
    // is just the snapshot): leaving the majority behind, its own history is the best State it has.
    const raft = this.driver.state;
    let held = raft.snapshot.state;
    for (const entry of raft.log) if (entry.payload.idx === held.lastIdx + 1) held = apply(held, entry.payload);
    if (held.lastIdx < this.replica.state.lastIdx) held = this.replica.state;
    this.options.logger.warn({ lastIdx: held.lastIdx }, "no master heard for too long: founding a cluster of one with the state this node holds");
    this.joining = null;
    const snapshot: Snapshot<State> = { lastIndex: held.lastIdx, lastTerm: raft.term, state: { ...held, clusterId: null, members: [] } };
    this.restartElection(snapshot, [this.nodeId]);
  }

  private leaderDuties(master: Master, nowMs: number): void {
    try {
      if (master.state.clusterId === null) {
        // A founding master names its cluster first (its log's first configuration entry).
        master.handleClusterEvent({ type: "ClusterMembersChanged", clusterId: newClusterId(this.nodeId, nowMs), members: [this.nodeId] });
        this.joining = null;
        return;
      }
      const linked = new Set(this.options.transport.connectedPeers());
      const known = [...new Set([...Object.keys(master.state.nodes), ...master.state.members])] as NodeId[];
      this.unreachableSince = trackReachability(this.unreachableSince, known, linked, nowMs);
      const timedOut = nodesToTimeOut(this.nodeId, known, this.unreachableSince, nowMs, this.options.nodeTimeoutMs ?? NODE_UNREACHABLE_TIMEOUT_MS);
      for (const nodeId of timedOut) {
        if (master.state.nodes[nodeId] !== undefined) master.handleClusterEvent({ type: "NodeTimedOut", nodeId });
      }
      const linkedViews: PeerView[] = [...linked].map((nodeId) => ({ nodeId, clusterId: this.peerClusters.get(nodeId)?.clusterId ?? null }));
      // Joiners first replicate as learners (they count for no majority), and vote once caught up.
      const learners = joiners(master.state.clusterId, master.state.members, linkedViews);
      const learnersKey = learners.join(",");
      if (learnersKey !== this.learnersKey) {
        this.learnersKey = learnersKey;
        this.driver.setLearners(learners);
      }
      const peers = linkedViews.map((p) => {
        if (!learners.includes(p.nodeId)) return p;
        const lag = this.driver.replicationLag(p.nodeId);
        return { ...p, caughtUp: lag !== null && lag <= JOINER_CAUGHT_UP_LAG_MAX };
      });
      const change = nextMembersChange(master.state, this.replica.state, peers, new Set(timedOut));
      if (change !== null) {
        this.options.logger.info({ members: change.members }, "changing the cluster's members");
        master.handleClusterEvent(change);
      }
      const links = this.options.transport.peerLinks?.() ?? [];
      for (const event of edgeEvents(this.nodeId, master.state.edges, links.map((l) => ({ nodeId: l.nodeId, rttMs: l.rttMs, bandwidthBytesPerSecond: l.bandwidthBytesPerSecond })))) {
        master.handleClusterEvent(event);
      }
    } catch (error) {
      if (!(error instanceof ProposalRefusedError)) throw error;
      this.options.logger.debug({ reason: error.message }, "membership change deferred");
      if (this.driver.state.role !== "leader") this.master = null;
    }
  }
}

export class ProposalRefusedError extends Error {
  override name = "ProposalRefusedError";
}
