import assert from "node:assert/strict";
import { test } from "node:test";
import type { MasterLogger, MasterOptions } from "../../src/master/master.ts";
import { Master } from "../../src/master/master.ts";
import { AssertionError } from "../../src/shared/assert.ts";
import { FakeClock } from "../../src/shared/clock.ts";
import type { CommandId, InstanceId, ModelId, NodeId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import { TASKS_MAX, TASKS_PENDING_PER_INSTANCE_MAX } from "../../src/shared/limits.ts";
import { findTaskByCommandId } from "../../src/shared/state.ts";
import type { Command, Event, GenerationParams, IndexedEvent, NodeInfo, RunnerStatus, Task } from "../../src/shared/types.ts";
import { testGenerationParams } from "../support/generation-params.ts";
import { MemoryMasterLog } from "../support/memory-master-log.ts";


const GiB = 1024 ** 3;
const SELF = "node-a" as NodeId;
const OTHER = "node-b" as NodeId;
const MODEL = "model-x" as ModelId;
const cmd = (s: string): CommandId => s as CommandId;

const params: GenerationParams = testGenerationParams({ messages: [{ role: "user", content: "hi" }] });

class RecordingLogger implements MasterLogger {
  readonly entries: Array<{ level: string; message: string }> = [];
  debug = (_fields: Record<string, unknown>, message: string): void => void this.entries.push({ level: "debug", message });
  info = (_fields: Record<string, unknown>, message: string): void => void this.entries.push({ level: "info", message });
  warn = (_fields: Record<string, unknown>, message: string): void => void this.entries.push({ level: "warn", message });
  error = (_fields: Record<string, unknown>, message: string): void => void this.entries.push({ level: "error", message });
  last(): { level: string; message: string } | undefined {
    return this.entries.at(-1);
  }
}

interface Harness {
  readonly master: Master;
  readonly log: MemoryMasterLog;
  readonly clock: FakeClock;
  readonly logger: RecordingLogger;
  readonly published: IndexedEvent[];
}

/** A started master on its own log (or on `log`: a restart); ids are deterministic and carry `idPrefix` so restarts never collide. */
function startMaster(options: { log?: MemoryMasterLog; idPrefix?: string; term?: number; extra?: Partial<MasterOptions> } = {}): Harness {
  const log = options.log ?? new MemoryMasterLog();
  const clock = new FakeClock();
  const logger = new RecordingLogger();
  const published: IndexedEvent[] = [];
  const prefix = options.idPrefix ?? "g0";
  let idCount = 0;
  const master = new Master({
    nodeId: SELF,
    log,
    clock,
    logger,
    term: options.term ?? 1,
    publish: (e) => published.push(e),
    newTaskId: () => `task-${prefix}-${idCount++}` as TaskId,
    newInstanceId: () => `inst-${prefix}-${idCount++}` as InstanceId,
    newRunnerId: () => `runner-${prefix}-${idCount++}` as RunnerId,
    ...options.extra,
  });
  master.start();
  return { master, log, clock, logger, published };
}

function nodeInfo(nodeId: NodeId, availableGiB = 16): NodeInfo {
  return {
    nodeId,
    hostname: nodeId,
    memoryTotalBytes: 32 * GiB,
    memoryAvailableBytes: availableGiB * GiB,
    cores: 2,
    addresses: ["127.0.0.1"],
    apiPort: 52415,
    clusterPort: 52416,
  };
}

let placeCount = 0;
/** Reports node(s) and places one instance of `modelId` on `nodeId`; returns its id. */
function addInstance(h: Harness, nodeId: NodeId = SELF, modelId: ModelId = MODEL, sizeGiB = 0): InstanceId {
  if (h.master.state.nodes[nodeId] === undefined) h.master.handleWorkerEvent({ type: "NodeGatheredInfo", info: nodeInfo(nodeId) }, nodeId);
  const before = Object.keys(h.master.state.instances).length;
  const events = h.master.handleCommand({
    type: "PlaceInstance",
    commandId: cmd(`place-${placeCount++}`),
    model: { modelId, layerCount: 8, sizeBytes: sizeGiB * GiB },
    minNodes: 1,
    sharding: "pipeline",
  });
  assert.equal(Object.keys(h.master.state.instances).length, before + 1);
  const created = events.find((e) => e.event.type === "InstanceCreated");
  assert.ok(created !== undefined && created.event.type === "InstanceCreated");
  return created.event.instance.instanceId;
}

const textGeneration = (commandId: string, originNodeId: NodeId = SELF, modelId: ModelId = MODEL): Command => ({
  type: "TextGeneration",
  commandId: cmd(commandId),
  modelId,
  originNodeId,
  params,
});
const cancel = (commandId: string): Command => ({ type: "TaskCancelled", cancelledCommandId: cmd(commandId) });
const finish = (commandId: string): Command => ({ type: "TaskFinished", finishedCommandId: cmd(commandId) });

function taskOf(h: Harness, commandId: string): Task | undefined {
  return findTaskByCommandId(h.master.state, cmd(commandId));
}
function mustTask(h: Harness, commandId: string): Task {
  const task = taskOf(h, commandId);
  assert.ok(task !== undefined, `no task for ${commandId}`);
  return task;
}

function taskStatusEvent(taskId: TaskId, status: Task["status"], tokensGenerated: number | null = null): Event {
  return {
    type: "TaskStatusUpdated",
    taskId,
    status,
    finishReason: status === "Complete" ? "stop" : null,
    failureCode: null,
    failureReason: null,
    fromRunner: true,
    tokensGenerated,
    promptTokens: null,
  };
}

const types = (events: readonly IndexedEvent[]): string[] => events.map((e) => e.event.type);

/** The published stream is gap-free from 0, in order, and identical to what the log holds. */
function assertStreamConsistent(h: Harness): void {
  h.published.forEach((e, i) => assert.equal(e.idx, i, "published idx sequence"));
  assert.equal(h.master.state.lastIdx, h.published.length - 1);
  assert.equal(h.log.lastIdx, h.master.state.lastIdx);
  assert.deepEqual(h.master.eventsSince(0, h.published.length), h.published.slice(0, 4096));
}

// ── start ───────────────────────────────────────────────────────────────────────────────────────

test("start on an empty log announces the master at idx 0", () => {
  const h = startMaster({ term: 3 });
  assert.deepEqual(h.published, [{ idx: 0, atMs: h.clock.nowMs(), event: { type: "MasterChanged", nodeId: SELF, term: 3 } }]);
  assert.equal(h.master.state.masterNodeId, SELF);
  assert.equal(h.master.state.masterTerm, 3);
  assert.throws(() => h.master.start(), AssertionError);
});

test("commands before start are a programmer error", () => {
  const log = new MemoryMasterLog();
  const master = new Master({ nodeId: SELF, log, clock: new FakeClock(), logger: new RecordingLogger(), term: 1, publish: () => {} });
  assert.throws(() => master.handleCommand(cancel("x")), AssertionError);
  assert.throws(() => master.handleWorkerEvent({ type: "NodeGatheredInfo", info: nodeInfo(SELF) }, SELF), AssertionError);
});

// ── TextGeneration ──────────────────────────────────────────────────────────────────────────────

test("TextGeneration creates a Pending task on the model's instance; a duplicate is a no-op", () => {
  const h = startMaster();
  const instanceId = addInstance(h);
  h.clock.advance(7);
  const events = h.master.handleCommand(textGeneration("c1"));
  assert.deepEqual(types(events), ["TaskCreated"]);
  assert.equal(events[0]?.atMs, h.clock.nowMs());
  const task = mustTask(h, "c1");
  assert.equal(task.status, "Pending");
  assert.equal(task.instanceId, instanceId);
  assert.equal(task.commandId, "c1");
  assert.equal(task.originNodeId, SELF);
  assert.deepEqual(task.params, params);
  assert.deepEqual(h.master.handleCommand(textGeneration("c1")), []);
  assert.equal(Object.keys(h.master.state.tasks).length, 1);
  assertStreamConsistent(h);
});

test("TextGeneration with no instance of the model creates the task already Failed (no_instance)", () => {
  const h = startMaster();
  addInstance(h, SELF, "other-model" as ModelId);
  const events = h.master.handleCommand(textGeneration("c1"));
  assert.deepEqual(types(events), ["TaskCreated"]);
  const task = mustTask(h, "c1");
  assert.equal(task.status, "Failed");
  assert.equal(task.failureCode, "no_instance");
  assert.equal(task.finishReason, "error");
  assert.equal(task.instanceId, null);
  assert.match(task.failureReason ?? "", /model-x/);
});

test("TextGeneration picks the instance with the fewest unfinished tasks", () => {
  const h = startMaster();
  const first = addInstance(h);
  const second = addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  h.master.handleCommand(textGeneration("c2"));
  assert.deepEqual([mustTask(h, "c1").instanceId, mustTask(h, "c2").instanceId], [first, second]);
  // A finished task no longer counts: c1 Complete leaves `first` with none.
  h.master.handleWorkerEvent(taskStatusEvent(mustTask(h, "c1").taskId, "Complete", 3), SELF);
  h.master.handleCommand(textGeneration("c3"));
  assert.equal(mustTask(h, "c3").instanceId, first);
});

test("queue full: the instance's Pending tasks at the limit make the next task Failed (queue_full)", () => {
  const h = startMaster();
  addInstance(h);
  for (let i = 0; i < TASKS_PENDING_PER_INSTANCE_MAX; i++) h.master.handleCommand(textGeneration(`c${i}`));
  h.master.handleCommand(textGeneration("one-too-many"));
  const task = mustTask(h, "one-too-many");
  assert.equal(task.status, "Failed");
  assert.equal(task.failureCode, "queue_full");
  assert.equal(task.instanceId, null);
  // A running task frees a queue slot.
  h.master.handleWorkerEvent(taskStatusEvent(mustTask(h, "c0").taskId, "Running"), SELF);
  h.master.handleCommand(textGeneration("fits-again"));
  assert.equal(mustTask(h, "fits-again").status, "Pending");
});

test("too many tasks: at TASKS_MAX the next task is created Failed (too_many_tasks)", () => {
  const h = startMaster();
  const instanceCount = Math.ceil(TASKS_MAX / TASKS_PENDING_PER_INSTANCE_MAX);
  for (let i = 0; i < instanceCount; i++) addInstance(h);
  for (let i = 0; i < TASKS_MAX; i++) h.master.handleCommand(textGeneration(`c${i}`));
  assert.equal(Object.values(h.master.state.tasks).filter((t) => t.status === "Pending").length, TASKS_MAX);
  h.master.handleCommand(textGeneration("over"));
  assert.equal(mustTask(h, "over").failureCode, "too_many_tasks");
  assert.equal(mustTask(h, "over").status, "Failed");
  // Deleting a finished task makes room.
  h.master.handleCommand(finish("c0"));
  h.master.handleCommand(finish("over"));
  h.master.handleCommand(textGeneration("room"));
  assert.equal(mustTask(h, "room").status, "Pending");
});

test("a malformed command (e.g. from another node) is dropped with a warning, not indexed", () => {
  const h = startMaster();
  addInstance(h);
  const bad = { ...textGeneration("c1"), params: { ...params, temperature: 5 } } as Command;
  assert.deepEqual(h.master.handleCommand(bad), []);
  assert.equal(h.logger.last()?.level, "warn");
  assert.equal(taskOf(h, "c1"), undefined);
  const badId = cancel("has spaces in it");
  assert.deepEqual(h.master.handleCommand(badId), []);
  assert.equal(h.logger.last()?.level, "warn");
  assertStreamConsistent(h);
});

// ── cancel and finish, any order, any number of times ───────────────────────────────────────────

test("TaskCancelled of a Pending task → Cancelled (finishReason cancelled); twice → no-op", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  const events = h.master.handleCommand(cancel("c1"));
  assert.deepEqual(types(events), ["TaskStatusUpdated"]);
  assert.equal(mustTask(h, "c1").status, "Cancelled");
  assert.equal(mustTask(h, "c1").finishReason, "cancelled");
  assert.deepEqual(h.master.handleCommand(cancel("c1")), []);
  assert.equal(h.logger.last()?.level, "debug");
});

test("TaskFinished without a task is a no-op, and the late TextGeneration it overtook is dropped", () => {
  const h = startMaster();
  addInstance(h);
  assert.deepEqual(h.master.handleCommand(finish("ghost")), []);
  assert.deepEqual(h.master.handleCommand(textGeneration("ghost")), []);
  assert.equal(taskOf(h, "ghost"), undefined);
});

test("TaskFinished of a running task → Cancelled; Deleted only once the runner reports its end; again → no-op", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  const taskId = mustTask(h, "c1").taskId;
  h.master.handleWorkerEvent(taskStatusEvent(taskId, "Running"), SELF);
  const events = h.master.handleCommand(finish("c1"));
  assert.deepEqual(types(events), ["TaskStatusUpdated", "TaskClientFinished"]);
  assert.equal(events[0]?.event.type === "TaskStatusUpdated" && events[0].event.status, "Cancelled");
  assert.equal(mustTask(h, "c1").heldByRunner, true, "the runner still holds it");
  assert.deepEqual(h.master.handleCommand(finish("c1")), []);
  // The runner's own end report, with its real count, is recorded before the task goes.
  const released = h.master.handleWorkerEvent(taskStatusEvent(taskId, "Cancelled", 7), SELF);
  assert.deepEqual(types(released), ["TaskStatusUpdated", "TaskDeleted"]);
  assert.equal(released[0]?.event.type === "TaskStatusUpdated" && released[0].event.tokensGenerated, 7);
  assert.equal(h.master.state.tasks[taskId], undefined);
  assert.deepEqual(h.master.handleCommand(finish("c1")), []);
  assert.deepEqual(h.master.handleCommand(cancel("c1")), []);
  // A redelivered TextGeneration does not bring the finished task back.
  assert.deepEqual(h.master.handleCommand(textGeneration("c1")), []);
  assertStreamConsistent(h);
});

test("TaskFinished of a completed task only deletes it", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  h.master.handleWorkerEvent(taskStatusEvent(mustTask(h, "c1").taskId, "Complete", 5), SELF);
  assert.deepEqual(types(h.master.handleCommand(finish("c1"))), ["TaskClientFinished", "TaskDeleted"]);
});

test("TaskFinished of a pending task: Cancelled and deleted at once (no runner holds it)", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  assert.deepEqual(types(h.master.handleCommand(finish("c1"))), ["TaskStatusUpdated", "TaskClientFinished", "TaskDeleted"]);
});

test("TaskCancelled after the runner completed the task is a no-op", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  h.master.handleWorkerEvent(taskStatusEvent(mustTask(h, "c1").taskId, "Complete", 5), SELF);
  assert.deepEqual(h.master.handleCommand(cancel("c1")), []);
  assert.equal(mustTask(h, "c1").status, "Complete");
});

/** Every distinct order of the multiset {G,G,C,C,F,F}. */
function orders(): string[] {
  const result = new Set<string>();
  const permute = (prefix: string, rest: string): void => {
    if (rest.length === 0) result.add(prefix);
    for (let i = 0; i < rest.length; i++) permute(prefix + rest[i], rest.slice(0, i) + rest.slice(i + 1));
  };
  permute("", "GGCCFF");
  return [...result];
}

test("every command twice, in every order: never throws, never leaves a task, one TaskCreated at most", () => {
  const h = startMaster();
  addInstance(h);
  const all = orders();
  assert.equal(all.length, 90);
  for (const order of all) {
    const id = `order-${order}`;
    const emitted: IndexedEvent[] = [];
    for (const step of order) {
      const command = step === "G" ? textGeneration(id) : step === "C" ? cancel(id) : finish(id);
      emitted.push(...h.master.handleCommand(command));
    }
    assert.equal(taskOf(h, id), undefined, `${order}: a task was left behind`);
    const created = types(emitted).filter((t) => t === "TaskCreated").length;
    const deleted = types(emitted).filter((t) => t === "TaskDeleted").length;
    const generationBeforeFirstFinish = order.indexOf("G") < order.indexOf("F");
    assert.equal(created, generationBeforeFirstFinish ? 1 : 0, `${order}: TaskCreated count`);
    assert.equal(deleted, created, `${order}: TaskDeleted count`);
    assert.ok(types(emitted).filter((t) => t === "TaskStatusUpdated").length <= 1, `${order}: cancelled twice`);
  }
  assertStreamConsistent(h);
});

// ── instances ───────────────────────────────────────────────────────────────────────────────────

test("PlaceInstance that cannot fit logs a warning with the reason and emits nothing", () => {
  const h = startMaster();
  h.master.handleWorkerEvent({ type: "NodeGatheredInfo", info: nodeInfo(SELF, 2) }, SELF);
  const events = h.master.handleCommand({
    type: "PlaceInstance",
    commandId: cmd("p1"),
    model: { modelId: MODEL, layerCount: 8, sizeBytes: 8 * GiB },
    minNodes: 1,
    sharding: "pipeline",
  });
  assert.deepEqual(events, []);
  assert.equal(h.logger.last()?.level, "warn");
  assert.match(h.logger.last()?.message ?? "", /needs 8\.00 GiB/);
});

test("PlaceInstance redelivered with the same commandId places one instance", () => {
  const h = startMaster();
  h.master.handleWorkerEvent({ type: "NodeGatheredInfo", info: nodeInfo(SELF) }, SELF);
  const place: Command = { type: "PlaceInstance", commandId: cmd("p1"), model: { modelId: MODEL, layerCount: 4, sizeBytes: GiB }, minNodes: 1, sharding: "pipeline" };
  assert.deepEqual(types(h.master.handleCommand(place)), ["InstanceCreated"]);
  assert.deepEqual(h.master.handleCommand(place), []);
  assert.equal(Object.keys(h.master.state.instances).length, 1);
  assert.equal(Object.keys(h.master.state.runners).length, 1);
});

test("DeleteInstance deletes (runners go, unfinished tasks fail); unknown or twice → no-op", () => {
  const h = startMaster();
  const instanceId = addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  const deleteCommand: Command = { type: "DeleteInstance", commandId: cmd("d1"), instanceId };
  assert.deepEqual(types(h.master.handleCommand(deleteCommand)), ["InstanceDeleted"]);
  assert.equal(h.master.state.instances[instanceId], undefined);
  assert.deepEqual(Object.keys(h.master.state.runners), []);
  assert.equal(mustTask(h, "c1").failureCode, "instance_deleted");
  assert.deepEqual(h.master.handleCommand(deleteCommand), []);
  assert.deepEqual(h.master.handleCommand({ type: "DeleteInstance", commandId: cmd("d2"), instanceId: "inst-nope" as InstanceId }), []);
  // The runner's late shutdown report names a runner that no longer exists: dropped quietly.
  const runnerReport: Event = { type: "RunnerStatusUpdated", runnerId: "runner-g0-1" as RunnerId, status: { kind: "Shutdown" } };
  assert.deepEqual(h.master.handleWorkerEvent(runnerReport, SELF), []);
  assert.equal(h.logger.last()?.level, "debug");
});

test("RequestEventLog is not indexed; eventsSince reads the log", () => {
  const h = startMaster();
  addInstance(h);
  assert.deepEqual(h.master.handleCommand({ type: "RequestEventLog", sinceIdx: 0 }), []);
  assert.deepEqual(h.master.eventsSince(1), h.published.slice(1));
  assert.deepEqual(h.master.eventsSince(0, 1), h.published.slice(0, 1));
});

// ── worker events ───────────────────────────────────────────────────────────────────────────────

function runnerOf(h: Harness, instanceId: InstanceId): RunnerId {
  const runnerId = h.master.state.instances[instanceId]?.shards[0]?.runnerId;
  assert.ok(runnerId !== undefined);
  return runnerId;
}
const runnerStatus = (runnerId: RunnerId, status: RunnerStatus): Event => ({ type: "RunnerStatusUpdated", runnerId, status });

test("RunnerStatusUpdated: allowed transitions from the runner's own node are indexed", () => {
  const h = startMaster();
  const runnerId = runnerOf(h, addInstance(h));
  const path: RunnerStatus[] = [
    { kind: "Loading", layersLoaded: 0, layerCount: 8 },
    { kind: "Loading", layersLoaded: 8, layerCount: 8 },
    { kind: "Loaded" },
    { kind: "WarmingUp" },
    { kind: "Ready" },
  ];
  for (const status of path) assert.equal(h.master.handleWorkerEvent(runnerStatus(runnerId, status), SELF).length, 1);
  assert.equal(h.master.state.runners[runnerId]?.status.kind, "Ready");
});

test("worker events that must be dropped leave State and the log unchanged", () => {
  const h = startMaster();
  const instanceId = addInstance(h);
  const runnerId = runnerOf(h, instanceId);
  h.master.handleCommand(textGeneration("c1"));
  const taskId = mustTask(h, "c1").taskId;
  const chunk = (id: TaskId): Event => ({ type: "ChunkGenerated", taskId: id, chunk: { index: 0, text: "x", tokensGenerated: 1, logprobs: null } });
  const unknownTask = "task-nope" as TaskId;
  const cases: Array<{ name: string; event: Event; from: NodeId; level: string }> = [
    { name: "unknown runner", event: runnerStatus("runner-nope" as RunnerId, { kind: "Loaded" }), from: SELF, level: "debug" },
    { name: "runner on another node", event: runnerStatus(runnerId, { kind: "Loading", layersLoaded: 0, layerCount: 8 }), from: OTHER, level: "warn" },
    { name: "invalid runner transition Idle → Ready", event: runnerStatus(runnerId, { kind: "Ready" }), from: SELF, level: "warn" },
    { name: "status of an unknown task", event: taskStatusEvent(unknownTask, "Running"), from: SELF, level: "debug" },
    { name: "chunk of an unknown task", event: chunk(unknownTask), from: SELF, level: "debug" },
    { name: "prefill of an unknown task", event: { type: "TaskPrefillProgress", taskId: unknownTask, processedTokens: 1, totalTokens: 2 }, from: SELF, level: "debug" },
    { name: "task report from a node without a shard", event: chunk(taskId), from: OTHER, level: "warn" },
    { name: "node info about another node", event: { type: "NodeGatheredInfo", info: nodeInfo(OTHER) }, from: SELF, level: "warn" },
    { name: "download progress of another node", event: { type: "NodeDownloadProgress", nodeId: OTHER, progress: { modelId: MODEL, status: "downloading", downloadedBytes: 1, totalBytes: 2, error: null } }, from: SELF, level: "warn" },
    { name: "not a worker event type", event: { type: "InstanceDeleted", instanceId, reason: "worker says so" }, from: SELF, level: "warn" },
    { name: "not a worker event type (TaskDeleted)", event: { type: "TaskDeleted", taskId }, from: SELF, level: "warn" },
    { name: "malformed (negative memory)", event: { type: "NodeGatheredInfo", info: { ...nodeInfo(SELF), memoryAvailableBytes: -1 } }, from: SELF, level: "warn" },
  ];
  for (const c of cases) {
    const stateBefore = h.master.state;
    const logCountBefore = h.log.count;
    assert.deepEqual(h.master.handleWorkerEvent(c.event, c.from), [], c.name);
    assert.equal(h.master.state, stateBefore, `${c.name}: state changed`);
    assert.equal(h.log.count, logCountBefore, `${c.name}: log grew`);
    assert.equal(h.logger.last()?.level, c.level, `${c.name}: log level`);
  }
  assertStreamConsistent(h);
});

test("task reports from the instance's node are indexed: prefill, chunks, completion with counts", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  const taskId = mustTask(h, "c1").taskId;
  h.master.handleWorkerEvent(taskStatusEvent(taskId, "Running"), SELF);
  h.master.handleWorkerEvent({ type: "TaskPrefillProgress", taskId, processedTokens: 256, totalTokens: 300 }, SELF);
  assert.deepEqual(mustTask(h, "c1").prefill, { processedTokens: 256, totalTokens: 300 });
  assert.equal(
    h.master.handleWorkerEvent({ type: "ChunkGenerated", taskId, chunk: { index: 0, text: "he", tokensGenerated: 2, logprobs: null } }, SELF).length,
    1,
  );
  h.master.handleWorkerEvent(taskStatusEvent(taskId, "Complete", 4), SELF);
  assert.equal(mustTask(h, "c1").status, "Complete");
  assert.equal(mustTask(h, "c1").tokensGenerated, 4);
  assertStreamConsistent(h);
});

test("a worker's late Complete after the master's Cancelled keeps Cancelled but counts the tokens", () => {
  const h = startMaster();
  addInstance(h);
  h.master.handleCommand(textGeneration("c1"));
  const taskId = mustTask(h, "c1").taskId;
  h.master.handleWorkerEvent(taskStatusEvent(taskId, "Running"), SELF);
  h.master.handleCommand(cancel("c1"));
  assert.equal(h.master.handleWorkerEvent(taskStatusEvent(taskId, "Complete", 9), SELF).length, 1);
  assert.equal(mustTask(h, "c1").status, "Cancelled");
  assert.equal(mustTask(h, "c1").tokensGenerated, 9);
});

// ── restart ─────────────────────────────────────────────────────────────────────────────────────

test("restart from the log keeps instances and removes the tasks whose clients died with the process", async () => {
  const first = startMaster({ idPrefix: "g1", term: 1 });
  const instanceId = addInstance(first, SELF);
  first.master.handleWorkerEvent({ type: "NodeGatheredInfo", info: nodeInfo(OTHER) }, OTHER);
  first.master.handleCommand(textGeneration("own-pending", SELF));
  first.master.handleCommand(textGeneration("own-running", SELF));
  first.master.handleCommand(textGeneration("own-done", SELF));
  first.master.handleCommand(textGeneration("foreign", OTHER));
  first.master.handleWorkerEvent(taskStatusEvent(mustTask(first, "own-running").taskId, "Running"), SELF);
  first.master.handleWorkerEvent(taskStatusEvent(mustTask(first, "own-done").taskId, "Complete", 3), SELF);
  const ownIds = ["own-pending", "own-running", "own-done"].map((c) => mustTask(first, c).taskId);
  const lastIdxBefore = first.master.state.lastIdx;

  const second = startMaster({ log: first.log, idPrefix: "g2", term: 2 });
  const s = second.master.state;
  assert.ok(s.instances[instanceId] !== undefined, "instance survived the restart");
  assert.deepEqual(s.instances[instanceId], first.master.state.instances[instanceId]);
  assert.equal(s.masterTerm, 2);
  for (const c of ["own-pending", "own-running", "own-done"]) assert.equal(taskOf(second, c), undefined, `${c} removed`);
  assert.equal(mustTask(second, "foreign").status, "Pending");
  // Published after the restart: MasterChanged, then Failed + Deleted for live orphans, Deleted only for the finished one.
  assert.equal(second.published[0]?.idx, lastIdxBefore + 1);
  assert.deepEqual(types(second.published), ["MasterChanged", "TaskStatusUpdated", "TaskDeleted", "TaskStatusUpdated", "TaskDeleted", "TaskDeleted"]);
  const failures = second.published.flatMap((e) => (e.event.type === "TaskStatusUpdated" ? [[e.event.taskId, e.event.status, e.event.failureCode]] : []));
  assert.deepEqual(failures, [
    [ownIds[0], "Failed", "node_restarted"],
    [ownIds[1], "Failed", "node_restarted"],
  ]);
  // The finished tasks' command ids are remembered from the replayed log: a redelivery is dropped.
  assert.deepEqual(second.master.handleCommand(textGeneration("own-pending")), []);
  // And the whole log replays to the same State a third time.
  const third = startMaster({ log: first.log, idPrefix: "g3", term: 3, extra: { cleanUpOwnOrphansOnStart: false } });
  assert.deepEqual(third.master.state.instances, second.master.state.instances);
  assert.deepEqual(third.master.state.tasks, second.master.state.tasks);
  assert.deepEqual(types(third.published), ["MasterChanged"]);
});

// ── cluster events ──────────────────────────────────────────────────────────────────────────────

test("NodeTimedOut deletes the node's instances, places them again on the nodes left, and removes the tasks of its clients", () => {
  const h = startMaster();
  const otherInstance = addInstance(h, OTHER, "model-y" as ModelId);
  addInstance(h, SELF);
  h.master.handleCommand(textGeneration("from-other", OTHER));
  h.master.handleCommand(textGeneration("on-other", SELF, "model-y" as ModelId));
  const events = h.master.handleClusterEvent({ type: "NodeTimedOut", nodeId: OTHER });
  assert.deepEqual(types(events), ["NodeTimedOut", "TaskStatusUpdated", "TaskDeleted", "InstanceCreated"]);
  assert.equal(h.master.state.instances[otherInstance], undefined);
  const replaced = Object.values(h.master.state.instances).filter((i) => i.modelId === "model-y");
  assert.equal(replaced.length, 1, "the lost model is placed again");
  assert.ok(replaced[0]!.shards.every((x) => x.nodeId === SELF), "on the node that is left");
  assert.equal(h.master.state.nodes[OTHER], undefined);
  assert.equal(taskOf(h, "from-other"), undefined);
  assert.equal(mustTask(h, "on-other").failureCode, "instance_deleted");
  // Again, for a node State no longer knows: nothing.
  assert.deepEqual(h.master.handleClusterEvent({ type: "NodeTimedOut", nodeId: OTHER }), []);
  assertStreamConsistent(h);
});

test("topology edges are indexed; deleting an unknown edge is a no-op", () => {
  const h = startMaster();
  assert.equal(h.master.handleClusterEvent({ type: "TopologyEdgeCreated", fromNodeId: SELF, toNodeId: OTHER, latencyMs: 0.1 }).length, 1);
  assert.equal(h.master.handleClusterEvent({ type: "TopologyEdgeDeleted", fromNodeId: SELF, toNodeId: OTHER }).length, 1);
  assert.deepEqual(h.master.handleClusterEvent({ type: "TopologyEdgeDeleted", fromNodeId: SELF, toNodeId: OTHER }), []);
  assert.deepEqual(h.master.state.edges, []);
});

test("idx is strictly increasing and events are published in order, after they are in the log", () => {
  const log = new MemoryMasterLog();
  const seenInLog: boolean[] = [];
  const master = new Master({
    nodeId: SELF,
    log,
    clock: new FakeClock(),
    logger: new RecordingLogger(),
    term: 1,
    publish: (e) => seenInLog.push(log.lastIdx >= e.idx),
  });
  const published: IndexedEvent[] = [];
  const h: Harness = { master, log, clock: new FakeClock(), logger: new RecordingLogger(), published };
  master.start();
  addInstance(h);
  master.handleCommand(textGeneration("c1"));
  master.handleCommand(finish("c1"));
  const all = master.eventsSince(0);
  assert.ok(all.length >= 5);
  all.forEach((e, i) => assert.equal(e.idx, i));
  assert.ok(seenInLog.every(Boolean), "an event was published before it was in the log");
  assert.equal(seenInLog.length, all.length);
});
