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
    { nodeId: b, rttMs: 0.5 }, // 0.25 ms vs 0.1 ms: under the 1 ms floor
    { nodeId: c, rttMs: 40 }, // 20 ms vs 10 ms: material
    { nodeId: "e" as NodeId, rttMs: null }, // new link, no sample yet
  ]);
  assert.deepEqual(events, [
    { type: "TopologyEdgeCreated", fromNodeId: me, toNodeId: c, latencyMs: 20 },
    { type: "TopologyEdgeCreated", fromNodeId: me, toNodeId: "e", latencyMs: null },
    { type: "TopologyEdgeDeleted", fromNodeId: me, toNodeId: d },
  ]);
  assert.deepEqual(edgeEvents(me, [], []), []);
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
