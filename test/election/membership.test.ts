// Membership changes in the pure core (Raft thesis §4.1, one voter at a time). Payloads are strings;
// "cfg:a,b" is a configuration entry and the snapshot state is the list of folded payloads, whose
// last "cfg:" is the snapshot's configuration. A tiny synchronous network (TestNet) delivers
// messages in order so each table reads as a story: who sent what, who holds which config.
import assert from "node:assert/strict";
import { test } from "node:test";
import { restoredRaftState } from "../../src/election/driver.ts";
import type { LogEntry, RaftConfig, RaftInput, RaftMessage, RaftOutput, RaftState, Snapshot } from "../../src/election/raft.ts";
import { configChangePending, initialRaftState, isVoter, lastLogIndex, replicationLag, step, votersOf, withoutVoter, withVoter } from "../../src/election/raft.ts";
import type { NodeId } from "../../src/shared/ids.ts";

type P = string;
type S = readonly string[];
const [A, B, C, D] = ["a", "b", "c", "d"] as [NodeId, NodeId, NodeId, NodeId];

const cfgEntry = (voters: readonly NodeId[]): P => `cfg:${voters.join(",")}`;
const parseCfg = (payload: P): NodeId[] | null => (payload.startsWith("cfg:") ? (payload.slice(4).split(",").filter((x) => x !== "") as NodeId[]) : null);

function config(nodeId: NodeId, voterIds: readonly NodeId[], overrides: Partial<RaftConfig<P, S>> = {}): RaftConfig<P, S> {
  return {
    nodeId,
    voterIds,
    electionTimeoutMinMs: 150,
    electionTimeoutMaxMs: 300,
    heartbeatIntervalMs: 50,
    entriesPerMessageMax: 100,
    logTailKeep: 4,
    compactionBatch: 4,
    logEntriesInMemoryMax: 8,
    uncommittedEntriesMax: 10,
    applyToSnapshot: (state, entry) => [...state, entry.payload],
    leaderNoop: (index, term) => `noop@${index}/t${term}`,
    configOf: parseCfg,
    configOfSnapshot: (state) => {
      for (let i = state.length - 1; i >= 0; i--) {
        const voters = parseCfg(state[i]!);
        if (voters !== null) return voters;
      }
      return null;
    },
    ...overrides,
  };
}

const empty: Snapshot<S> = { lastIndex: -1, lastTerm: 0, state: [] };
const entries = (...payloads: [number, P][]): LogEntry<P>[] => payloads.map(([term, payload], index) => ({ term, index, payload }));
const sends = (outputs: readonly RaftOutput<P, S>[]) => outputs.flatMap((o) => (o.type === "send" ? [o] : []));
const refusal = (outputs: readonly RaftOutput<P, S>[]) => outputs.flatMap((o) => (o.type === "proposalRefused" ? [o.reason] : []))[0];

/** Nodes stepped by hand; `send` outputs queue up and `deliver` hands them over in order. */
class TestNet {
  readonly configs = new Map<NodeId, RaftConfig<P, S>>();
  readonly states = new Map<NodeId, RaftState<P, S>>();
  readonly outputs = new Map<NodeId, RaftOutput<P, S>[]>();
  queue: { from: NodeId; to: NodeId; message: RaftMessage<P, S> }[] = [];
  nowMs = 0;

  add(id: NodeId, voterIds: readonly NodeId[], seed: number): void {
    const cfg = config(id, voterIds);
    this.configs.set(id, cfg);
    this.states.set(id, initialRaftState(cfg, empty, seed, this.nowMs));
    this.outputs.set(id, []);
  }
  s(id: NodeId): RaftState<P, S> {
    return this.states.get(id)!;
  }
  run(id: NodeId, input: RaftInput<P, S>): RaftOutput<P, S>[] {
    const { state, outputs } = step(this.configs.get(id)!, this.s(id), input, this.nowMs);
    this.states.set(id, state);
    this.outputs.get(id)!.push(...outputs);
    for (const o of sends(outputs)) this.queue.push({ from: id, to: o.to, message: o.message });
    return outputs;
  }
  /** Delivers queued messages (and the ones they cause) until none is left, except to `cut` nodes. */
  deliver(cut: readonly NodeId[] = [], maxMessages = 1_000): void {
    for (let n = 0; this.queue.length > 0; n++) {
      assert.ok(n < maxMessages, "message storm");
      const m = this.queue.shift()!;
      if (cut.includes(m.to) || cut.includes(m.from) || !this.states.has(m.to)) continue;
      this.nowMs += 1;
      this.run(m.to, { type: "receive", from: m.from, message: m.message });
    }
  }
  /** Ticks every node once at `nowMs` and delivers. */
  tickAll(nowMs: number, cut: readonly NodeId[] = []): void {
    this.nowMs = nowMs;
    for (const id of this.states.keys()) if (!cut.includes(id)) this.run(id, { type: "tick" });
    this.deliver(cut);
  }
  leaders(): NodeId[] {
    return [...this.states.entries()].filter(([, s]) => s.role === "leader").map(([id]) => id);
  }
}

/** a, b, c (static config) with `a` elected and its no-op committed everywhere. */
function threeNodeCluster(): TestNet {
  const net = new TestNet();
  net.add(A, [A, B, C], 1);
  net.add(B, [A, B, C], 2);
  net.add(C, [A, B, C], 3);
  net.nowMs = 300;
  net.run(A, { type: "tick" });
  net.deliver();
  assert.equal(net.s(A).role, "leader");
  net.tickAll(360);
  assert.equal(net.s(B).commitIndex, 0);
  return net;
}

test("the configuration comes from the log, else the snapshot, else voterIds; restart recomputes it", () => {
  const cfg = config(A, [A, B, C]);
  assert.deepEqual(votersOf(initialRaftState(cfg, empty, 1, 0)), [A, B, C]);
  const snap: Snapshot<S> = { lastIndex: 3, lastTerm: 1, state: ["x", "cfg:a,b", "y", "z"] };
  const fromSnapshot = initialRaftState(cfg, snap, 1, 0);
  assert.deepEqual(fromSnapshot.voters, [A, B]);
  assert.equal(fromSnapshot.configIndex, 3);
  assert.equal(configChangePending(fromSnapshot), false);

  const hard = { term: 2, votedFor: null, snapshot: snap, log: [{ term: 2, index: 4, payload: "cfg:a,b,d" }, { term: 2, index: 5, payload: "w" }] };
  const restored = restoredRaftState(fromSnapshot, hard, cfg);
  assert.deepEqual(restored.voters, [A, B, D]);
  assert.equal(restored.configIndex, 4);
  assert.equal(configChangePending(restored), true, "a restarted node does not know its config entry committed");
  assert.deepEqual(withVoter([A, B], C), [A, B, C]);
  assert.deepEqual(withVoter([A, B], B), [A, B]);
  assert.deepEqual(withoutVoter([A, B, C], B), [A, C]);
});

test("add a voter: it catches up by snapshot, the change commits only with its ack, then it votes", () => {
  const net = new TestNet();
  net.add(A, [A], 1);
  net.nowMs = 300;
  net.run(A, { type: "tick" });
  assert.equal(net.s(A).role, "leader");
  for (let i = 0; i < 20; i++) net.run(A, { type: "propose", payloads: [`p${i}`] });
  assert.ok(net.s(A).snapshot.lastIndex >= 8, "history is folded into a snapshot");
  // The joining node waits as a non-voter with an empty log.
  net.add(B, [], 2);
  const out = net.run(A, { type: "propose", payloads: [cfgEntry([A, B])] });
  const configIndex = lastLogIndex(net.s(A));
  assert.deepEqual(out.find((o) => o.type === "proposed"), { type: "proposed", firstIndex: configIndex, lastIndex: configIndex });
  assert.deepEqual(net.s(A).voters, [A, B], "a new configuration counts as soon as it is in the log");
  assert.equal(configChangePending(net.s(A)), true);
  assert.equal(net.s(A).commitIndex, configIndex - 1, "two voters: the change waits for b");
  assert.ok(net.s(A).progress[B] !== undefined, "the leader replicates to the new voter");

  net.deliver();
  assert.ok(net.outputs.get(B)!.some((o) => o.type === "restore"), "b caught up by InstallSnapshot");
  assert.deepEqual(net.s(B).voters, [A, B]);
  assert.equal(net.s(A).commitIndex, configIndex);
  assert.equal(configChangePending(net.s(A)), false);
  assert.equal(net.s(B).leaderId, A);

  // Now b's ack is needed for every commit.
  net.run(A, { type: "propose", payloads: ["after"] });
  assert.equal(net.s(A).commitIndex, configIndex);
  net.tickAll(net.nowMs + 60);
  assert.equal(net.s(A).commitIndex, configIndex + 1);
  assert.equal(net.s(B).commitIndex, configIndex, "b learns of the config's commit with the next message");
});

test("remove a voter: the change commits with the remaining majority; the removed node never campaigns", () => {
  const net = threeNodeCluster();
  net.run(A, { type: "propose", payloads: [cfgEntry([A, B])] });
  assert.deepEqual(net.s(A).voters, [A, B]);
  assert.deepEqual(Object.keys(net.s(A).progress), [B], "no progress kept for c");
  net.deliver([C]);
  assert.equal(configChangePending(net.s(A)), false, "a and b are the majority of {a, b}");

  // c never received the entry (cut off): it still thinks it is a voter.
  assert.deepEqual(net.s(C).voters, [A, B, C]);
  // A c that does hear of its removal stops campaigning.
  const cfgC = config(C, [A, B, C]);
  const heard = step(cfgC, net.s(C), { type: "receive", from: A, message: { type: "AppendEntries", term: 1, seq: 9, prevIndex: 0, prevTerm: 1, entries: net.s(A).log.slice(-1), leaderCommit: 1 } }, 400);
  assert.deepEqual(heard.state.voters, [A, B]);
  assert.equal(isVoter(heard.state, C), false);
  const later = step(cfgC, heard.state, { type: "tick" }, 100_000);
  assert.deepEqual(later.outputs, [], "a removed node sends no (pre-)vote");
  assert.equal(later.state.role, "follower");
});

test("remove the leader: it leads until the change commits without counting itself, then steps down", () => {
  const net = threeNodeCluster();
  net.run(A, { type: "propose", payloads: [cfgEntry([B, C])] });
  const configIndex = lastLogIndex(net.s(A));
  assert.deepEqual(net.s(A).voters, [B, C]);
  assert.equal(net.s(A).role, "leader");
  net.deliver([C]);
  assert.equal(net.s(A).commitIndex, configIndex - 1, "b alone is not a majority of {b, c}; a does not count");
  assert.equal(net.s(A).role, "leader");
  net.tickAll(420);
  assert.equal(net.s(A).commitIndex, configIndex);
  assert.equal(net.s(A).role, "follower", "its removal committed");
  assert.ok(net.outputs.get(A)!.some((o) => o.type === "roleChanged" && o.role === "follower"), "roleChanged told the owner");
  const outputsBefore = net.outputs.get(A)!.length;
  // b and c elect a new leader among themselves; a never campaigns.
  for (let t = 500; t < 3_000 && net.leaders().length === 0; t += 20) net.tickAll(t);
  const [leader] = net.leaders();
  assert.ok(leader === B || leader === C, `leader ${leader}`);
  const campaigned = net.outputs.get(A)!.slice(outputsBefore).some((o) => o.type === "send" && (o.message.type === "PreVote" || o.message.type === "RequestVote"));
  assert.equal(campaigned, false, "a removed leader never campaigns");
});

test("refused changes: two at once, one while another is uncommitted, two voters at once, before the leader's no-op commits", () => {
  const net = threeNodeCluster();
  const twoAtOnce = net.run(A, { type: "propose", payloads: [cfgEntry([A, B]), cfgEntry([A])] });
  assert.match(refusal(twoAtOnce)!, /2 configuration changes in one proposal/);
  const twoVoters = net.run(A, { type: "propose", payloads: [cfgEntry([A, B, C, D, "e" as NodeId])] });
  assert.match(refusal(twoVoters)!, /one voter at a time/);
  const swap = net.run(A, { type: "propose", payloads: [cfgEntry([A, B, D])] });
  assert.match(refusal(swap)!, /adds d, removes c/);
  assert.match(refusal(net.run(A, { type: "propose", payloads: [cfgEntry([])] }))!, /at least one voter/);
  assert.match(refusal(net.run(A, { type: "propose", payloads: [cfgEntry([A, B, C, C])] }))!, /twice/);

  const first = net.run(A, { type: "propose", payloads: ["x", cfgEntry([A, B, C, D])] });
  assert.ok(first.some((o) => o.type === "proposed"), "one change with an ordinary entry");
  const second = net.run(A, { type: "propose", payloads: [cfgEntry([A, B, C])] });
  assert.match(refusal(second)!, /not committed yet/);
  assert.ok(net.run(A, { type: "propose", payloads: ["plain"] }).some((o) => o.type === "proposed"), "ordinary entries still go in");
  net.deliver([D]);
  assert.equal(configChangePending(net.s(A)), false, "a, b, c are 3 of 4");
  assert.ok(net.run(A, { type: "propose", payloads: [cfgEntry([A, B, C])] }).some((o) => o.type === "proposed"), "the next change, once the first committed");

  net.tickAll(net.nowMs + 60, [D]);
  assert.equal(configChangePending(net.s(A)), false);
  // The same set in another order is no change of voters: allowed (e.g. the first ClusterMembersChanged).
  assert.ok(net.run(A, { type: "propose", payloads: [cfgEntry([C, B, A])] }).some((o) => o.type === "proposed"), "same set, other order");

  // A term-2 leader whose no-op (index 1) is not committed yet may not change the configuration.
  const cfgA = config(A, [A, B, C]);
  const progress = Object.fromEntries([B, C].map((id) => [id, { nextIndex: 2, matchIndex: -1, sentSeq: 1, sentAtMs: 0, ackedAtMs: 0 }]));
  const early: RaftState<P, S> = { ...initialRaftState(cfgA, empty, 1, 0), role: "leader", term: 2, leaderId: A, log: entries([1, "n0"], [2, "n1"]), commitIndex: 0, appliedIndex: 0, progress };
  assert.match(refusal(step(cfgA, early, { type: "propose", payloads: [cfgEntry([A, B])] }, 10).outputs)!, /not committed an entry of its term/);
  assert.ok(step(cfgA, { ...early, commitIndex: 1, appliedIndex: 1 }, { type: "propose", payloads: [cfgEntry([A, B])] }, 10).outputs.some((o) => o.type === "proposed"), "allowed once its no-op committed");
});

test("a non-voter never campaigns but follows a leader and grants votes", () => {
  const cfgD = config(D, []);
  const d = initialRaftState(cfgD, empty, 4, 0);
  for (const nowMs of [300, 1_000, 100_000]) {
    const r = step(cfgD, d, { type: "tick" }, nowMs);
    assert.deepEqual(r.outputs, []);
    assert.equal(r.state.role, "follower");
    assert.equal(r.state.term, 0);
  }
  const appended = step(cfgD, d, { type: "receive", from: A, message: { type: "AppendEntries", term: 3, seq: 1, prevIndex: -1, prevTerm: 0, entries: entries([3, "noop"]), leaderCommit: 0 } }, 10);
  assert.deepEqual(sends(appended.outputs)[0]!.message, { type: "AppendEntriesReply", term: 3, seq: 1, success: true, matchIndex: 0 });
  assert.equal(appended.state.leaderId, A);
  const request = { type: "RequestVote", term: 4, lastLogIndex: 0, lastLogTerm: 3 } as const;
  // Within a minimum election timeout of hearing the leader, a vote request is ignored (stickiness)...
  const early = step(cfgD, appended.state, { type: "receive", from: B, message: request }, 20);
  assert.deepEqual(early.outputs, []);
  assert.equal(early.state.term, 3);
  // ...after it, granted like any node would.
  const vote = step(cfgD, appended.state, { type: "receive", from: B, message: request }, 10 + 150);
  assert.deepEqual(sends(vote.outputs)[0]!.message, { type: "RequestVoteReply", term: 4, granted: true });
});

test("a configuration from an uncommitted entry that is truncated away reverts; a snapshot brings its own", () => {
  const cfgB = config(B, [A, B, C]);
  const log = entries([1, "noop"], [1, cfgEntry([A, B, C, D])]);
  const b = restoredRaftState(initialRaftState(cfgB, empty, 2, 0), { term: 1, votedFor: null, snapshot: empty, log }, cfgB);
  assert.deepEqual(b.voters, [A, B, C, D]);
  assert.equal(b.configIndex, 1);

  const r = step(cfgB, { ...b, commitIndex: 0, appliedIndex: 0 }, {
    type: "receive",
    from: C,
    message: { type: "AppendEntries", term: 2, seq: 1, prevIndex: 0, prevTerm: 1, entries: [{ term: 2, index: 1, payload: "noop@1/t2" }], leaderCommit: 0 },
  }, 10);
  assert.deepEqual(r.state.log.map((e) => e.payload), ["noop", "noop@1/t2"]);
  assert.deepEqual(r.state.voters, [A, B, C], "back to the static configuration");
  assert.equal(r.state.configIndex, -1);

  // A later config in the appended entries wins; one folded into an installed snapshot counts too.
  const r2 = step(cfgB, r.state, {
    type: "receive",
    from: C,
    message: { type: "InstallSnapshot", term: 2, seq: 2, snapshot: { lastIndex: 5, lastTerm: 2, state: ["noop", "noop@1/t2", "cfg:b,c", "x", "y", "z"] }, entries: [], leaderCommit: 5 },
  }, 20);
  assert.ok(r2.outputs.some((o) => o.type === "restore"), "snapshot restored");
  assert.deepEqual(r2.state.voters, [B, C]);
  assert.equal(r2.state.configIndex, 5);
});

test("without configOf the voters stay fixed whatever the log holds", () => {
  const cfg = config(A, [A, B, C], { configOf: undefined, configOfSnapshot: undefined });
  const s = restoredRaftState(initialRaftState(cfg, empty, 1, 0), { term: 1, votedFor: null, snapshot: empty, log: entries([1, cfgEntry([A])]) }, cfg);
  assert.deepEqual(s.voters, [A, B, C]);
});

test("a removed node that keeps campaigning without pre-vote cannot depose a working leader", () => {
  const net = threeNodeCluster();
  net.run(A, { type: "propose", payloads: [cfgEntry([A, B])] });
  net.deliver([C]);
  assert.equal(configChangePending(net.s(A)), false);
  // c never learned of its removal and campaigns with a raised term (as with preVote: false).
  const request = { type: "RequestVote", term: 7, lastLogIndex: 5, lastLogTerm: 1 } as const;
  for (const id of [A, B]) {
    const before = net.s(id);
    const outputs = net.run(id, { type: "receive", from: C, message: request });
    assert.deepEqual(outputs, [], `${id} ignores it`);
    assert.equal(net.s(id).term, before.term);
    assert.equal(net.s(id).role, before.role);
  }
  assert.equal(net.s(A).role, "leader");
});

test("a learner catches up by snapshot without being counted, then is added with nothing left to wait for", () => {
  const net = new TestNet();
  net.add(A, [A], 1);
  net.nowMs = 300;
  net.run(A, { type: "tick" });
  for (let i = 0; i < 20; i++) net.run(A, { type: "propose", payloads: [`p${i}`] });
  net.add(B, [], 2);
  assert.equal(replicationLag(net.s(A), B), null, "not replicated to before it is a learner");
  const sent = net.run(A, { type: "setLearners", learnerIds: [B] });
  assert.ok(sends(sent).some((o) => o.to === B), "a new learner is sent to at once");
  assert.deepEqual(net.s(A).voters, [A], "a learner is no voter");
  // Cut off, the learner holds nothing up: the single voter commits alone.
  net.deliver([B]);
  net.run(A, { type: "propose", payloads: ["while-b-is-away"] });
  assert.equal(net.s(A).commitIndex, lastLogIndex(net.s(A)));
  net.tickAll(net.nowMs + 400, [B]);
  assert.equal(net.s(A).role, "leader", "check-quorum does not count learners");
  // Reachable, it catches up by snapshot + tail.
  net.tickAll(net.nowMs + 60);
  assert.ok(net.outputs.get(B)!.some((o) => o.type === "restore"), "snapshot installed");
  assert.equal(replicationLag(net.s(A), B), 0);
  assert.equal(net.s(B).role, "follower");
  assert.equal(net.s(B).term, net.s(A).term, "a learner never campaigns");
  // Promotion: the change commits on the next round trip.
  net.run(A, { type: "propose", payloads: [cfgEntry([A, B])] });
  net.tickAll(net.nowMs + 60);
  assert.equal(configChangePending(net.s(A)), false);
  assert.deepEqual(net.s(B).voters, [A, B]);
  // A new leader starts without learners: they are the owner's to set again.
  const cfgA = config(A, [A]);
  const fresh = step(cfgA, { ...initialRaftState(cfgA, empty, 5, 0), learners: [C] }, { type: "tick" }, 1_000).state;
  assert.equal(fresh.role, "leader");
  assert.deepEqual(fresh.learners, []);
});
