// `npm run bench -- cluster [--rounds N] [--tokens N] [--cancels N]`: a realistic model
// (Qwen2.5-0.5B shape, Q4_0, from bench/engine-model.ts's cache) on one stage with 2 threads vs split
// over 2 stages with 1 thread each — the same threads in total — in interleaved rounds, medians.
// The "nodes" are in-process workers of one master (test/support/pipeline-cluster.ts), each
// spawning real runner processes linked by real TCP stage links on loopback.
// Also: one activation hop over a stage link (encode, loopback TCP, decode, validate), and cancel
// latency: from the cancel command to every stage's report that it freed the task's KV slot.
// The last line is the JSON summary. Not a test: no thresholds.
import net from "node:net";
import { performance } from "node:perf_hooks";
import { Link, listenLinks } from "../src/net/link.ts";
import { hiddenFromBytes, hiddenToBytes, parseDownstreamMessage } from "../src/pipeline/messages.ts";
import type { NodeId, RunnerId } from "../src/shared/ids.ts";
import { silentLogger } from "../src/shared/logger.ts";
import { findTaskByCommandId } from "../src/shared/state.ts";
import type { GenerationParams, Instance } from "../src/shared/types.ts";
import { testGenerationParams } from "../test/support/generation-params.ts";
import { ggufCard, PipelineCluster } from "../test/support/pipeline-cluster.ts";
import { ensureBenchModel } from "./engine-model.ts";

const QWEN05_LAYERS = 24;
const QWEN05_EMBD = 896;
const HOP_ROUND_TRIPS = 2_000;

interface Options {
  readonly rounds: number;
  readonly tokens: number;
  readonly cancels: number;
}

function parseOptions(args: readonly string[]): Options {
  const value = (name: string, fallback: number): number => {
    const i = args.indexOf(name);
    const n = i >= 0 ? Number(args[i + 1]) : fallback;
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} needs a positive integer`);
    return n;
  };
  return { rounds: value("--rounds", 5), tokens: value("--tokens", 64), cancels: value("--cancels", 20) };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const percentile = (values: readonly number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};
const round = (n: number, digits = 3): number => Number(n.toFixed(digits));
const log = (line: string): void => void process.stderr.write(`${line}\n`);

function params(maxTokens: number, seed: number): GenerationParams {
  // Sampled with a fixed seed, so a random-weight model rarely stops early on an end token.
  return testGenerationParams({ messages: [{ role: "user", content: "Write a long story about a fox and a crow." }], maxTokens, temperature: 1, seed });
}

/** Decode tok/s of one request: tokens between the first and the last chunk, over the time between them. */
async function decodeTokensPerSecond(cluster: PipelineCluster, modelId: string, tokens: number, seed: number): Promise<number | null> {
  const since = cluster.reports.length;
  const { result } = cluster.submit(modelId, params(tokens, seed));
  const { task } = await result;
  if (task.status !== "Complete") throw new Error(`${modelId}: task ${task.status}: ${task.failureReason}`);
  const chunks = cluster.reports.slice(since).flatMap((r) => (r.report.type === "chunk" && r.report.taskId === task.taskId ? [{ atMs: r.atMs, tokens: r.report.chunk.tokensGenerated }] : []));
  const first = chunks[0];
  const last = chunks[chunks.length - 1];
  if (first === undefined || last === undefined || last.tokens - first.tokens < 8) return null;
  return ((last.tokens - first.tokens) * 1000) / (last.atMs - first.atMs);
}

/** From the cancel to the last stage's "0 slots" report, in ms. */
async function cancelLatencyMs(cluster: PipelineCluster, instance: Instance, seed: number): Promise<number> {
  const { commandId, result } = cluster.submit("split2", params(100_000, seed));
  await cluster.waitFor((s) => {
    const task = findTaskByCommandId(s, commandId);
    return task !== undefined && cluster.events.some((e) => e.event.type === "ChunkGenerated" && e.event.taskId === task.taskId);
  }, "decode under way");
  // Land the cancel at a random point of a decode step.
  await new Promise((resolve) => setTimeout(resolve, Math.random() * 30));
  const since = cluster.reports.length;
  const startMs = performance.now();
  cluster.cancel(commandId);
  const runnerIds = new Set<RunnerId>(instance.shards.map((s) => s.runnerId));
  const freedAt = new Map<RunnerId, number>();
  await cluster.waitForCondition(() => {
    for (const { atMs, report } of cluster.reports.slice(since)) {
      if (report.type === "stageSlots" && report.openSlotCount === 0 && runnerIds.has(report.runnerId) && !freedAt.has(report.runnerId)) freedAt.set(report.runnerId, atMs);
    }
    return freedAt.size === runnerIds.size;
  }, "every stage freed its slot");
  await result;
  await cluster.waitFor((s) => Object.keys(s.tasks).length === 0, "task released");
  return Math.max(...freedAt.values()) - startMs;
}

/** One activation (a decode step's hidden state) each way over a stage link; half the round trip. */
async function hopLatencyMs(): Promise<number> {
  const identity = (id: string) => ({ nodeId: id as NodeId, clusterName: "bench", clusterPort: 0, secret: Buffer.from("bench secret") });
  const server = await listenLinks("127.0.0.1", 0, { identity: identity("stage-b"), logger: silentLogger() }, (link) => {
    link.handlers.onMessage = (body) => {
      const parsed = parseDownstreamMessage(body);
      if (parsed.ok && parsed.message.type === "activation") link.send({ ...parsed.message, hidden: hiddenToBytes(hiddenFromBytes(parsed.message.hidden)) });
    };
  });
  const client = new Link(net.connect({ host: "127.0.0.1", port: server.port }), "outbound", { identity: identity("stage-a"), logger: silentLogger() });
  await new Promise<void>((resolve) => (client.handlers.onOpen = () => resolve()));
  const hidden = new Float32Array(QWEN05_EMBD).map((_, i) => Math.sin(i));
  const samples: number[] = [];
  for (let i = 0; i < HOP_ROUND_TRIPS; i++) {
    const startMs = performance.now();
    await new Promise<void>((resolve) => {
      client.handlers.onMessage = (body) => {
        if (parseDownstreamMessage(body).ok) resolve();
      };
      client.send({ type: "activation", taskId: "task-bench", step: i, tokenIds: [1], hidden: hiddenToBytes(hidden), nTokens: 1, sample: true });
    });
    samples.push((performance.now() - startMs) / 2);
  }
  client.close("done");
  await server.close();
  return median(samples);
}

export async function main(args: string[]): Promise<void> {
  const options = parseOptions(args);
  const modelPath = ensureBenchModel("q4_0", log);
  const hopMs = await hopLatencyMs();
  log(`hop: ${hopMs.toFixed(3)} ms (median of ${HOP_ROUND_TRIPS} round trips / 2)`);

  const single = new PipelineCluster({ nodeCount: 1, threads: 2, contextSize: 2048, cards: [ggufCard("single", modelPath, QWEN05_LAYERS)] });
  const split = new PipelineCluster({ nodeCount: 2, threads: 1, contextSize: 2048, cards: [ggufCard("split2", modelPath, QWEN05_LAYERS)] });
  // Three stages of one thread: with one sequence only one stage computes at a time, so it still uses one core at a time.
  const split3 = new PipelineCluster({ nodeCount: 3, threads: 1, contextSize: 2048, cards: [ggufCard("split3", modelPath, QWEN05_LAYERS)] });
  single.start();
  split.start();
  split3.start();
  try {
    await single.place("single", 1);
    const splitInstance = await split.place("split2", 2);
    await split3.place("split3", 3);
    log(`placed: 1 stage × 2 threads; 2 stages × 1 thread (${splitInstance.shards.map((s) => `[${s.layerStart},${s.layerEnd})`).join(" ")})`);
    // One request each first: pages, caches and the JIT warm up outside the measurement.
    await decodeTokensPerSecond(single, "single", 16, 1);
    await decodeTokensPerSecond(split, "split2", 16, 1);
    await decodeTokensPerSecond(split3, "split3", 16, 1);
    const singleRates: number[] = [];
    const splitRates: number[] = [];
    const split3Rates: number[] = [];
    for (let r = 0; r < options.rounds; r++) {
      const a = await decodeTokensPerSecond(single, "single", options.tokens, 100 + r);
      const b = await decodeTokensPerSecond(split, "split2", options.tokens, 100 + r);
      const c = await decodeTokensPerSecond(split3, "split3", options.tokens, 100 + r);
      if (a !== null) singleRates.push(a);
      if (b !== null) splitRates.push(b);
      if (c !== null) split3Rates.push(c);
      log(`round ${r + 1}: single ${a?.toFixed(1) ?? "-"} tok/s, 2 stages ${b?.toFixed(1) ?? "-"} tok/s, 3 stages ${c?.toFixed(1) ?? "-"} tok/s`);
      process.stdout.write(`${JSON.stringify({ round: r + 1, single_tok_s: a, split2_tok_s: b, split3_tok_s: c })}\n`);
    }
    await Promise.allSettled([single.stop(), split3.stop()]);
    const cancels: number[] = [];
    for (let i = 0; i < options.cancels; i++) cancels.push(await cancelLatencyMs(split, splitInstance, 1000 + i));
    log(`cancel → every stage freed: median ${median(cancels).toFixed(2)} ms, p99 ${percentile(cancels, 99).toFixed(2)} ms`);
    const singleTokS = median(singleRates);
    const splitTokS = median(splitRates);
    const summary = {
      bench: "cluster",
      model: "qwen2.5-0.5b-shape-q4_0 (random weights)",
      nodes: "in-process workers, separate runner processes",
      single: { stages: 1, threads: 2, decode_tok_s: round(singleTokS, 2) },
      split2: { stages: 2, threads_per_stage: 1, decode_tok_s: round(splitTokS, 2) },
      split3: { stages: 3, threads_per_stage: 1, decode_tok_s: round(median(split3Rates), 2) },
      pipeline_decode_ratio: round(splitTokS / singleTokS),
      pipeline_decode_ratio_3stages: round(median(split3Rates) / singleTokS),
      hop_latency_ms: round(hopMs, 4),
      cancel_latency_ms_p99: round(percentile(cancels, 99), 2),
      cancel_latency_ms_median: round(median(cancels), 2),
      rounds: options.rounds,
      tokens_per_request: options.tokens,
      cancels: options.cancels,
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    await Promise.allSettled([single.stop(), split.stop(), split3.stop()]);
  }
}
