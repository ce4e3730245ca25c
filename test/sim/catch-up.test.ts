// exo's "catch-up loop that never converges at 100k events" must be impossible: a follower cut off
// while the leader commits 100,000 events catches up with one snapshot + tail, in a few round trips,
// even while the leader keeps taking new events.
import assert from "node:assert/strict";
import { test } from "node:test";
import { configChangePending, lastLogIndex } from "../../src/election/raft.ts";
import { SimCluster } from "./sim-cluster.ts";

const EVENT_COUNT = 100_000;

test("a follower 100k events behind catches up by snapshot + tail while load continues", () => {
  const seed = Number(process.env.SKEIN_SEED ?? 4242);
  const sim = new SimCluster({
    seed,
    nodeCount: 3,
    faults: { dropProbability: 0, duplicateProbability: 0, delayMinMs: 1, delayMaxMs: 5 },
    config: { entriesPerMessageMax: 512, logTailKeep: 1024, compactionBatch: 1024, logEntriesInMemoryMax: 16_384, uncommittedEntriesMax: 4096 },
    checkStateEveryApply: false,
  });
  const startedAt = Date.now();
  while (sim.converged() === null) {
    sim.advance();
    assert.ok(sim.nowMs < 5_000, `seed ${seed}: no leader`);
  }
  const leader = sim.nodes.find((n) => n.raft.role === "leader")!;
  const lagger = sim.nodes.find((n) => n !== leader)!;
  const others = sim.nodes.filter((n) => n !== lagger).map((n) => n.id);
  sim.network.partition([others, [lagger.id]]);

  while (sim.committedCount < EVENT_COUNT) {
    sim.propose(leader, 512);
    sim.advance();
    assert.equal(leader.raft.role, "leader", `seed ${seed}: leader lost its majority`);
  }
  assert.ok(lagger.raft.appliedIndex < 10, "the lagger saw nothing while cut off");
  assert.ok(leader.raft.log.length <= 16_384 + 1024, `leader keeps ${leader.raft.log.length} entries in memory`);

  // Heal; keep proposing 64 events per 10 ms tick for the next 2 simulated seconds.
  sim.network.heal();
  const snapshotMessagesBefore = sim.stats.snapshotMessages;
  const healedAtMs = sim.nowMs;
  let caughtUpAtMs: number | null = null;
  while (sim.nowMs - healedAtMs < 2_000) {
    sim.propose(leader, 64);
    sim.advance();
    const lag = lastLogIndex(leader.raft) - lagger.raft.appliedIndex;
    if (caughtUpAtMs === null && lag <= 1024) caughtUpAtMs = sim.nowMs - healedAtMs;
  }
  assert.notEqual(caughtUpAtMs, null, `seed ${seed}: the lagger never came within 1024 entries under load`);
  const snapshotMessages = sim.stats.snapshotMessages - snapshotMessagesBefore;
  assert.ok(snapshotMessages >= 1 && snapshotMessages <= 3, `${snapshotMessages} snapshot messages`);

  // Load stops: everyone converges to the same State.
  while (sim.converged() === null) {
    sim.advance();
    assert.ok(sim.nowMs - healedAtMs < 10_000, `seed ${seed}: no convergence after load stopped`);
  }
  sim.checkFinalStates();
  console.log(
    `catch-up: ${sim.committedCount} events, lagger within 1024 entries ${caughtUpAtMs} simulated ms after healing ` +
      `with ${snapshotMessages} snapshot message(s); ${Date.now() - startedAt} ms wall`,
  );
});

test("a node added to a cluster 100k events in catches up by snapshot + tail and then counts as a voter", () => {
  const seed = Number(process.env.SKEIN_SEED ?? 4243);
  const sim = new SimCluster({
    seed,
    nodeCount: 3,
    joinerCount: 1,
    faults: { dropProbability: 0, duplicateProbability: 0, delayMinMs: 1, delayMaxMs: 5 },
    config: { entriesPerMessageMax: 512, logTailKeep: 1024, compactionBatch: 1024, logEntriesInMemoryMax: 16_384, uncommittedEntriesMax: 4096 },
    checkStateEveryApply: false,
  });
  while (sim.converged() === null) {
    sim.advance();
    assert.ok(sim.nowMs < 5_000, `seed ${seed}: no leader`);
  }
  const leader = sim.leader()!;
  const joiner = sim.nodes.find((n) => !leader.raft.voters.includes(n.id))!;
  while (sim.committedCount < EVENT_COUNT) {
    sim.propose(leader, 512);
    sim.advance();
  }
  assert.equal(joiner.raft.appliedIndex, -1, "a non-voter hears nothing before it is added");
  assert.equal(joiner.raft.role, "follower");
  assert.equal(joiner.raft.term, 0, "and never campaigned");

  const snapshotMessagesBefore = sim.stats.snapshotMessages;
  // changeMembership adds with even odds per call (three voters: nothing to remove).
  let change: string | null = null;
  for (let attempt = 0; attempt < 64 && !(change ?? "").startsWith("add"); attempt++) change = sim.changeMembership(0);
  assert.equal(change, `add ${joiner.id}`);
  const addedAtMs = sim.nowMs;
  // Under load until the joiner is within one message of the leader...
  while (!leader.raft.voters.includes(joiner.id) || leader.raft.commitIndex - joiner.raft.appliedIndex > 512) {
    sim.propose(leader, 8);
    sim.advance();
    assert.ok(sim.nowMs - addedAtMs < 5_000, `seed ${seed}: the joiner did not catch up under load`);
  }
  const caughtUpMs = sim.nowMs - addedAtMs;
  // ...then the load stops and all four converge.
  while (sim.converged() === null) {
    sim.advance();
    assert.ok(sim.nowMs - addedAtMs < 10_000, `seed ${seed}: no convergence after the join`);
  }
  assert.ok(!configChangePending(leader.raft), "the change committed");
  assert.deepEqual(joiner.raft.voters, leader.raft.voters);
  const snapshotMessages = sim.stats.snapshotMessages - snapshotMessagesBefore;
  assert.ok(snapshotMessages >= 1 && snapshotMessages <= 3, `${snapshotMessages} snapshot messages`);
  sim.checkFinalStates();
  console.log(`join: a node added after ${EVENT_COUNT} events came within 512 entries ${caughtUpMs} simulated ms later with ${snapshotMessages} snapshot message(s)`);
});
