// Parent side of a runner: forks the child, turns its messages into RunnerReports, and watches it.
// Whatever way the process ends — exit, crash, signal, the watchdog's SIGKILL — the worker gets
// exactly one `exited` report, after every report the child managed to send. Restarting is the
// worker's decision, not ours: it calls spawnRunner again.
import { fork } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { EngineShardSpec } from "../engine/engine.ts";
import type { StageEndpoint, StageRole } from "../pipeline/stage-endpoint.ts";
import { assertNever } from "../shared/assert.ts";
import type { RunnerId, TaskId } from "../shared/ids.ts";
import { RUNNER_HEARTBEAT_INTERVAL_MS, RUNNER_HEARTBEAT_TIMEOUT_MS } from "../shared/limits.ts";
import { HEARTBEAT_INTERVAL_ARG } from "./main-args.ts";
import { parseFromRunnerMessage, truncateText } from "./protocol.ts";
import type { FromRunnerMessage, RunnerLogLevel, ToRunnerMessage } from "./protocol.ts";
import { RUNNER_NODE_FLAGS } from "./runner-node-flags.ts";
import type { RunnerHandle, RunnerReport, RunnerSpawnOptions, RunnerTask, SpawnRunner } from "./runner-handle.ts";

/** After `shutdown` is sent, how long the child may take to exit before it is killed. */
export const RUNNER_SHUTDOWN_GRACE_MS = 5_000;
/**
 * How long a fresh child may take to send its first message. Starting Node (and, in development, the
 * TypeScript loader) on a busy machine can take seconds, which must not read as a hang.
 */
export const RUNNER_STARTUP_TIMEOUT_MS = 30_000;

/** Structured logging in pino's argument order, so a pino logger can be passed as is. */
export interface RunnerLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

/** Default: warnings and errors to stderr, nothing else. */
export const stderrRunnerLogger: RunnerLogger = {
  debug: () => {},
  info: () => {},
  warn: (fields, message) => process.stderr.write(`WARN ${message} ${JSON.stringify(fields)}\n`),
  error: (fields, message) => process.stderr.write(`ERROR ${message} ${JSON.stringify(fields)}\n`),
};

export interface RunnerSupervisorOptions {
  /** Kill the child when no message (heartbeats included) arrives for this long. */
  readonly watchdogTimeoutMs?: number;
  /** Before the child's first message the watchdog waits this long instead (at least watchdogTimeoutMs). */
  readonly startupTimeoutMs?: number;
  /** Passed to the child; only tests shorten it. */
  readonly heartbeatIntervalMs?: number;
  readonly shutdownGraceMs?: number;
  readonly logger?: RunnerLogger;
}

/** A RunnerHandle plus what tests and diagnostics need to see of the process. */
export interface SupervisedRunner extends RunnerHandle {
  /** null when the process could not be started. */
  readonly pid: number | null;
  /** Resolves after the one `exited` report. */
  readonly exited: Promise<void>;
  /** Sends anything, unvalidated: only tests use it, to check that the child drops malformed input. */
  sendUncheckedForTesting(message: unknown): void;
}

export function createSpawnRunner(options: RunnerSupervisorOptions = {}): SpawnRunner {
  return (spawnOptions) => spawnSupervisedRunner(spawnOptions, options);
}

export const spawnRunner: SpawnRunner = createSpawnRunner();

export function spawnSupervisedRunner(spawnOptions: RunnerSpawnOptions, options: RunnerSupervisorOptions = {}): SupervisedRunner {
  return new ChildRunner(spawnOptions, options);
}

/**
 * main.ts under tsx (tests, `node --import tsx`), main.js next to this file when compiled to dist/.
 * A .ts child needs the tsx loader; a .js child gets no inherited flags (an --inspect port would clash),
 * only the runner's own (RUNNER_NODE_FLAGS).
 */
export function runnerEntry(): { readonly path: string; readonly execArgv: readonly string[] } {
  const ownUrl = import.meta.url;
  const extension = ownUrl.endsWith(".ts") ? ".ts" : ".js";
  const path = fileURLToPath(new URL(`./main${extension}`, ownUrl));
  if (extension === ".js") return { path, execArgv: [...RUNNER_NODE_FLAGS] };
  return { path, execArgv: [...RUNNER_NODE_FLAGS, "--import", tsxLoaderSpecifier()] };
}

function tsxLoaderSpecifier(): string {
  try {
    return import.meta.resolve("tsx");
  } catch {
    return "tsx";
  }
}

/** Lines a child prints are logged, cut to this length (a runaway native log must not flood memory). */
const CHILD_OUTPUT_LINE_LENGTH_MAX = 4096;

class ChildRunner implements SupervisedRunner {
  readonly runnerId: RunnerId;
  readonly pid: number | null;
  readonly exited: Promise<void>;
  private readonly child: ChildProcess;
  private readonly onReport: (report: RunnerReport) => void;
  private readonly logger: RunnerLogger;
  private readonly watchdogTimeoutMs: number;
  private readonly startupTimeoutMs: number;
  private started = false;
  private readonly shutdownGraceMs: number;
  private watchdog: NodeJS.Timeout;
  private hasExited = false;
  private shutdownRequested = false;
  private resolveExited: () => void = () => {};
  /** Why we killed the child, when we did; it names the exit better than the bare signal. */
  private killReason: string | null = null;

  constructor(spawnOptions: RunnerSpawnOptions, options: RunnerSupervisorOptions) {
    this.runnerId = spawnOptions.runnerId;
    this.onReport = spawnOptions.onReport;
    this.logger = options.logger ?? stderrRunnerLogger;
    this.watchdogTimeoutMs = options.watchdogTimeoutMs ?? RUNNER_HEARTBEAT_TIMEOUT_MS;
    this.startupTimeoutMs = Math.max(options.startupTimeoutMs ?? RUNNER_STARTUP_TIMEOUT_MS, this.watchdogTimeoutMs);
    this.shutdownGraceMs = options.shutdownGraceMs ?? RUNNER_SHUTDOWN_GRACE_MS;
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));

    const entry = runnerEntry();
    const heartbeatIntervalMs = options.heartbeatIntervalMs ?? RUNNER_HEARTBEAT_INTERVAL_MS;
    this.child = fork(entry.path, [`${HEARTBEAT_INTERVAL_ARG}${heartbeatIntervalMs}`], {
      execArgv: [...entry.execArgv],
      serialization: "advanced",
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    this.pid = this.child.pid ?? null;
    this.watchdog = setTimeout(() => this.onWatchdog(), this.startupTimeoutMs).unref();

    this.child.on("message", (raw: unknown) => this.onMessage(raw));
    // 'close' comes after 'exit' once stdio and the IPC channel are drained, so no report is lost.
    this.child.on("close", (code, signal) => this.reportExited(exitDescription(code, signal)));
    this.child.on("error", (error) => this.onChildError(error));
    this.forwardOutput(this.child.stdout, "info");
    this.forwardOutput(this.child.stderr, "warn");
  }

  load(spec: EngineShardSpec, engineModule: string, stage?: StageRole): void {
    this.send(stage === undefined ? { type: "load", spec, engineModule } : { type: "load", spec, engineModule, stage });
  }

  setDownstream(endpoint: StageEndpoint | null): void {
    this.send({ type: "setDownstream", endpoint });
  }

  warmup(): void {
    this.send({ type: "warmup" });
  }

  startTask(task: RunnerTask): void {
    this.send({ type: "startTask", taskId: task.taskId, params: task.params });
  }

  cancel(taskId: TaskId): void {
    this.send({ type: "cancel", taskId });
  }

  shutdown(): Promise<void> {
    if (this.hasExited || this.shutdownRequested) return this.exited;
    this.shutdownRequested = true;
    this.send({ type: "shutdown" });
    const grace = setTimeout(() => {
      this.killWith(`runner did not shut down within ${this.shutdownGraceMs} ms`);
    }, this.shutdownGraceMs);
    void this.exited.then(() => clearTimeout(grace));
    return this.exited;
  }

  kill(): void {
    if (this.hasExited) return;
    this.child.kill("SIGKILL");
  }

  sendUncheckedForTesting(message: unknown): void {
    this.sendRaw(message);
  }

  private send(message: ToRunnerMessage): void {
    this.sendRaw(message);
  }

  /** A dead or disconnected child is an operating condition, not an error: log and drop. */
  private sendRaw(message: unknown): void {
    if (this.hasExited || !this.child.connected) {
      this.logger.debug({ runnerId: this.runnerId, message }, "runner is gone; message dropped");
      return;
    }
    try {
      this.child.send(message as object, (error) => {
        if (error !== null) this.logger.debug({ runnerId: this.runnerId, error: error.message }, "send to runner failed");
      });
    } catch (error) {
      this.logger.warn({ runnerId: this.runnerId, error: String(error) }, "send to runner failed");
    }
  }

  private onMessage(raw: unknown): void {
    if (this.hasExited) return;
    this.restartWatchdog();
    const parsed = parseFromRunnerMessage(raw);
    if (!parsed.ok) {
      this.logger.warn({ runnerId: this.runnerId, error: parsed.error }, "dropped an invalid message from the runner");
      return;
    }
    const report = this.toReport(parsed.message);
    if (report !== null) this.onReport(report);
  }

  private toReport(message: FromRunnerMessage): RunnerReport | null {
    const runnerId = this.runnerId;
    switch (message.type) {
      case "status":
        return { type: "status", runnerId, status: message.status };
      case "prefillProgress":
        return { ...message, runnerId };
      case "chunk":
        return { ...message, runnerId };
      case "taskEnded":
        return { ...message, runnerId };
      case "stageListening":
      case "stageSlots":
        return { ...message, runnerId };
      case "heartbeat":
        return null;
      case "log":
        this.logger[message.level]({ ...message.fields, runnerId }, message.message);
        return null;
      default:
        return assertNever(message);
    }
  }

  private restartWatchdog(): void {
    if (this.started) {
      this.watchdog.refresh();
      return;
    }
    // The first message ends the startup allowance; from now on the heartbeat timeout applies.
    this.started = true;
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.onWatchdog(), this.watchdogTimeoutMs).unref();
  }

  private onWatchdog(): void {
    if (this.hasExited) return;
    this.logger.error({ runnerId: this.runnerId, pid: this.pid, started: this.started }, "runner stopped answering; killing it");
    this.killWith(
      this.started
        ? `runner hung: no heartbeat for ${this.watchdogTimeoutMs} ms`
        : `runner did not start: no message for ${this.startupTimeoutMs} ms`,
    );
  }

  private killWith(reason: string): void {
    if (this.hasExited) return;
    this.killReason ??= reason;
    this.child.kill("SIGKILL");
  }

  private onChildError(error: Error): void {
    this.logger.error({ runnerId: this.runnerId, error: error.message }, "runner process error");
    // A process that never started emits no 'close'; one that did will still emit it.
    if (this.child.pid === undefined) this.reportExited(`runner could not start: ${error.message}`);
  }

  private reportExited(description: string): void {
    if (this.hasExited) return;
    this.hasExited = true;
    clearTimeout(this.watchdog);
    this.onReport({ type: "exited", runnerId: this.runnerId, reason: this.killReason ?? description });
    this.resolveExited();
  }

  private forwardOutput(stream: Readable | null, level: RunnerLogLevel): void {
    if (stream === null) return;
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on("line", (line) => {
      const text = line.length > CHILD_OUTPUT_LINE_LENGTH_MAX ? truncateText(line.slice(0, CHILD_OUTPUT_LINE_LENGTH_MAX)) : line;
      this.logger[level]({ runnerId: this.runnerId, pid: this.pid }, text);
    });
  }
}

function exitDescription(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal !== null) return `runner exited with signal ${signal}`;
  return `runner exited with code ${code ?? "unknown"}`;
}
