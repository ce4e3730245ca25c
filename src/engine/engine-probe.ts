// Measures the built-in engine as a runner process holds it: createEngine(spec) and load() (weights,
// tokenizer, chat template), then prefill and greedy decode through its sequences, as a runner's
// generation loop drives them. The engine bench
// (bench/engine.ts) runs this file compiled, from dist/, with the runner's node flags, so the peak
// RSS it reports is what one runner of the model costs, not a TypeScript loader's.
//
//   node --max-semi-space-size=1 dist/engine/engine-probe.js --model F --layers N --threads T [--only all|decode]
//
// Prints one JSON line: {decode_tok_s, decode_ctx1024_tok_s, prefill_tok_s, rss_mb}.
import { pathToFileURL } from "node:url";
import type { LocalSequence } from "./engine.ts";
import { createEngine } from "./gguf-engine.ts";
// Greedy, no penalties, no logprobs: the sampler's cheapest path, as llama-bench samples nothing.
import { GREEDY_SAMPLER_PARAMS } from "./sampler.ts";

/** The bench's fixed workload (llama-bench's -n 64, -p 512, -d 1024). */
export const PROBE_DECODE_TOKENS = 64;
export const PROBE_PREFILL_TOKENS = 512;
export const PROBE_DEPTH_TOKENS = 1024;
export const PROBE_PREFILL_CHUNK_TOKENS = 256;
export const PROBE_CONTEXT_TOKENS = 2048;
const WARMUP_TOKENS = 8;

export interface ProbeMeasurement {
  decode_tok_s: number;
  decode_ctx1024_tok_s: number;
  prefill_tok_s: number;
  rss_mb: number;
}

export interface ProbeOptions {
  readonly modelPath: string;
  readonly layerCount: number;
  readonly threads: number;
  /** "decode" measures decode at depth 0 only. */
  readonly only: "all" | "decode";
}

/** Deterministic token ids well inside any real vocabulary. */
export function probePromptTokens(count: number, seed: number): number[] {
  const out: number[] = [];
  let state = seed;
  for (let index = 0; index < count; index++) {
    state = (state * 1103515245 + 12345) >>> 0;
    out.push(100 + (state % 30000));
  }
  return out;
}


/** Greedy decode of `count` tokens after `first`; returns tokens per second. */
function decode(sequence: LocalSequence, first: number, count: number): number {
  let token = first;
  const startMs = performance.now();
  for (let index = 0; index < count; index++) {
    sequence.decode(token);
    token = sequence.sample().tokenId;
  }
  return (count * 1000) / (performance.now() - startMs);
}

/** Prefill in the runner's chunks, then the logits of the last token; returns tokens per second. */
function prefill(sequence: LocalSequence, tokens: readonly number[]): number {
  const startMs = performance.now();
  for (let at = 0; at < tokens.length; at += PROBE_PREFILL_CHUNK_TOKENS) sequence.prefill(tokens.slice(at, at + PROBE_PREFILL_CHUNK_TOKENS));
  sequence.sample();
  return (tokens.length * 1000) / (performance.now() - startMs);
}

export async function runProbe(options: ProbeOptions): Promise<ProbeMeasurement> {
  const engine = createEngine({
    modelId: "engine-probe",
    modelPath: options.modelPath,
    layerStart: 0,
    layerEnd: options.layerCount,
    layerCount: options.layerCount,
    contextSize: PROBE_CONTEXT_TOKENS,
    threads: options.threads,
    options: {},
  });
  await engine.load(() => {});
  try {
    // Each phase is a fresh sequence from position 0, as llama-bench clears its context.
    const withSequence = <T>(promptTokenCount: number, run: (sequence: LocalSequence) => T): T => {
      const sequence = engine.openSequence(GREEDY_SAMPLER_PARAMS, promptTokenCount);
      try {
        return run(sequence);
      } finally {
        sequence.free();
      }
    };
    withSequence(0, (sequence) => decode(sequence, 1, WARMUP_TOKENS)); // page faults, thread start
    const m: ProbeMeasurement = { decode_tok_s: 0, decode_ctx1024_tok_s: 0, prefill_tok_s: 0, rss_mb: 0 };
    m.decode_tok_s = withSequence(0, (sequence) => decode(sequence, 1, PROBE_DECODE_TOKENS));
    if (options.only === "all") {
      m.prefill_tok_s = withSequence(PROBE_PREFILL_TOKENS, (sequence) => prefill(sequence, probePromptTokens(PROBE_PREFILL_TOKENS, 7)));
      m.decode_ctx1024_tok_s = withSequence(PROBE_DEPTH_TOKENS, (sequence) => {
        prefill(sequence, probePromptTokens(PROBE_DEPTH_TOKENS, 9));
        return decode(sequence, 1, PROBE_DECODE_TOKENS);
      });
    }
    m.rss_mb = process.resourceUsage().maxRSS / 1024;
    return m;
  } finally {
    engine.close();
  }
}

function argValue(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
}

async function main(args: readonly string[]): Promise<void> {
  const modelPath = argValue(args, "--model");
  const layerCount = Number(argValue(args, "--layers"));
  const threads = Number(argValue(args, "--threads") ?? 0);
  const only = argValue(args, "--only") ?? "all";
  if (modelPath === undefined || !Number.isInteger(layerCount) || layerCount < 1 || (only !== "all" && only !== "decode")) {
    throw new Error("usage: engine-probe --model FILE --layers N [--threads T] [--only all|decode]");
  }
  const m = await runProbe({ modelPath, layerCount, threads, only });
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
