// The master turns commands (from APIs) and reports (from workers) into indexed events. It keeps its
// own State by applying every event it emits, so it decides against exactly what every replica will
// hold. Each event is checked with `apply` (which asserts invariants) before it is appended to the
// log, and published only after it is on disk. Every handler is synchronous: commands and worker
// events are processed one at a time in arrival order, with no interleaving.
//
// Messages race and repeat (at-least-once delivery, a cancel that crosses a finish), so every
// handler is total over unknown ids and any order: an id it does not know is a no-op, never a throw.
import { apply } from "../shared/apply.ts";
import { assert, assertNever } from "../shared/assert.ts";
import type { Clock } from "../shared/clock.ts";
import type { CommandId, InstanceId, NodeId, RunnerId, TaskId } from "../shared/ids.ts";
import { newInstanceId as mintInstanceId, newRunnerId as mintRunnerId, newTaskId as mintTaskId } from "../shared/ids.ts";
import { EVENT_LOG_PAGE_MAX, TASKS_MAX, TASKS_PENDING_PER_INSTANCE_MAX } from "../shared/limits.ts";
import { isRunnerTransitionAllowed } from "../shared/runner-transitions.ts";
import type { State } from "../shared/state.ts";
import { emptyState, findTaskByCommandId, instancesOfModel, tasksOfInstance } from "../shared/state.ts";
import type { Command, CommandOf, Event, EventOf, FailureCode, IndexedEvent, Instance, NodeInfo, Task } from "../shared/types.ts";
import { CommandSchema, EventSchema, IndexedEventSchema, isTaskTerminal, WORKER_EVENT_TYPES } from "../shared/types.ts";
import { placeInstance } from "./placement.ts";

/**
 * Command ids of deleted tasks (and finishes that came first) remembered, so a duplicate or late
 * TextGeneration cannot bring a finished task back, where nobody would ever finish it again.
 */
export const FINISHED_COMMAND_IDS_MAX = 4096;
/** Instance command ids remembered so a redelivered PlaceInstance does not place a second instance. */
export const INSTANCE_COMMAND_IDS_MAX = 1024;

type LogFn = (fields: Record<string, unknown>, message: string) => void;
/** The subset of pino the master uses. */
export interface MasterLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

/**
 * Where the master's events are kept: on a node, the replicated log (append proposes the events and
 * throws when this node no longer leads; see src/node/replicated-cluster.ts).
 */
export interface MasterLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

/**
 * Where the master's events are kept: the on-disk EventLog of a standalone master, or the replicated
 * log of an elected one (whose append proposes the events and throws when this node no longer leads).
 */
export interface MasterLog {
  /** Logged events with idx ≥ sinceIdx, in order; [] past the end. */
  readSince(sinceIdx: number, limit?: number): IndexedEvent[];
  /** Stores events in order; throws when it cannot, and then nothing of the batch is published. */
  append(events: readonly IndexedEvent[]): void;
}

export interface MasterOptions {
  readonly nodeId: NodeId;
  readonly log: MasterLog;
  /**
   * State the log continues from (a snapshot of a compacted replicated log); start() replays only
   * the events after its lastIdx. Default: empty State, the whole log is replayed.
   */
  readonly initialState?: State;
  /**
   * Emit MasterChanged at start(). An elected master's log already begins its term with one (the
   * election core's first entry), so it passes false. Default true.
   */
  readonly announceOnStart?: boolean;
  readonly clock: Clock;
  /** Called once per event, in idx order, after the event is in the log. */
  readonly publish: (event: IndexedEvent) => void;
  readonly logger: MasterLogger;
  readonly term: number;
  readonly newTaskId?: () => TaskId;
  readonly newInstanceId?: () => InstanceId;
  readonly newRunnerId?: () => RunnerId;
  /**
   * Fail and delete tasks whose client connection lived on this node (originNodeId) at start().
   * Right after a process start those connections are gone; a node that became master while its
   * API kept serving (a failover inside one process) must pass false. Default true.
   */
  readonly cleanUpOwnOrphansOnStart?: boolean;
}

/** Events the master emits about the cluster itself (from failure detection and link probes). */
export type ClusterEvent = EventOf<"NodeTimedOut" | "TopologyEdgeCreated" | "TopologyEdgeDeleted" | "ClusterMembersChanged">;

/** Why a worker's report is not indexed; `level` separates expected races from misbehaviour. */
export interface WorkerEventRejection {
  readonly level: "debug" | "warn";
  readonly reason: string;
}

export class Master {
  private current: State = emptyState();
  private started = false;
  private readonly finishedCommandIds = new BoundedSet<CommandId>(FINISHED_COMMAND_IDS_MAX);
  private readonly instanceCommandIds = new BoundedSet<CommandId>(INSTANCE_COMMAND_IDS_MAX);
  private readonly newTaskId: () => TaskId;
  private readonly newInstanceId: () => InstanceId;
  private readonly newRunnerId: () => RunnerId;

  constructor(private readonly options: MasterOptions) {
    this.newTaskId = options.newTaskId ?? mintTaskId;
    this.newInstanceId = options.newInstanceId ?? mintInstanceId;
    this.newRunnerId = options.newRunnerId ?? mintRunnerId;
  }

  get state(): State {
    return this.current;
  }

  /** Replays the log, announces this master, and cleans up tasks whose clients died with the last process. */
  start(): IndexedEvent[] {
    assert(!this.started, "Master.start called twice");
    this.started = true;
    this.replayLog();
    const { nodeId, term } = this.options;
    if (term < this.current.masterTerm) {
      this.options.logger.warn({ term, loggedTerm: this.current.masterTerm }, "starting with a lower term than the log's last master");
    }
    const emitted = (this.options.announceOnStart ?? true) ? this.emit([{ type: "MasterChanged", nodeId, term }]) : [];
    if (this.options.cleanUpOwnOrphansOnStart ?? true) {
      emitted.push(...this.removeTasksOfOrigin(nodeId, "node_restarted", `node ${nodeId} restarted; its client connections are gone`));
    }
    return emitted;
  }

  /** Events with idx ≥ sinceIdx from the log, at most min(limit, EVENT_LOG_PAGE_MAX). */
  eventsSince(sinceIdx: number, limit: number = EVENT_LOG_PAGE_MAX): IndexedEvent[] {
    return this.options.log.readSince(sinceIdx, limit);
  }

  /** Returns the events it emitted (often none: duplicates and unknown ids are no-ops). */
  handleCommand(received: Command): IndexedEvent[] {
    assert(this.started, "Master.handleCommand before start");
    // Commands may come from another node: a malformed one is refused here, never indexed (the log
    // would refuse it at the next open) and never allowed to trip an assertion.
    const parsed = CommandSchema.safeParse(received);
    if (!parsed.success) {
      this.options.logger.warn({ type: received.type, issue: parsed.error.issues[0]?.message }, "dropped malformed command");
      return [];
    }
    const command = parsed.data;
    switch (command.type) {
      case "TextGeneration":
        return this.onTextGeneration(command);
      case "TaskCancelled":
        return this.onTaskCancelled(command);
      case "TaskFinished":
        return this.onTaskFinished(command);
      case "PlaceInstance":
        return this.onPlaceInstance(command);
      case "DeleteInstance":
        return this.onDeleteInstance(command);
      case "RequestEventLog":
        // Answered by the transport from eventsSince(); nothing to index.
        this.options.logger.debug({ sinceIdx: command.sinceIdx }, "RequestEventLog is served by eventsSince, not indexed");
        return [];
      default:
        return assertNever(command);
    }
  }

  /** Indexes a worker's report if it is one a worker may make about what it owns; drops it otherwise. */
  handleWorkerEvent(event: Event, fromNodeId: NodeId): IndexedEvent[] {
    assert(this.started, "Master.handleWorkerEvent before start");
    const parsed = EventSchema.safeParse(event);
    if (!parsed.success) {
      this.options.logger.warn({ fromNodeId, type: event.type, issue: parsed.error.issues[0]?.message }, "dropped malformed worker event");
      return [];
    }
    const rejection = judgeWorkerEvent(this.current, parsed.data, fromNodeId);
    if (rejection !== null) {
      this.options.logger[rejection.level]({ fromNodeId, type: event.type }, `dropped worker event: ${rejection.reason}`);
      return [];
    }
    if (parsed.data.type === "NodeGatheredInfo") return this.onNodeGatheredInfo(parsed.data.info);
    if (parsed.data.type !== "TaskStatusUpdated") return this.emit([parsed.data]);
    // Stamped here, not trusted from the wire: only a worker's report releases a task from its runner.
    const emitted = this.emit([{ ...parsed.data, fromRunner: true }]);
    emitted.push(...this.deleteSettledTasks());
    return emitted;
  }

  /** Node failure detection and link probes. A node that timed out takes its clients' tasks with it. */
  handleClusterEvent(event: ClusterEvent): IndexedEvent[] {
    assert(this.started, "Master.handleClusterEvent before start");
    const s = this.current;
    switch (event.type) {
      case "NodeTimedOut": {
        const known = s.nodes[event.nodeId] !== undefined || Object.values(s.instances).some((i) => i.shards.some((x) => x.nodeId === event.nodeId));
        const orphanCount = Object.values(s.tasks).filter((t) => t.originNodeId === event.nodeId).length;
        if (!known && orphanCount === 0) {
          this.options.logger.debug({ nodeId: event.nodeId }, "NodeTimedOut for a node State does not know");
          return [];
        }
        const lost = Object.values(s.instances).filter((i) => i.shards.some((x) => x.nodeId === event.nodeId));
        const emitted = this.emit([event]);
        emitted.push(...this.removeTasksOfOrigin(event.nodeId, "node_restarted", `node ${event.nodeId} timed out; its client connections are gone`));
        emitted.push(...this.deleteSettledTasks());
        for (const instance of lost) emitted.push(...this.replace(instance));
        return emitted;
      }
      case "ClusterMembersChanged":
        return this.emit([event]);
      case "TopologyEdgeCreated":
        return this.emit([event]);
      case "TopologyEdgeDeleted": {
        const exists = s.edges.some((x) => x.fromNodeId === event.fromNodeId && x.toNodeId === event.toNodeId);
        return exists ? this.emit([event]) : [];
      }
      default:
        return assertNever(event);
    }
  }

  /**
   * A node's report about itself. When it comes from a new process of a node State knows (a restart,
   * even one too quick to time out), the tasks whose clients that node's API held are orphans.
   */
  private onNodeGatheredInfo(info: NodeInfo): IndexedEvent[] {
    const previous = this.current.nodes[info.nodeId];
    const restarted = previous?.startedAtMs !== undefined && info.startedAtMs !== undefined && previous.startedAtMs !== info.startedAtMs;
    const emitted = this.emit([{ type: "NodeGatheredInfo", info }]);
    if (restarted) {
      emitted.push(...this.removeTasksOfOrigin(info.nodeId, "node_restarted", `node ${info.nodeId} restarted; its client connections are gone`));
      emitted.push(...this.deleteSettledTasks());
    }
    return emitted;
  }

  /** Places a model again after the node holding part of it left, on whatever nodes remain. */
  private replace(lost: Instance): IndexedEvent[] {
    if (lost.sizeBytes === undefined) return [];
    const model = { modelId: lost.modelId, layerCount: lost.layerCount, sizeBytes: lost.sizeBytes, ...(lost.headBytes === undefined ? {} : { headBytes: lost.headBytes }) };
    const result = placeInstance(this.current, model, 1, this.newRunnerId, this.newInstanceId);
    if (!result.ok) {
      this.options.logger.warn({ modelId: lost.modelId }, `instance ${lost.instanceId} lost a node and cannot be placed again: ${result.reason}`);
      return [];
    }
    this.options.logger.info({ modelId: lost.modelId, instanceId: result.instance.instanceId }, `instance ${lost.instanceId} lost a node; placed again`);
    return this.emit([{ type: "InstanceCreated", instance: result.instance }]);
  }

  // ── commands ──────────────────────────────────────────────────────────────────────────────────

  private onTextGeneration(command: CommandOf<"TextGeneration">): IndexedEvent[] {
    if (findTaskByCommandId(this.current, command.commandId) !== undefined || this.finishedCommandIds.has(command.commandId)) {
      this.options.logger.debug({ commandId: command.commandId }, "duplicate TextGeneration ignored");
      return [];
    }
    const admission = admitTask(this.current, command.modelId);
    const task: Task = {
      taskId: this.newTaskId(),
      commandId: command.commandId,
      instanceId: admission.ok ? admission.instanceId : null,
      modelId: command.modelId,
      originNodeId: command.originNodeId,
      status: admission.ok ? "Pending" : "Failed",
      params: command.params,
      promptTokens: 0,
      tokensGenerated: 0,
      prefill: null,
      finishReason: admission.ok ? null : "error",
      failureCode: admission.ok ? null : admission.failureCode,
      failureReason: admission.ok ? null : admission.reason,
      heldByRunner: false,
      clientFinished: false,
    };
    if (!admission.ok) this.options.logger.info({ commandId: command.commandId, failureCode: admission.failureCode }, admission.reason);
    return this.emit([{ type: "TaskCreated", task }]);
  }

  private onTaskCancelled(command: CommandOf<"TaskCancelled">): IndexedEvent[] {
    const task = findTaskByCommandId(this.current, command.cancelledCommandId);
    if (task === undefined || isTaskTerminal(task.status)) {
      this.options.logger.debug(
        { commandId: command.cancelledCommandId, status: task?.status ?? "unknown" },
        "TaskCancelled for an unknown or finished task ignored",
      );
      return [];
    }
    return this.emit([cancelledEvent(task.taskId)]);
  }

  private onTaskFinished(command: CommandOf<"TaskFinished">): IndexedEvent[] {
    const task = findTaskByCommandId(this.current, command.finishedCommandId);
    if (task === undefined) {
      // The finish may have overtaken its TextGeneration: remember it so that one is dropped.
      this.finishedCommandIds.add(command.finishedCommandId);
      this.options.logger.debug({ commandId: command.finishedCommandId }, "TaskFinished for an unknown task ignored");
      return [];
    }
    if (task.clientFinished) {
      this.options.logger.debug({ commandId: command.finishedCommandId }, "duplicate TaskFinished ignored");
      return [];
    }
    const events: Event[] = isTaskTerminal(task.status) ? [] : [cancelledEvent(task.taskId)];
    events.push({ type: "TaskClientFinished", taskId: task.taskId });
    const emitted = this.emit(events);
    emitted.push(...this.deleteSettledTasks());
    return emitted;
  }

  private onPlaceInstance(command: CommandOf<"PlaceInstance">): IndexedEvent[] {
    if (this.instanceCommandIds.has(command.commandId)) {
      this.options.logger.debug({ commandId: command.commandId }, "duplicate PlaceInstance ignored");
      return [];
    }
    this.instanceCommandIds.add(command.commandId);
    const result = placeInstance(this.current, command.model, command.minNodes, this.newRunnerId, this.newInstanceId);
    if (!result.ok) {
      this.options.logger.warn({ commandId: command.commandId, modelId: command.model.modelId }, `cannot place instance: ${result.reason}`);
      return [];
    }
    return this.emit([{ type: "InstanceCreated", instance: { ...result.instance, placedByCommandId: command.commandId } }]);
  }

  private onDeleteInstance(command: CommandOf<"DeleteInstance">): IndexedEvent[] {
    if (this.current.instances[command.instanceId] === undefined) {
      this.options.logger.debug({ instanceId: command.instanceId }, "DeleteInstance for an unknown instance ignored");
      return [];
    }
    const emitted = this.emit([{ type: "InstanceDeleted", instanceId: command.instanceId, reason: "deleted on request" }]);
    emitted.push(...this.deleteSettledTasks());
    return emitted;
  }

  /**
   * A task is deleted once the client is done with it (TaskFinished) AND it has ended AND no runner
   * holds it any more — so the runner's final report (its real token count) is always recorded, and
   * an empty task map means every runner has really let go.
   */
  private deleteSettledTasks(): IndexedEvent[] {
    const events: Event[] = [];
    for (const task of Object.values(this.current.tasks)) {
      if (task.clientFinished && isTaskTerminal(task.status) && !task.heldByRunner) events.push({ type: "TaskDeleted", taskId: task.taskId });
    }
    return events.length === 0 ? [] : this.emit(events);
  }

  // ── indexing ──────────────────────────────────────────────────────────────────────────────────

  /** Fails (if still live) and deletes every task whose client connection was on `originNodeId`. */
  private removeTasksOfOrigin(originNodeId: NodeId, failureCode: FailureCode, failureReason: string): IndexedEvent[] {
    const events: Event[] = [];
    for (const task of Object.values(this.current.tasks)) {
      if (task.originNodeId !== originNodeId) continue;
      if (!isTaskTerminal(task.status)) events.push(failedEvent(task.taskId, failureCode, failureReason));
      events.push({ type: "TaskDeleted", taskId: task.taskId });
    }
    if (events.length > 0) this.options.logger.info({ originNodeId, eventCount: events.length }, "removing orphaned tasks");
    return events.length === 0 ? [] : this.emit(events);
  }

  private replayLog(): void {
    const { log } = this.options;
    if (this.options.initialState !== undefined) this.current = this.options.initialState;
    const firstIdx = this.current.lastIdx + 1;
    for (let sinceIdx = firstIdx; ; ) {
      const page = log.readSince(sinceIdx, EVENT_LOG_PAGE_MAX);
      if (page.length === 0) break;
      for (const indexed of page) {
        const before = this.current;
        this.current = apply(before, indexed);
        this.rememberFinished(before, indexed.event);
      }
      sinceIdx += page.length;
    }
    this.options.logger.info({ eventCount: this.current.lastIdx + 1 - firstIdx, lastIdx: this.current.lastIdx }, "replayed event log");
  }

  /**
   * Indexes, checks (schema and apply), appends, then publishes. If any check throws, nothing is
   * appended or published and State is unchanged.
   */
  private emit(events: readonly Event[]): IndexedEvent[] {
    let next = this.current;
    const indexed: IndexedEvent[] = [];
    const befores: State[] = [];
    for (const event of events) {
      const candidate: IndexedEvent = { idx: next.lastIdx + 1, atMs: this.options.clock.nowMs(), event };
      // What the log refuses at the next open must never be written: the schema is checked here too.
      const check = IndexedEventSchema.safeParse(candidate);
      assert(check.success, `master built an invalid ${event.type}: ${check.error?.issues[0]?.message}`);
      befores.push(next);
      next = apply(next, candidate);
      indexed.push(candidate);
    }
    this.options.log.append(indexed);
    this.current = next;
    indexed.forEach((x, i) => this.rememberFinished(befores[i]!, x.event));
    for (const x of indexed) this.options.publish(x);
    return indexed;
  }

  private rememberFinished(before: State, event: Event): void {
    if (event.type !== "TaskDeleted") return;
    const task = before.tasks[event.taskId];
    if (task !== undefined) this.finishedCommandIds.add(task.commandId);
  }
}

// ── pure decisions ────────────────────────────────────────────────────────────────────────────

export type Admission =
  | { readonly ok: true; readonly instanceId: InstanceId }
  | { readonly ok: false; readonly failureCode: FailureCode; readonly reason: string };

/** Where a new task for `modelId` goes: the instance with the fewest live tasks, within the limits. */
export function admitTask(state: State, modelId: string): Admission {
  const candidates = instancesOfModel(state, modelId);
  if (candidates.length === 0) return { ok: false, failureCode: "no_instance", reason: `no instance serves model ${modelId}` };
  const taskCount = Object.keys(state.tasks).length;
  if (taskCount >= TASKS_MAX) {
    return { ok: false, failureCode: "too_many_tasks", reason: `${taskCount} tasks in the cluster (limit ${TASKS_MAX})` };
  }
  let best: { instance: Instance; liveCount: number; pendingCount: number } | null = null;
  for (const instance of candidates) {
    const tasks = tasksOfInstance(state, instance.instanceId);
    const liveCount = tasks.filter((t) => !isTaskTerminal(t.status)).length;
    const pendingCount = tasks.filter((t) => t.status === "Pending").length;
    if (best === null || liveCount < best.liveCount) best = { instance, liveCount, pendingCount };
  }
  assert(best !== null, "admitTask: candidates were not empty");
  if (best.pendingCount >= TASKS_PENDING_PER_INSTANCE_MAX) {
    return {
      ok: false,
      failureCode: "queue_full",
      reason: `instance ${best.instance.instanceId} has ${best.pendingCount} tasks waiting (limit ${TASKS_PENDING_PER_INSTANCE_MAX})`,
    };
  }
  return { ok: true, instanceId: best.instance.instanceId };
}

const WORKER_EVENT_TYPE_SET: ReadonlySet<string> = new Set(WORKER_EVENT_TYPES);

/** null when a worker on `fromNodeId` may report `event` now; otherwise why not. */
export function judgeWorkerEvent(state: State, event: Event, fromNodeId: NodeId): WorkerEventRejection | null {
  if (!WORKER_EVENT_TYPE_SET.has(event.type)) return { level: "warn", reason: `${event.type} is not a worker event` };
  switch (event.type) {
    case "NodeGatheredInfo":
      return event.info.nodeId === fromNodeId ? null : { level: "warn", reason: `info about ${event.info.nodeId} sent by ${fromNodeId}` };
    case "NodeDownloadProgress":
      return event.nodeId === fromNodeId ? null : { level: "warn", reason: `download progress of ${event.nodeId} sent by ${fromNodeId}` };
    case "RunnerStatusUpdated": {
      const runner = state.runners[event.runnerId];
      // A runner whose instance was just deleted still reports its shutdown: an expected race.
      if (runner === undefined) return { level: "debug", reason: `unknown runner ${event.runnerId}` };
      if (runner.nodeId !== fromNodeId) return { level: "warn", reason: `runner ${event.runnerId} lives on ${runner.nodeId}, not ${fromNodeId}` };
      if (!isRunnerTransitionAllowed(runner.status.kind, event.status.kind)) {
        return { level: "warn", reason: `runner ${event.runnerId}: ${runner.status.kind} → ${event.status.kind} is not allowed` };
      }
      return null;
    }
    case "RunnerStageListening": {
      const runner = state.runners[event.runnerId];
      if (runner === undefined) return { level: "debug", reason: `unknown runner ${event.runnerId}` };
      return runner.nodeId === fromNodeId ? null : { level: "warn", reason: `runner ${event.runnerId} lives on ${runner.nodeId}, not ${fromNodeId}` };
    }
    case "TaskStatusUpdated":
    case "TaskPrefillProgress":
    case "ChunkGenerated":
      return judgeTaskReport(state, event.taskId, fromNodeId);
    default:
      return { level: "warn", reason: `${event.type} is not a worker event` };
  }
}

/** A task report must name a known task whose instance has a shard on the reporting node. */
function judgeTaskReport(state: State, taskId: TaskId, fromNodeId: NodeId): WorkerEventRejection | null {
  const task = state.tasks[taskId];
  if (task === undefined) return { level: "debug", reason: `unknown task ${taskId}` };
  const instance = task.instanceId === null ? undefined : state.instances[task.instanceId];
  if (instance === undefined) return { level: "debug", reason: `task ${taskId} has no live instance` };
  if (!instance.shards.some((s) => s.nodeId === fromNodeId)) {
    return { level: "warn", reason: `task ${taskId} runs on instance ${instance.instanceId}, which has no shard on ${fromNodeId}` };
  }
  return null;
}

function cancelledEvent(taskId: TaskId): EventOf<"TaskStatusUpdated"> {
  return {
    type: "TaskStatusUpdated",
    taskId,
    status: "Cancelled",
    finishReason: "cancelled",
    failureCode: null,
    failureReason: null,
    fromRunner: false,
    tokensGenerated: null,
    promptTokens: null,
  };
}

function failedEvent(taskId: TaskId, failureCode: FailureCode, failureReason: string): EventOf<"TaskStatusUpdated"> {
  return {
    type: "TaskStatusUpdated",
    taskId,
    status: "Failed",
    finishReason: "error",
    failureCode,
    failureReason,
    fromRunner: false,
    tokensGenerated: null,
    promptTokens: null,
  };
}

/** A Set that forgets its oldest entries beyond `sizeMax`. */
class BoundedSet<T> {
  private readonly items = new Set<T>();
  constructor(private readonly sizeMax: number) {}
  has(item: T): boolean {
    return this.items.has(item);
  }
  add(item: T): void {
    this.items.delete(item);
    this.items.add(item);
    if (this.items.size > this.sizeMax) {
      const oldest = this.items.values().next();
      if (!oldest.done) this.items.delete(oldest.value);
    }
  }
}
