import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GgufValueType } from "../../src/engine/gguf/gguf-types.ts";
import { writeGguf } from "../../src/engine/gguf/writer.ts";
import type { UserModelCard } from "../../src/models/card-file.ts";
import { readUserModelCardFile } from "../../src/models/card-file.ts";
import type { CatalogEntry } from "../../src/models/catalog.ts";
import { CatalogEntrySchema } from "../../src/models/catalog.ts";
import { DownloadError } from "../../src/models/download.ts";
import type { ModelCard } from "../../src/models/model-card.ts";
import type { LocalModelRegistryOptions } from "../../src/models/store.ts";
import { BUNDLED_MODEL_FILE, BUNDLED_MODEL_ID, LocalModelRegistry, bundledModelCard, packageRoot, readGgufCardInfo } from "../../src/models/store.ts";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { readGguf } from "../../src/engine/gguf/reader.ts";
import { writeModelFixture } from "../support/gguf-model-fixture.ts";
import type { ModelId } from "../../src/shared/ids.ts";
import { FakeHub } from "../support/fake-hub.ts";

const FILE_BYTES = 300_000;

function tinyCatalogEntry(id: string, repo: string, file: string, sha256: string | null): CatalogEntry {
  return CatalogEntrySchema.parse({
    id,
    name: `Tiny ${id}`,
    repo,
    file,
    revision: "main",
    quantization: "Q8_0",
    architecture: "llama",
    layerCount: 2,
    contextLength: 1024,
    kvHeadCount: 1,
    headDimension: 8,
    sizeBytes: FILE_BYTES,
    approximateSizeBytes: FILE_BYTES,
    memoryBytes: FILE_BYTES * 2,
    sha256,
    license: "test",
    gated: false,
  });
}

const bundledCard: ModelCard = {
  modelId: BUNDLED_MODEL_ID,
  name: "bundled test card",
  layerCount: 2,
  sizeBytes: 10,
  contextLength: 256,
  path: "/nonexistent/bundled.gguf",
  engineModule: null,
  engineOptions: {},
};

async function setup(overrides: Partial<LocalModelRegistryOptions> = {}) {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-store-"));
  const alpha = randomBytes(FILE_BYTES);
  const beta = randomBytes(FILE_BYTES);
  const a = hub.addFile({ repo: "org/alpha-GGUF", file: "alpha.gguf", content: alpha });
  const b = hub.addFile({ repo: "org/beta-GGUF", file: "beta.gguf", content: beta });
  const catalog = [tinyCatalogEntry("alpha", "org/alpha-GGUF", "alpha.gguf", a.sha256), tinyCatalogEntry("beta", "org/beta-GGUF", "beta.gguf", b.sha256)];
  const registry = new LocalModelRegistry({
    home,
    catalog,
    bundled: bundledCard,
    env: { HF_ENDPOINT: hub.url },
    download: { retryBaseDelayMs: 1, retryDelayMaxMs: 5, freeBytes: async () => 1e12 },
    ...overrides,
  });
  return {
    hub,
    home,
    registry,
    async cleanup() {
      await hub.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

test("an empty store serves only the bundled model and lists the whole catalogue as absent", async () => {
  const t = await setup();
  try {
    assert.deepEqual(t.registry.list().map((c) => c.modelId), [BUNDLED_MODEL_ID]);
    const items = t.registry.catalogue();
    assert.deepEqual(items.map((i) => [i.id, i.source, i.state]), [
      [BUNDLED_MODEL_ID, "bundled", "complete"],
      ["alpha", "catalog", "absent"],
      ["beta", "catalog", "absent"],
    ]);
    assert.equal(t.registry.get("alpha"), undefined);
  } finally {
    await t.cleanup();
  }
});

test("a pulled model is servable after the bundled one, with a manifest; rm takes it away", async () => {
  const t = await setup();
  try {
    const card = await t.registry.pull("alpha");
    assert.equal(card.modelId, "alpha");
    assert.equal(card.sizeBytes, FILE_BYTES);
    assert.ok(card.path !== null && existsSync(card.path));
    assert.ok(card.path.startsWith(path.join(t.home, "models", "alpha")));
    assert.ok(existsSync(path.join(t.home, "models", "alpha", "manifest.json")));
    assert.deepEqual(t.registry.list().map((c) => c.modelId), [BUNDLED_MODEL_ID, "alpha"]);
    assert.equal(t.registry.item("alpha")?.state, "complete");
    assert.equal(t.registry.pathOf("alpha"), card.path);
    // A second pull finds it there and fetches nothing.
    const before = t.hub.dataRequests().length;
    await t.registry.pull("alpha");
    assert.equal(t.hub.dataRequests().length, before);
    assert.equal(await t.registry.remove("alpha"), true);
    assert.equal(t.registry.item("alpha")?.state, "absent");
    assert.equal(t.registry.get("alpha"), undefined);
    assert.equal(await t.registry.remove("alpha"), false);
  } finally {
    await t.cleanup();
  }
});

test("an interrupted pull shows as partial, and a later pull resumes it", async () => {
  const t = await setup();
  try {
    t.hub.faults.servePieceBytes = 8 * 1024;
    t.hub.faults.servePauseMs = 2;
    const controller = new AbortController();
    const pulling = t.registry.pull("beta", {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.downloadedBytes >= 50_000) controller.abort();
      },
    });
    await assert.rejects(pulling, (e: unknown) => e instanceof DownloadError && e.code === "aborted");
    const item = t.registry.item("beta");
    assert.equal(item?.state, "partial");
    assert.ok((item?.downloadedBytes ?? 0) >= 50_000);
    t.hub.faults.servePauseMs = 0;
    await t.registry.pull("beta");
    assert.equal(t.registry.item("beta")?.state, "complete");
  } finally {
    await t.cleanup();
  }
});

test("concurrent pulls of one model share one download", async () => {
  const t = await setup();
  try {
    t.hub.faults.servePauseMs = 1;
    const seen: number[] = [];
    const first = t.registry.pull("alpha");
    assert.equal(t.registry.isDownloading("alpha"), true);
    const second = t.registry.pull("alpha", { onProgress: (p) => seen.push(p.downloadedBytes) });
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.path, b.path);
    assert.equal(t.hub.dataRequests().length, 1);
    assert.ok(seen.length > 0);
  } finally {
    await t.cleanup();
  }
});

test("a download lock held by a live process refuses; a stale one is taken over", async () => {
  const t = await setup();
  try {
    const dir = t.registry.store.dirOf("alpha");
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, ".download.lock"), String(process.ppid));
    await assert.rejects(t.registry.pull("alpha"), (e: unknown) => e instanceof DownloadError && e.code === "busy" && e.message.includes(String(process.ppid)));
    writeFileSync(path.join(dir, ".download.lock"), "2147483646");
    await t.registry.pull("alpha");
    assert.equal(existsSync(path.join(dir, ".download.lock")), false);
  } finally {
    await t.cleanup();
  }
});

test("a failed checksum leaves the model absent and unservable", async () => {
  const t = await setup();
  try {
    t.hub.faults.corruptByteAt = 1234;
    await assert.rejects(t.registry.pull("alpha"), (e: unknown) => e instanceof DownloadError && e.code === "checksum");
    assert.equal(t.registry.item("alpha")?.state, "absent");
    assert.equal(t.registry.get("alpha"), undefined);
  } finally {
    await t.cleanup();
  }
});

test("unknown ids and the bundled model are refused by remove and pull", async () => {
  const t = await setup();
  try {
    await assert.rejects(t.registry.pull("nope"), /unknown model/);
    await assert.rejects(t.registry.remove("nope"), /unknown model/);
    await assert.rejects(t.registry.remove(BUNDLED_MODEL_ID), /bundled/);
    assert.equal((await t.registry.pull(BUNDLED_MODEL_ID)).modelId, BUNDLED_MODEL_ID);
  } finally {
    await t.cleanup();
  }
});

test("user cards: a local file is served, a missing one is not, a hub card can be pulled", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "skein-cards-"));
  try {
    const gguf = path.join(dir, "mine.gguf");
    writeFileSync(gguf, "GGUF-ish");
    const write = (name: string, body: object): UserModelCard => {
      const file = path.join(dir, name);
      writeFileSync(file, JSON.stringify(body));
      return readUserModelCardFile(file);
    };
    const local = write("local.json", { id: "mine", layerCount: 2, path: "mine.gguf" });
    const missing = write("missing.json", { id: "gone", layerCount: 2, path: "gone.gguf" });
    const hubCard = write("hub.json", { id: "from-hub", layerCount: 2, repo: "org/alpha-GGUF", file: "alpha.gguf" });
    assert.throws(() => write("bad.json", { id: "bad", layerCount: 2, repo: "org/x" }), /repo and file go together/);
    const t = await setup({ userCards: [local, missing, hubCard] });
    try {
      assert.deepEqual(t.registry.list().map((c) => c.modelId), [BUNDLED_MODEL_ID, "mine"]);
      assert.equal(t.registry.get("mine")?.path, gguf);
      const states = Object.fromEntries(t.registry.catalogue().map((i) => [i.id, i.state]));
      assert.deepEqual([states.mine, states.gone, states["from-hub"]], ["complete", "absent", "absent"]);
      const pulled = await t.registry.pull("from-hub");
      assert.equal(pulled.modelId, "from-hub" as ModelId);
      assert.deepEqual(t.registry.list().map((c) => c.modelId), [BUNDLED_MODEL_ID, "mine", "from-hub"]);
      await assert.rejects(t.registry.pull("gone"), /without a hub repo/);
    } finally {
      await t.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the bundled card is read from the GGUF under the package root", () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "skein-root-"));
  try {
    assert.equal(bundledModelCard(root), null, "absent file: no bundled card");
    const file = path.join(root, BUNDLED_MODEL_FILE);
    mkdirSync(path.dirname(file), { recursive: true });
    writeGguf(file, {
      metadata: [
        { key: "general.architecture", type: GgufValueType.String, value: "llama" },
        { key: "general.name", type: GgufValueType.String, value: "skein default test" },
        { key: "llama.block_count", type: GgufValueType.Uint32, value: 6 },
        { key: "llama.context_length", type: GgufValueType.Uint32, value: 512 },
      ],
      tensors: [],
    });
    const card = bundledModelCard(root);
    assert.equal(card?.modelId, BUNDLED_MODEL_ID);
    assert.equal(card?.layerCount, 6);
    assert.equal(card?.contextLength, 512);
    assert.equal(card?.name, "skein default test");
    assert.equal(card?.path, file);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("packageRoot finds this repository", () => {
  assert.ok(existsSync(path.join(packageRoot(), "package.json")));
  assert.ok(existsSync(path.join(packageRoot(), "src", "models", "store.ts")));
});

test("a downloaded GGUF's own header decides its layer count and context length", async () => {
  const t = await setup();
  const scratch = mkdtempSync(path.join(os.tmpdir(), "skein-gguf-"));
  try {
    const file = path.join(scratch, "real.gguf");
    writeGguf(file, {
      metadata: [
        { key: "general.architecture", type: GgufValueType.String, value: "qwen3" },
        { key: "qwen3.block_count", type: GgufValueType.Uint32, value: 5 },
        { key: "qwen3.context_length", type: GgufValueType.Uint32, value: 2048 },
      ],
      tensors: [],
    });
    const content = readFileSync(file);
    const { sha256 } = t.hub.addFile({ repo: "org/real-GGUF", file: "real.gguf", content });
    const registry = new LocalModelRegistry({
      home: t.home,
      bundled: null,
      catalog: [{ ...tinyCatalogEntry("real", "org/real-GGUF", "real.gguf", sha256), sizeBytes: null, approximateSizeBytes: content.length }],
      env: { HF_ENDPOINT: t.hub.url },
      download: { retryBaseDelayMs: 1, freeBytes: async () => 1e12 },
    });
    const card = await registry.pull("real");
    assert.equal(card.layerCount, 5, "the catalogue said 2");
    assert.equal(card.contextLength, 2048);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await t.cleanup();
  }
});

const shippedModel = path.join(packageRoot(), BUNDLED_MODEL_FILE);
test("the shipped default model becomes the first card with no network", { skip: existsSync(shippedModel) ? false : "models/skein-default/skein-default.gguf is not in this checkout yet" }, () => {
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-store-"));
  try {
    const registry = new LocalModelRegistry({ home, env: { HF_ENDPOINT: "http://127.0.0.1:9" } });
    assert.equal(registry.bundledError, null);
    const first = registry.list()[0];
    assert.equal(first?.modelId, BUNDLED_MODEL_ID);
    assert.equal(first?.path, shippedModel);
    assert.ok((first?.layerCount ?? 0) >= 1);
    assert.equal(registry.catalogue()[0]?.source, "bundled");
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("HF_TOKEN from the environment opens a gated model", async () => {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-store-"));
  try {
    const { sha256 } = hub.addFile({ repo: "org/gated-GGUF", file: "gated.gguf", content: randomBytes(FILE_BYTES), gated: true });
    const make = (env: Record<string, string>) =>
      new LocalModelRegistry({
        home,
        bundled: null,
        catalog: [{ ...tinyCatalogEntry("gated", "org/gated-GGUF", "gated.gguf", sha256), gated: true }],
        env: { HF_ENDPOINT: hub.url, ...env },
        download: { retryBaseDelayMs: 1, freeBytes: async () => 1e12 },
      });
    await assert.rejects(make({}).pull("gated"), (e: unknown) => e instanceof DownloadError && e.code === "unauthorized" && /HF_TOKEN=/.test(e.message));
    const card = await make({ HF_TOKEN: ` ${FakeHub.validToken}\n` }).pull("gated");
    assert.equal(card.modelId, "gated");
  } finally {
    await hub.close();
    rmSync(home, { recursive: true, force: true });
  }
});

test("a GGUF's card info counts the head only the last stage holds: the tied embedding, or output.weight", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "skein-head-"));
  try {
    const spec = { arch: "llama", vocab: "tiny", nLayer: 4, nEmbd: 64, nHead: 4, nHeadKv: 2, nFf: 128, contextLength: 256, tensorType: GgmlType.Q8_0, seed: 3 } as const;
    const tied = path.join(dir, "tied.gguf");
    const untied = path.join(dir, "untied.gguf");
    writeModelFixture(tied, { ...spec, tiedOutput: true });
    writeModelFixture(untied, { ...spec, tiedOutput: false });
    for (const [file, headName] of [[tied, "token_embd.weight"], [untied, "output.weight"]] as const) {
      const gguf = readGguf(file);
      const expected = gguf.tensors.get(headName)!.sizeBytes + gguf.tensors.get("output_norm.weight")!.sizeBytes;
      assert.equal(readGgufCardInfo(file).headBytes, expected, file);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
