// The dashboard's event application (plain TypeScript, no DOM): which events update the copy of
// State in place, which need a fresh GET /state, and how stale events and gaps are told apart.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ClusterState, IndexedEvent } from "../../dashboard/src/lib/cluster-model.ts";
import { applyEvent, edgeLabel, runnerLabel, runnerTone } from "../../dashboard/src/lib/cluster-model.ts";
import { formatBandwidth } from "../../dashboard/src/lib/format.ts";

function state(): ClusterState {
  return {
    master_node_id: "node-a",
    last_idx: 10,
    nodes: {},
    instances: {},
    runners: { "runner-1": { runnerId: "runner-1", instanceId: "inst-1", nodeId: "node-a", status: { kind: "Loading", layersLoaded: 1, layerCount: 4 } } },
    tasks: {},
    downloads: {},
    edges: [],
  };
}
const at = (idx: number, event: IndexedEvent["event"]): IndexedEvent => ({ idx, event });

test("a runner's status change is applied in place", () => {
  const s = state();
  assert.equal(applyEvent(s, at(11, { type: "RunnerStatusUpdated", runnerId: "runner-1", status: { kind: "Ready" } })), "applied");
  assert.equal(s.runners["runner-1"]?.status.kind, "Ready");
  assert.equal(s.last_idx, 11);
});

test("an event already in the copy is stale and changes nothing", () => {
  const s = state();
  assert.equal(applyEvent(s, at(10, { type: "RunnerStatusUpdated", runnerId: "runner-1", status: { kind: "Ready" } })), "stale");
  assert.equal(s.runners["runner-1"]?.status.kind, "Loading");
  assert.equal(s.last_idx, 10);
});

test("a missing index is a gap: nothing applied, State must be re-read", () => {
  const s = state();
  assert.equal(applyEvent(s, at(12, { type: "RunnerStatusUpdated", runnerId: "runner-1", status: { kind: "Ready" } })), "gap");
  assert.equal(s.last_idx, 10);
});

test("download progress is merged per node and model", () => {
  const s = state();
  const progress = (modelId: string, downloadedBytes: number) => ({ modelId, status: "downloading", downloadedBytes, totalBytes: 100, error: null });
  applyEvent(s, at(11, { type: "NodeDownloadProgress", nodeId: "node-a", progress: progress("m1", 10) }));
  applyEvent(s, at(12, { type: "NodeDownloadProgress", nodeId: "node-a", progress: progress("m2", 20) }));
  applyEvent(s, at(13, { type: "NodeDownloadProgress", nodeId: "node-a", progress: progress("m1", 30) }));
  assert.equal(s.downloads["node-a"]?.["m1"]?.downloadedBytes, 30);
  assert.equal(s.downloads["node-a"]?.["m2"]?.downloadedBytes, 20);
});

test("tasks come and go in place; chunks only advance the index", () => {
  const s = state();
  const task = { taskId: "task-1", instanceId: "inst-1", modelId: "m", status: "Pending", tokensGenerated: 0 };
  assert.equal(applyEvent(s, at(11, { type: "TaskCreated", task })), "applied");
  assert.equal(applyEvent(s, at(12, { type: "TaskStatusUpdated", taskId: "task-1", status: "Cancelled" })), "applied");
  assert.equal(s.tasks["task-1"]?.status, "Cancelled");
  assert.equal(applyEvent(s, at(13, { type: "ChunkGenerated", taskId: "task-1", chunk: {} })), "applied");
  assert.equal(applyEvent(s, at(14, { type: "TaskDeleted", taskId: "task-1" })), "applied");
  assert.deepEqual(s.tasks, {});
  assert.equal(s.last_idx, 14);
});

test("structural events and unknown ids ask for a fresh State", () => {
  assert.equal(applyEvent(state(), at(11, { type: "InstanceCreated", instance: {} })), "refetch");
  assert.equal(applyEvent(state(), at(11, { type: "TopologyEdgeCreated", fromNodeId: "a", toNodeId: "b" })), "refetch");
  assert.equal(applyEvent(state(), at(11, { type: "RunnerStatusUpdated", runnerId: "runner-unknown", status: { kind: "Ready" } })), "refetch");
});

test("runner states read as people expect", () => {
  assert.equal(runnerLabel({ kind: "Loading", layersLoaded: 3, layerCount: 8 }), "Loading 3/8");
  assert.equal(runnerLabel({ kind: "Failed", reason: "out of memory" }), "Failed");
  assert.equal(runnerLabel({ kind: "Running", taskIds: ["t1"] }), "Running");
  assert.equal(runnerLabel({ kind: "Running", taskIds: ["t1", "t2"] }), "Running 2 requests");
  assert.equal(runnerTone({ kind: "Failed", reason: "x" }), "bad");
  assert.equal(runnerTone({ kind: "Running", taskIds: ["t"] }), "busy");
  assert.equal(runnerTone({ kind: "Ready" }), "ok");
});

test("links read as latency, then bandwidth once measured", () => {
  const edge = { fromNodeId: "a", toNodeId: "b", latencyMs: 0.05 };
  assert.equal(edgeLabel({ ...edge, bandwidthBytesPerSecond: 2_104_000_000 }), "0.05 ms · 2.1 GB/s");
  assert.equal(edgeLabel({ ...edge, bandwidthBytesPerSecond: null }), "0.05 ms");
  assert.equal(edgeLabel(edge), "0.05 ms", "a node that predates bandwidth probes");
  assert.equal(edgeLabel({ ...edge, latencyMs: null, bandwidthBytesPerSecond: 117_000_000 }), "— · 117 MB/s");
  assert.deepEqual(
    [0, 950, 999.7, 12_345, 117_312_885, 999_999_999, 1.2e13, -1, Number.NaN].map(formatBandwidth),
    ["0 B/s", "950 B/s", "1.0 kB/s", "12.3 kB/s", "117 MB/s", "1.0 GB/s", "12.0 TB/s", "—", "—"],
  );
});
