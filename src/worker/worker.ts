// The worker loop: wake on a State change, a runner report or a timer; plan; execute one action;
// repeat until the plan is empty. All decisions are in plan.ts; this file only does I/O and keeps
// the LocalView that plan reads.
import type { EngineShardSpec } from "../engine/engine.ts";
import type { ModelRegistry } from "../models/model-card.ts";
import type { StateView, WorkerEventSink } from "../node/cluster-port.ts";
import type { RunnerHandle, RunnerReport, SpawnRunner } from "../runner/runner-handle.ts";
import { assert } from "../shared/assert.ts";
import type { Clock } from "../shared/clock.ts";
import type { NodeId, RunnerId, TaskId } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import type { State } from "../shared/state.ts";
import type { RunnerStatus } from "../shared/types.ts";
import { isTaskTerminal } from "../shared/types.ts";
import type { StageRole } from "../pipeline/stage-endpoint.ts";
import type { Instance, Shard } from "../shared/types.ts";
import type { Action, DownstreamTarget, LocalRunner, LocalTask, LocalView, TaskTimeouts } from "./plan.ts";
import { downstreamKey, plan } from "./plan.ts";

/** Actions executed in one drain; more means the plan is not converging (a bug). */
const ACTIONS_PER_DRAIN_MAX = 10_000;
/** Timer wake-up for time-based rules (restart backoff). */
const WORKER_TICK_MS = 250;

export interface WorkerOptions {
  readonly nodeId: NodeId;
  readonly stateView: StateView;
  readonly sink: WorkerEventSink;
  readonly spawnRunner: SpawnRunner;
  readonly models: ModelRegistry;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Engine module for cards that name none (the built-in GGUF engine). */
  readonly defaultEngineModule: string;
  readonly threads: number | null;
  readonly contextSize: number | null;
  /** Prefill and decode limits per task; absent: none. */
  readonly taskTimeouts?: TaskTimeouts;
  /**
   * The address this node's runners use to reach a pipeline stage on `nodeId`; null: unknown.
   * Default: 127.0.0.1 for this node, else the first address the node reported (State.nodes).
   */
  readonly nodeHost?: (nodeId: NodeId, state: State) => string | null;
  /** Pipeline stage links authenticate like node links. Default: cluster "skein", no secret, listening on 0.0.0.0. */
  readonly stageLink?: StageLinkOptions;
}

export interface StageLinkOptions {
  readonly clusterName: string;
  /** null: no authentication. */
  readonly secret: Buffer | null;
  /** Where later stages listen; 0.0.0.0 lets other nodes in, tests use 127.0.0.1. */
  readonly listenHost?: string;
  /** A stage link silent this long is dead; absent: PIPELINE_LINK_SILENCE_MS. */
  readonly silenceMs?: number;
}

export const DEFAULT_STAGE_LINK: StageLinkOptions = { clusterName: "skein", secret: null, listenHost: "0.0.0.0" };

export function defaultNodeHost(ownNodeId: NodeId): (nodeId: NodeId, state: State) => string | null {
  return (nodeId, state) => (nodeId === ownNodeId ? "127.0.0.1" : (state.nodes[nodeId]?.addresses[0] ?? null));
}

export class Worker {
  private readonly runners = new Map<RunnerId, LocalRunner>();
  private readonly handles = new Map<RunnerId, RunnerHandle>();
  private readonly tasksReportedEnded = new Set<TaskId>();
  /** Tasks stopped for running past a timeout, with why, until their runner reports them ended. */
  private readonly timedOutTasks = new Map<TaskId, string>();
  private scheduled = false;
  private stopped = false;
  private unsubscribe: (() => void) | null = null;
  private tick: NodeJS.Timeout | null = null;

  constructor(private readonly options: WorkerOptions) {}

  start(): void {
    this.unsubscribe = this.options.stateView.subscribe((_event, state) => {
      this.forgetSettledTasks(state);
      this.schedule();
    });
    this.tick = setInterval(() => this.schedule(), WORKER_TICK_MS);
    this.tick.unref();
    this.schedule();
  }

  /** Shuts every runner down (cancelling what they run) and stops planning. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.tick !== null) clearInterval(this.tick);
    for (const runnerId of this.handles.keys()) this.update(runnerId, { shuttingDown: true });
    await Promise.all([...this.handles.values()].map((h) => h.shutdown()));
    this.handles.clear();
  }

  /** For tests and /state debugging: what this worker believes about its runners. */
  localView(): LocalView {
    return {
      nodeId: this.options.nodeId,
      nowMs: this.options.clock.nowMs(),
      runners: Object.fromEntries(this.runners) as LocalView["runners"],
      tasksReportedEnded: this.tasksReportedEnded,
      nodeHosts: this.nodeHosts(this.options.stateView.state),
      ...(this.options.taskTimeouts === undefined ? {} : { taskTimeouts: this.options.taskTimeouts }),
    };
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    for (let count = 0; !this.stopped; count++) {
      assert(count < ACTIONS_PER_DRAIN_MAX, "worker plan did not converge");
      const action = plan(this.options.stateView.state, this.localView());
      if (action === null) return;
      this.execute(action);
    }
  }

  private execute(action: Action): void {
    this.options.logger.debug({ action: summarize(action) }, "worker action");
    switch (action.type) {
      case "cancelTask":
        this.updateTask(action.runnerId, action.taskId, { cancelSent: true });
        this.handles.get(action.runnerId)?.cancel(action.taskId);
        return;
      case "timeOutTask":
        this.options.logger.warn({ runnerId: action.runnerId, taskId: action.taskId }, action.reason);
        this.timedOutTasks.set(action.taskId, action.reason);
        this.updateTask(action.runnerId, action.taskId, { cancelSent: true });
        this.handles.get(action.runnerId)?.cancel(action.taskId);
        return;
      case "failTask":
        this.tasksReportedEnded.add(action.taskId);
        this.options.sink.sendWorkerEvent({
          type: "TaskStatusUpdated",
          taskId: action.taskId,
          status: "Failed",
          finishReason: "error",
          failureCode: action.failureCode,
          failureReason: action.reason,
          fromRunner: true,
          tokensGenerated: null,
          promptTokens: null,
        });
        return;
      case "shutdownRunner":
        this.update(action.runnerId, { shuttingDown: true });
        void this.handles.get(action.runnerId)?.shutdown();
        return;
      case "spawnRunner":
        this.spawn(action.shard.runnerId, action.instance.instanceId);
        return;
      case "loadRunner":
        this.load(action);
        return;
      case "setDownstream":
        this.pointDownstream(action.runnerId, action.target);
        return;
      case "warmupRunner":
        this.update(action.runnerId, { warmupSent: true });
        this.handles.get(action.runnerId)?.warmup();
        return;
      case "startTask": {
        const runner = this.runners.get(action.runnerId);
        if (runner === undefined) return;
        const taskId = action.task.taskId;
        const task: LocalTask = { taskId, startedAtMs: this.options.clock.nowMs(), decodeStartedAtMs: null, tokensGenerated: 0, cancelSent: false, runningReported: false };
        this.update(action.runnerId, { tasks: { ...runner.tasks, [taskId]: task } });
        this.handles.get(action.runnerId)?.startTask({ taskId, params: action.task.params });
        return;
      }
    }
  }

  private spawn(runnerId: RunnerId, instanceId: LocalRunner["instanceId"]): void {
    const previous = this.runners.get(runnerId);
    this.runners.set(runnerId, {
      runnerId,
      instanceId,
      alive: true,
      shuttingDown: false,
      status: { kind: "Idle" },
      loadSent: false,
      warmupSent: false,
      tasks: {},
      exitCount: previous?.exitCount ?? 0,
      lastExitAtMs: previous?.lastExitAtMs ?? null,
      lastExitReason: previous?.lastExitReason ?? null,
    });
    const handle = this.options.spawnRunner({ runnerId, onReport: (report) => this.onReport(report) });
    this.handles.set(runnerId, handle);
    this.reportRunnerStatus(runnerId, { kind: "Idle" });
  }

  private load(action: Extract<Action, { type: "loadRunner" }>): void {
    this.update(action.runnerId, { loadSent: true });
    const card = this.options.models.get(action.instance.modelId);
    if (card === undefined) {
      const reason = `model ${action.instance.modelId} is not available on this node`;
      this.update(action.runnerId, { status: { kind: "Failed", reason } });
      this.reportRunnerStatus(action.runnerId, { kind: "Failed", reason });
      void this.handles.get(action.runnerId)?.shutdown();
      return;
    }
    const spec: EngineShardSpec = {
      modelId: card.modelId,
      modelPath: card.path,
      layerStart: action.shard.layerStart,
      layerEnd: action.shard.layerEnd,
      layerCount: action.instance.layerCount,
      contextSize: this.options.contextSize,
      threads: this.options.threads,
      options: card.engineOptions,
    };
    this.handles.get(action.runnerId)?.load(spec, card.engineModule ?? this.options.defaultEngineModule, this.stageRoleOf(action.instance, action.shard));
  }

  /** Undefined for a single-shard instance: that runner needs no pipeline. */
  private stageRoleOf(instance: Instance, shard: Shard): StageRole | undefined {
    const stageCount = instance.shards.length;
    if (stageCount < 2) return undefined;
    const link = this.options.stageLink ?? DEFAULT_STAGE_LINK;
    return {
      stageIndex: instance.shards.findIndex((s) => s.runnerId === shard.runnerId),
      stageCount,
      nodeId: this.options.nodeId,
      runnerId: shard.runnerId,
      clusterName: link.clusterName,
      secretHex: link.secret === null ? null : link.secret.toString("hex"),
      listenHost: link.listenHost ?? DEFAULT_STAGE_LINK.listenHost!,
      ...(link.silenceMs === undefined ? {} : { linkSilenceMs: link.silenceMs }),
    };
  }

  private pointDownstream(runnerId: RunnerId, target: DownstreamTarget | null): void {
    this.update(runnerId, { downstreamSentKey: downstreamKey(target) });
    this.handles.get(runnerId)?.setDownstream(target);
  }

  /** Hosts of the nodes that hold a shard of a pipeline with a stage here (usually a handful). */
  private nodeHosts(state: State): Record<string, string> {
    const hosts: Record<string, string> = {};
    const nodeHost = this.options.nodeHost ?? defaultNodeHost(this.options.nodeId);
    for (const instance of Object.values(state.instances)) {
      if (instance.shards.length < 2 || !instance.shards.some((s) => s.nodeId === this.options.nodeId)) continue;
      for (const { nodeId } of instance.shards) {
        if (hosts[nodeId] !== undefined) continue;
        const host = nodeHost(nodeId, state);
        if (host !== null) hosts[nodeId] = host;
      }
    }
    return hosts;
  }

  private onReport(report: RunnerReport): void {
    const runner = this.runners.get(report.runnerId);
    // A report from a process this worker no longer tracks (replaced after a restart) is stale.
    if (runner === undefined || !runner.alive || this.handles.get(report.runnerId) === undefined) return;
    const sink = this.options.sink;
    switch (report.type) {
      case "status":
        this.update(report.runnerId, { status: report.status });
        this.reportRunnerStatus(report.runnerId, report.status);
        if (report.status.kind === "Running") this.reportTasksRunning(runner.runnerId, report.status.taskIds);
        break;
      case "prefillProgress":
        sink.sendWorkerEvent({
          type: "TaskPrefillProgress",
          taskId: report.taskId,
          processedTokens: report.processedTokens,
          totalTokens: report.totalTokens,
        });
        break;
      case "chunk":
        this.updateTask(report.runnerId, report.taskId, {
          decodeStartedAtMs: runner.tasks[report.taskId]?.decodeStartedAtMs ?? this.options.clock.nowMs(),
          tokensGenerated: report.chunk.tokensGenerated,
        });
        sink.sendWorkerEvent({ type: "ChunkGenerated", taskId: report.taskId, chunk: report.chunk });
        break;
      case "taskEnded": {
        this.tasksReportedEnded.add(report.taskId);
        this.update(report.runnerId, { tasks: without(runner.tasks, report.taskId) });
        // A task stopped by its timeout ends "Cancelled" on the runner; to its client it failed. One
        // that completed before the cancel arrived keeps its answer.
        const timedOutReason = this.takeTimedOut(report.taskId);
        const timedOut = timedOutReason !== null && report.status === "Cancelled";
        sink.sendWorkerEvent({
          type: "TaskStatusUpdated",
          taskId: report.taskId,
          status: timedOut ? "Failed" : report.status,
          finishReason: timedOut ? "error" : report.finishReason,
          failureCode: timedOut ? "timeout" : report.status === "Failed" ? (report.failureCode ?? "runner_failed") : null,
          failureReason: timedOut ? timedOutReason : report.failureReason,
          fromRunner: true,
          tokensGenerated: report.tokensGenerated,
          promptTokens: report.promptTokens,
        });
        break;
      }
      case "stageListening":
        sink.sendWorkerEvent({ type: "RunnerStageListening", runnerId: report.runnerId, port: report.port });
        break;
      case "stageSlots":
        this.update(report.runnerId, { stageSlotsOpen: report.openSlotCount });
        break;
      case "exited":
        this.onExited(runner, report.reason);
        break;
    }
    this.schedule();
  }

  private onExited(runner: LocalRunner, exitReason: string): void {
    // A runner that failed (a corrupt model file, a context that does not fit) reports why before it
    // exits; that says more than its exit code.
    const reason = runner.status.kind === "Failed" ? `${runner.status.reason} (${exitReason})` : exitReason;
    this.handles.delete(runner.runnerId);
    const taskIds = Object.keys(runner.tasks) as TaskId[];
    const expected = runner.shuttingDown;
    this.runners.set(runner.runnerId, {
      ...runner,
      alive: false,
      tasks: {},
      status: expected ? { kind: "Shutdown" } : { kind: "Failed", reason },
      exitCount: expected ? runner.exitCount : runner.exitCount + 1,
      lastExitAtMs: this.options.clock.nowMs(),
      lastExitReason: reason,
    });
    if (expected) {
      for (const taskId of taskIds) this.timedOutTasks.delete(taskId);
      // The runner's instance is gone: forget it entirely once it has exited.
      this.runners.delete(runner.runnerId);
      return;
    }
    this.options.logger.warn({ runnerId: runner.runnerId, reason }, "runner exited unexpectedly");
    this.reportRunnerStatus(runner.runnerId, { kind: "Failed", reason });
    for (const taskId of taskIds) {
      this.tasksReportedEnded.add(taskId);
      const timedOutReason = this.takeTimedOut(taskId);
      this.options.sink.sendWorkerEvent({
        type: "TaskStatusUpdated",
        taskId,
        status: "Failed",
        finishReason: "error",
        failureCode: timedOutReason === null ? "runner_failed" : "timeout",
        failureReason: timedOutReason === null ? `runner failed: ${reason}` : `${timedOutReason}; the runner did not stop (${reason})`,
        fromRunner: true,
        tokensGenerated: null,
        promptTokens: null,
      });
    }
  }

  private takeTimedOut(taskId: TaskId): string | null {
    const reason = this.timedOutTasks.get(taskId) ?? null;
    this.timedOutTasks.delete(taskId);
    return reason;
  }

  private reportRunnerStatus(runnerId: RunnerId, status: RunnerStatus): void {
    // Only runners the State knows can be reported; others belong to a deleted instance.
    if (this.options.stateView.state.runners[runnerId] === undefined) return;
    this.options.sink.sendWorkerEvent({ type: "RunnerStatusUpdated", runnerId, status });
  }

  private update(runnerId: RunnerId, patch: Partial<LocalRunner>): void {
    const runner = this.runners.get(runnerId);
    if (runner !== undefined) this.runners.set(runnerId, { ...runner, ...patch });
  }

  /** Changes one task of a runner; a task the runner no longer holds stays gone. */
  private updateTask(runnerId: RunnerId, taskId: TaskId, patch: Partial<LocalTask>): void {
    const runner = this.runners.get(runnerId);
    const task = runner?.tasks[taskId];
    if (runner === undefined || task === undefined) return;
    this.runners.set(runnerId, { ...runner, tasks: { ...runner.tasks, [taskId]: { ...task, ...patch } } });
  }

  /** The runner started these tasks: each becomes Running in State once (its status repeats them). */
  private reportTasksRunning(runnerId: RunnerId, taskIds: readonly TaskId[]): void {
    for (const taskId of taskIds) {
      const task = this.runners.get(runnerId)?.tasks[taskId];
      if (task === undefined || task.runningReported) continue;
      this.updateTask(runnerId, taskId, { runningReported: true });
      this.options.sink.sendWorkerEvent(taskStatus(taskId, "Running"));
    }
  }

  /** Ended tasks whose end State now shows (or which were deleted) need no guarding any more. */
  private forgetSettledTasks(state: State): void {
    for (const taskId of this.tasksReportedEnded) {
      const task = state.tasks[taskId];
      if (task === undefined || isTaskTerminal(task.status)) this.tasksReportedEnded.delete(taskId);
    }
  }
}

function taskStatus(taskId: TaskId, status: "Running") {
  return {
    type: "TaskStatusUpdated" as const,
    taskId,
    status,
    finishReason: null,
    failureCode: null,
    failureReason: null,
    fromRunner: true,
    tokensGenerated: null,
    promptTokens: null,
  };
}

function without<T>(record: Readonly<Record<TaskId, T>>, taskId: TaskId): Record<TaskId, T> {
  const { [taskId]: _removed, ...rest } = record;
  return rest;
}

function summarize(action: Action): Record<string, unknown> {
  switch (action.type) {
    case "startTask":
      return { type: action.type, runnerId: action.runnerId, taskId: action.task.taskId };
    case "spawnRunner":
    case "loadRunner":
      return { type: action.type, runnerId: action.shard.runnerId, instanceId: action.instance.instanceId };
    default:
      return { ...action };
  }
}
