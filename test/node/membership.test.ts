// The pure cluster-membership decisions as tables: seniority, when to join, one change at a time.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compareSeniority, joiners, newClusterId, nextMembersChange, shouldJoin } from "../../src/node/membership.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";

const A = "node-a" as NodeId;
const B = "node-b" as NodeId;
const C = "node-c" as NodeId;

test("seniority: more members first, then the older founding, then the id; a total order", () => {
  const older = { clusterId: newClusterId(B, 1_000), memberCount: 1 };
  const newer = { clusterId: newClusterId(A, 2_000), memberCount: 1 };
  const bigger = { clusterId: newClusterId(C, 9_000), memberCount: 2 };
  assert.ok(compareSeniority(older, newer) < 0, "older founding wins at equal size");
  assert.ok(compareSeniority(bigger, older) < 0, "more members wins");
  assert.equal(compareSeniority(older, { ...older, memberCount: 5 }), 0, "same id: same cluster");
  assert.ok(compareSeniority(newer, older) > 0);
  // Antisymmetric over a few pairs: whoever A joins, B never joins A back.
  const all = [older, newer, bigger];
  for (const x of all) for (const y of all) if (x !== y) assert.equal(Math.sign(compareSeniority(x, y)), -Math.sign(compareSeniority(y, x)));
});

test("cluster ids of older foundings sort first, whatever the node id", () => {
  assert.ok(newClusterId("zzz" as NodeId, 5) < newClusterId("aaa" as NodeId, 6));
  assert.ok(newClusterId(A, 1_700_000_000_000).length <= 128);
});

test("shouldJoin: a node in no cluster joins any; otherwise only a senior one", () => {
  const mine = { clusterId: newClusterId(A, 1_000), memberCount: 1 };
  const senior = { clusterId: newClusterId(B, 500), memberCount: 1 };
  const junior = { clusterId: newClusterId(C, 2_000), memberCount: 1 };
  assert.equal(shouldJoin(null, junior), true);
  assert.equal(shouldJoin(mine, senior), true);
  assert.equal(shouldJoin(mine, junior), false);
  assert.equal(shouldJoin(mine, mine), false);
});

function stateWith(members: NodeId[], clusterId = "c1"): State {
  return { ...emptyState(), clusterId, members };
}

test("nextMembersChange: adds a linked joiner, removes a timed-out member, one at a time", () => {
  const s = stateWith([A]);
  const asking = [{ nodeId: B, clusterId: "c1" }];
  assert.deepEqual(nextMembersChange(s, s, asking, new Set()), { type: "ClusterMembersChanged", clusterId: "c1", members: [A, B] });
  // A joiner still catching up as a learner waits; the joiners list names it all the same.
  assert.equal(nextMembersChange(s, s, [{ nodeId: B, clusterId: "c1", caughtUp: false }], new Set()), null);
  assert.deepEqual(joiners("c1", [A], [{ nodeId: B, clusterId: "c1" }, { nodeId: C, clusterId: "other" }, { nodeId: A, clusterId: "c1" }]), [B]);
  assert.deepEqual(joiners(null, [A], [{ nodeId: B, clusterId: "c1" }]), []);
  // A peer of another cluster (or one that said nothing yet) is not added.
  assert.equal(nextMembersChange(s, s, [{ nodeId: B, clusterId: "other" }, { nodeId: C, clusterId: null }], new Set()), null);
  // A change still uncommitted (committed lags current): wait.
  assert.equal(nextMembersChange(stateWith([A, B]), s, [{ nodeId: C, clusterId: "c1" }], new Set()), null);
  // Removal first, and never of the last member.
  const three = stateWith([A, B, C]);
  assert.deepEqual(nextMembersChange(three, three, [], new Set([C])), { type: "ClusterMembersChanged", clusterId: "c1", members: [A, B] });
  assert.equal(nextMembersChange(s, s, [], new Set([A])), null);
  // No cluster named yet: nothing to change.
  assert.equal(nextMembersChange(emptyState(), emptyState(), asking, new Set()), null);
});
