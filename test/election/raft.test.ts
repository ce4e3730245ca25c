// Table-like unit tests of the pure core: inputs in, state and outputs out. Payloads are strings and
// the snapshot state is the list of folded payloads, so every expectation is visible in the test.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { LogEntry, RaftConfig, RaftInput, RaftMessage, RaftOutput, RaftState } from "../../src/election/raft.ts";
import { initialRaftState, lastLogIndex, step } from "../../src/election/raft.ts";
import type { NodeId } from "../../src/shared/ids.ts";

type P = string;
type S = readonly string[];
const ids = ["a", "b", "c"] as NodeId[];
const [A, B, C] = ids as [NodeId, NodeId, NodeId];

function config(nodeId: NodeId, overrides: Partial<RaftConfig<P, S>> = {}): RaftConfig<P, S> {
  return {
    nodeId,
    voterIds: ids,
    electionTimeoutMinMs: 150,
    electionTimeoutMaxMs: 300,
    heartbeatIntervalMs: 50,
    entriesPerMessageMax: 100,
    logTailKeep: 4,
    compactionBatch: 4,
    logEntriesInMemoryMax: 64,
    uncommittedEntriesMax: 10,
    applyToSnapshot: (state, entry) => [...state, entry.payload],
    leaderNoop: (index, term) => `noop@${index}/t${term}`,
    ...overrides,
  };
}

const empty = { lastIndex: -1, lastTerm: 0, state: [] as S };
const entries = (...terms: number[]): LogEntry<P>[] => terms.map((term, index) => ({ term, index, payload: `e${index}/t${term}` }));

function run(cfg: RaftConfig<P, S>, state: RaftState<P, S>, input: RaftInput<P, S>, nowMs = 0) {
  return step(cfg, state, input, nowMs);
}
const sends = (outputs: RaftOutput<P, S>[]) => outputs.flatMap((o) => (o.type === "send" ? [o] : []));
const receive = (from: NodeId, message: RaftMessage<P, S>): RaftInput<P, S> => ({ type: "receive", from, message });

test("a single voter elects itself at its timeout and commits its no-op", () => {
  const cfg = config(A, { voterIds: [A] });
  const s0 = initialRaftState(cfg, empty, 1, 0);
  assert.ok(s0.electionDeadlineMs >= 150 && s0.electionDeadlineMs < 300);
  const { state, outputs } = run(cfg, s0, { type: "tick" }, 300);
  assert.equal(state.role, "leader");
  assert.equal(state.term, 1);
  assert.equal(state.commitIndex, 0);
  assert.deepEqual(outputs.find((o) => o.type === "apply"), { type: "apply", entries: [{ term: 1, index: 0, payload: "noop@0/t1" }] });
});

test("election timeouts come from the seed: same seed same deadline, other seeds spread", () => {
  const cfg = config(A);
  assert.equal(initialRaftState(cfg, empty, 7, 0).electionDeadlineMs, initialRaftState(cfg, empty, 7, 0).electionDeadlineMs);
  const deadlines = new Set(Array.from({ length: 50 }, (_, seed) => initialRaftState(cfg, empty, seed, 0).electionDeadlineMs));
  assert.ok(deadlines.size > 20, `only ${deadlines.size} distinct deadlines`);
});

test("three voters: pre-vote, vote, leader; one vote per term; a stale log gets no vote", () => {
  const cfgA = config(A);
  let a = initialRaftState(cfgA, empty, 1, 0);
  let r = run(cfgA, a, { type: "tick" }, 400);
  a = r.state;
  assert.equal(a.term, 0, "pre-vote does not raise the term");
  assert.deepEqual(sends(r.outputs).map((o) => o.message.type), ["PreVote", "PreVote"]);
  r = run(cfgA, a, receive(B, { type: "PreVoteReply", term: 0, forTerm: 1, granted: true }), 401);
  a = r.state;
  assert.equal(a.role, "candidate");
  assert.equal(a.term, 1);
  const requestVote = sends(r.outputs)[0]!.message;
  assert.equal(requestVote.type, "RequestVote");

  const cfgB = config(B);
  let b = initialRaftState(cfgB, empty, 2, 0);
  r = run(cfgB, b, receive(A, requestVote), 402);
  b = r.state;
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "RequestVoteReply", term: 1, granted: true });
  // C asks B in the same term: B already voted.
  r = run(cfgB, b, receive(C, { type: "RequestVote", term: 1, lastLogIndex: 5, lastLogTerm: 1 }), 403);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "RequestVoteReply", term: 1, granted: false });

  r = run(cfgA, a, receive(B, { type: "RequestVoteReply", term: 1, granted: true }), 404);
  a = r.state;
  assert.equal(a.role, "leader");
  assert.deepEqual(r.outputs.find((o) => o.type === "roleChanged"), { type: "roleChanged", role: "leader", term: 1, leaderId: A });

  // A voter whose log has a later term refuses a candidate with an older one.
  const cfgC = config(C);
  const c: RaftState<P, S> = { ...initialRaftState(cfgC, empty, 3, 0), term: 2, log: entries(1, 2) };
  r = run(cfgC, c, receive(B, { type: "RequestVote", term: 3, lastLogIndex: 9, lastLogTerm: 1 }), 405);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "RequestVoteReply", term: 3, granted: false });
});

test("a follower that heard from its leader lately refuses pre-votes, and keeps its term", () => {
  const cfgB = config(B);
  const b: RaftState<P, S> = { ...initialRaftState(cfgB, empty, 2, 0), term: 3, leaderId: A, leaderContactMs: 1_000 };
  const r = run(cfgB, b, receive(C, { type: "PreVote", term: 4, lastLogIndex: 10, lastLogTerm: 3 }), 1_050);
  assert.equal(r.state.term, 3);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "PreVoteReply", term: 3, forTerm: 4, granted: false });
  const later = run(cfgB, b, receive(C, { type: "PreVote", term: 4, lastLogIndex: 10, lastLogTerm: 3 }), 1_200);
  assert.deepEqual(sends(later.outputs)[0]!.message, { type: "PreVoteReply", term: 3, forTerm: 4, granted: true });
});

function leaderWith(log: LogEntry<P>[], term: number, commitIndex: number): RaftState<P, S> {
  const cfg = config(A);
  const progress = Object.fromEntries([B, C].map((id) => [id, { nextIndex: log.length, matchIndex: -1, sentSeq: 1, sentAtMs: 0, ackedAtMs: 0 }]));
  return { ...initialRaftState(cfg, empty, 1, 0), role: "leader", term, leaderId: A, log, commitIndex, appliedIndex: commitIndex, progress };
}

test("an entry of an older term is not committed by counting replicas (Raft figure 8)", () => {
  const cfg = config(A);
  // Term 4 leader: index 1 is from term 2, index 2 is this term's no-op.
  const s = leaderWith(entries(1, 2, 4), 4, 0);
  let r = run(cfg, s, receive(B, { type: "AppendEntriesReply", term: 4, seq: 1, success: true, matchIndex: 1 }), 10);
  assert.equal(r.state.commitIndex, 0, "a majority holding a term-2 entry does not commit it");
  r = run(cfg, r.state, receive(B, { type: "AppendEntriesReply", term: 4, seq: 1, success: true, matchIndex: 2 }), 11);
  assert.equal(r.state.commitIndex, 2, "committing this term's entry commits everything before it");
  assert.deepEqual((r.outputs.find((o) => o.type === "apply") as { entries: readonly LogEntry<P>[] } | undefined)!.entries.map((e) => e.index), [1, 2]);
});

test("a follower replaces a conflicting uncommitted suffix, never a committed entry", () => {
  const cfgB = config(B);
  const b: RaftState<P, S> = { ...initialRaftState(cfgB, empty, 2, 0), term: 3, log: entries(1, 2, 2), commitIndex: 0, appliedIndex: 0 };
  const newer = { term: 3, index: 1, payload: "x1/t3" };
  const r = run(cfgB, b, receive(A, { type: "AppendEntries", term: 3, seq: 5, prevIndex: 0, prevTerm: 1, entries: [newer], leaderCommit: 1 }), 10);
  assert.deepEqual(r.state.log.map((e) => e.payload), ["e0/t1", "x1/t3"]);
  assert.equal(r.state.commitIndex, 1);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "AppendEntriesReply", term: 3, seq: 5, success: true, matchIndex: 1 });

  const committed: RaftState<P, S> = { ...b, commitIndex: 1, appliedIndex: 1 };
  assert.throws(
    () => run(cfgB, committed, receive(A, { type: "AppendEntries", term: 3, seq: 6, prevIndex: 0, prevTerm: 1, entries: [newer], leaderCommit: 1 }), 10),
    /overwrote committed entry 1/,
  );
});

test("a mismatch is answered with a hint that skips the whole conflicting term", () => {
  const cfgB = config(B);
  const b: RaftState<P, S> = { ...initialRaftState(cfgB, empty, 2, 0), term: 5, log: entries(1, 1, 2, 2, 2), commitIndex: 1, appliedIndex: 1 };
  const r = run(cfgB, b, receive(A, { type: "AppendEntries", term: 5, seq: 1, prevIndex: 4, prevTerm: 4, entries: [], leaderCommit: 1 }), 10);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "AppendEntriesReply", term: 5, seq: 1, success: false, matchIndex: 1 });
});

test("the leader compacts, and a follower behind the snapshot gets snapshot + tail and restores", () => {
  const cfgA = config(A, { voterIds: [A] });
  let a = initialRaftState(cfgA, empty, 1, 0);
  a = run(cfgA, a, { type: "tick" }, 300).state;
  for (let i = 0; i < 20; i++) a = run(cfgA, a, { type: "propose", payloads: [`p${i}`] }, 301).state;
  assert.equal(lastLogIndex(a), 20);
  assert.ok(a.snapshot.lastIndex >= 8, `snapshot at ${a.snapshot.lastIndex}`);
  assert.ok(a.log.length <= 4 + 4, `log keeps ${a.log.length}`);
  assert.deepEqual(a.snapshot.state, ["noop@0/t1", ...Array.from({ length: a.snapshot.lastIndex }, (_, i) => `p${i}`)]);

  const cfgB = config(B);
  const b = initialRaftState(cfgB, empty, 2, 0);
  const r = run(cfgB, b, receive(A, { type: "InstallSnapshot", term: 1, seq: 1, snapshot: a.snapshot, entries: a.log, leaderCommit: a.commitIndex }), 400);
  assert.deepEqual(r.outputs.filter((o) => o.type === "restore" || o.type === "apply").map((o) => o.type), ["restore", "apply"]);
  assert.equal(r.state.appliedIndex, 20);
  assert.deepEqual(sends(r.outputs)[0]!.message, { type: "AppendEntriesReply", term: 1, seq: 1, success: true, matchIndex: 20 });
});

test("proposals: refused by a follower, and by a leader over its uncommitted limit", () => {
  const cfgA = config(A);
  const follower = initialRaftState(cfgA, empty, 1, 0);
  assert.equal(run(cfgA, follower, { type: "propose", payloads: ["x"] }).outputs[0]?.type, "proposalRefused");
  const leader = leaderWith(entries(1), 1, 0);
  const r = run(cfgA, leader, { type: "propose", payloads: Array.from({ length: 11 }, (_, i) => `p${i}`) }, 10);
  assert.equal(r.outputs[0]?.type, "proposalRefused");
  assert.equal(r.state, leader);
});

test("a leader that hears from no majority for an election timeout steps down", () => {
  const cfgA = config(A);
  const leader = leaderWith(entries(1), 1, 0);
  assert.equal(run(cfgA, leader, { type: "tick" }, 200).state.role, "leader");
  const r = run(cfgA, leader, { type: "tick" }, 301);
  assert.equal(r.state.role, "follower");
  assert.equal(r.state.term, 1);
});
