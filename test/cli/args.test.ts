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
