// `npm run bench -- engine [--model FILE] [--threads N] [--rounds R] [--mixes q4_0,q4_k_m,q8_0]`
//
// Our engine against llama.cpp on the same GGUF: decode tok/s at depth 0 and 1024, prefill tok/s
// for a 512-token prompt, peak RSS.
// - At the headline thread count (default 2) against a native `llama-bench` built from the source
//   node-llama-cpp ships (bench/native-llama.ts): `-p 512 -n 64 -d 0` and `-p 0 -n 64 -d 1024`,
//   each with OpenMP threads spinning and sleeping, the better of the two per number.
// - At 1 thread, decode only, against node-llama-cpp's prebuilt addon (≈ native at 1 thread).
// Each measurement runs in a fresh child process (so RSS is the engine's own; llama-bench's is its
// VmHWM), engines alternate within every round because this VM's speed drifts, and medians are
// reported. Ours runs as a runner process runs it: the compiled engine from dist/ (rebuilt here when
// older than src/engine), under the runner's node flags, loaded with createEngine(spec).load() and
// driven through its sequences (src/engine/engine-probe.ts). The last line is the JSON;
// ratios are ours / llama.cpp at the headline count.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { PROBE_CONTEXT_TOKENS, PROBE_DECODE_TOKENS, PROBE_DEPTH_TOKENS, PROBE_PREFILL_TOKENS, probePromptTokens } from "../src/engine/engine-probe.ts";
import { readGguf } from "../src/engine/gguf/reader.ts";
import { readModelArch } from "../src/engine/model.ts";
import { RUNNER_NODE_FLAGS } from "../src/runner/runner-node-flags.ts";
import { BENCH_MIXES, ensureBenchModel, type BenchMix } from "./engine-model.ts";
import { ensureNativeLlamaBench, runLlamaBench, type LlamaBenchTest, type OmpWait } from "./native-llama.ts";

interface Measurement {
  decode_tok_s: number;
  decode_ctx1024_tok_s: number;
  prefill_tok_s: number;
  rss_mb: number;
}
type EngineName = "ours" | "llamacpp" | "nodellamacpp";

// The same workload as our engine's probe, so both engines run the same numbers of tokens.
const DECODE_TOKENS = PROBE_DECODE_TOKENS;
const DECODE_CTX1024_TOKENS = PROBE_DECODE_TOKENS; // as llama-bench -n 64 -d 1024
const DEPTH = PROBE_DEPTH_TOKENS;
const PREFILL_TOKENS = PROBE_PREFILL_TOKENS;
const CONTEXT = PROBE_CONTEXT_TOKENS;
const promptTokens = probePromptTokens;

function argValue(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function rssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

const REPOSITORY_ROOT = fileURLToPath(new URL("..", import.meta.url));
const PROBE_ENTRY = join(REPOSITORY_ROOT, "dist", "engine", "engine-probe.js");
const ADDON = join(REPOSITORY_ROOT, "build", "Release", "skein_native.node");

function filesUnder(directory: string, suffix: string): string[] {
  return readdirSync(directory, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(suffix))
    .map((name) => join(directory, name));
}

/** src/engine files whose compiled dist/ counterpart is missing or older. */
function staleEngineFiles(): string[] {
  const source = join(REPOSITORY_ROOT, "src", "engine");
  return filesUnder(source, ".ts").filter((file) => {
    const compiled = join(REPOSITORY_ROOT, "dist", "engine", file.slice(source.length + 1).replace(/\.ts$/, ".js"));
    return !existsSync(compiled) || statSync(compiled).mtimeMs < statSync(file).mtimeMs;
  });
}

/**
 * The compiled engine the runners run, refreshed when src/engine is newer (`tsc -p
 * tsconfig.build.json`, the build's TypeScript step), and the native addon, which must be current.
 */
function ensureCompiledEngine(log: (line: string) => void): void {
  const nativeSources = filesUnder(join(REPOSITORY_ROOT, "src", "engine", "native"), "");
  if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run \`npx node-gyp rebuild\``);
  const addonMs = statSync(ADDON).mtimeMs;
  const newer = nativeSources.filter((file) => statSync(file).isFile() && statSync(file).mtimeMs > addonMs);
  if (newer.length > 0) throw new Error(`the native addon is older than ${newer[0]}: run \`npx node-gyp rebuild\``);
  if (staleEngineFiles().length === 0) return;
  log("dist/ is older than src/engine: compiling (tsc -p tsconfig.build.json) …");
  const tsc = join(REPOSITORY_ROOT, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", join(REPOSITORY_ROOT, "tsconfig.build.json")], { encoding: "utf8", maxBuffer: 1 << 24 });
  // Type errors elsewhere in the tree do not stop tsc from writing the engine's files; only stale ones matter.
  const stale = staleEngineFiles();
  if (stale.length > 0) {
    throw new Error(`dist/ is still older than ${stale[0]} after tsc (exit ${r.status}): ${(r.stdout + r.stderr).slice(-2000)}`);
  }
  if (r.status !== 0) log(`tsc reported errors (exit ${r.status}) but wrote the engine's files`);
}

async function measureNodeLlamaCpp(model: string, threads: number, only: string): Promise<Measurement> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
  const lm = await llama.loadModel({ modelPath: model, useMmap: true });
  const ctx = await lm.createContext({ contextSize: CONTEXT, threads, batchSize: 512 });
  type Tok = Parameters<ReturnType<typeof ctx.getSequence>["evaluate"]>[0][number];
  const seq = ctx.getSequence();
  const decode = async (first: number, count: number): Promise<number> => {
    let n = 0;
    const t0 = performance.now();
    for await (const _ of seq.evaluate([first as Tok], { temperature: 0 })) {
      if (++n >= count) break;
    }
    return (count * 1000) / (performance.now() - t0);
  };
  await decode(1, 8);
  await seq.clearHistory();
  const m: Measurement = { decode_tok_s: 0, decode_ctx1024_tok_s: 0, prefill_tok_s: 0, rss_mb: 0 };
  if (only === "all" || only === "decode") m.decode_tok_s = await decode(1, DECODE_TOKENS);
  if (only === "all") {
    await seq.clearHistory();
    const t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(promptTokens(PREFILL_TOKENS, 7) as Tok[]);
    m.prefill_tok_s = (PREFILL_TOKENS * 1000) / (performance.now() - t0);
    await seq.clearHistory();
    await seq.evaluateWithoutGeneratingNewTokens(promptTokens(DEPTH, 9) as Tok[]);
    m.decode_ctx1024_tok_s = await decode(1, DECODE_CTX1024_TOKENS);
  }
  m.rss_mb = rssMb();
  await ctx.dispose();
  await lm.dispose();
  await llama.dispose();
  return m;
}

/**
 * llama.cpp at its best: both OpenMP wait policies, the faster of the two for each number (the
 * larger peak RSS). Spinning wins on an idle machine, sleeping on a busy one.
 */
async function measureNative(bin: string, model: string, threads: number, only: string): Promise<Measurement> {
  const active = await measureNativeWith(bin, model, threads, only, "active");
  const passive = await measureNativeWith(bin, model, threads, only, "passive");
  return {
    decode_tok_s: Math.max(active.decode_tok_s, passive.decode_tok_s),
    decode_ctx1024_tok_s: Math.max(active.decode_ctx1024_tok_s, passive.decode_ctx1024_tok_s),
    prefill_tok_s: Math.max(active.prefill_tok_s, passive.prefill_tok_s),
    rss_mb: Math.max(active.rss_mb, passive.rss_mb),
  };
}

async function measureNativeWith(bin: string, model: string, threads: number, only: string, wait: OmpWait): Promise<Measurement> {
  const common = ["-m", model, "-t", String(threads), "-r", "1"];
  const find = (tests: readonly LlamaBenchTest[], p: number, g: number, d: number): number => {
    const t = tests.find((x) => x.n_prompt === p && x.n_gen === g && x.n_depth === d);
    if (t === undefined) throw new Error(`llama-bench gave no result for pp${p} tg${g} @ d${d}`);
    return t.avg_ts;
  };
  const m: Measurement = { decode_tok_s: 0, decode_ctx1024_tok_s: 0, prefill_tok_s: 0, rss_mb: 0 };
  if (only === "decode") {
    const r = await runLlamaBench(bin, [...common, "-p", "0", "-n", String(DECODE_TOKENS), "-d", "0"], wait);
    m.decode_tok_s = find(r.tests, 0, DECODE_TOKENS, 0);
    m.rss_mb = r.peakRssMb;
    return m;
  }
  const a = await runLlamaBench(bin, [...common, "-p", String(PREFILL_TOKENS), "-n", String(DECODE_TOKENS), "-d", "0"], wait);
  const b = await runLlamaBench(bin, [...common, "-p", "0", "-n", String(DECODE_CTX1024_TOKENS), "-d", String(DEPTH)], wait);
  m.prefill_tok_s = find(a.tests, PREFILL_TOKENS, 0, 0);
  m.decode_tok_s = find(a.tests, 0, DECODE_TOKENS, 0);
  m.decode_ctx1024_tok_s = find(b.tests, 0, DECODE_CTX1024_TOKENS, DEPTH);
  m.rss_mb = Math.max(a.peakRssMb, b.peakRssMb);
  return m;
}

async function runEngine(engine: EngineName, model: string, threads: number, only: string, nativeBin: string): Promise<Measurement> {
  if (engine === "llamacpp") {
    const m = await measureNative(nativeBin, model, threads, only);
    for (const k of Object.keys(m) as (keyof Measurement)[]) m[k] = Number(m[k].toFixed(2));
    return m;
  }
  return runChild(engine, model, threads, only);
}

function runChild(engine: EngineName, model: string, threads: number, only: string): Measurement {
  const self = fileURLToPath(import.meta.url);
  const common = ["--model", model, "--threads", String(threads), "--only", only];
  const args =
    engine === "ours"
      ? [...RUNNER_NODE_FLAGS, PROBE_ENTRY, ...common, "--layers", String(layerCountOf(model))]
      : ["--import", "tsx", self, "--child", engine, ...common];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 24 });
  const lines = (r.stdout ?? "").trim().split("\n");
  const last = lines.at(-1) ?? "";
  if (r.status !== 0 || !last.startsWith("{")) {
    throw new Error(`${engine} child failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  }
  return JSON.parse(last) as Measurement;
}

const layerCounts = new Map<string, number>();
function layerCountOf(model: string): number {
  let count = layerCounts.get(model);
  if (count === undefined) {
    count = readModelArch(readGguf(model)).layerCount;
    layerCounts.set(model, count);
  }
  return count;
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function medianOf(ms: readonly Measurement[]): Measurement {
  const pick = (k: keyof Measurement): number => Number(median(ms.map((m) => m[k])).toFixed(2));
  return { decode_tok_s: pick("decode_tok_s"), decode_ctx1024_tok_s: pick("decode_ctx1024_tok_s"), prefill_tok_s: pick("prefill_tok_s"), rss_mb: pick("rss_mb") };
}

interface Comparison {
  ours: Measurement;
  llamacpp: Measurement;
  ours1: Measurement;
  nodellamacpp1: Measurement;
}

/**
 * Rounds that alternate the engines (ours, native, ours@1, node-llama-cpp@1, then reversed);
 * returns medians per engine. At 1 thread only decode is measured.
 */
async function compare(model: string, threads: number, rounds: number, nativeBin: string, log: (s: string) => void): Promise<Comparison> {
  type Slot = { key: keyof Comparison; engine: EngineName; threads: number; only: string };
  const slots: Slot[] = [
    { key: "ours", engine: "ours", threads, only: "all" },
    { key: "llamacpp", engine: "llamacpp", threads, only: "all" },
    { key: "ours1", engine: "ours", threads: 1, only: "decode" },
    { key: "nodellamacpp1", engine: "nodellamacpp", threads: 1, only: "decode" },
  ];
  const runs: Record<keyof Comparison, Measurement[]> = { ours: [], llamacpp: [], ours1: [], nodellamacpp1: [] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? slots : [...slots].reverse();
    for (const s of order) {
      const m = await runEngine(s.engine, model, s.threads, s.only, nativeBin);
      runs[s.key].push(m);
      log(`  round ${r + 1} ${s.engine.padEnd(12)} threads=${s.threads} ${JSON.stringify(m)}`);
    }
  }
  return { ours: medianOf(runs.ours), llamacpp: medianOf(runs.llamacpp), ours1: medianOf(runs.ours1), nodellamacpp1: medianOf(runs.nodellamacpp1) };
}

const ratio = (a: number, b: number): number => (b > 0 ? Number((a / b).toFixed(3)) : 0);

export async function main(args: string[]): Promise<void> {
  const child = argValue(args, "--child");
  if (child !== undefined) {
    const model = argValue(args, "--model")!;
    const threads = Number(argValue(args, "--threads"));
    const only = argValue(args, "--only") ?? "all";
    if (child !== "nodellamacpp") throw new Error(`unknown child ${child} (ours runs dist/engine/engine-probe.js)`);
    const m = await measureNodeLlamaCpp(model, threads, only);
    process.stdout.write(`${JSON.stringify(m)}\n`);
    return;
  }
  const log = (s: string): void => {
    process.stderr.write(`${s}\n`);
  };
  const threads = Number(argValue(args, "--threads") ?? Math.min(cpus().length, 2));
  const rounds = Number(argValue(args, "--rounds") ?? 3);
  const explicit = argValue(args, "--model");
  const mixes = (argValue(args, "--mixes")?.split(",") ?? (explicit ? ["file"] : BENCH_MIXES)) as (BenchMix | "file")[];
  ensureCompiledEngine(log);
  const nativeBin = ensureNativeLlamaBench(log);
  log(`native llama-bench: ${nativeBin}`);
  // Other work on the machine moves both engines' numbers (llama.cpp's spinning pool far more):
  // the load average goes with the results.
  const loadAtStart = loadavg()[0]!;
  const perModel: Record<string, Comparison & { decode_ratio_1thread: number }> = {};
  for (const mix of mixes) {
    const model = mix === "file" ? explicit! : ensureBenchModel(mix, log);
    log(`${mix}: ${model}`);
    const c = await compare(model, threads, rounds, nativeBin, log);
    perModel[mix] = { ...c, decode_ratio_1thread: ratio(c.ours1.decode_tok_s, c.nodellamacpp1.decode_tok_s) };
    log(
      `${mix} medians at ${threads} threads: ours ${JSON.stringify(c.ours)} llama-bench ${JSON.stringify(c.llamacpp)}; ` +
        `1-thread decode ours ${c.ours1.decode_tok_s} vs node-llama-cpp ${c.nodellamacpp1.decode_tok_s}`,
    );
  }
  const summaryOf = (m: Comparison & { decode_ratio_1thread: number }) => ({
    decode_ratio: ratio(m.ours.decode_tok_s, m.llamacpp.decode_tok_s),
    decode_ratio_ctx1024: ratio(m.ours.decode_ctx1024_tok_s, m.llamacpp.decode_ctx1024_tok_s),
    prefill_ratio: ratio(m.ours.prefill_tok_s, m.llamacpp.prefill_tok_s),
    decode_ratio_1thread: m.decode_ratio_1thread,
    ours: m.ours,
    llamacpp: m.llamacpp,
  });
  // Every mix on one line for the record; the last line is the headline (first mix) alone.
  // Peak RSS against the file in the same unit (MiB / MiB): the target is ≤ 1.2.
  const fileMib = (mix: string): number => statSync(mix === "file" ? explicit! : ensureBenchModel(mix as BenchMix)).size / 2 ** 20;
  const details = Object.fromEntries(
    Object.entries(perModel).map(([k, v]) => [
      k,
      { ...summaryOf(v), file_mib: Number(fileMib(k).toFixed(2)), ours_rss_per_file: ratio(v.ours.rss_mb, fileMib(k)), ours_1thread: v.ours1, nodellamacpp_1thread: v.nodellamacpp1 },
    ]),
  );
  const load_avg_1m = { start: Number(loadAtStart.toFixed(2)), end: Number(loadavg()[0]!.toFixed(2)) };
  process.stdout.write(`${JSON.stringify({ threads, rounds, load_avg_1m, llamacpp: "native llama-bench (CPU, Release, native; best of OMP_WAIT_POLICY active/passive) at the headline threads; node-llama-cpp prebuilt at 1 thread", models: details })}\n`);
  process.stdout.write(`${JSON.stringify(summaryOf(perModel[mixes[0]!]!))}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
