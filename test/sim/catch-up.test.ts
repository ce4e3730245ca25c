// exo's "catch-up loop that never converges at 100k events" must be impossible: a follower cut off
// while the leader commits 100,000 events catches up with one snapshot + tail, in a few round trips,
// even while the leader keeps taking new events.
import assert from "node:assert/strict";
import { test } from "node:test";
import { lastLogIndex } from "../../src/election/raft.ts";
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
