import assert from "node:assert/strict";
import { test } from "node:test";
import type { NodeId } from "../../src/shared/ids.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";
import { Replica } from "../../src/node/replica.ts";

const ev = (idx: number): IndexedEvent => ({ idx, atMs: idx, event: { type: "MasterChanged", nodeId: `n${idx}` as NodeId, term: idx } });

test("applies in order, ignores duplicates, holds early events and asks for the gap once", () => {
  const asked: number[] = [];
  const replica = new Replica({ requestEventLog: (since) => asked.push(since) });
  const seen: number[] = [];
  replica.subscribe((e) => seen.push(e.idx));
  replica.receive(ev(0));
  replica.receive(ev(0));
  replica.receive(ev(2));
  replica.receive(ev(3));
  assert.deepEqual(asked, [1]);
  assert.equal(replica.state.lastIdx, 0);
  replica.receive(ev(1));
  assert.deepEqual(seen, [0, 1, 2, 3]);
  assert.equal(replica.state.masterTerm, 3);
});

test("eventsSince replays from memory and says when history is gone", () => {
  const replica = new Replica({ requestEventLog: () => {}, historyMax: 4 });
  for (let i = 0; i < 10; i++) replica.receive(ev(i));
  assert.equal(replica.eventsSince(0), null);
  assert.deepEqual(replica.eventsSince(8)?.map((e) => e.idx), [8, 9]);
  assert.deepEqual(replica.eventsSince(10), []);
});
