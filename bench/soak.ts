// `npm run bench -- soak [--requests N] [--concurrency N] [--step-ms MS] [--seed N] [--no-kill]`
//
// A soak test of one real node on loopback (HTTP, master, worker, a runner child process serving the
// FakeEngine test double): N requests from `concurrency` clients at once — most streaming, a third
// aborted at random points, some cancelled by id, some with invalid bodies, some non-streaming — and
// halfway through the runner is SIGKILLed. Every request must end in a complete answer, a clean
// cancellation or a clear error; afterwards no task may be left in State, every runner must be
// Ready, and the server's sockets, this process's file handles and its RSS must be back near where
// they started. Bounded in count and time; stops by itself. One JSON line per phase, the summary
// last; the exit code is 1 when a check failed.
import { readdirSync } from "node:fs";
import http from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { State } from "../src/shared/state.ts";
import { runnerPids } from "../test/support/processes.ts";
import { FAKE_MODEL_ID, isIdle, startTestNode } from "../test/support/test-node.ts";

export interface SoakOptions {
  readonly requestCount: number;
  readonly concurrency: number;
  /** FakeEngine decode step. */
  readonly stepMs: number;
  readonly seed: number;
  /** SIGKILL the runner once half the requests have started. */
  readonly killRunner: boolean;
  /** A request with no answer, end or error within this is a hang. */
  readonly requestTimeoutMs: number;
  /** The whole run stops (and fails) after this. */
  readonly runTimeoutMs: number;
  readonly log?: (line: Record<string, unknown>) => void;
}

export const SOAK_DEFAULTS: SoakOptions = {
  requestCount: 600,
  concurrency: 32,
  stepMs: 2,
  seed: 1,
  killRunner: true,
  requestTimeoutMs: 30_000,
  runTimeoutMs: 300_000,
};

type Kind = "stream" | "json" | "abort" | "cancelById" | "invalid";
type OutcomeKind = "completed" | "cancelled" | "error_4xx" | "error_5xx" | "unexplained";

interface Outcome {
  readonly kind: OutcomeKind;
  readonly requestKind: Kind;
  readonly detail: string;
}

export interface SoakReport {
  readonly requests: number;
  readonly completed: number;
  readonly cancelled: number;
  readonly errors_4xx: number;
  readonly errors_5xx: number;
  readonly unexplained: number;
  readonly unexplained_examples: readonly string[];
  /** 4xx answers to requests that were valid (none expected: the queue is deeper than the concurrency). */
  readonly unexpected_4xx: number;
  readonly leaked_tasks: number;
  readonly runners_ready: boolean;
  readonly runner_killed: boolean;
  /** Runner failures State recorded (the SIGKILL shows here) and tasks failed with them. */
  readonly runner_failures: number;
  readonly tasks_failed_by_runner: number;
  readonly live_task_streams: number;
  readonly sockets_start: number;
  readonly sockets_end: number;
  readonly fds_start: number;
  readonly fds_end: number;
  readonly rss_start_mb: number;
  readonly rss_end_mb: number;
  readonly rss_growth_mb: number;
  /** JS heap after a full GC: what the process really retains (RSS also holds freed pages). */
  readonly heap_growth_mb: number;
  readonly duration_ms: number;
  readonly seed: number;
  readonly ok: boolean;
  readonly failures: readonly string[];
}

/** A small seeded PRNG (mulberry32): one printed seed replays the same mix of requests. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INVALID_BODIES: readonly { readonly contentType: string; readonly body: Buffer }[] = [
  { contentType: "application/json", body: Buffer.from("{") },
  { contentType: "application/json", body: Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID })) },
  { contentType: "application/json", body: Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID, messages: [] })) },
  { contentType: "application/json", body: Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID, messages: [{ role: "wizard", content: "x" }] })) },
  { contentType: "application/json", body: Buffer.from(JSON.stringify({ model: "no-such-model", messages: [{ role: "user", content: "x" }] })) },
  { contentType: "application/json", body: Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID, messages: [{ role: "user", content: "x" }], max_tokens: -1 })) },
  { contentType: "text/plain", body: Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID, messages: [{ role: "user", content: "x" }] })) },
  { contentType: "application/json", body: Buffer.from(`{"model":"${FAKE_MODEL_ID}","messages":${"[".repeat(10_000)}`) },
  { contentType: "application/json", body: Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]) },
  { contentType: "application/json", body: Buffer.alloc(5 * 1024 * 1024, 0x20) },
];

function chatBody(random: () => number, stream: boolean): Buffer {
  const maxTokens = 4 + Math.floor(random() * 28);
  const words = 1 + Math.floor(random() * 40);
  return Buffer.from(JSON.stringify({ model: FAKE_MODEL_ID, stream, max_tokens: maxTokens, messages: [{ role: "user", content: "hello ".repeat(words) }] }));
}

interface Plan {
  readonly kind: Kind;
  readonly body: Buffer;
  readonly contentType: string;
  /** abort: after this many data events (chunks), or after abortAfterMs when null. */
  readonly abortAfterChunks: number | null;
  readonly abortAfterMs: number;
  readonly cancelAfterChunks: number;
}

function planRequest(random: () => number): Plan {
  const r = random();
  const kind: Kind = r < 1 / 3 ? "abort" : r < 0.45 ? "cancelById" : r < 0.55 ? "invalid" : r < 0.65 ? "json" : "stream";
  if (kind === "invalid") {
    const invalid = INVALID_BODIES[Math.floor(random() * INVALID_BODIES.length)]!;
    return { kind, body: invalid.body, contentType: invalid.contentType, abortAfterChunks: null, abortAfterMs: 0, cancelAfterChunks: 0 };
  }
  return {
    kind,
    body: chatBody(random, kind !== "json"),
    contentType: "application/json",
    // Half the aborts land after some chunks, half at a random moment (queue, prefill, mid-answer).
    abortAfterChunks: random() < 0.5 ? Math.floor(random() * 8) : null,
    abortAfterMs: Math.floor(random() * 150),
    cancelAfterChunks: 1 + Math.floor(random() * 4),
  };
}

interface SseState {
  buffer: string;
  chunks: number;
  done: boolean;
  finishReason: string | null;
  error: { type?: string; code?: string; message?: string } | null;
  id: string | null;
}

/** Feeds SSE text; returns the number of data events parsed from it. */
function feedSse(state: SseState, text: string): number {
  state.buffer += text;
  let events = 0;
  for (let end = state.buffer.indexOf("\n\n"); end !== -1; end = state.buffer.indexOf("\n\n")) {
    const block = state.buffer.slice(0, end);
    state.buffer = state.buffer.slice(end + 2);
    for (const line of block.split("\n")) {
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      events++;
      if (data === "[DONE]") {
        state.done = true;
        continue;
      }
      const parsed = JSON.parse(data) as { id?: string; error?: SseState["error"]; choices?: { finish_reason?: string | null }[] };
      if (parsed.error !== undefined) state.error = parsed.error;
      if (parsed.id !== undefined) state.id ??= parsed.id;
      const finish = parsed.choices?.[0]?.finish_reason;
      if (finish !== undefined && finish !== null) state.finishReason = finish;
      state.chunks++;
    }
  }
  return events;
}

function cancelById(port: number, id: string): void {
  const request = http.request({ host: "127.0.0.1", port, method: "POST", path: `/v1/cancel/${encodeURIComponent(id)}`, agent: false });
  request.on("response", (response) => response.resume());
  request.on("error", () => {});
  request.end();
}

function classifyHttpError(status: number, body: string, kind: Kind): Outcome {
  let message = "";
  try {
    message = String((JSON.parse(body) as { error?: { message?: unknown } }).error?.message ?? "");
  } catch {
    return { kind: "unexplained", requestKind: kind, detail: `${status} without the API's error shape: ${body.slice(0, 120)}` };
  }
  if (message === "") return { kind: "unexplained", requestKind: kind, detail: `${status} with no message` };
  return { kind: status >= 500 ? "error_5xx" : "error_4xx", requestKind: kind, detail: `${status} ${message.slice(0, 120)}` };
}

/** One request over its own socket (agent: false), so aborting it is a real TCP close. */
function runRequest(port: number, plan: Plan, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    let aborted = false;
    const finish = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(hang);
      clearTimeout(abortTimer);
      resolve(outcome);
    };
    const request = http.request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/v1/chat/completions",
      headers: { "content-type": plan.contentType, "content-length": plan.body.byteLength },
      agent: false,
    });
    const abort = (): void => {
      if (settled) return;
      aborted = true;
      request.destroy();
      finish({ kind: "cancelled", requestKind: plan.kind, detail: "client aborted" });
    };
    const hang = setTimeout(() => {
      request.destroy();
      finish({ kind: "unexplained", requestKind: plan.kind, detail: `no end within ${timeoutMs} ms` });
    }, timeoutMs);
    const abortTimer = plan.kind === "abort" && plan.abortAfterChunks === null ? setTimeout(abort, plan.abortAfterMs) : undefined;
    request.on("error", (error) => {
      if (!aborted) finish({ kind: "unexplained", requestKind: plan.kind, detail: `socket error: ${error.message}` });
    });
    request.on("response", (response) => {
      const status = response.statusCode ?? 0;
      const isSse = (response.headers["content-type"] ?? "").startsWith("text/event-stream");
      const sse: SseState = { buffer: "", chunks: 0, done: false, finishReason: null, error: null, id: null };
      let body = "";
      let cancelSent = false;
      response.setEncoding("utf8");
      response.on("data", (text: string) => {
        if (!isSse || status !== 200) {
          body += text;
          return;
        }
        feedSse(sse, text);
        if (plan.kind === "abort" && plan.abortAfterChunks !== null && sse.chunks >= plan.abortAfterChunks) abort();
        if (plan.kind === "cancelById" && !cancelSent && sse.id !== null && sse.chunks >= plan.cancelAfterChunks) {
          cancelSent = true;
          cancelById(port, sse.id);
        }
      });
      response.on("error", () => {});
      response.on("end", () => {
        if (status !== 200) return finish(classifyHttpError(status, body, plan.kind));
        if (!isSse) return finish(classifyJson(body, plan.kind));
        finish(classifySse(sse, plan.kind));
      });
      response.on("close", () => {
        if (!aborted) finish({ kind: "unexplained", requestKind: plan.kind, detail: "connection closed before the end of the response" });
      });
    });
    request.end(plan.body);
  });
}

function classifyJson(body: string, kind: Kind): Outcome {
  try {
    const parsed = JSON.parse(body) as { choices?: { finish_reason?: string }[] };
    const finish = parsed.choices?.[0]?.finish_reason;
    if (finish === "stop" || finish === "length") return { kind: "completed", requestKind: kind, detail: finish };
    if (finish === "cancelled") return { kind: "cancelled", requestKind: kind, detail: "cancelled" };
    return { kind: "unexplained", requestKind: kind, detail: `200 JSON without a finish reason: ${body.slice(0, 120)}` };
  } catch {
    return { kind: "unexplained", requestKind: kind, detail: `200 that is not JSON: ${body.slice(0, 120)}` };
  }
}

function classifySse(sse: SseState, kind: Kind): Outcome {
  if (sse.error !== null) {
    const serverSide = sse.error.type === "server_error" || sse.error.type === "service_unavailable_error";
    if (typeof sse.error.message !== "string" || sse.error.message === "") return { kind: "unexplained", requestKind: kind, detail: "error event without a message" };
    return { kind: serverSide ? "error_5xx" : "error_4xx", requestKind: kind, detail: `stream error ${sse.error.code}: ${sse.error.message.slice(0, 120)}` };
  }
  if (!sse.done) return { kind: "unexplained", requestKind: kind, detail: "stream ended without [DONE] or an error event" };
  if (sse.finishReason === "cancelled") return { kind: "cancelled", requestKind: kind, detail: "cancelled by id" };
  if (sse.finishReason === "stop" || sse.finishReason === "length") return { kind: "completed", requestKind: kind, detail: sse.finishReason };
  return { kind: "unexplained", requestKind: kind, detail: `[DONE] after finish reason ${sse.finishReason}` };
}

const fdCount = (): number => readdirSync("/proc/self/fd").length;
const rssMb = (): number => process.memoryUsage().rss / (1024 * 1024);
const heapMb = (): number => process.memoryUsage().heapUsed / (1024 * 1024);

function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  gc();
}

async function settleUntil(condition: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const runnersReady = (state: State): boolean => {
  const runners = Object.values(state.runners);
  return runners.length > 0 && runners.every((r) => r.status.kind === "Ready");
};

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const startedAtMs = performance.now();
  const random = prng(options.seed);
  const node = await startTestNode({ engineOptions: { tokenDelayMs: options.stepMs } });
  const failures: string[] = [];
  const counts: Record<OutcomeKind, number> = { completed: 0, cancelled: 0, error_4xx: 0, error_5xx: 0, unexplained: 0 };
  const unexplained: string[] = [];
  let unexpected4xx = 0;
  let runnerKilled = false;
  try {
    const port = Number(new URL(node.url).port);
    // Warm up (placement, runner start) before the baseline, so the baseline is a serving node.
    const warm = await runRequest(port, { kind: "json", body: chatBody(random, false), contentType: "application/json", abortAfterChunks: null, abortAfterMs: 0, cancelAfterChunks: 0 }, 60_000);
    if (warm.kind !== "completed") throw new Error(`warm-up request failed: ${warm.detail}`);
    await node.waitFor(isIdle, "idle after warm-up", 30_000);
    collectGarbage();
    const socketsStart = await node.node.api.connectionCount();
    const fdsStart = fdCount();
    const rssStartMb = rssMb();
    const heapStartMb = heapMb();
    log({ phase: "baseline", sockets: socketsStart, fds: fdsStart, rss_mb: Math.round(rssStartMb) });

    let nextIndex = 0;
    const runDeadlineMs = startedAtMs + options.runTimeoutMs;
    const client = async (): Promise<void> => {
      while (nextIndex < options.requestCount && performance.now() < runDeadlineMs) {
        const index = nextIndex++;
        if (options.killRunner && !runnerKilled && index >= options.requestCount / 2) {
          runnerKilled = true;
          const pids = runnerPids(process.pid);
          for (const pid of pids) process.kill(pid, "SIGKILL");
          log({ phase: "runner_killed", at_request: index, pids });
        }
        const plan = planRequest(random);
        const outcome = await runRequest(port, plan, options.requestTimeoutMs);
        counts[outcome.kind]++;
        if (outcome.kind === "error_4xx" && plan.kind !== "invalid") {
          unexpected4xx++;
          if (unexplained.length < 10) unexplained.push(`unexpected 4xx for a ${plan.kind} request: ${outcome.detail}`);
        }
        if (outcome.kind === "unexplained" && unexplained.length < 10) unexplained.push(`${plan.kind}: ${outcome.detail}`);
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, client));
    const requests = Object.values(counts).reduce((a, b) => a + b, 0);
    log({ phase: "requests_done", requests, ...counts, duration_ms: Math.round(performance.now() - startedAtMs) });

    const settled = await settleUntil(() => isIdle(node.state()), 30_000);
    if (!settled) failures.push("the node did not return to idle (tasks left or a runner not Ready) within 30 s");
    await settleUntil(async () => (await node.node.api.connectionCount()) <= socketsStart, 5_000);
    await settleUntil(() => fdCount() <= fdsStart + 2, 5_000);
    collectGarbage();
    const state = node.state();
    const report = {
      requests,
      completed: counts.completed,
      cancelled: counts.cancelled,
      errors_4xx: counts.error_4xx,
      errors_5xx: counts.error_5xx,
      unexplained: counts.unexplained,
      unexplained_examples: unexplained,
      unexpected_4xx: unexpected4xx,
      leaked_tasks: Object.keys(state.tasks).length,
      runners_ready: runnersReady(state),
      runner_killed: runnerKilled,
      runner_failures: node.events.filter((e) => e.event.type === "RunnerStatusUpdated" && e.event.status.kind === "Failed").length,
      tasks_failed_by_runner: node.events.filter((e) => e.event.type === "TaskStatusUpdated" && e.event.failureCode === "runner_failed").length,
      live_task_streams: node.node.api.liveTaskCount(),
      sockets_start: socketsStart,
      sockets_end: await node.node.api.connectionCount(),
      fds_start: fdsStart,
      fds_end: fdCount(),
      rss_start_mb: Math.round(rssStartMb),
      rss_end_mb: Math.round(rssMb()),
      rss_growth_mb: Math.round((rssMb() - rssStartMb) * 10) / 10,
      heap_growth_mb: Math.round((heapMb() - heapStartMb) * 10) / 10,
      duration_ms: Math.round(performance.now() - startedAtMs),
      seed: options.seed,
    };
    failures.push(...judge(report, options));
    return { ...report, ok: failures.length === 0, failures };
  } finally {
    await node.stop();
  }
}

/** RSS may grow by this much (JIT, heap sizing, allocator caches) without counting as a leak. */
export const RSS_GROWTH_MB_MAX = 100;
/** File handles that may come and go (a timer fd, a log stream) without counting as a leak. */
const FD_GROWTH_MAX = 4;

function judge(report: Omit<SoakReport, "ok" | "failures">, options: SoakOptions): string[] {
  const failures: string[] = [];
  if (report.requests !== options.requestCount) failures.push(`only ${report.requests} of ${options.requestCount} requests ran before the time limit`);
  if (report.unexplained > 0) failures.push(`${report.unexplained} request(s) ended without an answer, a cancellation or a clear error`);
  if (report.unexpected_4xx > 0) failures.push(`${report.unexpected_4xx} valid request(s) were refused`);
  if (report.leaked_tasks > 0) failures.push(`${report.leaked_tasks} task(s) left in State`);
  if (!report.runners_ready) failures.push("not every runner is Ready");
  if (options.killRunner && report.runner_failures === 0) failures.push("the runner kill was not seen");
  if (report.live_task_streams > 0) failures.push(`${report.live_task_streams} task stream(s) still open in the API`);
  if (report.sockets_end > report.sockets_start) failures.push(`server sockets ${report.sockets_start} → ${report.sockets_end}`);
  if (report.fds_end > report.fds_start + FD_GROWTH_MAX) failures.push(`file handles ${report.fds_start} → ${report.fds_end}`);
  if (report.rss_growth_mb > RSS_GROWTH_MB_MAX) failures.push(`RSS grew by ${report.rss_growth_mb} MB`);
  if (options.killRunner && report.completed === 0) failures.push("nothing completed");
  return failures;
}

function option(args: readonly string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  const value = i === -1 ? undefined : Number(args[i + 1]);
  return value !== undefined && Number.isFinite(value) && value >= 0 ? value : fallback;
}

export async function main(args: string[]): Promise<void> {
  const options: SoakOptions = {
    ...SOAK_DEFAULTS,
    requestCount: option(args, "--requests", SOAK_DEFAULTS.requestCount),
    concurrency: option(args, "--concurrency", SOAK_DEFAULTS.concurrency),
    stepMs: option(args, "--step-ms", SOAK_DEFAULTS.stepMs),
    seed: option(args, "--seed", Math.floor(Math.random() * 2 ** 31)),
    killRunner: !args.includes("--no-kill"),
    log: (line) => process.stdout.write(`${JSON.stringify(line)}\n`),
  };
  process.stdout.write(`${JSON.stringify({ phase: "start", requests: options.requestCount, concurrency: options.concurrency, step_ms: options.stepMs, seed: options.seed })}\n`);
  const report = await runSoak(options);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  if (!report.ok) process.exitCode = 1;
}
