import assert from "node:assert/strict";
import { test } from "node:test";
import { EVENTS_STREAM_BUFFER_MAX, parseSince } from "../../src/api/cluster.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";
import { makeFixture, MODEL_ID, OTHER_MODEL_ID, postJson, SseReader } from "../support/api-fixture.ts";
import { waitUntil } from "../support/fake-cluster.ts";

const BASE = "http://skein.test";

test("GET /state is the contract's snake_case State; GET /node_id names this node", async () => {
  const { app, cluster } = makeFixture();
  const state = (await (await app.request(`${BASE}/state`)).json()) as Record<string, unknown>;
  for (const key of ["master_node_id", "nodes", "instances", "runners", "tasks", "last_idx"]) assert.ok(key in state, key);
  assert.equal(state.last_idx, cluster.state.lastIdx);
  assert.deepEqual(Object.keys(state.instances as object), Object.keys(cluster.state.instances));
  assert.deepEqual(await (await app.request(`${BASE}/node_id`)).json(), { node_id: cluster.nodeId });
});

test("parseSince: absent means live, digits only, anything else is a 400", () => {
  assert.equal(parseSince(undefined, 7), 7);
  assert.equal(parseSince("0", 7), 0);
  assert.equal(parseSince("42", 7), 42);
  for (const bad of ["-1", "abc", "1.5", "", "1e3", "9".repeat(20)]) assert.throws(() => parseSince(bad, 7), (e: { status?: number }) => e.status === 400, bad);
});

test("GET /events?since=0 replays history, then streams live events, each once with id = idx", async () => {
  const { app, cluster } = makeFixture();
  const historyLastIdx = cluster.state.lastIdx;
  const response = await app.request(`${BASE}/events?since=0`);
  assert.equal(response.status, 200);
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes(`id: ${historyLastIdx}\n`));
  cluster.addNode("node-second");
  cluster.addInstance(OTHER_MODEL_ID);
  const liveLastIdx = cluster.state.lastIdx;
  await reader.readUntil((text) => text.includes(`id: ${liveLastIdx}\n`));
  await reader.cancel();
  const events = reader.events().filter((e) => e.data !== null);
  assert.deepEqual(events.map((e) => Number(e.id)), Array.from({ length: liveLastIdx + 1 }, (_, i) => i));
  for (const e of events) assert.equal((JSON.parse(e.data!) as IndexedEvent).idx, Number(e.id));
  await waitUntil(() => cluster.listenerCount === 0, "the events stream unsubscribed");
});

test("GET /events without since streams only what happens next", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(`${BASE}/events`);
  const reader = new SseReader(response.body!);
  await waitUntil(() => cluster.listenerCount === 1, "subscribed");
  cluster.addNode("node-late");
  await reader.readUntil((text) => text.includes("node-late"));
  await reader.cancel();
  const ids = reader.events().filter((e) => e.data !== null).map((e) => Number(e.id));
  assert.deepEqual(ids, [cluster.state.lastIdx]);
});

test("GET /events: 410 when the history is gone, 400 for a bad since", async () => {
  const { app, cluster } = makeFixture({ cluster: { historyMax: 2 } });
  for (let i = 0; i < 5; i++) cluster.addNode(`node-${i}`);
  const gone = await app.request(`${BASE}/events?since=0`);
  assert.equal(gone.status, 410);
  const error = ((await gone.json()) as { error: { message: string; code: string } }).error;
  assert.equal(error.code, "events_gone");
  assert.match(error.message, /GET \/state/);
  assert.equal((await app.request(`${BASE}/events?since=abc`)).status, 400);
  assert.equal(cluster.listenerCount, 0, "a refused stream leaves no listener behind");
});

test("GET /events sends keep-alive comments while idle, and cancelAll ends it", async () => {
  const fixture = makeFixture();
  const response = await fixture.app.request(`${BASE}/events`);
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes(": keep-alive"));
  fixture.cancelAll("shutdown");
  await reader.readAll();
  await waitUntil(() => fixture.cluster.listenerCount === 0, "unsubscribed");
});

test("POST /instance places the model and answers its instance id", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(`${BASE}/instance`, postJson({ model: OTHER_MODEL_ID, min_nodes: 1, sharding: "pipeline" }));
  assert.equal(response.status, 200);
  const body = (await response.json()) as { instance_id: string };
  const instance = cluster.state.instances[body.instance_id as never];
  assert.ok(instance !== undefined);
  assert.equal(instance.modelId, OTHER_MODEL_ID);
  assert.equal(cluster.sent("PlaceInstance")[0]!.minNodes, 1);
});

test("POST /instance: 404 unknown model, 400 bad body, 503 when placement fails", async () => {
  const { app, cluster } = makeFixture({ cluster: { placementPossible: false } });
  assert.equal((await app.request(`${BASE}/instance`, postJson({ model: "nope" }))).status, 404);
  assert.equal((await app.request(`${BASE}/instance`, postJson({ model: MODEL_ID, min_nodes: 0 }))).status, 400);
  assert.equal((await app.request(`${BASE}/instance`, postJson({ model: MODEL_ID, sharding: "tensor" }))).status, 400);
  // Two nodes needed, one known: refused at once, nothing sent.
  const tooFew = await app.request(`${BASE}/instance`, postJson({ model: MODEL_ID, min_nodes: 2 }));
  assert.equal(tooFew.status, 503);
  assert.equal(cluster.sent("PlaceInstance").length, 0);
  // Fits on paper but the master stays silent: the bounded wait ends in 503.
  const silent = await app.request(`${BASE}/instance`, postJson({ model: MODEL_ID }));
  assert.equal(silent.status, 503);
  assert.equal(cluster.sent("PlaceInstance").length, 1);
});

test("DELETE /instance/{id}: 200 and DeleteInstance for a known one, 404 unknown, 400 malformed", async () => {
  const { app, cluster } = makeFixture();
  const instanceId = Object.keys(cluster.state.instances)[0]!;
  const ok = await app.request(`${BASE}/instance/${instanceId}`, { method: "DELETE" });
  assert.equal(ok.status, 200);
  assert.equal(cluster.sent("DeleteInstance")[0]!.instanceId, instanceId);
  await waitUntil(() => cluster.state.instances[instanceId as never] === undefined, "instance deleted");
  assert.equal((await app.request(`${BASE}/instance/${instanceId}`, { method: "DELETE" })).status, 404);
  assert.equal((await app.request(`${BASE}/instance/bad%20id`, { method: "DELETE" })).status, 400);
});

test("GET /instance/previews?model= says where the model would go, per node count", async () => {
  const { app } = makeFixture();
  const response = await app.request(`${BASE}/instance/previews?model=${MODEL_ID}`);
  assert.equal(response.status, 200);
  const body = (await response.json()) as { model: string; previews: { nodeCount: number; ok: boolean }[] };
  assert.equal(body.model, MODEL_ID);
  assert.deepEqual(body.previews.map((p) => [p.nodeCount, p.ok]), [[1, true]]);
  assert.equal((await app.request(`${BASE}/instance/previews?model=nope`)).status, 404);
  assert.equal((await app.request(`${BASE}/instance/previews`)).status, 400);
});

test("GET /events: a client that stops reading is cut off with an error naming where to resume", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(`${BASE}/events`);
  await waitUntil(() => cluster.listenerCount === 1, "subscribed");
  const firstIdx = cluster.state.lastIdx + 1;
  for (let i = 0; i <= EVENTS_STREAM_BUFFER_MAX + 8; i++) cluster.emit({ type: "TopologyEdgeCreated", fromNodeId: cluster.nodeId, toNodeId: "node-b" as never, latencyMs: i });
  const reader = new SseReader(response.body!);
  await reader.readAll();
  const events = reader.events();
  const last = events.at(-1)!;
  assert.equal(last.event, "error");
  const error = (JSON.parse(last.data!) as { error: { code: string; message: string } }).error;
  assert.equal(error.code, "events_overflow");
  const delivered = events.filter((e) => e.id !== null).map((e) => Number(e.id));
  assert.equal(delivered[0], firstIdx);
  assert.match(error.message, new RegExp(`since=${delivered.at(-1)! + 1}`));
  await waitUntil(() => cluster.listenerCount === 0, "unsubscribed");
});
