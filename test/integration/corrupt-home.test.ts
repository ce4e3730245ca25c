// Damaged files in $SKEIN_HOME and bad configuration: the node reports what is wrong and starts
// anyway where that is safe; the CLI refuses what it cannot use with a clear message and exit 2.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import type { ModelId } from "../../src/shared/ids.ts";
import { chatBody, fakeModelCard, isIdle, postChat, startTestNode } from "../support/test-node.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly warning?: string;
}

function recordingLogger(): { logger: pino.Logger; lines: () => LogLine[] } {
  const raw: string[] = [];
  const logger = pino({ level: "warn" }, { write: (line: string) => raw.push(line) });
  return { logger, lines: () => raw.map((l) => JSON.parse(l) as LogLine) };
}

function tempHome(): string {
  return mkdtempSync(path.join(os.tmpdir(), "skein-corrupt-"));
}

test("a corrupt node_id is reported and replaced; the node starts and serves", async () => {
  const home = tempHome();
  try {
    writeFileSync(path.join(home, "node_id"), Buffer.from([0xff, 0x00, 0x41, 0x0a, 0x20, 0x7b]));
    const { logger, lines } = recordingLogger();
    const node = await startTestNode({ home, node: { logger } });
    try {
      assert.match(node.node.nodeId, /^node-/);
      assert.equal(readFileSync(path.join(home, "node_id"), "utf8").trim(), node.node.nodeId, "the new id is written");
      assert.ok(lines().some((l) => /node_id is corrupt.*new id/.test(l.msg)), JSON.stringify(lines()));
      assert.equal((await postChat(node.url, chatBody({ max_tokens: 1 }))).status, 200);
    } finally {
      await node.stop();
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("a truncated or garbled replicated log: the damaged tail is dropped and logged, the node starts and serves", async () => {
  const home = tempHome();
  try {
    const first = await startTestNode({ home });
    assert.equal((await postChat(first.url, chatBody({ max_tokens: 2 }))).status, 200);
    await first.waitFor(isIdle, "idle");
    await first.stop();
    const logFile = path.join(home, "raft", "entries.log");
    const sizeBytes = statSync(logFile).size;
    // A torn last record (the write a crash cut short), then garbage behind it.
    truncateSync(logFile, sizeBytes - 7);
    const garbage = Buffer.from("\u0000garbage that is not a record\u00ff");
    appendFileSync(logFile, garbage);

    const { logger, lines } = recordingLogger();
    const second = await startTestNode({ home, node: { logger } });
    try {
      const warning = lines().find((l) => /replicated log had a damaged part/.test(l.msg));
      assert.ok(warning !== undefined, JSON.stringify(lines()));
      assert.match(String(warning.warning), /dropped|torn|corrupt/i, `the log says what was dropped and why: ${JSON.stringify(warning)}`);
      await second.waitFor(isIdle, "runner reloaded from the surviving log", 20_000);
      assert.equal((await postChat(second.url, chatBody({ max_tokens: 2 }))).status, 200);
    } finally {
      await second.stop();
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let stderr = "";
    let stdout = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    // A CLI that started serving instead of refusing would never exit: bound the wait.
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

test("CLI: an unreadable model card (bad JSON, missing file, wrong fields) exits 2 with the reason and no stack trace", async () => {
  const home = tempHome();
  try {
    const badJson = path.join(home, "bad.json");
    writeFileSync(badJson, '{"id": "m", "layerCount": ');
    const wrongFields = path.join(home, "wrong.json");
    writeFileSync(wrongFields, JSON.stringify({ id: "m", layerCount: "four" }));
    for (const [file, message] of [
      [badJson, /cannot read model card .*bad\.json/],
      [path.join(home, "missing.json"), /cannot read model card .*missing\.json/],
      [wrongFields, /invalid model card .*layerCount/],
    ] as const) {
      const result = await runCli(["--port", "0", "--cluster-port", "0", "--no-discovery", "--home", home, "--model-card", file]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
      assert.doesNotMatch(result.stdout, /serving on/);
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test("CLI: a non-loopback --host without --api-key or --no-auth is refused with exit 2", async () => {
  const result = await runCli(["--host", "0.0.0.0", "--port", "0"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--api-key/);
  assert.match(result.stderr, /--no-auth/);
});

test("a corrupt model file: the request fails with the loader's reason (not just an exit code), and the node keeps serving others", async () => {
  const home = tempHome();
  try {
    const broken = path.join(home, "broken.gguf");
    writeFileSync(broken, Buffer.concat([Buffer.from("GGUF"), Buffer.alloc(64, 0xff)]));
    const brokenCard = { modelId: "broken-model" as ModelId, name: "broken", layerCount: 4, sizeBytes: 1024, contextLength: 4096, path: broken, engineModule: null, engineOptions: {} };
    const node = await startTestNode({ home, cards: [fakeModelCard(), brokenCard] });
    try {
      const response = await postChat(node.url, chatBody({ model: "broken-model", max_tokens: 2 }), AbortSignal.timeout(60_000));
      assert.equal(response.status, 500);
      const error = (await response.json()) as { error: { message: string; code: string } };
      assert.equal(error.error.code, "runner_failed");
      assert.match(error.error.message, /runner failed: .*gguf|GGUF|tensor|version|magic/i);
      assert.doesNotMatch(error.error.message, /^runner failed: runner exited with code \d+$/);
      assert.equal((await postChat(node.url, chatBody({ max_tokens: 1 }))).status, 200, "the fake model is still served");
    } finally {
      await node.stop();
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
