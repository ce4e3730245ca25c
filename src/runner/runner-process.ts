// The runner's state machine: holds one engine shard and runs its tasks (one at a time, or a few
// interleaved on a pipeline's first stage: see runnerTaskSlots). It sees the world
// only through a RunnerChannel (main.ts binds it to the fork IPC channel; tests bind it to an array),
// and validates every message it receives.
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import type { Engine, EngineModule, EngineShardSpec } from "../engine/engine.ts";
import { assertNever } from "../shared/assert.ts";
import type { TaskId } from "../shared/ids.ts";
import type { GenerationParams, RunnerStatus } from "../shared/types.ts";
import type { RunnerPipeline } from "../pipeline/runner-pipeline.ts";
import type { StageEndpoint, StageRole } from "../pipeline/stage-endpoint.ts";
import { runnerTaskSlots } from "../shared/task-slots.ts";
import { errorMessage, generate } from "./generate.ts";
import type { GenerationOutcome } from "./generate.ts";
import { parseToRunnerMessage, truncateText } from "./protocol.ts";
import type { FromRunnerMessage, RunnerLogLevel, ToRunnerMessage } from "./protocol.ts";

export interface RunnerChannel {
  send(message: FromRunnerMessage): void;
  /** Flushes what was sent, then ends the process. */
  exit(code: number): Promise<void>;
}

interface CurrentTask {
  readonly taskId: TaskId;
  cancelRequested: boolean;
}

export class RunnerProcess {
  private status: RunnerStatus = { kind: "Idle" };
  private engine: Engine | null = null;
  /** Tasks started and not yet ended, in start order. */
  private readonly tasks = new Map<TaskId, CurrentTask>();
  /** How many tasks may run at once; known once the shard (and its pipeline role) is loaded. */
  private taskSlots = 1;
  /** Load, warmup and tasks in progress; shutdown waits for each to reach a step boundary. */
  private readonly activeWork = new Set<Promise<void>>();
  private shuttingDown = false;
  /** Set when the loaded shard is one stage of a multi-stage pipeline. */
  private pipeline: RunnerPipeline | null = null;
  /** The next stage's endpoint, kept when it arrives before the load finished. */
  private downstreamEndpoint: StageEndpoint | null = null;

  constructor(private readonly channel: RunnerChannel) {}

  start(): void {
    this.channel.send({ type: "status", status: this.status });
  }

  handleRaw(raw: unknown): void {
    const parsed = parseToRunnerMessage(raw);
    if (!parsed.ok) {
      this.log("warn", "dropped an invalid message from the supervisor", { error: parsed.error });
      return;
    }
    this.handle(parsed.message);
  }

  handle(message: ToRunnerMessage): void {
    switch (message.type) {
      case "load":
        return this.load(message.spec, message.engineModule, message.stage ?? null);
      case "setDownstream":
        this.downstreamEndpoint = message.endpoint;
        this.pipeline?.setDownstream(message.endpoint);
        return;
      case "warmup":
        return this.warmup();
      case "startTask":
        return this.startTask(message.taskId, message.params);
      case "cancel":
        return this.cancel(message.taskId);
      case "cancelAll":
        return this.cancelAll();
      case "shutdown":
        return this.shutdown();
      default:
        return assertNever(message);
    }
  }

  /** Fatal errors outside any handler (uncaught exceptions) end the runner the same way. */
  fail(reason: string): void {
    this.setStatus({ kind: "Failed", reason: truncateText(reason) });
    void this.channel.exit(1);
  }

  private load(spec: EngineShardSpec, engineModule: string, stage: StageRole | null): void {
    if (this.status.kind !== "Idle" || this.shuttingDown) {
      this.log("warn", "load ignored: the runner is not Idle", { status: this.status.kind });
      return;
    }
    this.setStatus({ kind: "Loading", layersLoaded: 0, layerCount: spec.layerEnd - spec.layerStart });
    this.taskSlots = runnerTaskSlots(stage?.stageCount ?? 1);
    this.runGuarded(async () => {
      const engine = (await importEngineModule(engineModule)).createEngine(spec);
      this.engine = engine;
      await engine.load((layersLoaded, layerCount) => this.setStatus({ kind: "Loading", layersLoaded, layerCount }));
      if (stage !== null) await this.startPipeline(stage, engine);
      this.setStatus({ kind: "Loaded" });
    });
  }

  private async startPipeline(stage: StageRole, engine: Engine): Promise<void> {
    if (engine.openStageSequence === undefined) {
      throw new Error(`this engine cannot run pipeline stage ${stage.stageIndex + 1}/${stage.stageCount} (no openStageSequence)`);
    }
    // Loaded only by pipeline stages: a single-node runner never pays for the stage links and pino.
    const { forwardingLogger, RunnerPipeline } = await import("../pipeline/runner-pipeline.ts");
    const logger = forwardingLogger((level, message, fields) => this.log(level, message, { ...fields, stage: stage.stageIndex }));
    const pipeline = new RunnerPipeline(stage, engine, logger, {
      listening: (port) => this.channel.send({ type: "stageListening", port }),
      slots: (openSlotCount) => this.channel.send({ type: "stageSlots", openSlotCount }),
      engineBroken: (reason) => this.fail(reason),
    });
    this.pipeline = pipeline;
    pipeline.setDownstream(this.downstreamEndpoint);
    await pipeline.start();
  }

  private warmup(): void {
    const engine = this.engine;
    if (this.status.kind !== "Loaded" || engine === null || this.shuttingDown) {
      this.log("warn", "warmup ignored: the runner is not Loaded", { status: this.status.kind });
      return;
    }
    this.setStatus({ kind: "WarmingUp" });
    this.runGuarded(async () => {
      await engine.warmup();
      this.setStatus({ kind: "Ready" });
    });
  }

  private startTask(taskId: TaskId, params: GenerationParams): void {
    const engine = this.engine;
    if (this.tasks.has(taskId)) {
      this.log("warn", "startTask ignored: the task is already running", { taskId });
      return;
    }
    const refusal = this.refusalReason();
    if (refusal !== null || engine === null) {
      this.channel.send(refusedTask(taskId, refusal ?? "runner has no engine"));
      return;
    }
    const task: CurrentTask = { taskId, cancelRequested: false };
    this.tasks.set(taskId, task);
    this.reportTasks();
    this.runGuarded(() => this.runTask(engine, task, params));
  }

  private refusalReason(): string | null {
    if (this.shuttingDown) return "runner is shutting down";
    if (this.pipeline !== null && !this.pipeline.isFirstStage) return "a later pipeline stage does not start tasks";
    if (this.status.kind !== "Ready" && this.status.kind !== "Running") return `runner is not ready (status ${this.status.kind})`;
    if (this.tasks.size >= this.taskSlots) {
      return `runner is busy with ${[...this.tasks.keys()].join(", ")} (it runs ${this.taskSlots} task${this.taskSlots === 1 ? "" : "s"} at once)`;
    }
    return null;
  }

  /** Running with the tasks in progress, or Ready once none is left. */
  private reportTasks(): void {
    const taskIds = [...this.tasks.keys()];
    this.setStatus(taskIds.length === 0 ? { kind: "Ready" } : { kind: "Running", taskIds });
  }

  private async runTask(engine: Engine, task: CurrentTask, params: GenerationParams): Promise<void> {
    const pipeline = this.pipeline;
    const outcome = await generate(
      pipeline === null ? engine : pipeline.engineForTask(engine, task.taskId, () => task.cancelRequested),
      { taskId: task.taskId, params },
      {
        isCancelled: () => task.cancelRequested,
        onPrefillProgress: (processedTokens, totalTokens) =>
          this.channel.send({ type: "prefillProgress", taskId: task.taskId, processedTokens, totalTokens }),
        onChunk: (chunk) => this.channel.send({ type: "chunk", taskId: task.taskId, chunk }),
      },
    );
    this.tasks.delete(task.taskId);
    this.channel.send(taskEndedMessage(task.taskId, outcome));
    if (outcome.status === "Failed" && outcome.engineBroken) {
      // The engine threw mid-computation: its state may be corrupt, so this process must not serve again.
      this.fail(`engine failed during task ${task.taskId}: ${outcome.failureReason}`);
      return;
    }
    this.reportTasks();
  }

  private cancel(taskId: TaskId): void {
    // Unknown and finished ids are normal (cancel races the task's end): nothing to do.
    const task = this.tasks.get(taskId);
    if (task === undefined) return;
    task.cancelRequested = true;
    this.pipeline?.onCancel(taskId);
  }

  private cancelAll(): void {
    for (const taskId of this.tasks.keys()) this.cancel(taskId);
  }

  private shutdown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.cancelAll();
    this.setStatus({ kind: "ShuttingDown" });
    void (async () => {
      await Promise.all(this.activeWork);
      try {
        await this.pipeline?.close();
      } catch (error) {
        this.log("error", "closing the pipeline stage failed", { error: errorMessage(error) });
      }
      try {
        this.engine?.close();
      } catch (error) {
        this.log("error", "engine.close failed", { error: errorMessage(error) });
      }
      this.setStatus({ kind: "Shutdown" });
      await this.channel.exit(0);
    })();
  }

  /** Runs load/warmup/task work; any throw there is an engine fault that ends the runner. */
  private runGuarded(work: () => Promise<void>): void {
    const done = (async () => {
      try {
        await work();
      } catch (error) {
        this.fail(errorMessage(error));
      }
    })();
    this.activeWork.add(done);
    void done.finally(() => this.activeWork.delete(done));
  }

  private setStatus(status: RunnerStatus): void {
    if (this.status.kind === "Failed" || this.status.kind === "Shutdown") return;
    // Once shutting down, only the way out may be reported (ShuttingDown → Shutdown | Failed).
    const exiting = status.kind === "ShuttingDown" || status.kind === "Shutdown" || status.kind === "Failed";
    if (this.shuttingDown && !exiting) return;
    this.status = status;
    this.channel.send({ type: "status", status });
  }

  private log(level: RunnerLogLevel, message: string, fields: Record<string, unknown>): void {
    this.channel.send({ type: "log", level, message: truncateText(message), fields });
  }
}

function refusedTask(taskId: TaskId, reason: string): FromRunnerMessage {
  return {
    type: "taskEnded",
    taskId,
    status: "Failed",
    finishReason: "error",
    failureReason: truncateText(reason),
    failureCode: "runner_failed",
    promptTokens: 0,
    tokensGenerated: 0,
  };
}

function taskEndedMessage(taskId: TaskId, outcome: GenerationOutcome): FromRunnerMessage {
  const failed = outcome.status === "Failed";
  return {
    type: "taskEnded",
    taskId,
    status: outcome.status,
    finishReason: outcome.finishReason,
    failureReason: failed ? truncateText(outcome.failureReason) : null,
    failureCode: failed ? outcome.failureCode : null,
    promptTokens: outcome.promptTokens,
    tokensGenerated: outcome.tokensGenerated,
  };
}

async function importEngineModule(engineModule: string): Promise<EngineModule> {
  const specifier = isAbsolute(engineModule) ? pathToFileURL(engineModule).href : engineModule;
  const loaded: unknown = await import(specifier);
  if (!isEngineModule(loaded)) throw new Error(`engine module ${engineModule} does not export createEngine(spec)`);
  return loaded;
}

function isEngineModule(value: unknown): value is EngineModule {
  return typeof value === "object" && value !== null && typeof (value as { createEngine?: unknown }).createEngine === "function";
}
