// A real node (HTTP on 127.0.0.1, master, replica) over a store-backed registry: it announces the
// copies it holds, downloads on request with progress in State, and serves what it downloaded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CatalogEntrySchema } from "../../src/models/catalog.ts";
import { LocalModelRegistry } from "../../src/models/store.ts";
import { startNode } from "../../src/node/node.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import { FakeHub } from "../support/fake-hub.ts";
import { waitForState } from "../support/test-node.ts";

const FILE_BYTES = 150_000;

function entry(id: string, sha256: string) {
  return CatalogEntrySchema.parse({
    id, name: id, repo: `org/${id}`, file: `${id}.gguf`, revision: "main", quantization: "Q8_0", architecture: "llama", layerCount: 2,
    contextLength: 1024, kvHeadCount: 1, headDimension: 8, sizeBytes: FILE_BYTES, approximateSizeBytes: FILE_BYTES, memoryBytes: FILE_BYTES * 2,
    sha256, license: "test", gated: false,
  });
}

test("a node announces held models, downloads on POST and reports removal", async () => {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-node-models-"));
  const a = hub.addFile({ repo: "org/alpha", file: "alpha.gguf", content: randomBytes(FILE_BYTES) });
  const b = hub.addFile({ repo: "org/beta", file: "beta.gguf", content: randomBytes(FILE_BYTES) });
  const registry = new LocalModelRegistry({
    home,
    bundled: null,
    catalog: [entry("alpha", a.sha256), entry("beta", b.sha256)],
    env: { HF_ENDPOINT: hub.url },
    download: { retryBaseDelayMs: 1, retryDelayMaxMs: 5, freeBytes: async () => 1e12 },
  });
  await registry.pull("alpha");
  const node = await startNode({ home, host: "127.0.0.1", port: 0, clusterPort: 0, models: registry, logger: silentLogger(), threads: 1, contextSize: null });
  try {
    const statusOf = (id: string) => node.cluster.state.downloads[node.nodeId]?.[id]?.status;
    await waitForState(node, () => statusOf("alpha") === "complete", "alpha announced", 5_000);

    const served = (await (await fetch(`${node.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(served.data.map((m) => m.id), ["alpha"]);

    const started = await fetch(`${node.url}/models/beta/download`, { method: "POST" });
    assert.equal(started.status, 202);
    await waitForState(node, () => statusOf("beta") === "complete", "beta downloaded", 10_000);
    const catalogue = (await (await fetch(`${node.url}/models`)).json()) as { data: { id: string; held_by: string[] }[] };
    assert.deepEqual(catalogue.data.find((m) => m.id === "beta")?.held_by, [node.nodeId]);

    const deleted = await fetch(`${node.url}/models/alpha`, { method: "DELETE" });
    assert.equal(deleted.status, 200);
    await waitForState(node, () => statusOf("alpha") === "removed", "alpha removed", 5_000);
    const after = (await (await fetch(`${node.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(after.data.map((m) => m.id), ["beta"]);
  } finally {
    await node.stop();
    await hub.close();
    rmSync(home, { recursive: true, force: true });
  }
});
