import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { RUNNER_NODE_FLAGS } from "../../src/runner/runner-node-flags.ts";
import { runnerEntry } from "../../src/runner/supervisor.ts";

test("runner processes start with the runner's node flags", () => {
  const { execArgv } = runnerEntry();
  assert.ok(RUNNER_NODE_FLAGS.length > 0);
  assert.deepEqual(execArgv.slice(0, RUNNER_NODE_FLAGS.length), RUNNER_NODE_FLAGS);
});

// Churns short-lived objects (which make V8 grow its young generation) and prints the largest
// new-space size seen.
const CHURN = `
const v8 = require("node:v8");
let largest = 0, kept = [];
for (let round = 0; round < 200; round++) {
  for (let i = 0; i < 20000; i++) kept.push({ i, list: [i] });
  if (kept.length > 100000) kept = [];
  largest = Math.max(largest, v8.getHeapSpaceStatistics().find((space) => space.space_name === "new_space").space_size);
}
console.log(largest);`;

function largestNewSpaceBytes(flags: readonly string[]): number {
  const r = spawnSync(process.execPath, [...flags, "-e", CHURN], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout.trim());
}

test("the runner's flags keep V8's young generation small (its growth is what they save)", () => {
  const withFlags = largestNewSpaceBytes(RUNNER_NODE_FLAGS);
  const without = largestNewSpaceBytes([]);
  assert.ok(withFlags <= 4 * 2 ** 20, `new space grew to ${withFlags} bytes with ${RUNNER_NODE_FLAGS.join(" ")}`);
  assert.ok(without > withFlags, `without the flags new space stayed at ${without} bytes: the test no longer shows the difference`);
});
