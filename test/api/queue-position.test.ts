// queuePositionOf: where a Pending task waits, from State alone (what the API shows as
// `: queue position N`).
import assert from "node:assert/strict";
import { test } from "node:test";
import { queuePositionOf } from "../../src/api/task-stream.ts";
import type { InstanceId, TaskId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Task, TaskStatus } from "../../src/shared/types.ts";

const A = "inst-a" as InstanceId;
const B = "inst-b" as InstanceId;

function stateOf(tasks: [string, InstanceId, TaskStatus][]): State {
  const entries = tasks.map(([id, instanceId, status]) => [id, { taskId: id as TaskId, instanceId, status } as Task] as const);
  return { ...emptyState(), tasks: Object.fromEntries(entries) as State["tasks"] };
}

test("position = 1 + Pending tasks of the same instance created earlier; other instances and ended tasks do not count", () => {
  const s = stateOf([
    ["task-1", A, "Running"],
    ["task-2", A, "Pending"],
    ["task-3", B, "Pending"],
    ["task-4", A, "Complete"],
    ["task-5", A, "Pending"],
    ["task-6", A, "Pending"],
  ]);
  assert.equal(queuePositionOf(s, "task-2" as TaskId), 1);
  assert.equal(queuePositionOf(s, "task-5" as TaskId), 2);
  assert.equal(queuePositionOf(s, "task-6" as TaskId), 3);
  assert.equal(queuePositionOf(s, "task-3" as TaskId), null, "nothing runs or waits ahead of it on its instance");
  assert.equal(queuePositionOf(s, "task-1" as TaskId), null, "running, not queued");
  assert.equal(queuePositionOf(s, "task-9" as TaskId), null, "unknown");
});

test("a task behind a Running one created later (a restart reordered nothing) still waits at 1", () => {
  const s = stateOf([
    ["task-1", A, "Pending"],
    ["task-2", A, "Running"],
  ]);
  assert.equal(queuePositionOf(s, "task-1" as TaskId), 1);
});

test("on a 2-stage pipeline a task waits only once three run (one per stage plus one) or wait ahead of it", () => {
  const shard = (i: number) => ({ runnerId: `r${i}`, nodeId: `n${i}`, layerStart: i, layerEnd: i + 1 });
  const withPipeline = (s: State): State => ({ ...s, instances: { [A]: { instanceId: A, shards: [shard(0), shard(1)] } } as unknown as State["instances"] });
  const oneRunning = withPipeline(stateOf([["task-1", A, "Running"], ["task-2", A, "Pending"], ["task-3", A, "Pending"], ["task-4", A, "Pending"]]));
  assert.equal(queuePositionOf(oneRunning, "task-2" as TaskId), null, "a slot is free: it starts next to task-1");
  assert.equal(queuePositionOf(oneRunning, "task-3" as TaskId), null, "so is a second one");
  assert.equal(queuePositionOf(oneRunning, "task-4" as TaskId), 3, "task-2 and task-3 take the free slots first");
  const threeRunning = withPipeline(stateOf([["task-1", A, "Running"], ["task-2", A, "Running"], ["task-3", A, "Running"], ["task-4", A, "Pending"]]));
  assert.equal(queuePositionOf(threeRunning, "task-4" as TaskId), 1);
});
