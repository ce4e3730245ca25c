// The election core specialised to skein's replicated event log: entries carry IndexedEvents (entry
// index = event idx), a snapshot is a State folded with the shared `apply`, and a new leader's
// first entry is MasterChanged{itself, term} — which both announces the master to every replica
// and commits what earlier terms left uncommitted. Wiring this into src/node is the next step.
import { z } from "zod";
import { apply } from "../shared/apply.ts";
import { NodeIdSchema } from "../shared/ids.ts";
import type { NodeId } from "../shared/ids.ts";
import { CLUSTER_MEMBERS_MAX } from "../shared/limits.ts";
import type { State } from "../shared/state.ts";
import type { IndexedEvent } from "../shared/types.ts";
import { DownloadProgressSchema, IndexedEventSchema, InstanceSchema, NodeInfoSchema, RunnerSchema, TaskSchema } from "../shared/types.ts";
import type { RaftConfig, RaftMessage } from "./raft.ts";
import { raftMessageSchema } from "./driver.ts";

export const ELECTION_TIMEOUT_MIN_MS = 1_500;
export const ELECTION_TIMEOUT_MAX_MS = 3_000;
export const ELECTION_HEARTBEAT_INTERVAL_MS = 250;
/** Events per AppendEntries; at EVENT_LOG_PAGE_MAX-like sizes a message stays well under a frame. */
export const REPLICATION_ENTRIES_PER_MESSAGE_MAX = 1_024;
export const REPLICATION_LOG_TAIL_KEEP = 4_096;
export const REPLICATION_COMPACTION_BATCH = 4_096;
/**
 * Entries a leader keeps for followers still catching up. Every append copies the log array (the
 * core's state is immutable), so this bounds the per-event cost too: measured ~60 µs per one-entry
 * propose at 8k entries and ~400 µs at 65k on the 2-core dev box; beyond it a follower gets a snapshot.
 */
export const REPLICATION_LOG_ENTRIES_IN_MEMORY_MAX = 16_384;
export const REPLICATION_UNCOMMITTED_MAX = 8_192;

/**
 * State from the wire (a snapshot). Its record keys are checked by the entity schemas' own ids,
 * and `edges` by NodeIdSchema, so a snapshot cannot smuggle in what no event could produce.
 */
export const StateSchema: z.ZodType<State> = z.object({
  lastIdx: z.number().int().min(-1),
  masterNodeId: NodeIdSchema.nullable(),
  masterTerm: z.number().int().min(0),
  clusterId: z.string().min(1).max(128).nullable(),
  members: z.array(NodeIdSchema).max(CLUSTER_MEMBERS_MAX),
  nodes: z.record(z.string(), NodeInfoSchema),
  instances: z.record(z.string(), InstanceSchema),
  runners: z.record(z.string(), RunnerSchema),
  tasks: z.record(z.string(), TaskSchema),
  downloads: z.record(z.string(), z.record(z.string(), DownloadProgressSchema)),
  edges: z.array(
    z.object({
      fromNodeId: NodeIdSchema,
      toNodeId: NodeIdSchema,
      latencyMs: z.number().min(0).nullable(),
      // Snapshots taken before bandwidth was measured lack it.
      bandwidthBytesPerSecond: z.number().min(0).nullable().default(null),
    }),
  ),
}) as unknown as z.ZodType<State>;

/** skein's configuration entry: ClusterMembersChanged names the voters. */
export const skeinConfigOf = (entry: IndexedEvent): readonly NodeId[] | null => (entry.event.type === "ClusterMembersChanged" ? entry.event.members : null);
/** The voters folded into a snapshot; a State that never saw ClusterMembersChanged holds none. */
export const skeinConfigOfSnapshot = (state: State): readonly NodeId[] | null => (state.members.length > 0 ? state.members : null);

export function skeinRaftConfig(nodeId: NodeId, voterIds: readonly NodeId[], overrides: Partial<RaftConfig<IndexedEvent, State>> = {}): RaftConfig<IndexedEvent, State> {
  return {
    nodeId,
    voterIds,
    electionTimeoutMinMs: ELECTION_TIMEOUT_MIN_MS,
    electionTimeoutMaxMs: ELECTION_TIMEOUT_MAX_MS,
    heartbeatIntervalMs: ELECTION_HEARTBEAT_INTERVAL_MS,
    entriesPerMessageMax: REPLICATION_ENTRIES_PER_MESSAGE_MAX,
    logTailKeep: REPLICATION_LOG_TAIL_KEEP,
    compactionBatch: REPLICATION_COMPACTION_BATCH,
    logEntriesInMemoryMax: REPLICATION_LOG_ENTRIES_IN_MEMORY_MAX,
    uncommittedEntriesMax: REPLICATION_UNCOMMITTED_MAX,
    applyToSnapshot: (state, entry) => apply(state, entry.payload),
    configOf: skeinConfigOf,
    configOfSnapshot: skeinConfigOfSnapshot,
    leaderNoop: (idx, term, leaderId, nowMs) => ({ idx, atMs: nowMs, event: { type: "MasterChanged", nodeId: leaderId, term } }),
    ...overrides,
  };
}

/** Parses an election message from a peer; null when it is malformed. */
export function skeinRaftMessageParser(entriesMax: number = REPLICATION_ENTRIES_PER_MESSAGE_MAX): (raw: unknown) => RaftMessage<IndexedEvent, State> | null {
  const schema = raftMessageSchema(IndexedEventSchema, StateSchema, entriesMax);
  return (raw) => {
    const parsed = schema.safeParse(raw);
    if (!parsed.success) return null;
    // An entry must carry the event of its own index: apply would refuse it later, far from here.
    const m = parsed.data;
    if ((m.type === "AppendEntries" || m.type === "InstallSnapshot") && m.entries.some((e) => e.payload.idx !== e.index)) return null;
    if (m.type === "InstallSnapshot" && m.snapshot.state.lastIdx !== m.snapshot.lastIndex) return null;
    return m;
  };
}
