import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { formatEta, renderProgressLine, runModelsCommand } from "../../src/cli/models-command.ts";
import { CatalogEntrySchema } from "../../src/models/catalog.ts";
import { waitUntil } from "../support/fake-cluster.ts";
import { FakeHub } from "../support/fake-hub.ts";

const FILE_BYTES = 250_000;

class FakeOutput {
  text = "";
  constructor(readonly isTTY: boolean) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

async function setup() {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-models-cli-"));
  const content = randomBytes(FILE_BYTES);
  const { sha256 } = hub.addFile({ repo: "org/alpha", file: "alpha.gguf", content });
  const catalog = [
    CatalogEntrySchema.parse({
      id: "alpha", name: "Alpha test model", repo: "org/alpha", file: "alpha.gguf", revision: "main", quantization: "Q8_0", architecture: "llama",
      layerCount: 2, contextLength: 1024, kvHeadCount: 1, headDimension: 8, sizeBytes: FILE_BYTES, approximateSizeBytes: FILE_BYTES,
      memoryBytes: FILE_BYTES * 2, sha256, license: "test", gated: false,
    }),
  ];
  const run = async (argv: string[], tty = false) => {
    const stdout = new FakeOutput(tty);
    const stderr = new FakeOutput(false);
    const code = await runModelsCommand(["--home", home, ...argv], { HF_ENDPOINT: hub.url }, { stdout, stderr }, {
      catalog,
      bundled: null,
      download: { retryBaseDelayMs: 1, retryDelayMaxMs: 5, freeBytes: async () => 1e12, progressIntervalMs: 0 },
    });
    return { code, stdout: stdout.text, stderr: stderr.text };
  };
  return {
    hub, home, content, run,
    async cleanup() {
      await hub.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

test("list, pull, path, rm through the command", async () => {
  const t = await setup();
  try {
    const before = await t.run(["list"]);
    assert.equal(before.code, 0);
    assert.match(before.stdout, /^ID\s+STATE\s+SIZE/);
    assert.match(before.stdout, /alpha\s+absent\s+250 KB/);

    const pulled = await t.run(["pull", "alpha"]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.match(pulled.stdout, /100%/);
    assert.doesNotMatch(pulled.stdout, /\r/, "no carriage returns when stdout is not a terminal");
    assert.match(pulled.stdout, /100%.*\nverifying sha256…\nalpha is ready/);
    assert.equal(pulled.stdout.match(/100%/g)?.length, 1, "the last line is not printed twice");

    const where = await t.run(["path", "alpha"]);
    assert.equal(where.code, 0);
    assert.deepEqual(readFileSync(where.stdout.trim()), t.content);
    assert.match((await t.run(["list"])).stdout, /alpha\s+complete/);

    assert.equal((await t.run(["rm", "alpha"])).stdout, "removed alpha\n");
    const gone = await t.run(["path", "alpha"]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /not downloaded; run "skein models pull alpha"/);
  } finally {
    await t.cleanup();
  }
});

test("on a terminal pull redraws one progress line", async () => {
  const t = await setup();
  try {
    t.hub.faults.servePieceBytes = 32 * 1024;
    const pulled = await t.run(["pull", "alpha"], true);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.ok(pulled.stdout.split("\r").length > 2, "several redraws");
    assert.match(pulled.stdout, /\[#{24}\] 100%/);
  } finally {
    await t.cleanup();
  }
});

test("errors and usage: unknown model, missing id, unknown command, gated model", async () => {
  const t = await setup();
  try {
    const unknown = await t.run(["pull", "nope"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown model "nope"/);
    assert.equal((await t.run(["pull"])).code, 2);
    assert.equal((await t.run(["frobnicate"])).code, 2);
    assert.equal((await t.run(["--help"])).code, 0);
    t.hub.faults.rateLimitedRequests = 100;
    const limited = await t.run(["pull", "alpha"]);
    assert.equal(limited.code, 1);
    assert.match(limited.stderr, /429/);
  } finally {
    await t.cleanup();
  }
});

test("the progress line shows bytes, rate and ETA", () => {
  const line = renderProgressLine({ downloadedBytes: 250_000_000, totalBytes: 1_000_000_000, bytesPerSecond: 12_500_000, etaSeconds: 60, phase: "downloading" }, 8);
  assert.equal(line, "[##------]  25%  250 MB / 1.0 GB  12.5 MB/s  ETA 01:00");
  assert.equal(formatEta(null), "--:--");
  assert.equal(formatEta(3725), "1:02:05");
});

test("`skein models list` runs from the real CLI entry point", async () => {
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-models-cli-"));
  try {
    const main = path.join(import.meta.dirname, "..", "..", "src", "cli", "main.ts");
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", main, "models", "list", "--home", home], {
      env: { ...process.env, HF_ENDPOINT: "http://127.0.0.1:9" },
      timeout: 30_000,
    });
    assert.match(stdout, /qwen2\.5-0\.5b-instruct\s+absent/);
    assert.match(stdout, /llama-3\.2-1b-instruct/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("the real CLI: Ctrl-C stops a pull (exit 130) and the next pull resumes it", async () => {
  const hub = await FakeHub.start();
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-models-cli-"));
  try {
    const content = randomBytes(1024 * 1024);
    hub.addFile({ repo: "org/alpha", file: "alpha.gguf", content });
    const card = path.join(home, "alpha-card.json");
    writeFileSync(card, JSON.stringify({ id: "alpha", layerCount: 2, repo: "org/alpha", file: "alpha.gguf" }));
    hub.faults.servePieceBytes = 16 * 1024;
    hub.faults.servePauseMs = 10;
    const main = path.join(import.meta.dirname, "..", "..", "src", "cli", "main.ts");
    const args = ["--import", "tsx", main, "models", "pull", "alpha", "--home", home, "--model-card", card];
    const env = { ...process.env, HF_ENDPOINT: hub.url };
    const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    await waitUntil(() => /\[#+-*\]/.test(stdout), "a progress line", 30_000);
    child.kill("SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /cancelled; run "skein models pull alpha" again to resume/);
    hub.faults.servePauseMs = 0;
    const before = hub.dataRequests().length;
    const second = await promisify(execFile)(process.execPath, args, { env, timeout: 30_000 });
    assert.match(second.stdout, /alpha is ready/);
    const resumed = hub.dataRequests().slice(before);
    assert.ok(resumed.length >= 1);
    assert.ok(Number(/^bytes=(\d+)-/.exec(resumed[0]!.range ?? "")?.[1]) > 0, "the second pull starts where the first stopped");
    const where = (await promisify(execFile)(process.execPath, [...args.slice(0, 3), "models", "path", "alpha", "--home", home, "--model-card", card], { env })).stdout.trim();
    assert.deepEqual(readFileSync(where), content);
  } finally {
    await hub.close();
    rmSync(home, { recursive: true, force: true });
  }
});
