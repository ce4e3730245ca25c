import assert from "node:assert/strict";
import { test } from "node:test";
import { placeInstance, previewPlacements, splitLayers } from "../../src/master/placement.ts";
import type { InstanceId, ModelId, NodeId, RunnerId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Instance, ModelPlacementInfo, NodeInfo } from "../../src/shared/types.ts";

const GiB = 1024 ** 3;

function node(name: string, availableGiB: number): NodeInfo {
  return {
    nodeId: name as NodeId,
    hostname: name,
    memoryTotalBytes: 64 * GiB,
    memoryAvailableBytes: availableGiB * GiB,
    cores: 2,
    addresses: ["127.0.0.1"],
    apiPort: 52415,
    clusterPort: 52416,
  };
}

function stateWith(nodes: NodeInfo[], instances: Instance[] = []): State {
  return {
    ...emptyState(),
    nodes: Object.fromEntries(nodes.map((n) => [n.nodeId, n])),
    instances: Object.fromEntries(instances.map((i) => [i.instanceId, i])),
  };
}

const model = (sizeGiB: number, layerCount: number, name = "m"): ModelPlacementInfo => ({
  modelId: name as ModelId,
  layerCount,
  sizeBytes: sizeGiB * GiB,
});

function idMinters(): { runner: () => RunnerId; instance: () => InstanceId } {
  let runnerCount = 0;
  let instanceCount = 0;
  return { runner: () => `runner-${runnerCount++}` as RunnerId, instance: () => `inst-${instanceCount++}` as InstanceId };
}

/** [nodeId, layerStart, layerEnd] per shard, or the failure reason. */
function place(state: State, m: ModelPlacementInfo, minNodes: number): Array<[string, number, number]> | string {
  const ids = idMinters();
  const result = placeInstance(state, m, minNodes, ids.runner, ids.instance);
  if (!result.ok) return result.reason;
  return result.instance.shards.map((s) => [s.nodeId, s.layerStart, s.layerEnd]);
}

const cases: Array<{ name: string; nodes: NodeInfo[]; model: ModelPlacementInfo; minNodes: number; want: Array<[string, number, number]> }> = [
  { name: "one node fits", nodes: [node("a", 16)], model: model(4, 32), minNodes: 1, want: [["a", 0, 32]] },
  {
    name: "fewest nodes: one node that fits beats two",
    nodes: [node("a", 6), node("b", 8)],
    model: model(4, 32),
    minNodes: 1,
    want: [["b", 0, 32]],
  },
  {
    name: "two nodes, split proportional to free memory (3:1)",
    nodes: [node("a", 12), node("b", 4)],
    model: model(8, 32),
    minNodes: 2,
    want: [["a", 0, 24], ["b", 24, 32]],
  },
  {
    name: "too big for any one node: two nodes",
    nodes: [node("a", 5), node("b", 5)],
    model: model(8, 10),
    minNodes: 1,
    want: [["a", 0, 5], ["b", 5, 10]],
  },
  {
    name: "each node gets at least one layer, however little it has",
    nodes: [node("a", 100), node("b", 1)],
    model: model(1, 4),
    minNodes: 2,
    want: [["a", 0, 3], ["b", 3, 4]],
  },
  {
    name: "minNodes is honoured even when one node would fit",
    nodes: [node("a", 32), node("b", 32), node("c", 32)],
    model: model(3, 30),
    minNodes: 3,
    want: [["a", 0, 10], ["b", 10, 20], ["c", 20, 30]],
  },
  {
    name: "a node is never given more layers than fit, even when the proportion says so",
    // 10 layers of 1 GiB; a has 7.5 free (room for 7), b 3 (room for 3): proportional would be 7.1/2.9.
    nodes: [node("a", 7.5), node("b", 3)],
    model: model(10, 10),
    minNodes: 1,
    want: [["a", 0, 7], ["b", 7, 10]],
  },
];

for (const c of cases) {
  test(`placement: ${c.name}`, () => {
    assert.deepEqual(place(stateWith(c.nodes), c.model, c.minNodes), c.want);
  });
}

test("placement: not enough memory gives a reason with the numbers", () => {
  const reason = place(stateWith([node("a", 2), node("b", 1)]), model(8, 32, "big-model"), 1);
  assert.equal(typeof reason, "string");
  assert.match(reason as string, /big-model needs 8\.00 GiB/);
  assert.match(reason as string, /3\.00 GiB free/);
  assert.match(reason as string, /a: 2\.00 GiB/);
  assert.match(reason as string, /b: 1\.00 GiB/);
});

test("placement: more nodes required than the cluster has", () => {
  assert.match(place(stateWith([node("a", 64), node("b", 64)]), model(1, 8), 3) as string, /at least 3 node\(s\); the cluster has 2/);
  assert.match(place(stateWith([]), model(1, 8), 1) as string, /the cluster has 0/);
});

test("placement: more nodes than layers is impossible", () => {
  assert.match(place(stateWith([node("a", 8), node("b", 8), node("c", 8)]), model(1, 2), 3) as string, /2 layer\(s\).*3 nodes/);
});

test("placement: a node with no room for even one layer is named", () => {
  assert.match(place(stateWith([node("a", 64), node("b", 0.5)]), model(8, 8), 2) as string, /needs 1\.00 GiB; b has 512\.00 MiB free/);
});

test("placement: memory claimed by existing instances' shards is not free", () => {
  // Node a reports 10 GiB available but an instance of an 8 GiB model sits entirely on it, still loading.
  const existing: Instance = {
    instanceId: "inst-old" as InstanceId,
    modelId: "old" as ModelId,
    sharding: "pipeline",
    layerCount: 8,
    sizeBytes: 8 * GiB,
    shards: [{ runnerId: "runner-old" as RunnerId, nodeId: "a" as NodeId, layerStart: 0, layerEnd: 8 }],
  };
  const state = stateWith([node("a", 10), node("b", 6)], [existing]);
  assert.deepEqual(place(state, model(4, 16), 1), [["b", 0, 16]]);
  // Only a's unclaimed 2 GiB and b's 6 GiB: a 9 GiB model no longer fits.
  assert.match(place(state, model(9, 16), 1) as string, /8\.00 GiB free/);
  // A half-share shard claims half the model.
  const split: Instance = {
    ...existing,
    shards: [
      { runnerId: "runner-1" as RunnerId, nodeId: "a" as NodeId, layerStart: 0, layerEnd: 4 },
      { runnerId: "runner-2" as RunnerId, nodeId: "b" as NodeId, layerStart: 4, layerEnd: 8 },
    ],
  };
  const state2 = stateWith([node("a", 10), node("b", 6)], [split]);
  assert.deepEqual(place(state2, model(6, 12), 1), [["a", 0, 12]]);
  // a: 10 − 4 = 6 GiB free, b: 6 − 4 = 2 GiB free.
  const reason = place(state2, model(9, 18), 1) as string;
  assert.match(reason, /a: 6\.00 GiB, b: 2\.00 GiB/);
});

test("placement: ids come from the passed-in minters and runners match shards", () => {
  const ids = idMinters();
  const result = placeInstance(stateWith([node("a", 4), node("b", 4)]), model(6, 6), 1, ids.runner, ids.instance);
  assert.ok(result.ok);
  assert.equal(result.instance.instanceId, "inst-0");
  assert.deepEqual(result.instance.shards.map((s) => s.runnerId), ["runner-0", "runner-1"]);
  assert.equal(result.instance.sizeBytes, 6 * GiB);
  assert.equal(result.instance.sharding, "pipeline");
  assert.equal(result.instance.layerCount, 6);
});

test("previewPlacements: one entry per node count, with shards or a reason", () => {
  const previews = previewPlacements(stateWith([node("a", 6), node("b", 4), node("c", 2)]), model(8, 8));
  assert.deepEqual(previews.map((p) => [p.nodeCount, p.ok]), [[1, false], [2, true], [3, true]]);
  const [one, two] = previews;
  assert.ok(one !== undefined && !one.ok);
  assert.match(one.reason, /needs 8\.00 GiB/);
  assert.ok(two !== undefined && two.ok);
  assert.deepEqual(two.shards.map((s) => [s.nodeId, s.layerStart, s.layerEnd, s.sizeBytes / GiB]), [["a", 0, 5, 5], ["b", 5, 8, 3]]);
  const none = previewPlacements(stateWith([]), model(1, 8));
  assert.equal(none.length, 1);
  assert.ok(none[0] !== undefined && !none[0].ok);
});

test("splitLayers: proportional, ≥ 1 each, within capacity, exact total", () => {
  const table: Array<[number, number[], number[], number[]]> = [
    [10, [1, 1], [10, 10], [5, 5]],
    [3, [1, 1, 1], [1, 1, 1], [1, 1, 1]],
    [5, [100, 1], [3, 5], [3, 2]],
    [7, [0, 0], [7, 7], [4, 3]],
    [4, [1000, 1, 1], [4, 4, 4], [2, 1, 1]],
  ];
  for (const [layerCount, weights, capacities, want] of table) {
    assert.deepEqual(splitLayers(layerCount, weights, capacities), want, `splitLayers(${layerCount}, ${weights}, ${capacities})`);
  }
});

/** Deterministic PRNG so a failing case can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("placement: random clusters — a placement is valid, a refusal is truly impossible", () => {
  const seed = 20261125;
  const random = mulberry32(seed);
  for (let round = 0; round < 500; round++) {
    const nodeCount = 1 + Math.floor(random() * 5);
    const nodes = Array.from({ length: nodeCount }, (_, i) => node(`n${i}`, Math.round(random() * 160) / 10));
    const layerCount = 1 + Math.floor(random() * 40);
    const m = model(Math.round(random() * 200) / 10, layerCount);
    const minNodes = 1 + Math.floor(random() * 3);
    const ids = idMinters();
    const result = placeInstance(stateWith(nodes), m, minNodes, ids.runner, ids.instance);
    const context = `seed ${seed} round ${round}: nodes ${nodes.map((n) => n.memoryAvailableBytes / GiB)} model ${m.sizeBytes / GiB} GiB × ${layerCount}, minNodes ${minNodes}`;
    const layerBytes = m.sizeBytes / layerCount;
    const capacityOf = (n: NodeInfo): number => (layerBytes === 0 ? layerCount : Math.floor(n.memoryAvailableBytes / layerBytes));
    const sorted = [...nodes].sort((a, b) => b.memoryAvailableBytes - a.memoryAvailableBytes);
    const fitsOn = (k: number): boolean =>
      k <= layerCount && sorted.slice(0, k).every((n) => capacityOf(n) >= 1) && sorted.slice(0, k).reduce((a, n) => a + Math.min(layerCount, capacityOf(n)), 0) >= layerCount;
    const fewestThatFit = [...Array(nodeCount + 1).keys()].find((k) => k >= minNodes && fitsOn(k));
    if (!result.ok) {
      assert.equal(fewestThatFit, undefined, `${context}: refused (${result.reason}) but ${fewestThatFit} nodes fit`);
      continue;
    }
    const shards = result.instance.shards;
    assert.equal(shards.length, fewestThatFit, `${context}: not the fewest nodes`);
    assert.equal(new Set(shards.map((s) => s.nodeId)).size, shards.length, `${context}: a node used twice`);
    let expectedStart = 0;
    for (const shard of shards) {
      assert.equal(shard.layerStart, expectedStart, `${context}: gap or overlap`);
      assert.ok(shard.layerEnd > shard.layerStart, `${context}: empty shard`);
      const free = nodes.find((n) => n.nodeId === shard.nodeId)!.memoryAvailableBytes;
      assert.ok((shard.layerEnd - shard.layerStart) * layerBytes <= free + 1e-6, `${context}: shard exceeds free memory`);
      expectedStart = shard.layerEnd;
    }
    assert.equal(expectedStart, layerCount, `${context}: layers not covered`);
  }
});

test("stages are chained over the fastest links; without measurements the free-memory order stands", () => {
  const nodes = [node("a", 30), node("b", 20), node("c", 10)];
  const edge = (from: string, to: string, latencyMs: number) => ({ fromNodeId: from as NodeId, toNodeId: to as NodeId, latencyMs, bandwidthBytesPerSecond: null });
  const m = model(50, 30);
  const unmeasured = place(stateWith(nodes), m, 3);
  assert.deepEqual(unmeasured, [["a", 0, 15], ["b", 15, 25], ["c", 25, 30]]);
  // a–b is slow, a–c and c–b are fast: the chain goes a → c → b (or its reverse), never a → b.
  const state = { ...stateWith(nodes), edges: [edge("a", "b", 20), edge("a", "c", 0.2), edge("b", "c", 0.3)] };
  const placed = place(state, m, 3);
  assert.ok(Array.isArray(placed));
  const order = placed.map(([id]) => id).join("");
  assert.ok(order === "acb" || order === "bca", `chain ${order}`);
  // Layers still follow each node's free memory.
  const layersOf = (id: string) => placed.find(([n]) => n === id)!;
  assert.equal(layersOf("a")[2] - layersOf("a")[1], 15);
  assert.equal(layersOf("c")[2] - layersOf("c")[1], 5);
});

test("the output head sits on the last stage: it takes fewer layers, and its memory counts the head", () => {
  // A Qwen2.5-0.5B-like Q4_0 file: 24 layers of 8.4 MB and a 145 MB tied head (token_embd, Q8_0).
  const MB = 1e6;
  const withHead: ModelPlacementInfo = { modelId: "qwen" as ModelId, layerCount: 24, sizeBytes: 24 * 8.4 * MB + 145 * MB, headBytes: 145 * MB };
  const twoEqual = stateWith([node("a", 8), node("b", 8)]);
  const placed = place(twoEqual, withHead, 2);
  assert.ok(Array.isArray(placed), String(placed));
  const [first, last] = placed;
  // Equal halves of 346.6 MB: 173 MB each, so the last stage holds the head and only about 3 layers.
  assert.deepEqual(first, ["a", 0, 21]);
  assert.deepEqual(last, ["b", 21, 24]);
  // Without a known head the layers split evenly, as before.
  const { headBytes: _unknown, ...noHead } = withHead;
  assert.deepEqual(place(twoEqual, noHead, 2), [["a", 0, 12], ["b", 12, 24]]);
  // The claim on each node follows the same split: the head is counted on the last stage's node.
  const ids = idMinters();
  const result = placeInstance(twoEqual, withHead, 2, ids.runner, ids.instance);
  assert.ok(result.ok);
  const previews = previewPlacements(stateWith([node("a", 8), node("b", 8)], [result.instance]), withHead);
  const two = previews.find((p) => p.nodeCount === 2);
  assert.ok(two?.ok);
  assert.ok(Math.abs(two.shards.reduce((a, s) => a + s.sizeBytes, 0) - withHead.sizeBytes) < 1, "shards add up to the model");
  assert.ok(Math.abs(two.shards[1]!.sizeBytes - (3 * 8.4 * MB + 145 * MB)) < 1, "the last shard's bytes include the head");
});

test("the head goes to a node with room for it: the chain runs backwards if its last node has none; refused, naming the head, if no node has", () => {
  const MB = 1e6;
  const m: ModelPlacementInfo = { modelId: "big-head" as ModelId, layerCount: 4, sizeBytes: 4 * 100 * MB + 900 * MB, headBytes: 900 * MB };
  const bytes = (name: string, freeMB: number): NodeInfo => ({ ...node(name, 0), memoryAvailableBytes: freeMB * MB });
  // Most free first would put b (950 MB: no room for the 900 MB head and a 100 MB layer) last.
  assert.deepEqual(place(stateWith([bytes("a", 2000), bytes("b", 950)]), m, 2), [["b", 0, 3], ["a", 3, 4]]);
  const reason = place(stateWith([bytes("a", 980), bytes("b", 950)]), m, 2);
  assert.equal(typeof reason, "string");
  assert.match(String(reason), /output head/);
});
