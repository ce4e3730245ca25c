import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import type { DownloadFileOptions } from "../../src/models/download.ts";
import { DownloadError, downloadFile, freeBytesOf, hubEndpoint, hubFileUrl, partialPathOf, partialStatePathOf, planChunks } from "../../src/models/download.ts";
import { FakeHub } from "../support/fake-hub.ts";

const REPO = "owner/model-GGUF";
const FILE = "model-q8_0.gguf";
const FILE_BYTES = 1024 * 1024 + 12_345;

async function setup(options: { gated?: boolean } = {}) {
  const hub = await FakeHub.start();
  const content = randomBytes(FILE_BYTES);
  const { sha256 } = hub.addFile({ repo: REPO, file: FILE, content, gated: options.gated ?? false });
  const dir = mkdtempSync(path.join(os.tmpdir(), "skein-download-"));
  const destinationPath = path.join(dir, FILE);
  const base: DownloadFileOptions = {
    url: hubFileUrl(hub.url, { repo: REPO, file: FILE, revision: "main" }),
    destinationPath,
    expectedSha256: sha256,
    expectedSizeBytes: FILE_BYTES,
    retryBaseDelayMs: 1,
    retryDelayMaxMs: 5,
    freeBytes: async () => 1e12,
  };
  return {
    hub,
    content,
    sha256,
    destinationPath,
    base,
    async cleanup() {
      await hub.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function expectDownloadError(promise: Promise<unknown>, code: DownloadError["code"]): Promise<DownloadError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DownloadError, `expected a DownloadError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail(`expected DownloadError ${code}, the download succeeded`);
}

test("hub URLs honour HF_ENDPOINT and default to huggingface.co", () => {
  assert.equal(hubEndpoint({}), "https://huggingface.co");
  assert.equal(hubEndpoint({ HF_ENDPOINT: "http://mirror.local:8080/" }), "http://mirror.local:8080");
  assert.equal(hubFileUrl("https://huggingface.co", { repo: "a/b", file: "c d.gguf", revision: "main" }), "https://huggingface.co/a/b/resolve/main/c%20d.gguf");
});

test("follows the redirect, verifies sha256 and renames into place; the token never goes to the CDN", async () => {
  const t = await setup({ gated: true });
  try {
    const progress: number[] = [];
    const result = await downloadFile({ ...t.base, token: FakeHub.validToken, onProgress: (p) => progress.push(p.downloadedBytes), progressIntervalMs: 0 });
    assert.equal(result.sha256, t.sha256);
    assert.equal(result.sizeBytes, FILE_BYTES);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
    assert.equal(existsSync(partialPathOf(t.destinationPath)), false);
    assert.equal(existsSync(partialStatePathOf(t.destinationPath)), false);
    assert.equal(progress.at(-1), FILE_BYTES);
    for (const r of t.hub.requests) {
      if (r.path.includes("/resolve/")) assert.equal(r.authorization, `Bearer ${FakeHub.validToken}`);
      else assert.equal(r.authorization, null, `token leaked to ${r.path}`);
    }
  } finally {
    await t.cleanup();
  }
});

test("a connection cut mid-file resumes from the bytes already on disk", async () => {
  const t = await setup();
  try {
    t.hub.faults.cutRequests = 1;
    t.hub.faults.cutAfterBytes = 300_000;
    const result = await downloadFile(t.base);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
    const data = t.hub.dataRequests();
    assert.equal(data.length, 2);
    const resumedAt = Number(/^bytes=(\d+)-/.exec(data[1]!.range ?? "")?.[1]);
    assert.ok(resumedAt > 0 && resumedAt <= 300_000, `second request starts at ${resumedAt}`);
    assert.equal(data[1]!.bytesSent, FILE_BYTES - resumedAt, "bytes already downloaded are not fetched again");
    assert.equal(result.resumedBytes, 0);
  } finally {
    await t.cleanup();
  }
});

test("a download cancelled with an AbortSignal resumes in a later call without refetching", async () => {
  const t = await setup();
  try {
    t.hub.faults.servePieceBytes = 16 * 1024;
    t.hub.faults.servePauseMs = 2;
    const controller = new AbortController();
    const first = downloadFile({
      ...t.base,
      signal: controller.signal,
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (p.downloadedBytes >= 200_000) controller.abort();
      },
    });
    await expectDownloadError(first, "aborted");
    assert.equal(existsSync(t.destinationPath), false);
    assert.ok(existsSync(partialPathOf(t.destinationPath)));
    t.hub.faults.servePauseMs = 0;
    const before = t.hub.dataRequests().length;
    const result = await downloadFile(t.base);
    assert.ok(result.resumedBytes >= 200_000, `resumed from ${result.resumedBytes}`);
    const later = t.hub.dataRequests().slice(before);
    const fetchedAgain = later.reduce((sum, r) => sum + r.bytesSent, 0);
    assert.equal(fetchedAgain, FILE_BYTES - result.resumedBytes);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
  } finally {
    await t.cleanup();
  }
});

test("large files come in parallel ranges, and a cut chunk resumes on its own", async () => {
  const t = await setup();
  try {
    t.hub.faults.cutRequests = 1;
    t.hub.faults.cutAfterBytes = 100_000;
    await downloadFile({ ...t.base, parallelChunks: 4, parallelThresholdBytes: 1024 });
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
    const data = t.hub.dataRequests();
    assert.equal(data.length, 5, "four ranges plus one resumed range");
    const starts = new Set(data.slice(0, 4).map((r) => r.range));
    assert.equal(starts.size, 4);
    const cutRange = /^bytes=(\d+)-/.exec(data.find((r) => r.bytesSent === 100_000)?.range ?? "");
    const resumedRange = /^bytes=(\d+)-/.exec(data[4]!.range ?? "");
    assert.ok(cutRange !== null && resumedRange !== null);
    assert.ok(Number(resumedRange[1]) > Number(cutRange[1]), "the cut range resumes where its bytes on disk end");
    // Bytes still queued in the response stream when the socket died are lost; the rest are not refetched.
    const served = data.reduce((sum, r) => sum + r.bytesSent, 0);
    assert.ok(served < FILE_BYTES + 100_000, `served ${served} for a ${FILE_BYTES}-byte file`);
  } finally {
    await t.cleanup();
  }
});

test("a corrupt byte fails the checksum and leaves no file behind", async () => {
  for (const expectedSha256 of ["card", "server"] as const) {
    const t = await setup();
    try {
      t.hub.faults.corruptByteAt = 777_777;
      const options = expectedSha256 === "card" ? t.base : { ...t.base, expectedSha256: null };
      const error = await expectDownloadError(downloadFile(options), "checksum");
      assert.match(error.message, /sha256/);
      assert.equal(existsSync(t.destinationPath), false);
      assert.equal(existsSync(partialPathOf(t.destinationPath)), false);
      assert.equal(existsSync(partialStatePathOf(t.destinationPath)), false);
    } finally {
      await t.cleanup();
    }
  }
});

test("429 and 503 are retried with backoff, then the download succeeds", async () => {
  const t = await setup();
  try {
    t.hub.faults.rateLimitedRequests = 2;
    t.hub.faults.serverErrorRequests = 1;
    await downloadFile(t.base);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
    assert.deepEqual(
      t.hub.dataRequests().map((r) => r.status),
      [429, 429, 503, 206],
    );
  } finally {
    await t.cleanup();
  }
});

test("retries are bounded", async () => {
  const t = await setup();
  try {
    t.hub.faults.rateLimitedRequests = 100;
    const error = await expectDownloadError(downloadFile({ ...t.base, retriesMax: 3 }), "http");
    assert.match(error.message, /429/);
    assert.equal(t.hub.dataRequests().length, 4);
  } finally {
    await t.cleanup();
  }
});

test("a gated model without a token says how to set HF_TOKEN", async () => {
  const t = await setup({ gated: true });
  try {
    const error = await expectDownloadError(downloadFile(t.base), "unauthorized");
    assert.equal(error.status, 401);
    assert.match(error.message, /HF_TOKEN=/);
    const wrong = await expectDownloadError(downloadFile({ ...t.base, token: "hf_wrong" }), "unauthorized");
    assert.match(wrong.message, /token in HF_TOKEN was refused/);
  } finally {
    await t.cleanup();
  }
});

test("an unknown file is a clear 404", async () => {
  const t = await setup();
  try {
    const url = hubFileUrl(t.hub.url, { repo: REPO, file: "missing.gguf", revision: "main" });
    const error = await expectDownloadError(downloadFile({ ...t.base, url }), "not_found");
    assert.match(error.message, /not found/);
  } finally {
    await t.cleanup();
  }
});

test("no network at all is reported as such after bounded retries", async () => {
  const t = await setup();
  try {
    // A port that was free a moment ago: connections are refused.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const url = `http://127.0.0.1:${port}/${REPO}/resolve/main/${FILE}`;
    const error = await expectDownloadError(downloadFile({ ...t.base, url, retriesMax: 2 }), "network");
    assert.match(error.message, /ECONNREFUSED/);
    assert.match(error.message, /offline/);
  } finally {
    await t.cleanup();
  }
});

test("the disk-space check refuses before any byte is fetched", async () => {
  const t = await setup();
  try {
    const error = await expectDownloadError(downloadFile({ ...t.base, freeBytes: async () => 4096 }), "disk_space");
    assert.match(error.message, /not enough disk space/);
    assert.equal(t.hub.dataRequests().length, 0);
    assert.equal(existsSync(t.destinationPath), false);
    assert.equal(existsSync(partialPathOf(t.destinationPath)), false, "no empty partial file left behind");
  } finally {
    await t.cleanup();
  }
});

test("a size that disagrees with the card is refused before downloading", async () => {
  const t = await setup();
  try {
    await expectDownloadError(downloadFile({ ...t.base, expectedSizeBytes: FILE_BYTES + 1 }), "size_mismatch");
    assert.equal(t.hub.dataRequests().length, 0);
  } finally {
    await t.cleanup();
  }
});

test("a partial file of another version (ETag changed) is thrown away", async () => {
  const t = await setup();
  try {
    writeFileSync(partialPathOf(t.destinationPath), Buffer.alloc(1000, 7));
    writeFileSync(
      partialStatePathOf(t.destinationPath),
      JSON.stringify({ url: t.base.url, etag: "an-older-version", totalBytes: FILE_BYTES, chunks: [{ start: 0, end: FILE_BYTES, next: 1000 }] }),
    );
    const result = await downloadFile(t.base);
    assert.equal(result.resumedBytes, 0);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
  } finally {
    await t.cleanup();
  }
});

test("a CDN that refuses HEAD and a link that expires mid-way are handled", async () => {
  const t = await setup();
  try {
    t.hub.faults.cdnRefusesHead = true;
    t.hub.faults.expiredLinkRequests = 1;
    const result = await downloadFile(t.base);
    assert.equal(result.sha256, t.sha256);
    assert.deepEqual(readFileSync(t.destinationPath), t.content);
    const resolves = t.hub.requests.filter((r) => r.path.includes("/resolve/"));
    assert.equal(resolves.length, 2, "the expired link was refreshed through the hub");
  } finally {
    await t.cleanup();
  }
});

test("planChunks covers the file exactly", () => {
  for (const [total, count] of [[10, 4], [1_000_003, 4], [7, 16], [100, 1]] as const) {
    const chunks = planChunks(total, true, count, 1);
    assert.equal(chunks[0]!.start, 0);
    assert.equal(chunks.at(-1)!.end, total);
    for (let i = 1; i < chunks.length; i++) assert.equal(chunks[i]!.start, chunks[i - 1]!.end);
  }
  assert.equal(planChunks(1 << 30, false, 4, 1).length, 1);
});

test("free space is read from the file system", async () => {
  assert.ok((await freeBytesOf(os.tmpdir())) > 0);
});
