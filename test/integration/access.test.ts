// Access control through the real `skein` process: the key and CORS flags reach the API, every API
// route needs the key, the dashboard page does not, and foreign browser origins are refused.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
const KEY = "sk-integration-key-42";

function startCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
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
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, url, exited };
}

test("skein with SKEIN_API_KEY and --cors-origin: 401 without the key, 200 with it, page public, foreign origin 403", async () => {
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-access-"));
  const cli = startCli(["--port", "0", "--cluster-port", "0", "--no-discovery", "--home", home, "--cors-origin", "http://app.example:8080", "--log-level", "warn"], { SKEIN_API_KEY: KEY });
  try {
    const url = await cli.url;
    const missing = await fetch(`${url}/state`);
    assert.equal(missing.status, 401);
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, "invalid_api_key");
    assert.equal((await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer wrong-key-000" } })).status, 401);
    assert.equal((await fetch(`${url}/state`, { headers: { authorization: `Bearer ${KEY}` } })).status, 200);
    assert.equal((await fetch(`${url}/v1/models`, { headers: { "x-api-key": KEY } })).status, 200);
    assert.notEqual((await fetch(`${url}/`)).status, 401, "the dashboard page loads without the key");

    const preflight = await fetch(`${url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { origin: "http://app.example:8080", "access-control-request-method": "POST" },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "http://app.example:8080");
    const foreign = await fetch(`${url}/state`, { headers: { origin: "http://evil.example", "x-api-key": KEY } });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.headers.get("access-control-allow-origin"), null);
    cli.child.kill("SIGTERM");
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill("SIGKILL");
    rmSync(home, { recursive: true, force: true });
  }
});
