import assert from "node:assert/strict";
import { test } from "node:test";
import type { NodeId } from "../../src/shared/ids.ts";
import { edgeEvents, nodesToTimeOut, trackReachability } from "../../src/net/topology.ts";

const [me, b, c, d] = ["me", "b", "c", "d"] as NodeId[] as [NodeId, NodeId, NodeId, NodeId];

test("edges follow the links: new, materially changed and gone; jitter is ignored", () => {
  const edges = [
    { fromNodeId: me, toNodeId: b, latencyMs: 0.1 },
    { fromNodeId: me, toNodeId: c, latencyMs: 10 },
    { fromNodeId: me, toNodeId: d, latencyMs: 1 },
    { fromNodeId: b, toNodeId: me, latencyMs: 5 }, // someone else's edge: not ours to manage
  ];
  const events = edgeEvents(me, edges, [
    { nodeId: b, rttMs: 0.5, bandwidthBytesPerSecond: null }, // 0.25 ms vs 0.1 ms: under the 1 ms floor
    { nodeId: c, rttMs: 40, bandwidthBytesPerSecond: null }, // 20 ms vs 10 ms: material
    { nodeId: "e" as NodeId, rttMs: null, bandwidthBytesPerSecond: null }, // new link, no sample yet
  ]);
  assert.deepEqual(events, [
    { type: "TopologyEdgeCreated", fromNodeId: me, toNodeId: c, latencyMs: 20, bandwidthBytesPerSecond: null },
    { type: "TopologyEdgeCreated", fromNodeId: me, toNodeId: "e", latencyMs: null, bandwidthBytesPerSecond: null },
    { type: "TopologyEdgeDeleted", fromNodeId: me, toNodeId: d },
  ]);
  assert.deepEqual(edgeEvents(me, [], []), []);
});

test("bandwidth on edges: the first measurement and a change of half or more make an event, smaller ones do not", () => {
  const mb = 1_000_000;
  const edges = [
    { fromNodeId: me, toNodeId: b, latencyMs: 0.1 }, // indexed before bandwidth existed
    { fromNodeId: me, toNodeId: c, latencyMs: 0.1, bandwidthBytesPerSecond: 100 * mb },
    { fromNodeId: me, toNodeId: d, latencyMs: 0.1, bandwidthBytesPerSecond: 100 * mb },
  ];
  const observed = (bc: number, bd: number) => [
    { nodeId: b, rttMs: 0.2, bandwidthBytesPerSecond: 2_100.4 * mb },
    { nodeId: c, rttMs: 0.2, bandwidthBytesPerSecond: bc },
    { nodeId: d, rttMs: 0.2, bandwidthBytesPerSecond: bd },
  ];
  assert.deepEqual(edgeEvents(me, edges, observed(149 * mb, 51 * mb)), [
    { type: "TopologyEdgeCreated", fromNodeId: me, toNodeId: b, latencyMs: 0.1, bandwidthBytesPerSecond: 2_100_400_000 },
  ]);
  assert.deepEqual(
    edgeEvents(me, edges, observed(150 * mb, 50 * mb)).map((e) => [e.toNodeId, e.type === "TopologyEdgeCreated" ? e.bandwidthBytesPerSecond : "deleted"]),
    [[b, 2_100_400_000], [c, 150 * mb], [d, 50 * mb]],
  );
});

test("a node unreachable for the timeout is timed out; one that came back is not", () => {
  let since = trackReachability(new Map(), [me, b, c], new Set([b]), 1_000);
  assert.deepEqual([...since.keys()], [me, c]);
  since = trackReachability(since, [me, b, c], new Set([]), 5_000);
  assert.equal(since.get(c), 1_000, "unreachable since the first time it was seen unlinked");
  assert.equal(since.get(b), 5_000);
  assert.deepEqual(nodesToTimeOut(me, [me, b, c], since, 11_000), [c]);
  since = trackReachability(since, [me, b, c], new Set([c]), 11_500);
  assert.deepEqual(nodesToTimeOut(me, [me, b, c], since, 16_000), [b]);
});
