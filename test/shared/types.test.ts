// Schemas read what older versions wrote: a replicated log from before runners held several tasks.
import assert from "node:assert/strict";
import { test } from "node:test";
import { IndexedEventSchema, RunnerStatusSchema } from "../../src/shared/types.ts";

test("a runner status Running{taskId} written by an older version reads as Running{taskIds:[taskId]}", () => {
  assert.deepEqual(RunnerStatusSchema.parse({ kind: "Running", taskId: "task-1" }), { kind: "Running", taskIds: ["task-1"] });
  assert.deepEqual(RunnerStatusSchema.parse({ kind: "Running", taskIds: ["task-1", "task-2"] }), { kind: "Running", taskIds: ["task-1", "task-2"] });
  const stored = { idx: 7, atMs: 1_700_000_000_000, event: { type: "RunnerStatusUpdated", runnerId: "runner-1", status: { kind: "Running", taskId: "task-1" } } };
  const parsed = IndexedEventSchema.parse(stored);
  assert.deepEqual(parsed.event, { type: "RunnerStatusUpdated", runnerId: "runner-1", status: { kind: "Running", taskIds: ["task-1"] } });
});

test("a Running status must name at least one task, and not more than a pipeline interleaves", () => {
  assert.equal(RunnerStatusSchema.safeParse({ kind: "Running", taskIds: [] }).success, false);
  assert.equal(RunnerStatusSchema.safeParse({ kind: "Running" }).success, false);
  assert.equal(RunnerStatusSchema.safeParse({ kind: "Running", taskIds: Array.from({ length: 9 }, (_, i) => `task-${i}`) }).success, false);
  assert.equal(RunnerStatusSchema.safeParse({ kind: "Running", taskId: 42 }).success, false);
});
