// A worker's view of one of its runners (LocalRunner) for plan tests: a loaded, warmed-up, idle,
// living runner "runner-0" of instance "inst-1", with `patch` applied.
import type { InstanceId, RunnerId } from "../../src/shared/ids.ts";
import type { LocalRunner } from "../../src/worker/plan.ts";

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
    currentTaskId: null,
    cancelSentFor: null,
    exitCount: 0,
    lastExitAtMs: null,
    lastExitReason: null,
    ...patch,
  };
}
