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
import { localRunner, TEST_INSTANCE_ID, TEST_RUNNER_ID } from "../support/local-runner.ts";

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
