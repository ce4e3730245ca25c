// Pipeline-parallel inference with real runner processes: one master, three workers in this process,
// a GGUF model split over 1, 2 and 3 nodes. Same greedy tokens everywhere; cancellation stops every
// stage; a killed stage fails the task (no hang) and the pipeline serves again after its restart.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { Link } from "../../src/net/link.ts";
import type { NodeId, RunnerId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import { findTaskByCommandId } from "../../src/shared/state.ts";
import type { Instance } from "../../src/shared/types.ts";
import { seededRandom, writeModelFixture } from "../support/gguf-model-fixture.ts";
import { testGenerationParams } from "../support/generation-params.ts";
import { ggufCard, PipelineCluster } from "../support/pipeline-cluster.ts";

const LAYER_COUNT = 6;
const STAGE_SILENCE_MS = 3_000;
const directory = mkdtempSync(join(tmpdir(), "skein-pipeline-test-"));
const modelPath = join(directory, "model.gguf");
writeModelFixture(modelPath, {
  arch: "qwen2",
  vocab: "tiny",
  nLayer: LAYER_COUNT,
  nEmbd: 128,
  nHead: 4,
  nHeadKv: 2,
  nFf: 256,
  contextLength: 1024,
  tensorType: GgmlType.Q8_0,
  tiedOutput: true,
  seed: 7,
});

const cluster = new PipelineCluster({
  nodeCount: 3,
  cards: [ggufCard("whole", modelPath, LAYER_COUNT), ggufCard("split2", modelPath, LAYER_COUNT), ggufCard("split3", modelPath, LAYER_COUNT)],
  contextSize: 1024,
  // Short, so the test of a silent stage takes seconds; long enough for a busy test machine.
  stageLink: { clusterName: "skein-test", secret: Buffer.from("test secret"), listenHost: "127.0.0.1", silenceMs: STAGE_SILENCE_MS },
});
let whole: Instance;
let split2: Instance;
let split3: Instance;

before(async () => {
  cluster.start();
  whole = await cluster.place("whole", 1);
  split2 = await cluster.place("split2", 2);
  split3 = await cluster.place("split3", 3);
});
after(async () => {
  await cluster.stop();
  rmSync(directory, { recursive: true, force: true });
});

const greedy = (content: string, maxTokens = 24) =>
  testGenerationParams({ messages: [{ role: "user", content }], maxTokens, temperature: 0, logprobs: true, topLogprobs: 2 });

test("a model split over 2 and 3 nodes gives the same greedy tokens as on 1 node", async () => {
  assert.equal(whole.shards.length, 1);
  assert.equal(split2.shards.length, 2);
  assert.equal(split3.shards.length, 3);
  assert.equal(new Set(split3.shards.map((s) => s.nodeId)).size, 3, "three stages on three nodes");
  for (const prompt of ["Tell me a story about a fox.", "x"]) {
    const [one, two, three] = await Promise.all(["whole", "split2", "split3"].map((m) => cluster.submit(m, greedy(prompt)).result));
    assert.equal(one!.task.status, "Complete", one!.task.failureReason ?? "");
    assert.ok(one!.task.tokensGenerated > 0);
    for (const split of [two!, three!]) {
      assert.equal(split.task.status, "Complete", split.task.failureReason ?? "");
      assert.equal(split.text, one!.text);
      if (process.env.SKEIN_TEST_VERBOSE) console.log(JSON.stringify(split.text), split.task.tokensGenerated);
      assert.equal(split.task.tokensGenerated, one!.task.tokensGenerated);
      assert.equal(split.task.promptTokens, one!.task.promptTokens);
      assert.deepEqual(
        split.chunks.flatMap((c) => c.logprobs ?? []),
        one!.chunks.flatMap((c) => c.logprobs ?? []),
        "same tokens with the same log-probabilities",
      );
    }
  }
});

/** Every runner of the instance Ready in State, and holding no KV slot by its own report. */
function stagesIdle(instance: Instance): () => boolean {
  return () =>
    instance.shards.every((s) => cluster.state.runners[s.runnerId]?.status.kind === "Ready" && cluster.stageSlotsOpen(s.runnerId) === 0);
}

/** Highest slot count each runner of the instance reported since report index `since`. */
function slotPeaks(instance: Instance, since: number): number[] {
  return instance.shards.map((s) =>
    Math.max(0, ...cluster.reports.slice(since).flatMap((r) => (r.report.type === "stageSlots" && r.report.runnerId === s.runnerId ? [r.report.openSlotCount] : []))),
  );
}

function taskEventsOf(taskId: string) {
  return cluster.events.filter((e) => "taskId" in e.event && e.event.taskId === taskId);
}

test("cancel mid-stream stops every stage at the same step and frees every KV slot", async () => {
  const since = cluster.reports.length;
  const { commandId, result } = cluster.submit("split3", greedy("Keep talking.", 900));
  const chunkCount = () => {
    const task = findTaskByCommandId(cluster.state, commandId);
    return cluster.events.filter((e) => e.event.type === "ChunkGenerated" && e.event.taskId === task?.taskId).length;
  };
  await cluster.waitFor(() => chunkCount() >= 3, "a few chunks streamed");
  cluster.cancel(commandId);
  const { task } = await result;
  assert.equal(task.status, "Cancelled");
  assert.ok(task.tokensGenerated < 900, `stopped early (${task.tokensGenerated} tokens)`);
  // The master marks the task Cancelled at once; stage 0's runner confirms once it has stopped.
  await cluster.waitFor((s) => s.tasks[task.taskId] === undefined, "the task released by its runner and deleted");
  const ended = taskEventsOf(task.taskId).filter((e) => e.event.type === "TaskStatusUpdated" && e.event.fromRunner && e.event.status !== "Running");
  assert.deepEqual(ended.map((e) => e.event.type === "TaskStatusUpdated" && e.event.status), ["Cancelled"], "the runner reported the cancel");
  await cluster.waitForCondition(stagesIdle(split3), "every stage Ready with no KV slot");
  assert.deepEqual(slotPeaks(split3, since), [1, 1, 1], "every stage held the task's slot while it ran");
});

test("cancel during the prefill of a long prompt stops before any token, on every stage", async () => {
  const lastStage = split2.shards[1]!;
  const lastRunner = cluster.runners.get(lastStage.runnerId)!;
  // The last stage is stopped, so the prompt's chunks pile up in flight and stage 0 is inside prefill when the cancel comes.
  process.kill(lastRunner.pid!, "SIGSTOP");
  let resumed = false;
  try {
    const { commandId, result } = cluster.submit("split2", greedy("fox ".repeat(700), 8));
    await cluster.waitFor((s) => {
      const task = findTaskByCommandId(s, commandId);
      return task?.prefill !== null && task?.prefill !== undefined && task.prefill.processedTokens > 0;
    }, "the first prompt chunk went through stage 0");
    const prefill = findTaskByCommandId(cluster.state, commandId)!.prefill!;
    assert.ok(prefill.processedTokens < prefill.totalTokens, `still in prefill (${prefill.processedTokens}/${prefill.totalTokens})`);
    cluster.cancel(commandId);
    const { task } = await result;
    assert.equal(task.status, "Cancelled");
    // Stage 0 stops waiting on the stopped stage at once: its runner reports while that stage is still frozen.
    await cluster.waitFor((s) => s.tasks[task.taskId] === undefined, "stage 0's runner released the task");
    const ended = taskEventsOf(task.taskId).flatMap((e) => (e.event.type === "TaskStatusUpdated" && e.event.fromRunner && e.event.status !== "Running" ? [e.event] : []));
    assert.deepEqual(
      ended.map((e) => [e.status, e.tokensGenerated]),
      [["Cancelled", 0]],
    );
    process.kill(lastRunner.pid!, "SIGCONT");
    resumed = true;
    await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
  } finally {
    if (!resumed) process.kill(lastRunner.pid!, "SIGCONT");
  }
});

/** Long greedy requests, once every one of them has streamed a chunk. */
async function submitUnderWay(modelId: string, prompts: readonly string[]) {
  const submitted = prompts.map((prompt) => cluster.submit(modelId, greedy(prompt, 900)));
  await cluster.waitFor(
    (s) =>
      submitted.every(({ commandId }) => {
        const task = findTaskByCommandId(s, commandId);
        return task !== undefined && taskEventsOf(task.taskId).some((e) => e.event.type === "ChunkGenerated");
      }),
    `generation under way for all ${prompts.length}`,
  );
  return submitted;
}

/** A new process for the killed runner, Ready in State. */
async function waitForRestart(runnerId: RunnerId, oldPid: number): Promise<void> {
  await cluster.waitFor((s) => cluster.runners.get(runnerId)?.pid !== oldPid && s.runners[runnerId]?.status.kind === "Ready", "the killed stage restarted", 60_000);
}

test("SIGKILL of a later stage mid-generation fails every task in flight with the stage's name; after the restart the next request works", async () => {
  const victim = split3.shards[2]!;
  // Three tasks interleave on a 3-stage pipeline: the stage dies holding a slot of each.
  const submitted = await submitUnderWay("split3", ["Keep talking.", "Keep going.", "Go on."]);
  const oldPid = cluster.runners.get(victim.runnerId)!.pid!;
  process.kill(oldPid, "SIGKILL");
  for (const { result } of submitted) {
    const { task } = await result;
    assert.equal(task.status, "Failed");
    assert.equal(task.failureCode, "runner_failed");
    assert.match(task.failureReason ?? "", new RegExp(`pipeline stage 3/3 on node ${victim.nodeId} is gone`));
  }
  await waitForRestart(victim.runnerId, oldPid);
  await cluster.waitForCondition(stagesIdle(split3), "every stage Ready with no KV slot");
  const next = await cluster.submit("split3", greedy("Hello again.", 8)).result;
  assert.equal(next.task.status, "Complete", next.task.failureReason ?? "");
  assert.ok(next.task.tokensGenerated > 0);
});

test("SIGKILL of the first stage with three interleaved tasks fails each of them; the later stage frees their slots and the restarted pipeline serves", async () => {
  const victim = split2.shards[0]!;
  const submitted = await submitUnderWay("split2", ["Keep talking.", "Keep going.", "Go on."]);
  const oldPid = cluster.runners.get(victim.runnerId)!.pid!;
  process.kill(oldPid, "SIGKILL");
  for (const { result } of submitted) {
    const { task } = await result;
    assert.equal(task.status, "Failed");
    assert.equal(task.failureCode, "runner_failed");
    assert.match(task.failureReason ?? "", /runner failed/);
  }
  await waitForRestart(victim.runnerId, oldPid);
  await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
  const next = await cluster.submit("split2", greedy("Hello again.", 8)).result;
  assert.equal(next.task.status, "Complete", next.task.failureReason ?? "");
});

test("a later stage that goes silent mid-generation (SIGSTOP) fails the task once the link's silence limit passes; resumed, it serves again", async () => {
  const victim = split2.shards[1]!;
  const pid = cluster.runners.get(victim.runnerId)!.pid!;
  const { commandId, result } = cluster.submit("split2", greedy("Keep talking.", 900));
  await cluster.waitFor((s) => {
    const task = findTaskByCommandId(s, commandId);
    return task !== undefined && taskEventsOf(task.taskId).some((e) => e.event.type === "ChunkGenerated");
  }, "generation under way");
  process.kill(pid, "SIGSTOP");
  let resumed = false;
  try {
    const { task } = await result;
    assert.equal(task.status, "Failed");
    assert.equal(task.failureCode, "runner_failed");
    assert.match(task.failureReason ?? "", new RegExp(`pipeline stage 2/2 on node ${victim.nodeId} is gone: no frame from the peer for \\d+ ms`));
    process.kill(pid, "SIGCONT");
    resumed = true;
  } finally {
    if (!resumed) process.kill(pid, "SIGCONT");
  }
  // The same process (not a restart) frees the slot of the link that was closed on it, and serves the next request.
  await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
  const next = await cluster.submit("split2", greedy("Hello again.", 6)).result;
  assert.equal(next.task.status, "Complete", next.task.failureReason ?? "");
  assert.equal(cluster.runners.get(victim.runnerId)!.pid, pid, "the stage was not restarted");
});

test("concurrent requests on a pipeline interleave (one per stage plus one at once) and each gives the tokens it gives alone", async () => {
  const prompts = ["Tell me a story about a fox.", "x", "Count to ten.", "What is a pipeline?"];
  const alone = [];
  for (const prompt of prompts) alone.push(await cluster.submit("whole", greedy(prompt)).result);
  const since = cluster.reports.length;
  const eventsSince = cluster.events.length;
  const together = await Promise.all(prompts.map((prompt) => cluster.submit("split2", greedy(prompt)).result));
  for (const [i, result] of together.entries()) {
    assert.equal(result.task.status, "Complete", result.task.failureReason ?? "");
    assert.equal(result.text, alone[i]!.text, `prompt ${i}`);
    assert.deepEqual(
      result.chunks.flatMap((c) => c.logprobs ?? []),
      alone[i]!.chunks.flatMap((c) => c.logprobs ?? []),
      `prompt ${i}: same log-probabilities`,
    );
  }
  const firstStage = split2.shards[0]!.runnerId;
  const runningAtOnce = cluster.events
    .slice(eventsSince)
    .map((e) => (e.event.type === "RunnerStatusUpdated" && e.event.runnerId === firstStage && e.event.status.kind === "Running" ? e.event.status.taskIds.length : 0));
  assert.equal(Math.max(...runningAtOnce), 3, "stage 0 ran three tasks at once on 2 stages, never more");
  assert.deepEqual(slotPeaks(split2, since), [3, 3], "each stage held a KV slot per task in flight");
  await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
});

test("cancelling one of two interleaved tasks leaves the other's answer intact", async () => {
  const reference = await cluster.submit("whole", greedy("Count to ten.", 40)).result;
  const long = cluster.submit("split2", greedy("Keep talking.", 900));
  const short = cluster.submit("split2", greedy("Count to ten.", 40));
  const longTask = () => findTaskByCommandId(cluster.state, long.commandId);
  await cluster.waitFor(() => longTask()?.status === "Running" && findTaskByCommandId(cluster.state, short.commandId)?.status === "Running", "both tasks running");
  cluster.cancel(long.commandId);
  const [cancelled, kept] = await Promise.all([long.result, short.result]);
  assert.equal(cancelled.task.status, "Cancelled");
  assert.equal(kept.task.status, "Complete", kept.task.failureReason ?? "");
  assert.equal(kept.text, reference.text);
  await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
});

test("a storm of cancels on interleaved tasks (before start, in prefill, in decode, twice, after the end) leaves no task or KV slot behind", async () => {
  const seed = Number(process.env.SKEIN_SEED ?? Date.now() % 100_000);
  const random = seededRandom(seed);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const prompts = ["Keep talking.", "x", "Count to ten.", "A".repeat(700)];
  const reference = await cluster.submit("whole", greedy("Tell me a story about a fox.", 12)).result;
  const storm = Array.from({ length: 40 }, async (_, i) => {
    const { commandId, result } = cluster.submit("split3", greedy(prompts[i % prompts.length]!, 4 + Math.floor(random() * 40)));
    const cancelAfterMs = random() < 0.6 ? Math.floor(random() * 400) : null;
    const twice = random() < 0.3;
    if (cancelAfterMs !== null) {
      await sleep(cancelAfterMs);
      cluster.cancel(commandId);
      if (twice) cluster.cancel(commandId);
    }
    const { task } = await result;
    cluster.cancel(commandId); // after the end: a no-op
    return task;
  });
  const tasks = await Promise.all(storm);
  const statuses = tasks.map((t) => t.status);
  assert.ok(statuses.every((s) => s === "Complete" || s === "Cancelled"), `seed ${seed}: ${statuses.join(",")}`);
  assert.ok(statuses.includes("Cancelled"), `seed ${seed}: some were cancelled`);
  await cluster.waitFor((s) => Object.keys(s.tasks).length === 0, `seed ${seed}: every task released and deleted`);
  await cluster.waitForCondition(stagesIdle(split3), `seed ${seed}: every stage Ready with no KV slot`);
  const after = await cluster.submit("split3", greedy("Tell me a story about a fox.", 12)).result;
  assert.equal(after.task.status, "Complete");
  assert.equal(after.text, reference.text, `seed ${seed}: the next request is unaffected`);
});

test("32 concurrent requests on a 2-stage pipeline all complete", async () => {
  const submitted = Array.from({ length: 32 }, (_, i) => cluster.submit("split2", greedy(`Request number ${i}.`, 6)));
  const results = await Promise.all(submitted.map((s) => s.result));
  for (const { task } of results) assert.equal(task.status, "Complete", task.failureReason ?? "");
  await cluster.waitForCondition(stagesIdle(split2), "both stages Ready with no KV slot");
});

test("a stranger connecting to a stage port with a wrong secret (or none, or garbage) is refused, and the stage serves on", async () => {
  const stage = split2.shards[1]!;
  const port = cluster.state.runners[stage.runnerId]?.stagePort;
  assert.ok(port !== undefined, "the stage reported its port");
  for (const secret of [Buffer.from("wrong secret"), null]) {
    const link = new Link(net.connect({ host: "127.0.0.1", port }), "outbound", {
      identity: { nodeId: "stranger" as NodeId, clusterName: "skein-test", clusterPort: 0, secret },
      logger: silentLogger(),
    });
    let opened = false;
    link.handlers.onOpen = () => (opened = true);
    const reason = await link.closed;
    assert.equal(opened, false, `link with secret ${String(secret)} must not open`);
    assert.match(reason, /refused|authentication|secret/);
  }
  const garbage = net.connect({ host: "127.0.0.1", port });
  garbage.on("error", () => {});
  garbage.resume(); // read the stage's hello, so its close is seen
  garbage.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  await new Promise<void>((resolve) => garbage.once("close", () => resolve()));
  const after = await cluster.submit("split2", greedy("Still there?", 6)).result;
  assert.equal(after.task.status, "Complete", after.task.failureReason ?? "");
  assert.equal(cluster.state.runners[stage.runnerId]?.status.kind, "Ready");
});
