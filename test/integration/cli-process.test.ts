// The `skein` process as a user runs it: start, serve, SIGTERM mid-stream → the stream ends, the
// process exits 0, and no runner process is left behind.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { isAlive, runnerPids } from "../support/processes.ts";
import { chatBody, FAKE_ENGINE_MODULE, FAKE_MODEL_ID, postChat, sseData } from "../support/test-node.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

function startCli(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const url = new Promise<string>((resolve, reject) => {
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      const match = /serving on (http:\/\/\S+)/.exec(stdout);
      if (match?.[1] !== undefined) resolve(match[1]);
    });
    child.once("exit", (code) => reject(new Error(`skein exited early (${code}): ${stderr}`)));
  });
  url.catch(() => {}); // awaited only by tests that expect a server; the others expect the exit
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, url, exited, stderr: () => stderr };
}

test("--help prints usage and exits 0; a bad flag exits 2 with a message", async () => {
  const help = startCli(["--help"]);
  assert.equal(await help.exited, 0);
  const bad = startCli(["--port", "nope"]);
  assert.equal(await bad.exited, 2);
  assert.match(bad.stderr(), /--port/);
});

test("SIGTERM mid-stream cancels the request, stops runners and exits 0", async () => {
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-cli-"));
  const card = path.join(home, "fake-card.json");
  writeFileSync(
    card,
    JSON.stringify({ id: FAKE_MODEL_ID, layerCount: 4, engineModule: fileURLToPath(FAKE_ENGINE_MODULE), engineOptions: { tokenDelayMs: 5 } }),
  );
  const cli = startCli(["--port", "0", "--cluster-port", "0", "--no-discovery", "--home", home, "--model-card", card, "--log-level", "warn"]);
  try {
    const url = await cli.url;
    const response = await postChat(url, chatBody({ stream: true }));
    const stream = sseData(response);
    await stream.next();
    await stream.next();
    const runners = runnerPids(cli.child.pid!);
    assert.equal(runners.length, 1);
    cli.child.kill("SIGTERM");
    const rest: unknown[] = [];
    try {
      for await (const item of stream) rest.push(item);
    } catch {
      // the connection may be cut rather than ended: both are fine, a hang is not
    }
    assert.equal(await cli.exited, 0, cli.stderr());
    for (const pid of runners) assert.equal(isAlive(pid), false, `runner ${pid} is gone`);
  } finally {
    cli.child.kill("SIGKILL");
    rmSync(home, { recursive: true, force: true });
  }
});
