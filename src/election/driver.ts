// The I/O edge of the election core: feeds it clock ticks and validated messages from a Transport,
// and carries out its outputs. The owner decides the pace (a real node calls tick() from a timer;
// the simulation calls it on its fake clock), so the same driver runs in both.
//
// Raft's safety needs term, vote and log on stable storage before any message of the same step
// leaves: the `persist` hook is called exactly then (the on-disk format is the owner's business).
import { z } from "zod";
import type { Clock } from "../shared/clock.ts";
import type { NodeId } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import type { Transport } from "../net/transport.ts";
import type { LogEntry, RaftConfig, RaftMessage, RaftOutput, RaftState, Role, Snapshot } from "./raft.ts";
import { configChangePending, configFromLog, replicationLag, step } from "./raft.ts";
import { AssertionError } from "../shared/assert.ts";

/** Topic of election/replication messages on a transport that will carry other topics too. */
export const RAFT_TOPIC = "raft";

export interface RaftDriverOptions<P, S> {
  readonly config: RaftConfig<P, S>;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly initial: RaftState<P, S>;
  /** Validates a message from the wire; null drops it (a peer's bug must not trip the core's asserts). */
  readonly parseMessage: (raw: unknown) => RaftMessage<P, S> | null;
  readonly onApply: (entries: readonly LogEntry<P>[]) => void;
  readonly onRestore: (snapshot: Snapshot<S>) => void;
  readonly onRoleChanged?: (role: Role, term: number, leaderId: NodeId | null) => void;
  /** Called, before the step's messages are sent, whenever term, vote, snapshot or log changed. Must be durable when it returns. */
  readonly persist?: (hard: HardState<P, S>) => void;
  readonly logger?: Pick<Logger, "debug" | "info" | "warn">;
}

/** What a node must remember across a crash; everything else in RaftState is rebuilt. */
export interface HardState<P, S> {
  readonly term: number;
  readonly votedFor: NodeId | null;
  readonly snapshot: Snapshot<S>;
  readonly log: readonly LogEntry<P>[];
}

/**
 * The state a restarted node starts from: its hard state, as a follower that knows no leader. Its
 * configuration is the latest one in the restored log or snapshot (hence `config`).
 */
export function restoredRaftState<P, S>(fresh: RaftState<P, S>, hard: HardState<P, S>, config: RaftConfig<P, S>): RaftState<P, S> {
  return {
    ...fresh,
    term: hard.term,
    votedFor: hard.votedFor,
    snapshot: hard.snapshot,
    log: hard.log,
    commitIndex: hard.snapshot.lastIndex,
    appliedIndex: hard.snapshot.lastIndex,
    ...configFromLog(config, hard.snapshot, hard.log),
  };
}

export class RaftDriver<P, S> {
  private current: RaftState<P, S>;
  droppedMessages = 0;
  /** Well-formed messages the core refused because they contradict Raft's invariants (see below). */
  refusedMessages = 0;
  lastRefusal: string | null = null;

  constructor(private readonly options: RaftDriverOptions<P, S>) {
    this.current = options.initial;
    options.transport.onMessage((from, raw) => {
      const envelope = raw as { topic?: unknown; message?: unknown } | null;
      if (envelope?.topic !== RAFT_TOPIC) return;
      const message = options.parseMessage(envelope.message);
      if (message === null) {
        this.droppedMessages++;
        options.logger?.warn({ from }, "dropped a malformed election message");
        return;
      }
      this.run({ type: "receive", from, message });
    });
  }

  get state(): RaftState<P, S> {
    return this.current;
  }

  /** The current configuration (latest in the log, committed or not). */
  get voters(): readonly NodeId[] {
    return this.current.voters;
  }

  /** A configuration change is in the log but not committed: the next one would be refused. */
  get configChangePending(): boolean {
    return configChangePending(this.current);
  }

  /** Nodes to replicate to without counting them (leader only; cleared when this node becomes leader). */
  setLearners(learnerIds: readonly NodeId[]): void {
    this.run({ type: "setLearners", learnerIds });
  }

  /** Entries `nodeId` trails this leader by; null when this node does not lead it (see replicationLag). */
  replicationLag(nodeId: NodeId): number | null {
    return replicationLag(this.current, nodeId);
  }

  tick(): void {
    this.run({ type: "tick" });
  }

  /** Appends payloads if this node leads; returns the refusal reason otherwise. */
  propose(payloads: readonly P[]): { ok: true; firstIndex: number } | { ok: false; reason: string; leaderId: NodeId | null } {
    const outputs = this.run({ type: "propose", payloads });
    for (const output of outputs) {
      if (output.type === "proposed") return { ok: true, firstIndex: output.firstIndex };
      if (output.type === "proposalRefused") return { ok: false, reason: output.reason, leaderId: output.leaderId };
    }
    return { ok: false, reason: "nothing to propose", leaderId: this.current.leaderId };
  }

  private run(input: Parameters<typeof step<P, S>>[2]): RaftOutput<P, S>[] {
    const before = this.current;
    let result: ReturnType<typeof step<P, S>>;
    try {
      result = step(this.options.config, before, input, this.options.clock.nowMs());
    } catch (error) {
      // The core asserts Raft's invariants (one leader per term, committed entries never
      // overwritten). A received message that would break them comes from a node with another
      // history (e.g. one that founded a cluster of its own); the step is pure, so dropping the
      // message leaves this node exactly as it was, and a peer's confusion cannot crash the process.
      if (input.type !== "receive" || !(error instanceof AssertionError)) throw error;
      this.refusedMessages++;
      this.lastRefusal = error.message;
      this.options.logger?.warn({ from: input.from, reason: error.message }, "refused an election message that contradicts this node's log");
      return [];
    }
    const { state, outputs } = result;
    this.current = state;
    const hardChanged = state.term !== before.term || state.votedFor !== before.votedFor || state.log !== before.log || state.snapshot !== before.snapshot;
    if (hardChanged) this.options.persist?.({ term: state.term, votedFor: state.votedFor, snapshot: state.snapshot, log: state.log });
    for (const output of outputs) this.carryOut(output);
    return outputs;
  }

  private carryOut(output: RaftOutput<P, S>): void {
    switch (output.type) {
      case "send":
        this.options.transport.send(output.to, { topic: RAFT_TOPIC, message: output.message });
        return;
      case "apply":
        this.options.onApply(output.entries);
        return;
      case "restore":
        this.options.onRestore(output.snapshot);
        return;
      case "roleChanged":
        this.options.logger?.info({ role: output.role, term: output.term, leaderId: output.leaderId }, "election: role changed");
        this.options.onRoleChanged?.(output.role, output.term, output.leaderId);
        return;
      case "proposed":
      case "proposalRefused":
        return;
    }
  }
}

// ── wire validation ─────────────────────────────────────────────────────────────────────────────

const index = z.number().int().min(-1);
const term = z.number().int().min(0);

/** A zod schema for election messages whose entries carry `payload` and snapshots carry `state`. */
export function raftMessageSchema<P, S>(payload: z.ZodType<P>, state: z.ZodType<S>, entriesMax: number): z.ZodType<RaftMessage<P, S>> {
  const entry = z.object({ term, index: z.number().int().min(0), payload });
  const entries = z.array(entry).max(entriesMax);
  const seq = z.number().int().min(0);
  return z.discriminatedUnion("type", [
    z.object({ type: z.literal("PreVote"), term, lastLogIndex: index, lastLogTerm: term }),
    z.object({ type: z.literal("PreVoteReply"), term, forTerm: term, granted: z.boolean() }),
    z.object({ type: z.literal("RequestVote"), term, lastLogIndex: index, lastLogTerm: term }),
    z.object({ type: z.literal("RequestVoteReply"), term, granted: z.boolean() }),
    z.object({ type: z.literal("AppendEntries"), term, seq, prevIndex: index, prevTerm: term, entries, leaderCommit: index }),
    z.object({
      type: z.literal("InstallSnapshot"),
      term,
      seq,
      snapshot: z.object({ lastIndex: index, lastTerm: term, state }),
      entries,
      leaderCommit: index,
    }),
    z.object({ type: z.literal("AppendEntriesReply"), term, seq, success: z.boolean(), matchIndex: index }),
  ]).refine(entriesFollowOn, "entries must be contiguous after prevIndex (or the snapshot)") as unknown as z.ZodType<RaftMessage<P, S>>;
}

/** The core asserts a gap-free log; a message whose entries skip or repeat an index is refused here. */
function entriesFollowOn(m: { type: string; prevIndex?: number; snapshot?: { lastIndex: number }; entries?: readonly { index: number }[] }): boolean {
  if (m.entries === undefined) return true;
  const first = (m.type === "InstallSnapshot" ? m.snapshot!.lastIndex : m.prevIndex!) + 1;
  return m.entries.every((e, i) => e.index === first + i);
}
