// The dashboard against nodes set up differently from the main suite's, sharing one Chromium:
// - a node with a real model store: Download starts a real download (from the FakeHub test double,
//   served slowly) and the card's progress bar follows NodeDownloadProgress events over /events;
// - a node started with an API key: the page loads (its files are public), asks for the key once,
//   keeps it in the browser, and chats and follows /events with it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { CatalogEntrySchema } from "../../src/models/catalog.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import { LocalModelRegistry } from "../../src/models/store.ts";
import type { RunningNode } from "../../src/node/node.ts";
import { startNode } from "../../src/node/node.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { Browser, PageGlobals } from "../support/chromium.ts";
import { buildDashboard, chromiumOrSkip, launchChromium, SCREENSHOT_DIR } from "../support/chromium.ts";
import { FakeHub } from "../support/fake-hub.ts";
import { fakeModelCard } from "../support/test-node.ts";

const FILE_BYTES = 1_500_000;
const MODEL_ID = "tiny-download";
const API_KEY = "test-key-for-the-dashboard";

const chromium = chromiumOrSkip();
let browser: Browser | undefined;
let dashboardDir: string;

before(async () => {
  if (chromium.skip !== false) return;
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  dashboardDir = await buildDashboard();
  browser = await launchChromium(chromium.executablePath);
});
after(async () => {
  await browser?.close();
});

describe("models page download in Chromium", { skip: chromium.skip, timeout: 60_000 }, () => {
  let hub: FakeHub;
  let home: string;
  let node: RunningNode;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    if (chromium.skip !== false) return;
    hub = await FakeHub.start();
    const file = hub.addFile({ repo: "org/tiny", file: "tiny.gguf", content: randomBytes(FILE_BYTES) });
    // Slow enough that several progress events reach the page before the end.
    hub.faults.servePieceBytes = 64 * 1024;
    hub.faults.servePauseMs = 60;
    home = mkdtempSync(path.join(os.tmpdir(), "skein-dashboard-download-"));
    const entry = CatalogEntrySchema.parse({
      id: MODEL_ID, name: "Tiny download", repo: "org/tiny", file: "tiny.gguf", revision: "main", quantization: "Q8_0", architecture: "llama",
      layerCount: 2, contextLength: 1024, kvHeadCount: 1, headDimension: 8, sizeBytes: FILE_BYTES, approximateSizeBytes: FILE_BYTES,
      memoryBytes: FILE_BYTES * 2, sha256: file.sha256, license: "test", gated: false,
    });
    const registry = new LocalModelRegistry({
      home,
      bundled: null,
      catalog: [entry],
      env: { HF_ENDPOINT: hub.url },
      download: { retryBaseDelayMs: 1, retryDelayMaxMs: 5, freeBytes: async () => 1e12 },
    });
    node = await startNode({ home, host: "127.0.0.1", port: 0, clusterPort: 0, models: registry, logger: silentLogger(), threads: 1, contextSize: null, dashboardDir });
    page = await browser!.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.setDefaultTimeout(10_000);
  });

  after(async () => {
    await page?.close();
    await node?.stop();
    await hub?.close();
    if (home !== undefined) rmSync(home, { recursive: true, force: true });
  });

  test("Download shows a live progress bar, then the model as downloaded", async () => {
    await page.goto(`${node.url}/#/models`);
    const card = page.locator(`[data-testid="model-card"][data-model="${MODEL_ID}"]`);
    await card.getByText("Not downloaded").waitFor();
    assert.match((await card.textContent()) ?? "", /1\.43 MB/, "size shown");
    assert.match((await card.textContent()) ?? "", /2\.86 MB/, "memory need shown");
    assert.equal(await card.getByRole("button", { name: "Launch…" }).count(), 0, "nothing to launch before the download");
    await card.getByRole("button", { name: "Download" }).click();
    // Seen mid-way: strictly between 0 and 100 percent, from NodeDownloadProgress events.
    await page.waitForFunction((selector) => {
      const value = Number((globalThis as unknown as PageGlobals).document.querySelector(selector)?.getAttribute("aria-valuenow") ?? "NaN");
      return value > 0 && value < 100;
    }, `[data-model="${MODEL_ID}"] [role="progressbar"]`);
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "models-download.png") });
    await card.getByText("Downloaded", { exact: true }).waitFor({ timeout: 20_000 });
    assert.equal(await card.getByRole("progressbar").count(), 0);
    // Now on disk: it can be placed, and the preview says where its layers would go.
    await card.getByRole("button", { name: "Launch…" }).click();
    await card.getByTestId("placement-preview").getByRole("button", { name: "Launch on 1 node" }).waitFor();
    const state = node.cluster.state;
    assert.equal(state.downloads[node.nodeId]?.[MODEL_ID as never]?.status, "complete");
    assert.deepEqual(pageErrors, []);
  });
});

describe("dashboard with an API key in Chromium", { skip: chromium.skip, timeout: 60_000 }, () => {
  let home: string;
  let node: RunningNode;
  let page: Page;

  before(async () => {
    if (chromium.skip !== false) return;
    home = mkdtempSync(path.join(os.tmpdir(), "skein-dashboard-key-"));
    node = await startNode({
      home, host: "127.0.0.1", port: 0, clusterPort: 0, logger: silentLogger(), threads: 1, contextSize: null, dashboardDir,
      models: staticModelRegistry([fakeModelCard({ maxReplyTokens: 4 })]),
      apiKey: API_KEY,
    });
    page = await browser!.context.newPage();
    page.setDefaultTimeout(10_000);
  });

  after(async () => {
    await page?.close();
    await node?.stop();
    if (home !== undefined) rmSync(home, { recursive: true, force: true });
  });

  test("asks for the key, then chats and goes live with it", async () => {
    await page.goto(`${node.url}/`);
    const dialog = page.getByRole("dialog", { name: "This node needs an API key" });
    await dialog.waitFor();
    await dialog.getByLabel("API key", { exact: true }).fill("wrong-key");
    await dialog.getByRole("button", { name: "Save key" }).click();
    await page.getByText("The saved key was refused.").waitFor();
    await page.getByLabel("API key", { exact: true }).fill(API_KEY);
    await page.getByRole("button", { name: "Save key" }).click();
    await page.getByTestId("connection").getByText("live").waitFor();
    assert.equal(await page.getByRole("dialog").count(), 0);
    await page.getByLabel("Message", { exact: true }).fill("Hello with a key.");
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.waitForSelector('[data-testid="assistant-message"][data-status="done"]');
    assert.match((await page.getByTestId("answer").last().textContent()) ?? "", /The quick brown fox/);
  });
});
