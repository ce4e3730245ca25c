import assert from "node:assert/strict";
import { test } from "node:test";
import { parseCli } from "../../src/cli/args.ts";

test("defaults follow the contract", () => {
  const parsed = parseCli([], { SKEIN_HOME: "/tmp/skein-home" });
  assert.equal(parsed.kind, "run");
  if (parsed.kind !== "run") return;
  assert.equal(parsed.options.host, "127.0.0.1");
  assert.equal(parsed.options.port, 52415);
  assert.equal(parsed.options.clusterPort, 52416);
  assert.equal(parsed.options.home, "/tmp/skein-home");
});

test("flags beat env, SKEIN_PORT is honoured", () => {
  const env = parseCli([], { SKEIN_PORT: "6000" });
  assert.equal(env.kind === "run" && env.options.port, 6000);
  const flag = parseCli(["--port", "7000", "--home", "/x"], { SKEIN_PORT: "6000", SKEIN_HOME: "/y" });
  assert.equal(flag.kind === "run" && flag.options.port, 7000);
  assert.equal(flag.kind === "run" && flag.options.home, "/x");
});

test("bad input is a usage error, not a crash", () => {
  for (const argv of [["--port", "99999"], ["--port", "abc"], ["--log-level", "loud"], ["--threads", "0"], ["--bogus"], ["--peer", "nohost"]]) {
    const parsed = parseCli(argv, {});
    assert.equal(parsed.kind, "error", argv.join(" "));
  }
  assert.equal(parseCli(["--help"], {}).kind, "help");
});

test("access control: a non-loopback --host needs --api-key (or SKEIN_API_KEY) or an explicit --no-auth", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]) {
    assert.equal(parseCli(["--host", host], {}).kind, "run", host);
  }
  const refused = parseCli(["--host", "0.0.0.0"], {});
  assert.equal(refused.kind, "error");
  assert.match(refused.kind === "error" ? refused.message : "", /--api-key.*--no-auth/);
  const keyed = parseCli(["--host", "0.0.0.0", "--api-key", "secret-key-1"], {});
  assert.equal(keyed.kind === "run" && keyed.options.apiKey, "secret-key-1");
  const fromEnv = parseCli(["--host", "192.168.1.5"], { SKEIN_API_KEY: "env-secret-key" });
  assert.equal(fromEnv.kind === "run" && fromEnv.options.apiKey, "env-secret-key");
  const open = parseCli(["--host", "0.0.0.0", "--no-auth"], {});
  assert.equal(open.kind === "run" && open.options.apiKey, null);
  assert.equal(parseCli(["--api-key", "short"], {}).kind, "error", "a key too short to be a secret");
  assert.equal(parseCli(["--api-key", "secret-key-1", "--no-auth"], {}).kind, "error");
});

test("--cors-origin is repeatable and must be an origin; task timeouts have generous defaults", () => {
  const parsed = parseCli(["--cors-origin", "http://a.example:8080", "--cors-origin", "*"], {});
  assert.deepEqual(parsed.kind === "run" && parsed.options.corsOrigins, ["http://a.example:8080", "*"]);
  assert.equal(parseCli(["--cors-origin", "a.example"], {}).kind, "error");
  assert.equal(parseCli(["--cors-origin", "http://a.example/path"], {}).kind, "error");
  const defaults = parseCli([], {});
  assert.ok(defaults.kind === "run" && defaults.options.prefillTimeoutMs >= 60_000 && defaults.options.decodeTimeoutMs >= 60_000);
  const set = parseCli(["--prefill-timeout-ms", "500", "--decode-timeout-ms", "900"], {});
  assert.equal(set.kind === "run" && set.options.prefillTimeoutMs, 500);
  assert.equal(set.kind === "run" && set.options.decodeTimeoutMs, 900);
  assert.equal(parseCli(["--decode-timeout-ms", "-1"], {}).kind, "error");
});
