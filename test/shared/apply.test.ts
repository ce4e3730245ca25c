import assert from "node:assert/strict";
import { test } from "node:test";
import { apply, EventOrderError } from "../../src/shared/apply.ts";
import { AssertionError } from "../../src/shared/assert.ts";
import type { CommandId, InstanceId, ModelId, NodeId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Event, GenerationParams, Instance, NodeInfo, Task } from "../../src/shared/types.ts";
import { testGenerationParams } from "../support/generation-params.ts";

const A = "node-a" as NodeId;
const B = "node-b" as NodeId;
const C = "node-c" as NodeId;

const params: GenerationParams = testGenerationParams({ messages: [{ role: "user", content: "hi" }], maxTokens: null, temperature: 0.7 });

function nodeInfo(nodeId: NodeId, availableBytes = 1000): NodeInfo {
  return { nodeId, hostname: nodeId, memoryTotalBytes: 2000, memoryAvailableBytes: availableBytes, cores: 2, addresses: [], apiPort: 1, clusterPort: 2 };
}

/** An instance of 4 layers over the given nodes, one runner each (`runner-<instance>-<i>`). */
function instance(name: string, nodes: NodeId[]): Instance {
  const layersEach = 4 / nodes.length;
  return {
    instanceId: name as InstanceId,
    modelId: "m" as ModelId,
    sharding: "pipeline",
    layerCount: 4,
    shards: nodes.map((nodeId, i) => ({
      runnerId: `runner-${name}-${i}` as RunnerId,
      nodeId,
      layerStart: i * layersEach,
      layerEnd: (i + 1) * layersEach,
    })),
  };
}

function task(name: string, instanceId: string | null, overrides: Partial<Task> = {}): Task {
  return {
    taskId: name as TaskId,
    commandId: `cmd-${name}` as CommandId,
    instanceId: instanceId as InstanceId | null,
    modelId: "m" as ModelId,
    originNodeId: A,
    status: "Pending",
    params,
    promptTokens: 0,
    tokensGenerated: 0,
    prefill: null,
    finishReason: null,
    failureCode: null,
    failureReason: null,
    heldByRunner: false,
    clientFinished: false,
    ...overrides,
  };
}

function statusUpdate(taskId: string, status: Task["status"], extra: Partial<Extract<Event, { type: "TaskStatusUpdated" }>> = {}): Event {
  return {
    type: "TaskStatusUpdated",
    taskId: taskId as TaskId,
    status,
    finishReason: null,
    failureCode: null,
    failureReason: null,
    fromRunner: false,
    tokensGenerated: null,
    promptTokens: null,
    ...extra,
  };
}

/** Applies events in order from `state`, numbering them after its lastIdx. */
function run(state: State, events: readonly Event[]): State {
  return events.reduce((s, event) => apply(s, { idx: s.lastIdx + 1, atMs: 0, event }), state);
}

/** Freezes every object reachable from `value`, so a mutating apply throws in strict mode. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** A cluster: nodes a, b, c; instance i1 on a+b, i2 on c; tasks t1 (i1, Running), t2 (i1, Complete), t3 (i2). */
function cluster(): State {
  return deepFreeze(
    run(emptyState(), [
      { type: "MasterChanged", nodeId: A, term: 1 },
      { type: "NodeGatheredInfo", info: nodeInfo(A) },
      { type: "NodeGatheredInfo", info: nodeInfo(B) },
      { type: "NodeGatheredInfo", info: nodeInfo(C) },
      { type: "InstanceCreated", instance: instance("i1", [A, B]) },
      { type: "InstanceCreated", instance: instance("i2", [C]) },
      { type: "TaskCreated", task: task("t1", "i1") },
      { type: "TaskCreated", task: task("t2", "i1") },
      { type: "TaskCreated", task: task("t3", "i2") },
      statusUpdate("t1", "Running"),
      statusUpdate("t2", "Complete", { finishReason: "stop", tokensGenerated: 5 }),
      { type: "NodeDownloadProgress", nodeId: B, progress: { modelId: "m" as ModelId, status: "complete", downloadedBytes: 9, totalBytes: 9, error: null } },
      { type: "TopologyEdgeCreated", fromNodeId: A, toNodeId: B, latencyMs: 0.2 },
      { type: "TopologyEdgeCreated", fromNodeId: B, toNodeId: C, latencyMs: 0.3 },
    ]),
  );
}

/** State without lastIdx, to compare "unchanged apart from the index". */
const content = (s: State): Omit<State, "lastIdx"> => {
  const { lastIdx: _lastIdx, ...rest } = s;
  return rest;
};

// ── order ───────────────────────────────────────────────────────────────────────────────────────

test("apply refuses an event out of order with EventOrderError", () => {
  const s0 = emptyState();
  const event: Event = { type: "MasterChanged", nodeId: A, term: 1 };
  assert.throws(() => apply(s0, { idx: 1, atMs: 0, event }), (err: unknown) => err instanceof EventOrderError && err.expectedIdx === 0 && err.gotIdx === 1);
  const s1 = apply(s0, { idx: 0, atMs: 0, event });
  assert.equal(s1.lastIdx, 0);
  assert.throws(() => apply(s1, { idx: 0, atMs: 0, event }), EventOrderError);
  assert.throws(() => apply(s1, { idx: 5, atMs: 0, event }), EventOrderError);
});

test("apply never mutates its input (the cluster state is deep-frozen)", () => {
  const s = cluster();
  // Every event type once more on the frozen state; a mutation would throw a TypeError.
  run(s, [
    { type: "MasterChanged", nodeId: B, term: 2 },
    { type: "NodeGatheredInfo", info: nodeInfo(A, 5) },
    { type: "RunnerStatusUpdated", runnerId: "runner-i1-0" as RunnerId, status: { kind: "Loading", layersLoaded: 1, layerCount: 2 } },
    { type: "TaskPrefillProgress", taskId: "t1" as TaskId, processedTokens: 1, totalTokens: 2 },
    { type: "ChunkGenerated", taskId: "t1" as TaskId, chunk: { index: 0, text: "a", tokensGenerated: 1, logprobs: null } },
    statusUpdate("t1", "Complete", { finishReason: "stop" }),
    { type: "TaskDeleted", taskId: "t2" as TaskId },
    { type: "NodeDownloadProgress", nodeId: B, progress: { modelId: "m2" as ModelId, status: "pending", downloadedBytes: 0, totalBytes: 1, error: null } },
    { type: "TopologyEdgeDeleted", fromNodeId: A, toNodeId: B },
    { type: "InstanceDeleted", instanceId: "i2" as InstanceId, reason: "test" },
    { type: "NodeTimedOut", nodeId: A },
    { type: "InstanceCreated", instance: instance("i3", [C]) },
  ]);
  assert.equal(cluster().lastIdx, s.lastIdx);
});

// ── each event type ─────────────────────────────────────────────────────────────────────────────

test("MasterChanged and NodeGatheredInfo", () => {
  const s = run(cluster(), [{ type: "MasterChanged", nodeId: B, term: 7 }, { type: "NodeGatheredInfo", info: nodeInfo(A, 42) }]);
  assert.equal(s.masterNodeId, B);
  assert.equal(s.masterTerm, 7);
  assert.equal(s.nodes[A]?.memoryAvailableBytes, 42);
  assert.equal(Object.keys(s.nodes).length, 3);
});

test("InstanceCreated adds the instance and one Idle runner per shard; a second create asserts", () => {
  const s = cluster();
  assert.deepEqual(s.instances["i1" as InstanceId], instance("i1", [A, B]));
  assert.deepEqual(s.runners["runner-i1-1" as RunnerId], { runnerId: "runner-i1-1", instanceId: "i1", nodeId: B, status: { kind: "Idle" } });
  assert.equal(Object.keys(s.runners).length, 3);
  assert.throws(() => run(s, [{ type: "InstanceCreated", instance: instance("i1", [C]) }]), AssertionError);
});

test("RunnerStatusUpdated: allowed transitions apply, unknown runners are ignored, forbidden ones assert", () => {
  const runnerId = "runner-i1-0" as RunnerId;
  const s = run(cluster(), [{ type: "RunnerStatusUpdated", runnerId, status: { kind: "Loading", layersLoaded: 0, layerCount: 2 } }]);
  assert.deepEqual(s.runners[runnerId]?.status, { kind: "Loading", layersLoaded: 0, layerCount: 2 });
  const unknown = run(s, [{ type: "RunnerStatusUpdated", runnerId: "runner-nope" as RunnerId, status: { kind: "Ready" } }]);
  assert.deepEqual(content(unknown), content(s));
  assert.throws(() => run(s, [{ type: "RunnerStatusUpdated", runnerId, status: { kind: "Running", taskIds: ["t1" as TaskId] } }]), AssertionError);
  // Failed and Idle may follow anything.
  const failed = run(s, [{ type: "RunnerStatusUpdated", runnerId, status: { kind: "Failed", reason: "oom" } }]);
  assert.equal(failed.runners[runnerId]?.status.kind, "Failed");
  assert.equal(run(failed, [{ type: "RunnerStatusUpdated", runnerId, status: { kind: "Idle" } }]).runners[runnerId]?.status.kind, "Idle");
});

test("TaskCreated, TaskPrefillProgress, ChunkGenerated (State untouched: one per token), TaskDeleted", () => {
  let s = run(cluster(), [{ type: "TaskCreated", task: task("t9", "i1") }]);
  assert.deepEqual(s.tasks["t9" as TaskId], task("t9", "i1"));
  s = run(s, [statusUpdate("t9", "Running"), { type: "TaskPrefillProgress", taskId: "t9" as TaskId, processedTokens: 256, totalTokens: 400 }]);
  assert.deepEqual(s.tasks["t9" as TaskId]?.prefill, { processedTokens: 256, totalTokens: 400 });
  const beforeChunk = s;
  s = run(s, [{ type: "ChunkGenerated", taskId: "t9" as TaskId, chunk: { index: 3, text: "x", tokensGenerated: 4, logprobs: null } }]);
  assert.equal(s.tasks, beforeChunk.tasks, "the task map is not copied per token");
  assert.equal(s.lastIdx, beforeChunk.lastIdx + 1);
  s = run(s, [{ type: "TaskDeleted", taskId: "t9" as TaskId }]);
  assert.equal(s.tasks["t9" as TaskId], undefined);
});

test("heldByRunner follows the runner's reports only; TaskClientFinished marks the client done", () => {
  let s = run(cluster(), [statusUpdate("t1", "Running", { fromRunner: true })]);
  assert.equal(s.tasks["t1" as TaskId]?.heldByRunner, true);
  s = run(s, [statusUpdate("t1", "Cancelled", { fromRunner: false }), { type: "TaskClientFinished", taskId: "t1" as TaskId }]);
  assert.equal(s.tasks["t1" as TaskId]?.heldByRunner, true, "the master's Cancelled does not release the runner");
  assert.equal(s.tasks["t1" as TaskId]?.clientFinished, true);
  s = run(s, [statusUpdate("t1", "Cancelled", { fromRunner: true, tokensGenerated: 5 })]);
  assert.equal(s.tasks["t1" as TaskId]?.heldByRunner, false);
  assert.equal(s.tasks["t1" as TaskId]?.tokensGenerated, 5);
});

test("TaskStatusUpdated: Running keeps prefill, a terminal status sets the outcome and clears prefill", () => {
  let s = run(cluster(), [{ type: "TaskPrefillProgress", taskId: "t1" as TaskId, processedTokens: 10, totalTokens: 20 }, statusUpdate("t1", "Running")]);
  assert.deepEqual(s.tasks["t1" as TaskId]?.prefill, { processedTokens: 10, totalTokens: 20 });
  s = run(s, [statusUpdate("t1", "Failed", { finishReason: "error", failureCode: "runner_failed", failureReason: "crash", tokensGenerated: 3, promptTokens: 12 })]);
  const t1 = s.tasks["t1" as TaskId];
  assert.equal(t1?.status, "Failed");
  assert.equal(t1?.finishReason, "error");
  assert.equal(t1?.failureCode, "runner_failed");
  assert.equal(t1?.failureReason, "crash");
  assert.equal(t1?.tokensGenerated, 3);
  assert.equal(t1?.promptTokens, 12);
  assert.equal(t1?.prefill, null);
});

test("a terminal task status is sticky, but later counts still update", () => {
  let s = run(cluster(), [statusUpdate("t1", "Cancelled", { finishReason: "cancelled" })]);
  s = run(s, [statusUpdate("t1", "Complete", { finishReason: "stop", failureCode: "internal", tokensGenerated: 7, promptTokens: 11 })]);
  const t1 = s.tasks["t1" as TaskId];
  assert.equal(t1?.status, "Cancelled");
  assert.equal(t1?.finishReason, "cancelled");
  assert.equal(t1?.failureCode, null);
  assert.equal(t1?.tokensGenerated, 7);
  assert.equal(t1?.promptTokens, 11);
  // A late prefill report does not put progress back on the ended task.
  s = run(s, [{ type: "TaskPrefillProgress", taskId: "t1" as TaskId, processedTokens: 256, totalTokens: 512 }]);
  assert.equal(s.tasks["t1" as TaskId]?.prefill, null);
  // Counts never go down, even from a late report.
  s = run(s, [statusUpdate("t1", "Running", { tokensGenerated: 2 })]);
  assert.equal(s.tasks["t1" as TaskId]?.status, "Cancelled");
  assert.equal(s.tasks["t1" as TaskId]?.tokensGenerated, 7);
});

test("events naming unknown ids leave State unchanged apart from lastIdx", () => {
  const s = cluster();
  const nope = "nope";
  const events: Event[] = [
    statusUpdate(nope, "Cancelled"),
    { type: "TaskPrefillProgress", taskId: nope as TaskId, processedTokens: 1, totalTokens: 2 },
    { type: "TaskDeleted", taskId: nope as TaskId },
    { type: "ChunkGenerated", taskId: nope as TaskId, chunk: { index: 0, text: "x", tokensGenerated: 1, logprobs: null } },
    { type: "RunnerStatusUpdated", runnerId: nope as RunnerId, status: { kind: "Shutdown" } },
    { type: "InstanceDeleted", instanceId: nope as InstanceId, reason: "gone" },
    { type: "NodeTimedOut", nodeId: "node-nope" as NodeId },
    { type: "TopologyEdgeDeleted", fromNodeId: C, toNodeId: A },
  ];
  for (const event of events) {
    const next = run(s, [event]);
    assert.equal(next.lastIdx, s.lastIdx + 1, event.type);
    assert.deepEqual(content(next), content(s), `${event.type} changed State`);
  }
});

test("NodeDownloadProgress and topology edges", () => {
  let s = run(cluster(), [
    { type: "NodeDownloadProgress", nodeId: B, progress: { modelId: "m2" as ModelId, status: "downloading", downloadedBytes: 1, totalBytes: 4, error: null } },
    { type: "TopologyEdgeCreated", fromNodeId: A, toNodeId: B, latencyMs: 0.9, bandwidthBytesPerSecond: 1.2e9 },
  ]);
  assert.deepEqual(Object.keys(s.downloads[B] ?? {}).sort(), ["m", "m2"]);
  assert.equal(s.downloads[B]?.["m2"]?.downloadedBytes, 1);
  // Re-created edges replace the old one rather than duplicating it.
  assert.deepEqual(s.edges.filter((e) => e.fromNodeId === A && e.toNodeId === B), [{ fromNodeId: A, toNodeId: B, latencyMs: 0.9, bandwidthBytesPerSecond: 1.2e9 }]);
  s = run(s, [{ type: "TopologyEdgeDeleted", fromNodeId: A, toNodeId: B }]);
  // An event logged before bandwidth was measured indexes an edge without one.
  assert.deepEqual(s.edges, [{ fromNodeId: B, toNodeId: C, latencyMs: 0.3, bandwidthBytesPerSecond: null }]);
});

// ── cascades ───────────────────────────────────────────────────────────────────────────────────

test("InstanceDeleted cascades: its runners go, its unfinished tasks fail, finished and other tasks stay", () => {
  const before = cluster();
  const s = run(before, [{ type: "InstanceDeleted", instanceId: "i1" as InstanceId, reason: "asked" }]);
  assert.equal(s.instances["i1" as InstanceId], undefined);
  assert.deepEqual(Object.keys(s.runners), ["runner-i2-0"]);
  const t1 = s.tasks["t1" as TaskId];
  assert.equal(t1?.status, "Failed");
  assert.equal(t1?.failureCode, "instance_deleted");
  assert.equal(t1?.finishReason, "error");
  assert.match(t1?.failureReason ?? "", /asked/);
  assert.deepEqual(s.tasks["t2" as TaskId], before.tasks["t2" as TaskId]);
  assert.deepEqual(s.tasks["t3" as TaskId], before.tasks["t3" as TaskId]);
  // Nothing is left referring to the deleted instance except finished/failed tasks.
  for (const runner of Object.values(s.runners)) assert.ok(s.instances[runner.instanceId] !== undefined);
});

test("NodeTimedOut cascades: instances with a shard there are deleted, and the node's records go", () => {
  const s = run(cluster(), [{ type: "NodeTimedOut", nodeId: B }]);
  assert.deepEqual(Object.keys(s.nodes).sort(), [A, C]);
  assert.deepEqual(Object.keys(s.instances), ["i2"]);
  assert.deepEqual(Object.keys(s.runners), ["runner-i2-0"]);
  assert.equal(s.tasks["t1" as TaskId]?.failureCode, "instance_deleted");
  assert.equal(s.tasks["t2" as TaskId]?.status, "Complete");
  assert.equal(s.tasks["t3" as TaskId]?.status, "Pending");
  assert.equal(s.downloads[B], undefined);
  assert.deepEqual(s.edges, []);
  assert.equal(s.masterNodeId, A);
  // The master timing out leaves the cluster without one.
  assert.equal(run(s, [{ type: "NodeTimedOut", nodeId: A }]).masterNodeId, null);
});
