// `npm run bench -- cancel [--rounds N] [--step-ms MS]`
//
// 1. Cancel latency: a real node (HTTP, master, worker, runner child process) serving the FakeEngine
//    test double with a decode step of --step-ms (default 20 ms, a 0.5B model's step on 2 cores).
//    Each round starts a stream, aborts the client after a few tokens, and measures client abort →
//    the runner's Ready event (its `atMs`, stamped by the master on the same clock).
// 2. Decode overhead of the per-step cancel check: the runner's generation loop in-process, with
//    and without checks, interleaved rounds, medians.
// Prints one JSON line per measurement and the summary as the last line. Not a test: no thresholds.
import { performance } from "node:perf_hooks";
import type { Engine } from "../src/engine/engine.ts";
import { generate } from "../src/runner/generate.ts";
import type { TaskId } from "../src/shared/ids.ts";
import type { GenerationParams, IndexedEvent } from "../src/shared/types.ts";
import { createEngine, fakeShardSpec } from "../test/support/fake-engine.ts";
import { chatBody, isIdle, postChat, sseData, startTestNode } from "../test/support/test-node.ts";

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  const value = i === -1 ? undefined : Number(args[i + 1]);
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
const median = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50);

async function measureCancelLatency(rounds: number, stepMs: number) {
  const node = await startTestNode({ engineOptions: { tokenDelayMs: stepMs } });
  const latencies: number[] = [];
  const recorded: number[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      const controller = new AbortController();
      const response = await postChat(node.url, chatBody({ stream: true }), controller.signal);
      const stream = sseData(response);
      const tokensBeforeAbort = 1 + (round % 5);
      for (let seen = 0; seen < tokensBeforeAbort + 1; seen++) await stream.next();
      const eventCountBefore = node.events.length;
      const abortAtMs = Date.now();
      controller.abort();
      await node.waitFor(isIdle, "idle after cancel", 30_000);
      const after: IndexedEvent[] = node.events.slice(eventCountBefore);
      const cancelled = after.find((e) => e.event.type === "TaskStatusUpdated" && e.event.status === "Cancelled");
      const ready = after.find((e) => e.event.type === "RunnerStatusUpdated" && e.event.status.kind === "Ready");
      if (ready === undefined || cancelled === undefined) throw new Error("cancel round without Cancelled/Ready events");
      latencies.push(ready.atMs - abortAtMs);
      recorded.push(cancelled.atMs - abortAtMs);
    }
  } finally {
    await node.stop();
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const sortedRecorded = [...recorded].sort((a, b) => a - b);
  const result = {
    rounds,
    decode_step_ms: stepMs,
    cancel_latency_ms_p50: percentile(sorted, 50),
    cancel_latency_ms_p99: percentile(sorted, 99),
    cancel_latency_ms_max: sorted.at(-1)!,
    cancel_recorded_ms_p50: percentile(sortedRecorded, 50),
    cancel_recorded_ms_p99: percentile(sortedRecorded, 99),
    target_ms: stepMs + 20,
  };
  console.log(JSON.stringify({ measurement: "cancel_latency", ...result }));
  return result;
}

const PARAMS: GenerationParams = {
  messages: [{ role: "user", content: "Tell me a story." }],
  maxTokens: null,
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: 1,
  stop: [],
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  logprobs: false,
  topLogprobs: 0,
};

async function decodeTokensPerSecond(engine: Engine, tokens: number, cancelChecks: boolean): Promise<number> {
  const startMs = performance.now();
  const outcome = await generate(
    engine,
    { taskId: "task-bench" as TaskId, params: { ...PARAMS, maxTokens: tokens } },
    { isCancelled: () => false, onPrefillProgress: () => {}, onChunk: () => {} },
    { cancelChecks },
  );
  const elapsedMs = performance.now() - startMs;
  if (outcome.tokensGenerated !== tokens) throw new Error(`generated ${outcome.tokensGenerated}, wanted ${tokens}`);
  return (tokens * 1000) / elapsedMs;
}

async function measureDecodeOverhead(rounds: number, stepMs: number) {
  const engine = createEngine(fakeShardSpec({ tokenDelayMs: stepMs }));
  await engine.load(() => {});
  const tokens = Math.max(50, Math.round(1000 / stepMs));
  const withChecks: number[] = [];
  const without: number[] = [];
  for (let round = 0; round < rounds; round++) {
    // Interleaved, alternating which goes first, so drift hits both sides alike.
    const order = round % 2 === 0 ? [true, false] : [false, true];
    for (const checks of order) (checks ? withChecks : without).push(await decodeTokensPerSecond(engine, tokens, checks));
  }
  engine.close();
  const result = {
    rounds,
    decode_step_ms: stepMs,
    tokens_per_round: tokens,
    tok_s_with_checks: median(withChecks),
    tok_s_without_checks: median(without),
    decode_overhead_pct: (1 - median(withChecks) / median(without)) * 100,
  };
  console.log(JSON.stringify({ measurement: "decode_overhead", ...result }));
  return result;
}

export async function main(args: string[]): Promise<void> {
  const rounds = option(args, "--rounds", 60);
  const stepMs = option(args, "--step-ms", 20);
  const latency = await measureCancelLatency(rounds, stepMs);
  const overhead = await measureDecodeOverhead(11, stepMs);
  const overheadFastStep = await measureDecodeOverhead(11, 2);
  console.log(
    JSON.stringify({
      cancel_latency_ms_p50: latency.cancel_latency_ms_p50,
      cancel_latency_ms_p99: latency.cancel_latency_ms_p99,
      target_cancel_latency_ms: latency.target_ms,
      decode_step_ms: stepMs,
      decode_overhead_pct: overhead.decode_overhead_pct,
      decode_overhead_pct_2ms_step: overheadFastStep.decode_overhead_pct,
      cancels: latency.rounds,
      engine: "FakeEngine test double (busy-wait decode step); the real engine is issue 9",
    }),
  );
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
