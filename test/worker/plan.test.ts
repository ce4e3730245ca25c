// plan() is a table: State and LocalView in, Action out.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NodeId, RunnerId, TaskId, CommandId, ModelId } from "../../src/shared/ids.ts";
import { RUNNER_RESTARTS_MAX } from "../../src/shared/limits.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Instance, RunnerStatus, Task, TaskStatus } from "../../src/shared/types.ts";
import type { LocalRunner, LocalTask, LocalView } from "../../src/worker/plan.ts";
import { plan, restartBackoffMs } from "../../src/worker/plan.ts";
import { testGenerationParams } from "../support/generation-params.ts";
import { busyWith, localRunner, TEST_INSTANCE_ID, TEST_RUNNER_ID } from "../support/local-runner.ts";

const ME = "node-me" as NodeId;
const OTHER = "node-other" as NodeId;
const INST = TEST_INSTANCE_ID;
const R0 = TEST_RUNNER_ID;
const R1 = "runner-1" as RunnerId;
const NOW = 1_000_000;

function instance(shardNodes: NodeId[] = [ME]): Instance {
  const per = Math.floor(8 / shardNodes.length);
  return {
    instanceId: INST,
    modelId: "m" as ModelId,
    sharding: "pipeline",
    layerCount: 8,
    shards: shardNodes.map((nodeId, i) => ({
      runnerId: (i === 0 ? R0 : R1) as RunnerId,
      nodeId,
      layerStart: i * per,
      layerEnd: i === shardNodes.length - 1 ? 8 : (i + 1) * per,
    })),
  };
}

function task(id: string, status: TaskStatus): Task {
  return {
    taskId: id as TaskId,
    commandId: `cmd-${id}` as CommandId,
    instanceId: INST,
    modelId: "m" as ModelId,
    originNodeId: ME,
    status,
    params: testGenerationParams({ messages: [{ role: "user", content: "hi" }], maxTokens: null }),
    promptTokens: 0,
    tokensGenerated: 0,
    prefill: null,
    finishReason: null,
    failureCode: null,
    failureReason: null,
    heldByRunner: status === "Running",
    clientFinished: false,
  };
}

function state(opts: { inst?: Instance | null; tasks?: Task[]; remoteStatus?: RunnerStatus } = {}): State {
  const inst = opts.inst === undefined ? instance() : opts.inst;
  const s = emptyState();
  const runners: Record<string, State["runners"][RunnerId]> = {};
  for (const shard of inst?.shards ?? []) {
    runners[shard.runnerId] = {
      runnerId: shard.runnerId,
      instanceId: INST,
      nodeId: shard.nodeId,
      status: shard.nodeId === ME ? { kind: "Idle" } : (opts.remoteStatus ?? { kind: "Idle" }),
    };
  }
  return {
    ...s,
    instances: inst === null ? {} : { [INST]: inst },
    runners: runners as State["runners"],
    tasks: Object.fromEntries((opts.tasks ?? []).map((t) => [t.taskId, t])) as State["tasks"],
  };
}

const runner = localRunner;

function local(runners: LocalRunner[], ended: string[] = []): LocalView {
  return {
    nodeId: ME,
    nowMs: NOW,
    runners: Object.fromEntries(runners.map((r) => [r.runnerId, r])) as LocalView["runners"],
    tasksReportedEnded: new Set(ended as TaskId[]),
  };
}

describe("plan", () => {
  const T1 = "t1" as TaskId;
  const cases: { name: string; state: State; local: LocalView; expect: Record<string, unknown> | null }[] = [
    { name: "nothing to do", state: state(), local: local([runner()]), expect: null },
    { name: "no instance, no runner: nothing", state: state({ inst: null }), local: local([]), expect: null },
    { name: "shard without a process → spawn", state: state(), local: local([]), expect: { type: "spawnRunner" } },
    {
      name: "fresh process → load",
      state: state(),
      local: local([runner({ status: { kind: "Idle" }, loadSent: false, warmupSent: false })]),
      expect: { type: "loadRunner", runnerId: R0 },
    },
    {
      name: "load already sent → wait",
      state: state(),
      local: local([runner({ status: { kind: "Idle" }, loadSent: true, warmupSent: false })]),
      expect: null,
    },
    {
      name: "loaded → warm up",
      state: state(),
      local: local([runner({ status: { kind: "Loaded" }, warmupSent: false })]),
      expect: { type: "warmupRunner", runnerId: R0 },
    },
    {
      name: "pipeline: wait for the other node's shard to load before warming up",
      state: state({ inst: instance([ME, OTHER]), remoteStatus: { kind: "Loading", layersLoaded: 1, layerCount: 4 } }),
      local: local([runner({ status: { kind: "Loaded" }, warmupSent: false })]),
      expect: null,
    },
    {
      name: "pipeline: other shard loaded → warm up",
      state: state({ inst: instance([ME, OTHER]), remoteStatus: { kind: "Loaded" } }),
      local: local([runner({ status: { kind: "Loaded" }, warmupSent: false })]),
      expect: { type: "warmupRunner", runnerId: R0 },
    },
    {
      name: "ready runner takes the oldest pending task",
      state: state({ tasks: [task("t0", "Complete"), task("t1", "Pending"), task("t2", "Pending")] }),
      local: local([runner()]),
      expect: { type: "startTask", runnerId: R0 },
    },
    {
      name: "busy runner takes nothing",
      state: state({ tasks: [task("t1", "Running"), task("t2", "Pending")] }),
      local: local([runner(busyWith([T1]))]),
      expect: null,
    },
    {
      name: "runner still loading: pending tasks wait",
      state: state({ tasks: [task("t1", "Pending")] }),
      local: local([runner({ status: { kind: "Loading", layersLoaded: 2, layerCount: 8 } })]),
      expect: null,
    },
    {
      name: "cancelled task on the runner → cancel",
      state: state({ tasks: [task("t1", "Cancelled")] }),
      local: local([runner(busyWith([T1]))]),
      expect: { type: "cancelTask", runnerId: R0, taskId: T1 },
    },
    {
      name: "deleted task still on the runner → cancel",
      state: state({ tasks: [] }),
      local: local([runner(busyWith([T1]))]),
      expect: { type: "cancelTask", runnerId: R0, taskId: T1 },
    },
    {
      name: "cancel already sent → not again",
      state: state({ tasks: [task("t1", "Cancelled")] }),
      local: local([runner(busyWith([T1], { cancelSent: true }))]),
      expect: null,
    },
    {
      name: "cancel comes before everything else",
      state: state({ tasks: [task("t1", "Cancelled"), task("t2", "Pending")] }),
      local: local([
        runner(busyWith([T1])),
        runner({ runnerId: "runner-unwanted" as RunnerId }),
      ]),
      expect: { type: "cancelTask", taskId: T1 },
    },
    {
      name: "running task no runner holds → failed with a reason",
      state: state({ tasks: [task("t1", "Running")] }),
      local: local([runner({ lastExitReason: "runner exited with signal SIGKILL" })]),
      expect: { type: "failTask", taskId: T1, failureCode: "runner_failed" },
    },
    {
      name: "task whose end was reported but not yet applied is not an orphan",
      state: state({ tasks: [task("t1", "Running")] }),
      local: local([runner()], ["t1"]),
      expect: null,
    },
    {
      name: "pending tasks fail once the runner failed for good",
      state: state({ tasks: [task("t1", "Pending")] }),
      local: local([runner({ alive: false, exitCount: RUNNER_RESTARTS_MAX + 1, lastExitAtMs: NOW - 60_000, lastExitReason: "boom" })]),
      expect: { type: "failTask", taskId: T1 },
    },
    {
      name: "runner of a deleted instance → shut down",
      state: state({ inst: null }),
      local: local([runner()]),
      expect: { type: "shutdownRunner", runnerId: R0 },
    },
    {
      name: "crashed runner waits for its backoff",
      state: state(),
      local: local([runner({ alive: false, exitCount: 1, lastExitAtMs: NOW - 10 })]),
      expect: null,
    },
    {
      name: "crashed runner restarts after its backoff",
      state: state(),
      local: local([runner({ alive: false, exitCount: 1, lastExitAtMs: NOW - restartBackoffMs(1) })]),
      expect: { type: "spawnRunner" },
    },
    {
      name: "runner that failed too often stays down",
      state: state(),
      local: local([runner({ alive: false, exitCount: RUNNER_RESTARTS_MAX + 1, lastExitAtMs: NOW - 60_000 })]),
      expect: null,
    },
    {
      name: "only the first stage starts tasks",
      state: state({ inst: instance([OTHER, ME]), tasks: [task("t1", "Pending")] }),
      local: local([runner({ runnerId: R1 })]),
      expect: null,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const action = plan(c.state, c.local);
      if (c.expect === null) {
        assert.equal(action, null);
        return;
      }
      assert.ok(action !== null, "expected an action");
      assertSubset(action, c.expect);
    });
  }

  test("restart backoff grows and is capped", () => {
    assert.equal(restartBackoffMs(1), 500);
    assert.equal(restartBackoffMs(2), 1000);
    assert.equal(restartBackoffMs(10), 8000);
  });
});

function assertSubset(actual: object, expected: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(expected)) assert.deepEqual((actual as Record<string, unknown>)[k], v, k);
}

describe("plan: task timeouts", () => {
  const T1 = "t1" as TaskId;
  const timeouts = { prefillTimeoutMs: 1_000, decodeTimeoutMs: 5_000 };
  const running = (patch: Partial<LocalTask>): LocalView => ({
    ...local([runner(busyWith([T1], patch))]),
    taskTimeouts: timeouts,
  });
  const withPrefill = (): State => {
    const t = { ...task("t1", "Running"), prefill: { processedTokens: 256, totalTokens: 2048 } };
    return state({ tasks: [t] });
  };
  const cases: { name: string; state: State; local: LocalView; expect: Record<string, unknown> | null }[] = [
    { name: "prefill within its limit → nothing", state: withPrefill(), local: running({ startedAtMs: NOW - 1_000 }), expect: null },
    {
      name: "prefill past its limit → time out, naming the limit and the progress",
      state: withPrefill(),
      local: running({ startedAtMs: NOW - 1_001 }),
      expect: { type: "timeOutTask", runnerId: R0, taskId: T1 },
    },
    {
      name: "decoding: the decode limit counts from the first chunk, not the start",
      state: withPrefill(),
      local: running({ startedAtMs: NOW - 4_000, decodeStartedAtMs: NOW - 3_000 }),
      expect: null,
    },
    {
      name: "decode past its limit → time out",
      state: state({ tasks: [task("t1", "Running")] }),
      local: running({ startedAtMs: NOW - 9_000, decodeStartedAtMs: NOW - 5_001 }),
      expect: { type: "timeOutTask", runnerId: R0, taskId: T1 },
    },
    {
      name: "already told to stop → not again",
      state: state({ tasks: [task("t1", "Running")] }),
      local: running({ startedAtMs: NOW - 9_000, cancelSent: true }),
      expect: null,
    },
    {
      name: "no timeouts configured → never",
      state: state({ tasks: [task("t1", "Running")] }),
      local: local([runner(busyWith([T1]))]),
      expect: null,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const action = plan(c.state, c.local);
      if (c.expect === null) {
        assert.equal(action, null);
        return;
      }
      assert.ok(action !== null);
      for (const [key, value] of Object.entries(c.expect)) assert.deepEqual((action as Record<string, unknown>)[key], value, key);
    });
  }

  test("the reason says which limit and how far it got", () => {
    const prefill = plan(withPrefill(), running({ startedAtMs: NOW - 2_000 }));
    assert.ok(prefill?.type === "timeOutTask");
    assert.match(prefill.reason, /timed out.*prefill timeout of 1000 ms.*256 of 2048/);
    const decode = plan(state({ tasks: [{ ...task("t1", "Running"), tokensGenerated: 42 }] }), running({ decodeStartedAtMs: NOW - 6_000 }));
    assert.ok(decode?.type === "timeOutTask");
    assert.match(decode.reason, /timed out.*decode timeout of 5000 ms.*42 tokens/);
  });
});
