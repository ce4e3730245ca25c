import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeBody, encodeBody } from "../../src/net/frame.ts";
import { skeinRaftMessageParser, StateSchema } from "../../src/election/skein-log.ts";
import { apply } from "../../src/shared/apply.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { Event, IndexedEvent } from "../../src/shared/types.ts";

const n1 = "node-1" as NodeId;
const n2 = "node-2" as NodeId;
const events: Event[] = [
  { type: "MasterChanged", nodeId: n1, term: 3 },
  { type: "NodeGatheredInfo", info: { nodeId: n1, hostname: "a", memoryTotalBytes: 8e9, memoryAvailableBytes: 4e9, cores: 4, addresses: ["10.0.0.1"], apiPort: 52415, clusterPort: 52416 } },
  { type: "TopologyEdgeCreated", fromNodeId: n1, toNodeId: n2, latencyMs: 0.3 },
  { type: "NodeDownloadProgress", nodeId: n1, progress: { modelId: "m" as never, status: "downloading", downloadedBytes: 1, totalBytes: 2, error: null } },
];
const indexed: IndexedEvent[] = events.map((event, idx) => ({ idx, atMs: 1_000 + idx, event }));
const state: State = indexed.reduce(apply, emptyState());

test("a State snapshot survives msgpack and the wire schema unchanged", () => {
  const back = StateSchema.parse(decodeBody(encodeBody(state)));
  assert.deepEqual(back, state);
  assert.equal(StateSchema.safeParse({ ...state, edges: [{ fromNodeId: "bad id!", toNodeId: n2, latencyMs: 1 }] }).success, false);
});

test("a snapshot from before bandwidth was measured parses with none; a negative bandwidth is refused", () => {
  const old = { ...state, edges: [{ fromNodeId: n1, toNodeId: n2, latencyMs: 0.3 }] };
  assert.deepEqual(StateSchema.parse(old).edges, [{ fromNodeId: n1, toNodeId: n2, latencyMs: 0.3, bandwidthBytesPerSecond: null }]);
  const negative = { ...state, edges: [{ fromNodeId: n1, toNodeId: n2, latencyMs: 0.3, bandwidthBytesPerSecond: -1 }] };
  assert.equal(StateSchema.safeParse(negative).success, false);
});

test("the parser refuses entries whose event idx is not their index, and snapshots at the wrong idx", () => {
  const parse = skeinRaftMessageParser();
  const entries = indexed.slice(1).map((payload) => ({ term: 3, index: payload.idx, payload }));
  const good = { type: "AppendEntries", term: 3, seq: 1, prevIndex: 0, prevTerm: 3, entries, leaderCommit: 0 };
  assert.notEqual(parse(decodeBody(encodeBody(good))), null);
  const shifted = { ...good, entries: entries.map((e) => ({ ...e, payload: { ...e.payload, idx: e.index + 1 } })) };
  assert.equal(parse(shifted), null);
  const snapshot = { type: "InstallSnapshot", term: 3, seq: 1, snapshot: { lastIndex: 3, lastTerm: 3, state }, entries: [], leaderCommit: 3 };
  assert.notEqual(parse(snapshot), null);
  assert.equal(parse({ ...snapshot, snapshot: { ...snapshot.snapshot, lastIndex: 2 } }), null);
});
