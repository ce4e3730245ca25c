// plan() for pipelines: pointing a stage at the next one (and again when it moves), and starting
// tasks only while every stage is Ready.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { CommandId, ModelId, NodeId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Instance, RunnerStatus, Task } from "../../src/shared/types.ts";
import type { LocalRunner, LocalView } from "../../src/worker/plan.ts";
import { downstreamKey, plan } from "../../src/worker/plan.ts";
import { testGenerationParams } from "../support/generation-params.ts";
import { busyWith, localRunner, localTask, TEST_INSTANCE_ID, TEST_RUNNER_ID } from "../support/local-runner.ts";

const ME = "node-me" as NodeId;
const OTHER = "node-other" as NodeId;
const INST = TEST_INSTANCE_ID;
const R0 = TEST_RUNNER_ID;
const R1 = "runner-1" as RunnerId;

const INSTANCE: Instance = {
  instanceId: INST,
  modelId: "m" as ModelId,
  sharding: "pipeline",
  layerCount: 8,
  shards: [
    { runnerId: R0, nodeId: ME, layerStart: 0, layerEnd: 4 },
    { runnerId: R1, nodeId: OTHER, layerStart: 4, layerEnd: 8 },
  ],
};

function state(remote: { status: RunnerStatus; stagePort?: number }, tasks: Task[] = []): State {
  return {
    ...emptyState(),
    instances: { [INST]: INSTANCE } as State["instances"],
    runners: {
      [R0]: { runnerId: R0, instanceId: INST, nodeId: ME, status: { kind: "Ready" } },
      [R1]: { runnerId: R1, instanceId: INST, nodeId: OTHER, status: remote.status, ...(remote.stagePort === undefined ? {} : { stagePort: remote.stagePort }) },
    } as State["runners"],
    tasks: Object.fromEntries(tasks.map((t) => [t.taskId, t])) as State["tasks"],
  };
}

const runner = localRunner;

function local(r: LocalRunner, nodeHosts: Record<string, string> = { [ME]: "127.0.0.1", [OTHER]: "10.0.0.2" }): LocalView {
  return { nodeId: ME, nowMs: 0, runners: { [r.runnerId]: r } as LocalView["runners"], tasksReportedEnded: new Set(), nodeHosts };
}

const pending: Task = {
  taskId: "t1" as TaskId,
  commandId: "c1" as CommandId,
  instanceId: INST,
  modelId: "m" as ModelId,
  originNodeId: ME,
  status: "Pending",
  params: testGenerationParams(),
  promptTokens: 0,
  tokensGenerated: 0,
  prefill: null,
  finishReason: null,
  failureCode: null,
  failureReason: null,
  heldByRunner: false,
  clientFinished: false,
};

const target = { host: "10.0.0.2", runnerId: R1, nodeId: OTHER, port: 4000, stageIndex: 1, stageCount: 2 };

test("stage 0 is pointed at the next stage once State knows its port and its node's address", () => {
  assert.deepEqual(plan(state({ status: { kind: "Loaded" }, stagePort: 4000 }), local(runner({ status: { kind: "Loaded" }, warmupSent: false }))), {
    type: "setDownstream",
    runnerId: R0,
    target,
  });
  // No port yet, or no address for the node: nothing to point at.
  assert.equal(plan(state({ status: { kind: "Loading", layersLoaded: 1, layerCount: 4 } }), local(runner()))?.type, undefined);
  assert.equal(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }), local(runner(), { [ME]: "127.0.0.1" })), null);
  // Before its load was sent, a runner is not pointed anywhere.
  assert.equal(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }), local(runner({ status: { kind: "Idle" }, loadSent: false })))?.type, "loadRunner");
});

test("stage 0 is pointed again when the next stage moves, and told to forget it when it fails", () => {
  const pointed = runner({ downstreamSentKey: downstreamKey(target) });
  assert.equal(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }), local(pointed)), null);
  assert.deepEqual(plan(state({ status: { kind: "Ready" }, stagePort: 4001 }), local(pointed)), { type: "setDownstream", runnerId: R0, target: { ...target, port: 4001 } });
  assert.deepEqual(plan(state({ status: { kind: "Failed", reason: "x" }, stagePort: 4000 }), local(pointed)), { type: "setDownstream", runnerId: R0, target: null });
  assert.equal(plan(state({ status: { kind: "Failed", reason: "x" }, stagePort: 4000 }), local(runner({ downstreamSentKey: downstreamKey(null) }))), null);
});

test("the last stage is never pointed anywhere", () => {
  const last = { ...runner({ runnerId: R1 }) };
  const view: LocalView = { ...local(last), nodeId: OTHER };
  assert.equal(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }), view), null);
});

test("a pipeline's tasks start only while every stage is Ready", () => {
  const pointed = runner({ downstreamSentKey: downstreamKey(target) });
  assert.equal(plan(state({ status: { kind: "Loaded" }, stagePort: 4000 }, [pending]), local(pointed)), null);
  assert.equal(plan(state({ status: { kind: "Idle" }, stagePort: 4000 }, [pending]), local(runner({ downstreamSentKey: downstreamKey(target) })))?.type, undefined);
  assert.deepEqual(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, [pending]), local(pointed))?.type, "startTask");
});

test("stage 0 of a 2-stage pipeline interleaves three tasks (one per stage plus one), never a fourth; a single node runs one", () => {
  const T1 = "t1" as TaskId;
  const T0 = "t0" as TaskId;
  const TX = "tx" as TaskId;
  const second = { ...pending, taskId: "t2" as TaskId, commandId: "c2" as CommandId };
  const runningTX = { ...pending, taskId: TX, commandId: "cx" as CommandId, status: "Running" as const, heldByRunner: true };
  const remoteReady = { status: { kind: "Ready" } as RunnerStatus, stagePort: 4000 };
  const pointed = { downstreamSentKey: downstreamKey(target) };
  const runningT0 = { ...pending, taskId: T0, status: "Running" as const, heldByRunner: true };
  // One task in flight on a 2-stage pipeline: the oldest Pending one starts next to it.
  const oneInFlight = plan(state(remoteReady, [runningT0, pending, second]), local(runner({ ...busyWith([T0]), ...pointed })));
  assert.ok(oneInFlight?.type === "startTask");
  assert.equal(oneInFlight.task.taskId, T1);
  // Three in flight: the rest wait.
  assert.equal(plan(state(remoteReady, [runningT0, runningTX, { ...pending, status: "Running", heldByRunner: true }, second]), local(runner({ ...busyWith([T0, TX, T1]), ...pointed }))), null);
  // Handed but not yet reported Running counts too.
  const handed = { [T0]: localTask(T0), [TX]: localTask(TX), [T1]: localTask(T1, { runningReported: false }) };
  assert.equal(plan(state(remoteReady, [runningT0, runningTX, pending, second]), local(runner({ ...pointed, status: { kind: "Running", taskIds: [T0, TX] }, tasks: handed }))), null);
  // The runner's last status names a task it has since ended: wait for its next report (it may say Failed).
  assert.equal(plan(state(remoteReady, [pending]), local(runner({ ...pointed, status: { kind: "Running", taskIds: [T0] }, tasks: {} }))), null);
  // A single-node instance runs one task at a time.
  const single: State = { ...state(remoteReady, [runningT0, pending]), instances: { [INST]: { ...INSTANCE, shards: [{ runnerId: R0, nodeId: ME, layerStart: 0, layerEnd: 8 }] } } as State["instances"] };
  assert.equal(plan(single, local(runner(busyWith([T0])))), null);
});

test("each interleaved task is cancelled and timed out on its own", () => {
  const T0 = "t0" as TaskId;
  const T1 = "t1" as TaskId;
  const tasks = [
    { ...pending, taskId: T0, status: "Running" as const, heldByRunner: true },
    { ...pending, status: "Cancelled" as const, heldByRunner: true },
  ];
  const view = local(runner({ ...busyWith([T0, T1]), downstreamSentKey: downstreamKey(target) }));
  assert.deepEqual(plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, tasks), view), { type: "cancelTask", runnerId: R0, taskId: T1 });
  const timedOut: LocalView = {
    ...local(runner({ status: { kind: "Running", taskIds: [T0, T1] }, tasks: { [T0]: localTask(T0, { startedAtMs: -5_000 }), [T1]: localTask(T1, { cancelSent: true }) }, downstreamSentKey: downstreamKey(target) })),
    taskTimeouts: { prefillTimeoutMs: 1_000, decodeTimeoutMs: 1_000 },
  };
  const action = plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, tasks), timedOut);
  assert.ok(action?.type === "timeOutTask");
  assert.equal(action.taskId, T0);
});

test("a runner that vanished with two tasks: both fail with the reason", () => {
  const T0 = "t0" as TaskId;
  const tasks = [
    { ...pending, taskId: T0, status: "Running" as const, heldByRunner: true },
    { ...pending, status: "Running" as const, heldByRunner: true },
  ];
  const gone = local(runner({ alive: false, exitCount: 1, lastExitAtMs: 0, lastExitReason: "killed by SIGKILL", downstreamSentKey: downstreamKey(target) }));
  const first = plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, tasks), gone);
  assert.ok(first?.type === "failTask");
  assert.equal(first.taskId, T0);
  const second = plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, tasks), { ...gone, tasksReportedEnded: new Set([T0]) });
  assert.ok(second?.type === "failTask");
  assert.equal(second.taskId, "t1");
  assert.match(second.reason, /SIGKILL/);
});

test("a task handed to stage 0 but still Pending in State is not started twice", () => {
  const T0 = "t0" as TaskId;
  const handed = { ...pending, taskId: T0 };
  const view = local(runner({ status: { kind: "Ready" }, tasks: { [T0]: localTask(T0, { runningReported: false }) }, downstreamSentKey: downstreamKey(target) }));
  const action = plan(state({ status: { kind: "Ready" }, stagePort: 4000 }, [handed, pending]), view);
  assert.ok(action?.type === "startTask");
  assert.equal(action.task.taskId, "t1");
});
