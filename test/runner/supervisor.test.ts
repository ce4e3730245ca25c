// The supervisor with a real runner child process (FakeEngine inside): lifecycle, streaming,
// cancellation races, crashes, the watchdog and shutdown. Every wait is for an observed report.
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { after, test } from "node:test";
import type { RunnerReport } from "../../src/runner/runner-handle.ts";
import { runnerEntry, spawnSupervisedRunner } from "../../src/runner/supervisor.ts";
import type { RunnerSupervisorOptions, SupervisedRunner } from "../../src/runner/supervisor.ts";
import type { RunnerId, TaskId } from "../../src/shared/ids.ts";
import { PREFILL_CHUNK_TOKENS } from "../../src/shared/limits.ts";
import type { GenerationParams } from "../../src/shared/types.ts";
import { FAKE_ENGINE_DEFAULT_TEXT, fakeShardSpec } from "../support/fake-engine.ts";
import type { FakeEngineOptions } from "../support/fake-engine.ts";
import { promptOfTokens, testParams, testTaskId } from "./fixtures.ts";
import { CapturingLogger, ObservedList } from "./observed.ts";

const FAKE_ENGINE_MODULE = new URL("../support/fake-engine.ts", import.meta.url).href;

const spawned: SupervisedRunner[] = [];
after(async () => {
  // A failed test must not leave a child behind.
  for (const runner of spawned) runner.kill();
  await Promise.all(spawned.map((r) => r.exited));
});

interface Harness {
  readonly runner: SupervisedRunner;
  readonly reports: ObservedList<RunnerReport>;
  readonly logger: CapturingLogger;
}

let runnerCounter = 0;

function spawn(options: RunnerSupervisorOptions = {}): Harness {
  runnerCounter += 1;
  const reports = new ObservedList<RunnerReport>();
  const logger = new CapturingLogger();
  const runner = spawnSupervisedRunner(
    { runnerId: `runner-test-${runnerCounter}` as RunnerId, onReport: reports.push },
    { logger, ...options },
  );
  spawned.push(runner);
  return { runner, reports, logger };
}

async function spawnReady(
  engineOptions: Partial<Record<keyof FakeEngineOptions, unknown>> = {},
  options: RunnerSupervisorOptions = {},
): Promise<Harness> {
  const h = spawn(options);
  h.runner.load(fakeShardSpec(engineOptions), FAKE_ENGINE_MODULE);
  await h.reports.next((r) => isStatus(r, "Loaded"), "Loaded");
  h.runner.warmup();
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready");
  return h;
}

function isStatus(report: RunnerReport, kind: string): boolean {
  return report.type === "status" && report.status.kind === kind;
}

function isTaskEnded(report: RunnerReport, taskId: TaskId): report is Extract<RunnerReport, { type: "taskEnded" }> {
  return report.type === "taskEnded" && report.taskId === taskId;
}

function chunkTokens(report: RunnerReport, taskId: TaskId): number {
  return report.type === "chunk" && report.taskId === taskId ? report.chunk.tokensGenerated : -1;
}

async function runTask(h: Harness, params: Partial<GenerationParams>): Promise<Extract<RunnerReport, { type: "taskEnded" }>> {
  const taskId = testTaskId("sup");
  h.runner.startTask({ taskId, params: testParams(params) });
  const ended = await h.reports.next((r) => isTaskEnded(r, taskId), `taskEnded ${taskId}`);
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready after task");
  return ended as Extract<RunnerReport, { type: "taskEnded" }>;
}

function processIsGone(pid: number | null): boolean {
  assert.ok(pid !== null);
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

function exitedReports(h: Harness): RunnerReport[] {
  return h.reports.items.filter((r) => r.type === "exited");
}

test("load → Loading per layer → Loaded → WarmingUp → Ready; a task streams chunks and completes; shutdown", async () => {
  const h = spawn();
  h.runner.load(fakeShardSpec({}, 3), FAKE_ENGINE_MODULE);
  await h.reports.next((r) => isStatus(r, "Loaded"), "Loaded");
  h.runner.warmup();
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready");
  const statuses = h.reports.items.flatMap((r) => (r.type === "status" ? [r.status] : []));
  assert.deepEqual(statuses, [
    { kind: "Idle" },
    { kind: "Loading", layersLoaded: 0, layerCount: 3 },
    { kind: "Loading", layersLoaded: 1, layerCount: 3 },
    { kind: "Loading", layersLoaded: 2, layerCount: 3 },
    { kind: "Loading", layersLoaded: 3, layerCount: 3 },
    { kind: "Loaded" },
    { kind: "WarmingUp" },
    { kind: "Ready" },
  ]);

  const taskId = testTaskId("stream");
  h.runner.startTask({ taskId, params: testParams({ maxTokens: 9 }) });
  const ended = await h.reports.next((r) => isTaskEnded(r, taskId), "taskEnded");
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready after task");
  const ofTask = h.reports.items.filter((r) => "taskId" in r && r.taskId === taskId);
  assert.equal(ofTask[0]?.type, "prefillProgress");
  const text = ofTask.map((r) => (r.type === "chunk" ? r.chunk.text : "")).join("");
  assert.equal(text, FAKE_ENGINE_DEFAULT_TEXT);
  assert.ok(h.reports.items.some((r) => r.type === "status" && r.status.kind === "Running" && r.status.taskIds.includes(taskId)));
  assert.deepEqual(
    { status: ended.type === "taskEnded" && ended.status, reason: ended.type === "taskEnded" && ended.finishReason },
    { status: "Complete", reason: "length" },
  );

  await h.runner.shutdown();
  assert.ok(h.reports.items.some((r) => isStatus(r, "ShuttingDown")));
  assert.ok(h.reports.items.some((r) => isStatus(r, "Shutdown")));
  assert.deepEqual(exitedReports(h).map((r) => r.type === "exited" && r.reason), ["runner exited with code 0"]);
  assert.equal(h.reports.items.at(-1)?.type, "exited");
  assert.ok(processIsGone(h.runner.pid), "the runner process is gone");
});

test("cancel mid-task ends it Cancelled with real counts, then Ready, and the next task works", async () => {
  const h = await spawnReady({ tokenDelayMs: 20 });
  const taskId = testTaskId("cancel");
  h.runner.startTask({ taskId, params: testParams({ maxTokens: 10_000 }) });
  await h.reports.next((r) => chunkTokens(r, taskId) >= 3, "three tokens");
  h.runner.cancel(taskId);
  const ended = await h.reports.next((r) => isTaskEnded(r, taskId), "taskEnded Cancelled");
  assert.ok(ended.type === "taskEnded");
  assert.equal(ended.status, "Cancelled");
  assert.equal(ended.finishReason, "cancelled");
  assert.ok(ended.promptTokens > 0);
  const chunks = h.reports.items.filter((r) => r.type === "chunk" && r.taskId === taskId);
  assert.equal(ended.tokensGenerated, chunks.length, "every generated token was streamed and counted");
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready after cancel");

  // Cancel again, cancel an id never seen: both harmless.
  h.runner.cancel(taskId);
  h.runner.cancel(testTaskId("never-started"));
  const next = await runTask(h, { maxTokens: 4 });
  assert.equal(next.status, "Complete");
  assert.equal(next.tokensGenerated, 4);
  // Cancel after finish, then another task still completes.
  h.runner.cancel(next.taskId);
  const third = await runTask(h, { maxTokens: 2 });
  assert.equal(third.status, "Complete");
  const ends = h.reports.items.filter((r) => r.type === "taskEnded");
  assert.equal(ends.length, 3, "no taskEnded for stray cancels");
  assert.equal(exitedReports(h).length, 0);
});

test("cancel during prefill stops between prompt chunks; no token is generated", async () => {
  // 100 ms per 256-token chunk: far longer than an IPC round trip.
  const h = await spawnReady({ prefillDelayMsPerToken: 100 / PREFILL_CHUNK_TOKENS });
  const taskId = testTaskId("prefill");
  const promptTokens = 4 * PREFILL_CHUNK_TOKENS;
  h.runner.startTask({ taskId, params: testParams({ messages: promptOfTokens(promptTokens) }) });
  await h.reports.next((r) => r.type === "prefillProgress" && r.taskId === taskId, "first prefill chunk");
  h.runner.cancel(taskId);
  const ended = await h.reports.next((r) => isTaskEnded(r, taskId), "taskEnded");
  assert.ok(ended.type === "taskEnded");
  assert.equal(ended.status, "Cancelled");
  assert.equal(ended.tokensGenerated, 0);
  assert.equal(ended.promptTokens, promptTokens);
  const progress = h.reports.items.filter((r) => r.type === "prefillProgress" && r.taskId === taskId);
  assert.ok(progress.length < 4, `${progress.length} prefill chunks ran`);
  assert.ok(!h.reports.items.some((r) => r.type === "chunk" && r.taskId === taskId));
  await h.reports.next((r) => isStatus(r, "Ready"), "Ready");
});

test("a second startTask while one runs is refused with taskEnded Failed; the first is unaffected", async () => {
  const h = await spawnReady({ tokenDelayMs: 5 });
  const first = testTaskId("first");
  const second = testTaskId("second");
  h.runner.startTask({ taskId: first, params: testParams({ maxTokens: 30 }) });
  await h.reports.next((r) => chunkTokens(r, first) >= 1, "first chunk");
  h.runner.startTask({ taskId: second, params: testParams() });
  const refused = await h.reports.find((r) => isTaskEnded(r, second), "second refused");
  assert.ok(refused.type === "taskEnded");
  assert.equal(refused.status, "Failed");
  assert.match(refused.failureReason ?? "", /busy/);
  const firstEnded = await h.reports.find((r) => isTaskEnded(r, first), "first ended");
  assert.ok(firstEnded.type === "taskEnded");
  assert.equal(firstEnded.status, "Complete");
  assert.equal(firstEnded.tokensGenerated, 30);
});

test("a prompt the engine refuses fails only the task; the runner stays Ready", async () => {
  const h = await spawnReady({ contextSize: 6 });
  const refused = await runTask(h, { messages: [{ role: "user", content: "one two three four five six seven" }] });
  assert.equal(refused.status, "Failed");
  assert.equal(refused.failureCode, "bad_request");
  const fine = await runTask(h, { maxTokens: 2, messages: [{ role: "user", content: "hi" }] });
  assert.equal(fine.status, "Complete");
});

test("an engine fault fails the task, then the runner reports Failed and exits", async () => {
  const h = await spawnReady({ failDecodeAtStep: 1 });
  const taskId = testTaskId("fault");
  h.runner.startTask({ taskId, params: testParams({ maxTokens: 10 }) });
  const ended = await h.reports.next((r) => isTaskEnded(r, taskId), "taskEnded Failed");
  assert.ok(ended.type === "taskEnded");
  assert.equal(ended.status, "Failed");
  assert.equal(ended.failureCode, "runner_failed");
  await h.reports.next((r) => isStatus(r, "Failed"), "status Failed");
  const exited = await h.reports.next((r) => r.type === "exited", "exited");
  assert.deepEqual(exited.type === "exited" && exited.reason, "runner exited with code 1");
});

test("a failing load reports Failed with the reason, then exits", async () => {
  const h = spawn();
  h.runner.load(fakeShardSpec({ failLoad: true }), FAKE_ENGINE_MODULE);
  const failed = await h.reports.next((r) => isStatus(r, "Failed"), "Failed");
  assert.ok(failed.type === "status" && failed.status.kind === "Failed");
  assert.match(failed.status.reason, /failLoad/);
  await h.reports.next((r) => r.type === "exited", "exited");
});

test("SIGKILL mid-token gives exactly one exited report, and a dead runner can be talked to safely", async () => {
  const h = await spawnReady({ tokenDelayMs: 20 });
  const taskId = testTaskId("killed");
  h.runner.startTask({ taskId, params: testParams({ maxTokens: 10_000 }) });
  await h.reports.next((r) => chunkTokens(r, taskId) >= 2, "two tokens");
  assert.ok(h.runner.pid !== null);
  process.kill(h.runner.pid, "SIGKILL");
  const exited = await h.reports.next((r) => r.type === "exited", "exited");
  assert.ok(exited.type === "exited");
  assert.equal(exited.reason, "runner exited with signal SIGKILL");

  // None of these may throw or produce a second exited report.
  h.runner.cancel(taskId);
  h.runner.startTask({ taskId: testTaskId("late"), params: testParams() });
  h.runner.warmup();
  h.runner.kill();
  await h.runner.shutdown();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(exitedReports(h).length, 1);
  assert.equal(h.reports.items.at(-1)?.type, "exited", "no report after exited");
  assert.ok(processIsGone(h.runner.pid));
});

test("the watchdog kills a runner that stops sending heartbeats", async () => {
  const watchdogTimeoutMs = 2_000;
  // Token steps of 75 ms for 40 tokens outlast the watchdog: a busy but healthy runner survives.
  const h = await spawnReady({ hangOnPromptContaining: "HANG", tokenDelayMs: 75 }, { watchdogTimeoutMs, heartbeatIntervalMs: 100 });
  const healthy = await runTask(h, { maxTokens: 40 });
  assert.equal(healthy.status, "Complete");

  const taskId = testTaskId("hang");
  h.runner.startTask({ taskId, params: testParams({ messages: [{ role: "user", content: "please HANG now" }] }) });
  const exited = await h.reports.next((r) => r.type === "exited", "exited by watchdog");
  assert.ok(exited.type === "exited");
  assert.equal(exited.reason, `runner hung: no heartbeat for ${watchdogTimeoutMs} ms`);
  assert.ok(processIsGone(h.runner.pid));
  assert.equal(exitedReports(h).length, 1);
});

test("a runner that never sends its first message is killed after the startup allowance", async () => {
  const h = spawn({ watchdogTimeoutMs: 300, startupTimeoutMs: 300 });
  assert.ok(h.runner.pid !== null);
  // Stopped before it can say anything: stands for a child stuck while starting.
  process.kill(h.runner.pid, "SIGSTOP");
  const exited = await h.reports.next((r) => r.type === "exited", "exited");
  assert.ok(exited.type === "exited");
  assert.equal(exited.reason, "runner did not start: no message for 300 ms");
  assert.equal(h.reports.items.length, 1);
  assert.ok(processIsGone(h.runner.pid));
});

test("shutdown during a task cancels it and leaves no process", async () => {
  const h = await spawnReady({ tokenDelayMs: 20 });
  const taskId = testTaskId("shutdown");
  h.runner.startTask({ taskId, params: testParams({ maxTokens: 10_000 }) });
  await h.reports.next((r) => chunkTokens(r, taskId) >= 1, "first chunk");
  await Promise.all([h.runner.shutdown(), h.runner.shutdown()]);
  const ended = h.reports.items.find((r) => isTaskEnded(r, taskId));
  assert.ok(ended?.type === "taskEnded");
  assert.equal(ended.status, "Cancelled");
  assert.ok(h.reports.items.some((r) => isStatus(r, "Shutdown")));
  assert.equal(exitedReports(h).length, 1);
  assert.ok(processIsGone(h.runner.pid));
});

test("shutdown of a runner that does not answer kills it after the grace period", async () => {
  const h = await spawnReady({}, { shutdownGraceMs: 300 });
  assert.ok(h.runner.pid !== null);
  // A stopped process cannot read the shutdown message: it stands for any unresponsive runner,
  // without racing a hang against the message's arrival.
  process.kill(h.runner.pid, "SIGSTOP");
  await h.runner.shutdown();
  const exited = exitedReports(h);
  assert.equal(exited.length, 1);
  assert.ok(exited[0]?.type === "exited");
  assert.equal(exited[0].reason, "runner did not shut down within 300 ms");
  assert.ok(processIsGone(h.runner.pid));
});

test("invalid IPC messages are dropped and logged on both sides; the runner keeps working", async () => {
  const h = await spawnReady({ sendInvalidIpcAfterLoad: true });
  // Child → parent: the FakeEngine sent a malformed message after load.
  await h.logger.entries.find((e) => e.message === "dropped an invalid message from the runner", "parent-side drop");
  // Parent → child.
  h.runner.sendUncheckedForTesting({ type: "reboot" });
  h.runner.sendUncheckedForTesting({ type: "cancel" });
  h.runner.sendUncheckedForTesting("shutdown");
  h.runner.sendUncheckedForTesting({ type: "startTask", taskId: "bad id with spaces", params: {} });
  await h.logger.entries.find(
    (e) => e.message === "dropped an invalid message from the supervisor",
    "child-side drop",
  );
  const fine = await runTask(h, { maxTokens: 3 });
  assert.equal(fine.status, "Complete");
  const childDrops = h.logger.entries.items.filter((e) => e.message === "dropped an invalid message from the supervisor");
  // The runner handles messages in order, so all four were dropped before the task ran.
  assert.equal(childDrops.length, 4);
  assert.equal(exitedReports(h).length, 0);
});

test("the runner exits by itself when its parent disconnects", async () => {
  const entry = runnerEntry();
  const child = fork(entry.path, [], { execArgv: [...entry.execArgv], serialization: "advanced", stdio: "ignore" });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  try {
    await new Promise<void>((resolve) => child.once("message", () => resolve()));
    child.disconnect();
    assert.equal(await exited, 0);
  } finally {
    child.kill("SIGKILL");
  }
});
