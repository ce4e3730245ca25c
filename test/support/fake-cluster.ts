// FakeCluster: a ClusterPort in one process for API tests. Events go through the real `apply`, so
// the State the API reads is exactly what a node would hold; a small fake master answers commands
// the way src/master does (admission, cancel, TaskFinished → client-finished, delete once ended and
// released by its runner, placement), and tests play the runner by emitting TaskStatusUpdated /
// ChunkGenerated themselves.
import type { ClusterPort, StateListener } from "../../src/node/cluster-port.ts";
import { apply } from "../../src/shared/apply.ts";
import type { CommandId, InstanceId, ModelId, NodeId, RunnerId, TaskId } from "../../src/shared/ids.ts";
import { newInstanceId, newRunnerId, newTaskId } from "../../src/shared/ids.ts";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../../src/shared/limits.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState, findTaskByCommandId, instancesOfModel, tasksOfInstance } from "../../src/shared/state.ts";
import type { Command, CommandOf, Event, FailureCode, FinishReason, IndexedEvent, Instance, Task } from "../../src/shared/types.ts";
import { isTaskTerminal } from "../../src/shared/types.ts";

export type Delivery = "sync" | "microtask";

export interface FakeClusterOptions {
  readonly nodeId?: string;
  /** "microtask" is how src/node wires a local master; "sync" answers inside sendCommand (re-entrancy). */
  readonly delivery?: Delivery;
  /** Events kept for eventsSince; older ones answer null (→ 410). */
  readonly historyMax?: number;
  /** When false, PlaceInstance is ignored, as the master does when no placement fits. */
  readonly placementPossible?: boolean;
}

export class FakeCluster implements ClusterPort {
  readonly nodeId: NodeId;
  readonly commands: Command[] = [];
  placementPossible: boolean;
  /** Called after the fake master has answered a TextGeneration with TaskCreated. */
  onTaskCreated: ((task: Task) => void) | null = null;
  private current: State = emptyState();
  private readonly listeners = new Set<StateListener>();
  private readonly history: IndexedEvent[] = [];
  private readonly historyMax: number;
  private readonly delivery: Delivery;
  private readonly chunkCounts = new Map<TaskId, number>();

  constructor(options: FakeClusterOptions = {}) {
    this.nodeId = (options.nodeId ?? "node-fake") as NodeId;
    this.delivery = options.delivery ?? "microtask";
    this.historyMax = options.historyMax ?? 10_000;
    this.placementPossible = options.placementPossible ?? true;
  }

  get state(): State {
    return this.current;
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  subscribe(listener: StateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  eventsSince(sinceIdx: number): readonly IndexedEvent[] | null {
    const oldest = this.history[0]?.idx ?? this.current.lastIdx + 1;
    if (sinceIdx < oldest) return null;
    return this.history.filter((e) => e.idx >= sinceIdx);
  }

  sendCommand(command: Command): void {
    this.commands.push(command);
    if (this.delivery === "sync") this.answer(command);
    else queueMicrotask(() => this.answer(command));
  }

  /** Index, apply (the real apply) and publish one event. */
  emit(event: Event): IndexedEvent {
    const indexed: IndexedEvent = { idx: this.current.lastIdx + 1, atMs: 1_700_000_000_000 + this.current.lastIdx + 1, event };
    this.current = apply(this.current, indexed);
    this.history.push(indexed);
    if (this.history.length > this.historyMax) this.history.shift();
    for (const listener of [...this.listeners]) listener(indexed, this.current);
    return indexed;
  }

  // ── what tests look at ──────────────────────────────────────────────────────────────────────

  sent<T extends Command["type"]>(type: T): CommandOf<T>[] {
    return this.commands.filter((c): c is CommandOf<T> => c.type === type);
  }

  /** TaskCancelled / TaskFinished sent for one completion id. */
  cancelsOf(commandId: string): number {
    return this.sent("TaskCancelled").filter((c) => c.cancelledCommandId === commandId).length;
  }

  finishesOf(commandId: string): number {
    return this.sent("TaskFinished").filter((c) => c.finishedCommandId === commandId).length;
  }

  taskOf(commandId: string): Task | undefined {
    return findTaskByCommandId(this.current, commandId as CommandId);
  }

  // ── setting the scene ───────────────────────────────────────────────────────────────────────

  addNode(nodeId: string = this.nodeId, memoryBytes = 16 * 1024 ** 3): void {
    this.emit({
      type: "NodeGatheredInfo",
      info: { nodeId: nodeId as NodeId, hostname: nodeId, memoryTotalBytes: memoryBytes, memoryAvailableBytes: memoryBytes, cores: 2, addresses: ["127.0.0.1"], apiPort: 0, clusterPort: 0 },
    });
  }

  /** An instance of `modelId` on this node, one shard, its runner Ready. */
  addInstance(modelId: string, layerCount = 4, placedByCommandId?: CommandId): Instance {
    const runnerId = newRunnerId();
    const instance: Instance = {
      instanceId: newInstanceId(),
      modelId: modelId as ModelId,
      sharding: "pipeline",
      layerCount,
      shards: [{ runnerId, nodeId: this.nodeId, layerStart: 0, layerEnd: layerCount }],
      ...(placedByCommandId === undefined ? {} : { placedByCommandId }),
    };
    this.emit({ type: "InstanceCreated", instance });
    return instance;
  }

  runnerOf(instanceId: InstanceId): RunnerId {
    const runner = Object.values(this.current.runners).find((r) => r.instanceId === instanceId);
    if (runner === undefined) throw new Error(`no runner for ${instanceId}`);
    return runner.runnerId;
  }

  // ── playing the runner ──────────────────────────────────────────────────────────────────────

  /** A status as the runner reports it (fromRunner), unless `fromRunner: false` says the master decided it. */
  setTaskStatus(
    taskId: TaskId,
    status: Task["status"],
    extra: { finishReason?: FinishReason; failureCode?: FailureCode; failureReason?: string; promptTokens?: number; tokensGenerated?: number; fromRunner?: boolean } = {},
  ): void {
    const fromRunner = extra.fromRunner ?? true;
    this.emit({
      type: "TaskStatusUpdated",
      taskId,
      status,
      finishReason: extra.finishReason ?? null,
      failureCode: extra.failureCode ?? null,
      failureReason: extra.failureReason ?? null,
      fromRunner,
      tokensGenerated: extra.tokensGenerated ?? null,
      promptTokens: extra.promptTokens ?? null,
    });
    if (fromRunner) this.deleteSettledTasks();
  }

  /** One chunk; its index and token count follow the task's previous chunks. */
  chunk(taskId: TaskId, text: string, index?: number): void {
    const tokensGenerated = (this.chunkCounts.get(taskId) ?? 0) + 1;
    this.chunkCounts.set(taskId, tokensGenerated);
    this.emit({ type: "ChunkGenerated", taskId, chunk: { index: index ?? tokensGenerated - 1, text, tokensGenerated, logprobs: null } });
  }

  /** Running, each piece as a chunk, then Complete with the counts. */
  generate(taskId: TaskId, pieces: readonly string[], finishReason: FinishReason = "stop", promptTokens = 7): void {
    this.setTaskStatus(taskId, "Running", { promptTokens });
    for (const piece of pieces) this.chunk(taskId, piece);
    this.setTaskStatus(taskId, "Complete", { finishReason, promptTokens, tokensGenerated: pieces.length });
  }

  // ── the fake master ─────────────────────────────────────────────────────────────────────────

  private answer(command: Command): void {
    switch (command.type) {
      case "TextGeneration":
        return this.onTextGeneration(command);
      case "TaskCancelled": {
        const task = findTaskByCommandId(this.current, command.cancelledCommandId);
        if (task !== undefined && !isTaskTerminal(task.status)) this.setTaskStatus(task.taskId, "Cancelled", { finishReason: "cancelled", fromRunner: false });
        return;
      }
      case "TaskFinished": {
        const task = findTaskByCommandId(this.current, command.finishedCommandId);
        if (task === undefined || task.clientFinished) return;
        if (!isTaskTerminal(task.status)) this.setTaskStatus(task.taskId, "Cancelled", { finishReason: "cancelled", fromRunner: false });
        this.emit({ type: "TaskClientFinished", taskId: task.taskId });
        this.deleteSettledTasks();
        return;
      }
      case "PlaceInstance":
        if (this.placementPossible) this.addInstance(command.model.modelId, command.model.layerCount, command.commandId);
        return;
      case "DeleteInstance":
        if (this.current.instances[command.instanceId] === undefined) return;
        this.emit({ type: "InstanceDeleted", instanceId: command.instanceId, reason: "deleted on request" });
        this.deleteSettledTasks();
        return;
      case "RequestEventLog":
        return;
    }
  }

  /** As the master: a task goes once the client finished it, it ended, and no runner holds it. */
  private deleteSettledTasks(): void {
    for (const task of Object.values(this.current.tasks)) {
      if (task.clientFinished && isTaskTerminal(task.status) && !task.heldByRunner) this.emit({ type: "TaskDeleted", taskId: task.taskId });
    }
  }

  private onTextGeneration(command: CommandOf<"TextGeneration">): void {
    if (findTaskByCommandId(this.current, command.commandId) !== undefined) return;
    const instance = instancesOfModel(this.current, command.modelId)[0];
    const pendingCount = instance === undefined ? 0 : tasksOfInstance(this.current, instance.instanceId).filter((t) => t.status === "Pending").length;
    const failure: { code: FailureCode; reason: string } | null =
      instance === undefined
        ? { code: "no_instance", reason: `no instance serves model ${command.modelId}` }
        : pendingCount >= TASKS_PENDING_PER_INSTANCE_MAX
          ? { code: "queue_full", reason: "queue full" }
          : null;
    const task: Task = {
      taskId: newTaskId(),
      commandId: command.commandId,
      instanceId: instance?.instanceId ?? null,
      modelId: command.modelId,
      originNodeId: command.originNodeId,
      status: failure === null ? "Pending" : "Failed",
      params: command.params,
      promptTokens: 0,
      tokensGenerated: 0,
      prefill: null,
      finishReason: failure === null ? null : "error",
      failureCode: failure?.code ?? null,
      failureReason: failure?.reason ?? null,
      heldByRunner: false,
      clientFinished: false,
    };
    this.emit({ type: "TaskCreated", task });
    this.onTaskCreated?.(task);
  }
}

/** Waits for an observed condition, polling on the event loop; fails after timeoutMs. */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
