// A small run of bench/soak.ts for CI: concurrent streaming clients with aborts, cancels by id and
// invalid bodies, a runner SIGKILLed halfway; every request must end cleanly and nothing may leak.
// The full run is `npm run bench -- soak`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runSoak, SOAK_DEFAULTS } from "../../bench/soak.ts";

test("soak (small): 80 requests from 16 clients, a runner killed halfway, nothing lost or leaked", async (t) => {
  const seed = Number(process.env["SOAK_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`soak seed ${seed} (replay with SOAK_SEED=${seed})`);
  const report = await runSoak({ ...SOAK_DEFAULTS, requestCount: 80, concurrency: 16, seed, runTimeoutMs: 25_000, requestTimeoutMs: 15_000 });
  t.diagnostic(JSON.stringify(report));
  assert.deepEqual(report.failures, []);
  assert.equal(report.requests, 80);
  assert.equal(report.unexplained, 0);
  assert.equal(report.leaked_tasks, 0);
  assert.equal(report.runners_ready, true);
  assert.equal(report.runner_killed, true);
  assert.ok(report.completed > 0 && report.cancelled > 0, "the mix reached both ends");
  assert.ok(report.sockets_end <= report.sockets_start);
});
