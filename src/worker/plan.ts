// The worker's decisions as one pure function: (State, LocalView) → the next Action, or null.
// Rules are ordered and the first that returns an action wins; cancellation comes first so a
// cancel is never queued behind loading or starting work. The loop (worker.ts) executes the action,
// records it in LocalView so the same action is not planned twice, and plans again.
import type { InstanceId, NodeId, RunnerId, TaskId } from "../shared/ids.ts";
import { RUNNER_RESTARTS_MAX } from "../shared/limits.ts";
import type { State } from "../shared/state.ts";
import type { FailureCode, Instance, RunnerStatus, Shard, Task } from "../shared/types.ts";
import { isTaskTerminal } from "../shared/types.ts";
import { runnerTaskSlots } from "../shared/task-slots.ts";

/** What this node knows of one of its runner processes (State lags behind it). */
export interface LocalRunner {
  readonly runnerId: RunnerId;
  readonly instanceId: InstanceId;
  /** False once the process exited; a new process for the same shard reuses the runnerId. */
  readonly alive: boolean;
  readonly shuttingDown: boolean;
  /** The status the process last reported ("Idle" while it starts). */
  readonly status: RunnerStatus;
  readonly loadSent: boolean;
  readonly warmupSent: boolean;
  /** Tasks handed to the runner and not yet reported ended, in the order they were handed. */
  readonly tasks: Readonly<Record<TaskId, LocalTask>>;
  /** Exits counted for the restart policy, and when the last one happened. */
  readonly exitCount: number;
  readonly lastExitAtMs: number | null;
  readonly lastExitReason: string | null;
  /** Pipeline stages: the next stage this runner was last pointed at (downstreamKey), null: none yet. */
  readonly downstreamSentKey?: string | null;
  /** Pipeline stages: KV slots the runner reported holding (diagnostics and tests). */
  readonly stageSlotsOpen?: number;
}

/** One task a runner works on, as its worker knows it. */
export interface LocalTask {
  readonly taskId: TaskId;
  /** When the task was handed to the runner (its prefill timeout counts from here). */
  readonly startedAtMs: number;
  /** When its first chunk arrived (its decode timeout counts from here); null while in prefill. */
  readonly decodeStartedAtMs: number | null;
  /** Tokens generated so far (from its chunks; State learns the count only at the end). */
  readonly tokensGenerated: number;
  readonly cancelSent: boolean;
  /** The runner reported it Running, and so did this worker (TaskStatusUpdated). */
  readonly runningReported: boolean;
}

/** The next pipeline stage of a runner, as State knows it. */
export interface DownstreamTarget {
  readonly host: string;
  readonly runnerId: RunnerId;
  readonly nodeId: NodeId;
  readonly port: number;
  readonly stageIndex: number;
  readonly stageCount: number;
}

export const downstreamKey = (t: DownstreamTarget | null): string =>
  t === null ? "none" : `${t.runnerId}@${t.nodeId}/${t.host}:${t.port}#${t.stageIndex}/${t.stageCount}`;

/** Per-task limits; a task over one is cancelled on its runner and ends Failed with failureCode "timeout". */
export interface TaskTimeouts {
  readonly prefillTimeoutMs: number;
  readonly decodeTimeoutMs: number;
}

export interface LocalView {
  readonly nodeId: NodeId;
  readonly nowMs: number;
  readonly runners: Readonly<Record<RunnerId, LocalRunner>>;
  /**
   * Tasks this worker already reported as ended whose terminal status State has not shown yet;
   * without it the gap between the report and its event would look like an orphaned task.
   */
  readonly tasksReportedEnded: ReadonlySet<TaskId>;
  /** Absent: tasks may run for as long as they take. */
  readonly taskTimeouts?: TaskTimeouts;
  /** Where this node's runners reach each node's pipeline stages; a node missing here is not reachable yet. */
  readonly nodeHosts?: Readonly<Record<string, string>>;
}

export type Action =
  | { readonly type: "cancelTask"; readonly runnerId: RunnerId; readonly taskId: TaskId }
  | { readonly type: "timeOutTask"; readonly runnerId: RunnerId; readonly taskId: TaskId; readonly reason: string }
  | { readonly type: "failTask"; readonly taskId: TaskId; readonly failureCode: FailureCode; readonly reason: string }
  | { readonly type: "shutdownRunner"; readonly runnerId: RunnerId }
  | { readonly type: "spawnRunner"; readonly instance: Instance; readonly shard: Shard }
  | { readonly type: "loadRunner"; readonly runnerId: RunnerId; readonly instance: Instance; readonly shard: Shard }
  | { readonly type: "warmupRunner"; readonly runnerId: RunnerId }
  | { readonly type: "setDownstream"; readonly runnerId: RunnerId; readonly target: DownstreamTarget | null }
  | { readonly type: "startTask"; readonly runnerId: RunnerId; readonly task: Task };

/** Delay before restarting a runner that exited for the n-th time (1-based): 0.5 s, 1 s, 2 s … 8 s. */
export function restartBackoffMs(exitCount: number): number {
  return Math.min(8_000, 500 * 2 ** Math.max(0, exitCount - 1));
}

export function plan(state: State, local: LocalView): Action | null {
  return (
    cancelTasks(state, local) ??
    timeOutTasks(state, local) ??
    failOrphanedTasks(state, local) ??
    shutdownRunners(state, local) ??
    spawnRunners(state, local) ??
    loadRunners(state, local) ??
    pointStages(state, local) ??
    warmupRunners(state, local) ??
    startTasks(state, local)
  );
}

const liveRunners = (local: LocalView): LocalRunner[] =>
  Object.values(local.runners).filter((r) => r.alive && !r.shuttingDown);

/** My shards, each with the instance it belongs to. */
function myShards(state: State, nodeId: NodeId): { instance: Instance; shard: Shard }[] {
  const out: { instance: Instance; shard: Shard }[] = [];
  for (const instance of Object.values(state.instances)) {
    for (const shard of instance.shards) if (shard.nodeId === nodeId) out.push({ instance, shard });
  }
  return out;
}

/** The first shard's node starts an instance's tasks and owns their lifecycle. */
const isTaskOwner = (instance: Instance, nodeId: NodeId): boolean => instance.shards[0]?.nodeId === nodeId;

/** The tasks of live runners that have not been told to stop yet, with their runner. */
function* uncancelledTasks(local: LocalView): Generator<{ runner: LocalRunner; task: LocalTask }> {
  for (const runner of liveRunners(local)) {
    for (const task of Object.values(runner.tasks)) if (!task.cancelSent) yield { runner, task };
  }
}

/** Rule 1: a runner works on a task that was cancelled or deleted → tell it to stop. */
function cancelTasks(state: State, local: LocalView): Action | null {
  for (const { runner, task: { taskId } } of uncancelledTasks(local)) {
    const task = state.tasks[taskId];
    if (task === undefined || task.status === "Cancelled") {
      return { type: "cancelTask", runnerId: runner.runnerId, taskId };
    }
  }
  return null;
}

/**
 * Rule 1b: a runner has worked on its task past the prefill or decode timeout → stop it like a cancel;
 * the worker turns the runner's "Cancelled" report into Failed / "timeout" with this reason, so the
 * task is released only once the runner has really let go of it.
 */
function timeOutTasks(state: State, local: LocalView): Action | null {
  const timeouts = local.taskTimeouts;
  if (timeouts === undefined) return null;
  for (const { runner, task: localTask } of uncancelledTasks(local)) {
    const task = state.tasks[localTask.taskId];
    if (task === undefined || isTaskTerminal(task.status)) continue;
    const reason = timeoutReason(localTask, task, timeouts, local.nowMs);
    if (reason !== null) return { type: "timeOutTask", runnerId: runner.runnerId, taskId: localTask.taskId, reason };
  }
  return null;
}

function timeoutReason(localTask: LocalTask, task: Task, timeouts: TaskTimeouts, nowMs: number): string | null {
  if (localTask.decodeStartedAtMs !== null) {
    if (nowMs - localTask.decodeStartedAtMs <= timeouts.decodeTimeoutMs) return null;
    const tokens = Math.max(task.tokensGenerated, localTask.tokensGenerated);
    return `timed out: generating the answer took longer than the decode timeout of ${timeouts.decodeTimeoutMs} ms (${tokens} tokens generated)`;
  }
  if (nowMs - localTask.startedAtMs <= timeouts.prefillTimeoutMs) return null;
  const progress = task.prefill === null ? "" : ` (${task.prefill.processedTokens} of ${task.prefill.totalTokens} prompt tokens processed)`;
  return `timed out: processing the prompt took longer than the prefill timeout of ${timeouts.prefillTimeoutMs} ms${progress}`;
}

/**
 * Rule 2: a task of mine is Running in State but no runner of mine works on it (the runner
 * crashed, or this node restarted) → Failed with a reason; never silently dropped. Pending tasks of
 * an instance whose runner has failed for good fail too.
 */
function failOrphanedTasks(state: State, local: LocalView): Action | null {
  for (const task of Object.values(state.tasks)) {
    if (isTaskTerminal(task.status) || task.instanceId === null || local.tasksReportedEnded.has(task.taskId)) continue;
    const instance = state.instances[task.instanceId];
    if (instance === undefined || !isTaskOwner(instance, local.nodeId)) continue;
    const firstShard = instance.shards[0];
    if (firstShard === undefined) continue;
    const runner = local.runners[firstShard.runnerId];
    if (task.status === "Running" && runner?.tasks[task.taskId] === undefined) {
      const why = runner?.lastExitReason ?? "the runner no longer holds the task";
      return { type: "failTask", taskId: task.taskId, failureCode: "runner_failed", reason: `runner failed: ${why}` };
    }
    if (task.status === "Pending" && runner !== undefined && isFailedForGood(runner)) {
      return {
        type: "failTask",
        taskId: task.taskId,
        failureCode: "runner_failed",
        reason: `runner failed: ${runner.lastExitReason ?? failedReason(runner.status) ?? "unknown"}`,
      };
    }
  }
  return null;
}

const failedReason = (s: RunnerStatus): string | null => (s.kind === "Failed" ? s.reason : null);

/**
 * Ready, or Running with room for one more. A runner whose last status still names a task it has
 * since ended is between two reports (its next one may say Failed): it waits for that report.
 */
function hasFreeTaskSlot(runner: LocalRunner, slots: number): boolean {
  if (Object.keys(runner.tasks).length >= slots) return false;
  if (runner.status.kind === "Ready") return true;
  return runner.status.kind === "Running" && runner.status.taskIds.every((id) => runner.tasks[id] !== undefined);
}

function isFailedForGood(runner: LocalRunner): boolean {
  return !runner.alive && runner.exitCount > RUNNER_RESTARTS_MAX;
}

/** Rule 3: a runner whose instance (or shard) is gone shuts down. */
function shutdownRunners(state: State, local: LocalView): Action | null {
  const wanted = new Set(myShards(state, local.nodeId).map(({ shard }) => shard.runnerId));
  for (const runner of liveRunners(local)) {
    if (!wanted.has(runner.runnerId)) return { type: "shutdownRunner", runnerId: runner.runnerId };
  }
  return null;
}

/** Rule 4: a shard of mine has no process (never started, or exited and due for a restart). */
function spawnRunners(state: State, local: LocalView): Action | null {
  for (const { instance, shard } of myShards(state, local.nodeId)) {
    const runner = local.runners[shard.runnerId];
    if (runner === undefined) return { type: "spawnRunner", instance, shard };
    if (runner.alive || isFailedForGood(runner) || runner.lastExitAtMs === null) continue;
    if (local.nowMs - runner.lastExitAtMs >= restartBackoffMs(runner.exitCount)) {
      return { type: "spawnRunner", instance, shard };
    }
  }
  return null;
}

/** Rule 5: a fresh process loads its shard. */
function loadRunners(state: State, local: LocalView): Action | null {
  for (const { instance, shard } of myShards(state, local.nodeId)) {
    const runner = local.runners[shard.runnerId];
    if (runner === undefined || !runner.alive || runner.shuttingDown || runner.loadSent) continue;
    if (runner.status.kind === "Idle") return { type: "loadRunner", runnerId: runner.runnerId, instance, shard };
  }
  return null;
}

const GONE: ReadonlySet<RunnerStatus["kind"]> = new Set(["Failed", "ShuttingDown", "Shutdown"]);

/** Where the stage after `shard` listens, per State; null while unknown (not reported, or that runner is gone). */
export function downstreamTargetOf(state: State, instance: Instance, shard: Shard, nodeHosts: Readonly<Record<string, string>>): DownstreamTarget | null {
  const stageIndex = instance.shards.findIndex((s) => s.runnerId === shard.runnerId);
  const next = instance.shards[stageIndex + 1];
  if (stageIndex < 0 || next === undefined) return null;
  const runner = state.runners[next.runnerId];
  if (runner === undefined || runner.stagePort === undefined || GONE.has(runner.status.kind)) return null;
  const host = nodeHosts[next.nodeId];
  if (host === undefined) return null;
  return { host, runnerId: next.runnerId, nodeId: next.nodeId, port: runner.stagePort, stageIndex: stageIndex + 1, stageCount: instance.shards.length };
}

/**
 * Rule 5b: a pipeline stage before the last learns where the next stage listens — after its load
 * was sent, and again whenever that changes (the next runner restarted on another port).
 */
function pointStages(state: State, local: LocalView): Action | null {
  for (const { instance, shard } of myShards(state, local.nodeId)) {
    if (instance.shards.length < 2 || instance.shards[instance.shards.length - 1]?.runnerId === shard.runnerId) continue;
    const runner = local.runners[shard.runnerId];
    if (runner === undefined || !runner.alive || runner.shuttingDown || !runner.loadSent) continue;
    const target = downstreamTargetOf(state, instance, shard, local.nodeHosts ?? {});
    // Unknown is sent only to replace a known endpoint: a fresh runner has nothing to forget.
    if (target === null && (runner.downstreamSentKey ?? null) === null) continue;
    if (downstreamKey(target) !== runner.downstreamSentKey) return { type: "setDownstream", runnerId: runner.runnerId, target };
  }
  return null;
}

const LOADED_OR_LATER: ReadonlySet<RunnerStatus["kind"]> = new Set(["Loaded", "WarmingUp", "Ready", "Running"]);

/**
 * Rule 6: warm up once every shard of the instance has loaded (a pipeline warms up through all
 * stages, so it waits for the slowest). Other nodes' runners are seen through State.
 */
function warmupRunners(state: State, local: LocalView): Action | null {
  for (const runner of liveRunners(local)) {
    if (runner.warmupSent || runner.status.kind !== "Loaded") continue;
    const instance = state.instances[runner.instanceId];
    if (instance === undefined) continue;
    const allLoaded = instance.shards.every((shard) => {
      const mine = local.runners[shard.runnerId];
      const status = mine !== undefined ? mine.status : state.runners[shard.runnerId]?.status;
      return status !== undefined && LOADED_OR_LATER.has(status.kind);
    });
    if (allLoaded) return { type: "warmupRunner", runnerId: runner.runnerId };
  }
  return null;
}

/**
 * Rule 7: a first-stage runner with a free task slot takes the oldest Pending task of its instance.
 * One slot on a single node; a pipeline interleaves one task per stage plus one (runnerTaskSlots).
 */
function startTasks(state: State, local: LocalView): Action | null {
  for (const runner of liveRunners(local)) {
    const instance = state.instances[runner.instanceId];
    if (instance === undefined || instance.shards[0]?.runnerId !== runner.runnerId) continue;
    if (!hasFreeTaskSlot(runner, runnerTaskSlots(instance.shards.length))) continue;
    // A pipeline serves only with every stage up: while one restarts, tasks wait in the queue.
    if (!instance.shards.every((s) => s.runnerId === runner.runnerId || state.runners[s.runnerId]?.status.kind === "Ready")) continue;
    // Object key order is TaskCreated order, so the first match is the oldest: fair FIFO.
    for (const task of Object.values(state.tasks)) {
      if (task.instanceId !== instance.instanceId || task.status !== "Pending") continue;
      // State shows a task Pending until the runner's Running report is applied: a task already
      // handed out (or already ended) is not started again.
      if (runner.tasks[task.taskId] !== undefined || local.tasksReportedEnded.has(task.taskId)) continue;
      return { type: "startTask", runnerId: runner.runnerId, task };
    }
  }
  return null;
}
