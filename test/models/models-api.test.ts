import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createApp } from "../../src/api/app.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import type { ModelCard } from "../../src/models/model-card.ts";
import { CatalogEntrySchema } from "../../src/models/catalog.ts";
import { NodeModelDownloads } from "../../src/models/node-downloads.ts";
import { BUNDLED_MODEL_ID, LocalModelRegistry } from "../../src/models/store.ts";
import type { ModelId } from "../../src/shared/ids.ts";
import type { Event } from "../../src/shared/types.ts";
import { FakeCluster, waitUntil } from "../support/fake-cluster.ts";
import { FakeHub } from "../support/fake-hub.ts";

const FILE_BYTES = 200_000;

function entry(id: string, repo: string, file: string, sha256: string, gated = false) {
  return CatalogEntrySchema.parse({
    id, name: id, repo, file, revision: "main", quantization: "Q8_0", architecture: "llama", layerCount: 2, contextLength: 1024,
    kvHeadCount: 1, headDimension: 8, sizeBytes: FILE_BYTES, approximateSizeBytes: FILE_BYTES, memoryBytes: FILE_BYTES * 2, sha256, license: "test", gated,
  });
}

const bundled: ModelCard = {
  modelId: BUNDLED_MODEL_ID, name: "bundled", layerCount: 2, sizeBytes: 10, contextLength: 256, path: null, engineModule: null, engineOptions: {},
};

async function setup() {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-models-api-"));
  const a = hub.addFile({ repo: "org/alpha", file: "alpha.gguf", content: randomBytes(FILE_BYTES) });
  const g = hub.addFile({ repo: "org/gated", file: "gated.gguf", content: randomBytes(FILE_BYTES), gated: true });
  const registry = new LocalModelRegistry({
    home,
    bundled,
    catalog: [entry("alpha", "org/alpha", "alpha.gguf", a.sha256), entry("gated", "org/gated", "gated.gguf", g.sha256, true)],
    env: { HF_ENDPOINT: hub.url },
    download: { retryBaseDelayMs: 1, retryDelayMaxMs: 5, freeBytes: async () => 1e12, progressIntervalMs: 0 },
  });
  const cluster = new FakeCluster();
  cluster.addNode();
  const events: Event[] = [];
  // The FakeClock never advances: the throttle lets exactly one "downloading" event through.
  const service = new NodeModelDownloads({
    registry,
    nodeId: cluster.nodeId,
    sink: { sendWorkerEvent: (e) => { events.push(e); cluster.emit(e); } },
    nowMs: () => 0,
  });
  const api = createApp({ cluster, models: registry, modelService: service });
  const status = (id: string) => cluster.state.downloads[cluster.nodeId]?.[id]?.status;
  const models = async () => ((await (await api.app.request("/models")).json()) as { data: Record<string, unknown>[] }).data;
  return {
    hub, cluster, events, service, api, status, models, alphaSha256: a.sha256,
    async cleanup() {
      await service.stop();
      await hub.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

test("GET /models lists the bundled model and the catalogue with sizes and state", async () => {
  const t = await setup();
  try {
    const data = await t.models();
    assert.deepEqual(data.map((m) => m.id), [BUNDLED_MODEL_ID, "alpha", "gated"]);
    assert.deepEqual(data[0]!.held_by, [t.cluster.nodeId]);
    assert.deepEqual(data[1]!.download, { state: "absent", downloaded_bytes: 0 });
    assert.equal(data[1]!.size_bytes, FILE_BYTES);
    assert.equal(data[1]!.repo, "org/alpha");
    assert.deepEqual(data[1]!.held_by, []);
  } finally {
    await t.cleanup();
  }
});

test("POST /models/{id}/download downloads on this node and reports throttled progress events", async () => {
  const t = await setup();
  try {
    const response = await t.api.app.request("/models/alpha/download", { method: "POST" });
    assert.equal(response.status, 202);
    await waitUntil(() => t.status("alpha") === "complete", "alpha complete");
    const statuses = t.events.filter((e) => e.type === "NodeDownloadProgress").map((e) => (e.type === "NodeDownloadProgress" ? e.progress.status : ""));
    assert.deepEqual(statuses, ["pending", "downloading", "complete"]);
    const alpha = (await t.models()).find((m) => m.id === "alpha")!;
    assert.deepEqual(alpha.download, { state: "complete", downloaded_bytes: FILE_BYTES });
    assert.deepEqual(alpha.held_by, [t.cluster.nodeId]);
    assert.equal((await t.api.app.request("/models/alpha/download", { method: "POST" })).status, 200);
  } finally {
    await t.cleanup();
  }
});

test("a failed download is reported with its reason", async () => {
  const t = await setup();
  try {
    assert.equal((await t.api.app.request("/models/gated/download", { method: "POST" })).status, 202);
    await waitUntil(() => t.status("gated") === "failed", "gated failed");
    const progress = t.cluster.state.downloads[t.cluster.nodeId]?.gated;
    assert.match(progress?.error ?? "", /HF_TOKEN/);
  } finally {
    await t.cleanup();
  }
});

test("DELETE /models/{id} removes the copy and tells the cluster", async () => {
  const t = await setup();
  try {
    await t.api.app.request("/models/alpha/download", { method: "POST" });
    await waitUntil(() => t.status("alpha") === "complete", "alpha complete");
    const response = await t.api.app.request("/models/alpha", { method: "DELETE" });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { id: "alpha", node_id: t.cluster.nodeId, deleted: true });
    assert.equal(t.status("alpha"), "removed");
    const alpha = (await t.models()).find((m) => m.id === "alpha")!;
    assert.deepEqual(alpha.held_by, []);
    assert.equal((await t.api.app.request(`/models/${BUNDLED_MODEL_ID}`, { method: "DELETE" })).status, 409);
  } finally {
    await t.cleanup();
  }
});

test("unknown and malformed ids get 404 and 400", async () => {
  const t = await setup();
  try {
    const unknown = await t.api.app.request("/models/nope/download", { method: "POST" });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, "model_not_found");
    assert.equal((await t.api.app.request("/models/nope", { method: "DELETE" })).status, 404);
    assert.equal((await t.api.app.request("/models/bad%20id!/download", { method: "POST" })).status, 400);
    assert.equal((await t.api.app.request(`/models/${BUNDLED_MODEL_ID}/download`, { method: "POST" })).status, 200);
  } finally {
    await t.cleanup();
  }
});

test("without a model store, GET /models lists the fixed registry and downloads are unavailable", async () => {
  const cluster = new FakeCluster();
  cluster.addNode();
  const card: ModelCard = { ...bundled, modelId: "fixed" as ModelId, name: "fixed" };
  const api = createApp({ cluster, models: staticModelRegistry([card]) });
  const data = ((await (await api.app.request("/models")).json()) as { data: Record<string, unknown>[] }).data;
  assert.deepEqual(data.map((m) => m.id), ["fixed"]);
  assert.equal((await api.app.request("/models/fixed/download", { method: "POST" })).status, 503);
});

test("progress events are throttled to one per interval while bytes keep arriving", async () => {
  const t = await setup();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-models-throttle-"));
  try {
    let nowMs = 0;
    const stamps: { status: string; atMs: number }[] = [];
    const registry = new LocalModelRegistry({
      home,
      bundled: null,
      catalog: [entry("alpha", "org/alpha", "alpha.gguf", t.alphaSha256)],
      env: { HF_ENDPOINT: t.hub.url },
      download: { retryBaseDelayMs: 1, freeBytes: async () => 1e12, progressIntervalMs: 0 },
    });
    t.hub.faults.servePieceBytes = 4 * 1024;
    // A FakeClock that moves 100 ms at every reading.
    const service = new NodeModelDownloads({
      registry,
      nodeId: t.cluster.nodeId,
      sink: { sendWorkerEvent: (e) => { if (e.type === "NodeDownloadProgress") stamps.push({ status: e.progress.status, atMs: nowMs }); } },
      nowMs: () => (nowMs += 100),
      progressIntervalMs: 250,
    });
    assert.equal(service.startDownload("alpha"), "started");
    assert.equal(service.startDownload("alpha"), "running");
    await waitUntil(() => stamps.at(-1)?.status === "complete", "complete");
    const ticks = stamps.filter((s) => s.status === "downloading");
    assert.ok(ticks.length >= 2, `${ticks.length} downloading events`);
    for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i]!.atMs - ticks[i - 1]!.atMs >= 250);
  } finally {
    rmSync(home, { recursive: true, force: true });
    await t.cleanup();
  }
});
