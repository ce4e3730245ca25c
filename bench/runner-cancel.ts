// Cancel latency of a real runner child process: time from RunnerHandle.cancel() to the taskEnded
// (Cancelled) report and to the following Ready, with FakeEngine decode steps of TOKEN_DELAY_MS
// (busy-wait, like native compute). Also the in-process cost of the per-step cancel check + yield.
// Prints one JSON line (the summary). Not a test: no thresholds.
// Run: node --import tsx bench/runner-cancel.ts   (or register `main` in bench/main.ts)
import { pathToFileURL } from "node:url";
import { generate } from "../src/runner/generate.ts";
import type { RunnerHandle, RunnerReport } from "../src/runner/runner-handle.ts";
import { spawnSupervisedRunner } from "../src/runner/supervisor.ts";
import type { RunnerId, TaskId } from "../src/shared/ids.ts";
import type { GenerationParams } from "../src/shared/types.ts";
import { FakeEngine, fakeShardSpec } from "../test/support/fake-engine.ts";
import { testGenerationParams } from "../test/support/generation-params.ts";

const TOKEN_DELAY_MS = 20;
const CANCELS_PER_MODE = 30;
const OVERHEAD_TOKENS = 20_000;
const OVERHEAD_ROUNDS = 5;
const WAIT_TIMEOUT_MS = 30_000;

const params: GenerationParams = testGenerationParams({ messages: [{ role: "user", content: "Tell me a long story." }], maxTokens: 100_000 });

type Waiter = { predicate: (r: RunnerReport) => boolean; resolve: (atMs: number) => void };
const waiters: Waiter[] = [];

function onReport(report: RunnerReport): void {
  const atMs = performance.now();
  for (const waiter of [...waiters]) {
    if (!waiter.predicate(report)) continue;
    waiters.splice(waiters.indexOf(waiter), 1);
    waiter.resolve(atMs);
  }
}

function waitFor(predicate: (r: RunnerReport) => boolean, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_TIMEOUT_MS);
    waiters.push({ predicate, resolve: (atMs) => (clearTimeout(timer), resolve(atMs)) });
  });
}

const isStatus = (kind: string) => (r: RunnerReport) => r.type === "status" && r.status.kind === kind;

function summary(values: number[]): Record<string, number> {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN);
  return { count: sorted.length, medianMs: at(0.5), p90Ms: at(0.9), minMs: at(0), maxMs: at(1) };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

async function measureCancels(runner: RunnerHandle, randomPhase: boolean): Promise<{ toTaskEndedMs: number[]; toReadyMs: number[] }> {
  const toTaskEndedMs: number[] = [];
  const toReadyMs: number[] = [];
  for (let i = 0; i < CANCELS_PER_MODE; i++) {
    const taskId = `bench-${randomPhase ? "random" : "after-chunk"}-${i}` as TaskId;
    const firstTokens = 2 + (i % 4);
    const gotTokens = waitFor((r) => r.type === "chunk" && r.taskId === taskId && r.chunk.tokensGenerated >= firstTokens, "chunk");
    runner.startTask({ taskId, params });
    await gotTokens;
    // Random phase: the cancel lands anywhere inside a decode step, as a client abort would.
    if (randomPhase) await new Promise((resolve) => setTimeout(resolve, Math.random() * TOKEN_DELAY_MS));
    const ended = waitFor((r) => r.type === "taskEnded" && r.taskId === taskId && r.status === "Cancelled", "taskEnded");
    const ready = waitFor(isStatus("Ready"), "Ready");
    const cancelAtMs = performance.now();
    runner.cancel(taskId);
    toTaskEndedMs.push((await ended) - cancelAtMs);
    toReadyMs.push((await ready) - cancelAtMs);
  }
  return { toTaskEndedMs, toReadyMs };
}

/** Per-token cost of the cancel check + event-loop yield, with an engine that does no work. */
async function measureCheckOverhead(): Promise<Record<string, number>> {
  const perTokenUs = { withChecks: [] as number[], withoutChecks: [] as number[] };
  const run = async (cancelChecks: boolean): Promise<number> => {
    const engine = new FakeEngine(fakeShardSpec());
    const startMs = performance.now();
    const outcome = await generate(
      engine,
      { taskId: "bench-overhead" as TaskId, params: { ...params, maxTokens: OVERHEAD_TOKENS } },
      { isCancelled: () => false, onPrefillProgress: () => {}, onChunk: () => {} },
      { cancelChecks },
    );
    return ((performance.now() - startMs) * 1000) / outcome.tokensGenerated;
  };
  for (let round = 0; round < OVERHEAD_ROUNDS; round++) {
    perTokenUs.withChecks.push(await run(true));
    perTokenUs.withoutChecks.push(await run(false));
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  const overheadUs = median(perTokenUs.withChecks) - median(perTokenUs.withoutChecks);
  return {
    perTokenUsWithChecks: round(median(perTokenUs.withChecks)),
    perTokenUsWithoutChecks: round(median(perTokenUs.withoutChecks)),
    overheadUsPerToken: round(overheadUs),
    // Relative to a 25 ms decode step (40 tok/s, the kind of speed this CPU reaches on a 0.5B model).
    overheadPercentOf25MsStep: Number(((overheadUs / 25_000) * 100).toPrecision(2)),
  };
}

export async function main(): Promise<void> {
  const runner = spawnSupervisedRunner({ runnerId: "bench-runner" as RunnerId, onReport });
  try {
    const loaded = waitFor(isStatus("Loaded"), "Loaded");
    runner.load(fakeShardSpec({ tokenDelayMs: TOKEN_DELAY_MS }), new URL("../test/support/fake-engine.ts", import.meta.url).href);
    await loaded;
    const ready = waitFor(isStatus("Ready"), "Ready");
    runner.warmup();
    await ready;

    const randomPhase = await measureCancels(runner, true);
    const afterChunk = await measureCancels(runner, false);
    const checkOverhead = await measureCheckOverhead();
    const result = {
      bench: "runner-cancel",
      engine: "FakeEngine test double (busy-wait decode step)",
      tokenDelayMs: TOKEN_DELAY_MS,
      cancelToTaskEndedRandomPhase: summary(randomPhase.toTaskEndedMs),
      cancelToReadyRandomPhase: summary(randomPhase.toReadyMs),
      cancelToTaskEndedRightAfterChunk: summary(afterChunk.toTaskEndedMs),
      cancelToReadyRightAfterChunk: summary(afterChunk.toReadyMs),
      checkOverhead,
      node: process.version,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await runner.shutdown();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await main();
