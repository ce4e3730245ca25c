// A worker's view of one of its runners (LocalRunner) for plan tests: a loaded, warmed-up, idle,
// living runner "runner-0" of instance "inst-1", with `patch` applied.
import type { InstanceId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import type { LocalRunner, LocalTask } from "../../src/worker/plan.ts";

export const TEST_RUNNER_ID = "runner-0" as RunnerId;
export const TEST_INSTANCE_ID = "inst-1" as InstanceId;

export function localRunner(patch: Partial<LocalRunner> = {}): LocalRunner {
  return {
    runnerId: TEST_RUNNER_ID,
    instanceId: TEST_INSTANCE_ID,
    alive: true,
    shuttingDown: false,
    status: { kind: "Ready" },
    loadSent: true,
    warmupSent: true,
    tasks: {},
    exitCount: 0,
    lastExitAtMs: null,
    lastExitReason: null,
    ...patch,
  };
}

/** A task the runner was handed at `startedAtMs` 0, still in prefill, with `patch` applied. */
export function localTask(taskId: TaskId, patch: Partial<LocalTask> = {}): LocalTask {
  return { taskId, startedAtMs: 0, decodeStartedAtMs: null, tokensGenerated: 0, cancelSent: false, runningReported: true, ...patch };
}

/** The fields of a runner that reported Running with these tasks (each with `patch`). */
export function busyWith(taskIds: readonly TaskId[], patch: Partial<LocalTask> = {}): Pick<LocalRunner, "status" | "tasks"> {
  const [first, ...rest] = taskIds;
  if (first === undefined) throw new Error("busyWith needs at least one task");
  return {
    status: { kind: "Running", taskIds: [first, ...rest] },
    tasks: Object.fromEntries(taskIds.map((id) => [id, localTask(id, patch)])) as LocalRunner["tasks"],
  };
}
