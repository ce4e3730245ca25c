// The runner's state machine in process, through a channel test double: ordering of statuses and
// task ends, refusals, and the races between cancel, shutdown and a running task.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { FromRunnerMessage } from "../../src/runner/protocol.ts";
import { RunnerProcess } from "../../src/runner/runner-process.ts";
import type { RunnerChannel } from "../../src/runner/runner-process.ts";
import { isRunnerTransitionAllowed } from "../../src/shared/runner-transitions.ts";
import type { RunnerStatus } from "../../src/shared/types.ts";
import { fakeShardSpec } from "../support/fake-engine.ts";
import type { FakeEngineOptions } from "../support/fake-engine.ts";
import { testParams, testTaskId } from "./fixtures.ts";
import { ObservedList } from "./observed.ts";

const FAKE_ENGINE_MODULE = new URL("../support/fake-engine.ts", import.meta.url).href;

/** Test double for the IPC channel: records messages and exit calls. */
class FakeRunnerChannel implements RunnerChannel {
  readonly messages = new ObservedList<FromRunnerMessage>();
  readonly exitCodes = new ObservedList<number>();
  send(message: FromRunnerMessage): void {
    this.messages.push(message);
  }
  async exit(code: number): Promise<void> {
    this.exitCodes.push(code);
  }
  statuses(): RunnerStatus[] {
    return this.messages.items.flatMap((m) => (m.type === "status" ? [m.status] : []));
  }
}

function isStatus(kind: RunnerStatus["kind"]) {
  return (m: FromRunnerMessage): boolean => m.type === "status" && m.status.kind === kind;
}

async function readyRunner(engineOptions: Partial<Record<keyof FakeEngineOptions, unknown>> = {}) {
  const channel = new FakeRunnerChannel();
  const runner = new RunnerProcess(channel);
  runner.start();
  runner.handle({ type: "load", spec: fakeShardSpec(engineOptions), engineModule: FAKE_ENGINE_MODULE });
  await channel.messages.next(isStatus("Loaded"), "Loaded");
  runner.handle({ type: "warmup" });
  await channel.messages.next(isStatus("Ready"), "Ready");
  return { channel, runner };
}

function assertLegalStatusSequence(statuses: readonly RunnerStatus[]): void {
  for (let i = 1; i < statuses.length; i++) {
    const from = statuses[i - 1]?.kind;
    const to = statuses[i]?.kind;
    assert.ok(from !== undefined && to !== undefined && isRunnerTransitionAllowed(from, to), `illegal ${from} → ${to}`);
  }
}

test("a full lifecycle reports only legal status transitions and exits 0", async () => {
  const { channel, runner } = await readyRunner();
  const done = testTaskId("done");
  runner.handle({ type: "startTask", taskId: done, params: testParams({ maxTokens: 3 }) });
  await channel.messages.next(isStatus("Ready"), "Ready after task");
  const cancelled = testTaskId("cancelled");
  runner.handle({ type: "startTask", taskId: cancelled, params: testParams({ maxTokens: 100_000 }) });
  await channel.messages.next((m) => m.type === "chunk" && m.chunk.tokensGenerated >= 2, "two tokens");
  runner.handle({ type: "cancel", taskId: cancelled });
  await channel.messages.next(isStatus("Ready"), "Ready after cancel");
  runner.handle({ type: "shutdown" });
  assert.equal(await channel.exitCodes.next(() => true, "exit"), 0);
  const kinds = channel.statuses().map((s) => s.kind);
  assert.deepEqual(kinds.slice(-2), ["ShuttingDown", "Shutdown"]);
  assertLegalStatusSequence(channel.statuses());
});

test("a task is refused while loading, and stray cancels produce nothing", async () => {
  const channel = new FakeRunnerChannel();
  const runner = new RunnerProcess(channel);
  runner.start();
  runner.handle({ type: "cancel", taskId: testTaskId("unknown") });
  runner.handle({ type: "cancelAll" });
  assert.deepEqual(channel.messages.items, [{ type: "status", status: { kind: "Idle" } }]);
  runner.handle({ type: "load", spec: fakeShardSpec({ loadDelayMsPerLayer: 1 }), engineModule: FAKE_ENGINE_MODULE });
  const early = testTaskId("early");
  runner.handle({ type: "startTask", taskId: early, params: testParams() });
  const refused = await channel.messages.find((m) => m.type === "taskEnded" && m.taskId === early, "refusal");
  assert.ok(refused.type === "taskEnded");
  assert.equal(refused.status, "Failed");
  assert.match(refused.failureReason ?? "", /not ready \(status Loading\)/);
  await channel.messages.next(isStatus("Loaded"), "Loaded");
});

test("load twice and warmup before load are ignored with a log line", async () => {
  const channel = new FakeRunnerChannel();
  const runner = new RunnerProcess(channel);
  runner.handle({ type: "warmup" });
  await channel.messages.next((m) => m.type === "log" && /warmup ignored/.test(m.message), "warmup log");
  runner.handle({ type: "load", spec: fakeShardSpec(), engineModule: FAKE_ENGINE_MODULE });
  runner.handle({ type: "load", spec: fakeShardSpec(), engineModule: FAKE_ENGINE_MODULE });
  await channel.messages.find((m) => m.type === "log" && /load ignored/.test(m.message), "load log");
  await channel.messages.next(isStatus("Loaded"), "Loaded");
  assert.equal(channel.statuses().filter((s) => s.kind === "Loaded").length, 1);
});

test("shutdown during a task: ShuttingDown, taskEnded Cancelled, Shutdown, exit 0 — and never Ready", async () => {
  const { channel, runner } = await readyRunner();
  const readyCount = channel.statuses().filter((s) => s.kind === "Ready").length;
  const taskId = testTaskId("during-shutdown");
  runner.handle({ type: "startTask", taskId, params: testParams({ maxTokens: 100_000 }) });
  await channel.messages.next((m) => m.type === "chunk", "a chunk");
  runner.handle({ type: "shutdown" });
  runner.handle({ type: "shutdown" });
  const late = testTaskId("late");
  runner.handle({ type: "startTask", taskId: late, params: testParams() });
  assert.equal(await channel.exitCodes.next(() => true, "exit"), 0);
  const ended = channel.messages.items.find((m) => m.type === "taskEnded" && m.taskId === taskId);
  assert.ok(ended?.type === "taskEnded");
  assert.equal(ended.status, "Cancelled");
  const lateEnded = channel.messages.items.find((m) => m.type === "taskEnded" && m.taskId === late);
  assert.ok(lateEnded?.type === "taskEnded");
  assert.match(lateEnded.failureReason ?? "", /busy|shutting down/);
  assert.equal(channel.statuses().filter((s) => s.kind === "Ready").length, readyCount);
  assert.equal(channel.statuses().filter((s) => s.kind === "ShuttingDown").length, 1);
  assert.equal(channel.exitCodes.items.length, 1);
  assertLegalStatusSequence(channel.statuses());
});

test("cancelAll stops the running task", async () => {
  const { channel, runner } = await readyRunner();
  const taskId = testTaskId("all");
  runner.handle({ type: "startTask", taskId, params: testParams({ maxTokens: 100_000 }) });
  await channel.messages.next((m) => m.type === "chunk", "a chunk");
  runner.handle({ type: "cancelAll" });
  const ended = await channel.messages.next((m) => m.type === "taskEnded", "taskEnded");
  assert.ok(ended.type === "taskEnded");
  assert.equal(ended.status, "Cancelled");
  await channel.messages.next(isStatus("Ready"), "Ready");
});

test("an engine module without createEngine fails the runner", async () => {
  const channel = new FakeRunnerChannel();
  const runner = new RunnerProcess(channel);
  runner.handle({ type: "load", spec: fakeShardSpec(), engineModule: "node:path" });
  const failed = await channel.messages.next(isStatus("Failed"), "Failed");
  assert.ok(failed.type === "status" && failed.status.kind === "Failed");
  assert.match(failed.status.reason, /does not export createEngine/);
  assert.equal(await channel.exitCodes.next(() => true, "exit"), 1);
});

test("an invalid message is logged and changes nothing", async () => {
  const { channel, runner } = await readyRunner();
  const before = channel.messages.items.length;
  runner.handleRaw({ type: "startTask", taskId: testTaskId(), params: { messages: [] } });
  runner.handleRaw(42);
  const after = channel.messages.items.slice(before);
  assert.equal(after.length, 2);
  assert.ok(after.every((m) => m.type === "log" && m.level === "warn"));
});

test("a pipeline stage on an engine that cannot run stages fails its load with the reason", async () => {
  const channel = new FakeRunnerChannel();
  const runner = new RunnerProcess(channel);
  runner.start();
  const stage = { stageIndex: 1, stageCount: 2, nodeId: "node-b", runnerId: "runner-b", clusterName: "skein", secretHex: null, listenHost: "127.0.0.1" };
  runner.handleRaw({ type: "load", spec: fakeShardSpec(), engineModule: FAKE_ENGINE_MODULE, stage });
  const failed = await channel.messages.next(isStatus("Failed"), "Failed");
  assert.match(failed.type === "status" && failed.status.kind === "Failed" ? failed.status.reason : "", /cannot run pipeline stage 2\/2/);
  await channel.exitCodes.next((code) => code === 1, "exit 1");
  assert.equal(channel.messages.items.some((m) => m.type === "stageListening"), false, "no port reported");
});
