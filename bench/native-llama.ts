// A native `llama-bench` built from the llama.cpp source that node-llama-cpp ships
// (node_modules/node-llama-cpp/llama/gitRelease.bundle): CPU only, Release, -march=native. It is the
// fair 2-thread baseline — node-llama-cpp's prebuilt addon reaches only ≈ 0.6× of it at 2 threads.
//
// The build (≈ 6 min on 2 cores, only the llama-bench target) lives outside the repository under
// ~/.cache/skein-bench/llama.cpp-<commit>/ and is reused while the binary is there.
//
// `node --import tsx bench/native-llama.ts [--build-only] [--model FILE --threads N]`
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { BENCH_CACHE_DIR } from "./engine-model.ts";

const REPO_ROOT = join(fileURLToPath(import.meta.url), "..", "..");
const BUNDLE = join(REPO_ROOT, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
const BUILD_JOBS = 2;
// How often the peak RSS of a running llama-bench is read; VmHWM only grows, so a missed poll
// loses at most what was allocated in the last interval before exit.
const RSS_POLL_MS = 10;

const CMAKE_FLAGS = [
  "-DCMAKE_BUILD_TYPE=Release",
  "-DGGML_NATIVE=ON",
  "-DBUILD_SHARED_LIBS=OFF",
  "-DLLAMA_CURL=OFF",
  "-DGGML_CUDA=OFF",
  "-DGGML_VULKAN=OFF",
  "-DGGML_METAL=OFF",
  "-DLLAMA_BUILD_TESTS=OFF",
  "-DLLAMA_BUILD_SERVER=OFF",
];

function run(cmd: string, args: readonly string[], log: (s: string) => void, cwd?: string): void {
  log(`$ ${cmd} ${args.join(" ")}`);
  // Progress goes straight to our stderr: the build is long and silent otherwise.
  const r = spawnSync(cmd, args, { cwd, stdio: ["ignore", process.stderr, process.stderr] });
  if (r.status !== 0) throw new Error(`${cmd} ${args[0] ?? ""} failed with status ${r.status ?? r.signal}`);
}

/** The commit the bundle holds (its HEAD). */
export function bundleCommit(): string {
  if (!existsSync(BUNDLE)) throw new Error(`no llama.cpp source bundle at ${BUNDLE} (is node-llama-cpp installed?)`);
  const r = spawnSync("git", ["bundle", "list-heads", BUNDLE], { encoding: "utf8" });
  const head = /^([0-9a-f]{40}) /m.exec(r.stdout ?? "");
  if (r.status !== 0 || head === null) throw new Error(`cannot read the heads of ${BUNDLE}: ${r.stderr}`);
  return head[1]!;
}

export function nativeLlamaDir(commit = bundleCommit()): string {
  return join(BENCH_CACHE_DIR, `llama.cpp-${commit.slice(0, 12)}`);
}

/** Path of the llama-bench binary, building it first when absent. */
export function ensureNativeLlamaBench(log: (s: string) => void): string {
  const commit = bundleCommit();
  const dir = nativeLlamaDir(commit);
  const bin = join(dir, "build", "bin", "llama-bench");
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const src = join(dir, "src");
  if (!existsSync(join(src, "CMakeLists.txt"))) {
    const tmp = `${src}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    run("git", ["clone", "--quiet", BUNDLE, tmp], log);
    run("git", ["-c", "advice.detachedHead=false", "checkout", "--quiet", commit], log, tmp);
    rmSync(src, { recursive: true, force: true });
    renameSync(tmp, src);
  }
  const build = join(dir, "build");
  log(`building llama-bench ${commit.slice(0, 12)} in ${build} (CPU, Release, native; ~6 min on 2 cores)`);
  run("cmake", ["-S", src, "-B", build, ...CMAKE_FLAGS], log);
  run("cmake", ["--build", build, "--target", "llama-bench", `-j${BUILD_JOBS}`], log);
  if (!existsSync(bin)) throw new Error(`the build finished but ${bin} is missing`);
  return bin;
}

/** One test of llama-bench's JSON output (the fields we read). */
export interface LlamaBenchTest {
  n_prompt: number;
  n_gen: number;
  n_depth: number;
  n_threads: number;
  avg_ts: number;
  stddev_ts: number;
}

export interface LlamaBenchRun {
  tests: LlamaBenchTest[];
  peakRssMb: number;
}

function readHwmKb(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0; // already exited
  }
}

/**
 * How llama.cpp's OpenMP threads wait between ops: spinning (its default, fastest on an idle
 * machine) or sleeping (far faster when other processes compete for the cores: spinning threads
 * then hold cores the thread they wait for needs).
 */
export type OmpWait = "active" | "passive";

/** Runs llama-bench with JSON output, sampling its peak resident set while it runs. */
export function runLlamaBench(bin: string, args: readonly string[], wait: OmpWait = "active"): Promise<LlamaBenchRun> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, OMP_WAIT_POLICY: wait === "active" ? "ACTIVE" : "PASSIVE" };
    const child = spawn(bin, [...args, "-o", "json"], { stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    let hwmKb = 0;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const poll = setInterval(() => {
      if (child.pid !== undefined) hwmKb = Math.max(hwmKb, readHwmKb(child.pid));
    }, RSS_POLL_MS);
    child.on("error", (e) => {
      clearInterval(poll);
      reject(e);
    });
    child.on("close", (code) => {
      clearInterval(poll);
      if (code !== 0) {
        reject(new Error(`llama-bench exited with ${code}: ${stderr.slice(-2000)}`));
        return;
      }
      try {
        const tests = JSON.parse(stdout) as LlamaBenchTest[];
        resolve({ tests, peakRssMb: hwmKb / 1024 });
      } catch (e) {
        reject(new Error(`llama-bench printed no JSON: ${String(e)}\n${stdout.slice(-1000)}`));
      }
    });
  });
}

function argValue(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const bin = ensureNativeLlamaBench(log);
  log(`llama-bench: ${bin}`);
  const model = argValue(args, "--model");
  if (!args.includes("--build-only") && model !== undefined) {
    const threads = argValue(args, "--threads") ?? "2";
    const r = await runLlamaBench(bin, ["-m", model, "-t", threads, "-p", "512", "-n", "64", "-r", "1"]);
    process.stdout.write(`${JSON.stringify(r)}\n`);
  }
}
