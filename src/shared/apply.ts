// The pure core: State × IndexedEvent → State. Every node runs the same function over the same
// events and so holds the same State. Unknown ids are expected (messages race and repeat): they
// leave State unchanged. Deletes cascade so nothing is left referring to something gone.
import { assert, assertNever } from "./assert.ts";
import type { InstanceId, TaskId } from "./ids.ts";
import { isRunnerTransitionAllowed } from "./runner-transitions.ts";
import type { State } from "./state.ts";
import type { EventOf, IndexedEvent, Runner, Task } from "./types.ts";
import { isTaskTerminal } from "./types.ts";

export class EventOrderError extends Error {
  override name = "EventOrderError";
  constructor(readonly expectedIdx: number, readonly gotIdx: number) {
    super(`event idx ${gotIdx} applied to state at ${expectedIdx - 1}; expected ${expectedIdx}`);
  }
}

export function apply(state: State, indexed: IndexedEvent): State {
  // Out-of-order application is an operating error for a replica (it buffers and asks for the
  // log), so it is a typed error rather than an assertion.
  if (indexed.idx !== state.lastIdx + 1) throw new EventOrderError(state.lastIdx + 1, indexed.idx);
  const next = applyEvent(state, indexed.event);
  return { ...next, lastIdx: indexed.idx };
}

function applyEvent(s: State, e: IndexedEvent["event"]): State {
  switch (e.type) {
    case "MasterChanged":
      return { ...s, masterNodeId: e.nodeId, masterTerm: e.term };
    case "NodeGatheredInfo":
      return { ...s, nodes: { ...s.nodes, [e.info.nodeId]: e.info } };
    case "NodeTimedOut":
      return applyNodeTimedOut(s, e);
    case "InstanceCreated":
      return applyInstanceCreated(s, e);
    case "InstanceDeleted":
      return applyInstanceDeleted(s, e.instanceId, e.reason);
    case "RunnerStatusUpdated":
      return applyRunnerStatusUpdated(s, e);
    case "RunnerStageListening": {
      const runner = s.runners[e.runnerId];
      if (runner === undefined) return s;
      return { ...s, runners: { ...s.runners, [e.runnerId]: { ...runner, stagePort: e.port } } };
    }
    case "ClusterMembersChanged":
      return { ...s, clusterId: e.clusterId, members: [...e.members] };
    case "TaskCreated":
      return { ...s, tasks: { ...s.tasks, [e.task.taskId]: e.task } };
    case "TaskStatusUpdated":
      return applyTaskStatusUpdated(s, e);
    case "TaskPrefillProgress":
      // A late report must not put progress back on a task that already ended (prefill is cleared then).
      return updateTask(s, e.taskId, (t) =>
        isTaskTerminal(t.status) ? t : { ...t, prefill: { processedTokens: e.processedTokens, totalTokens: e.totalTokens } },
      );
    case "TaskClientFinished":
      return updateTask(s, e.taskId, (t) => ({ ...t, clientFinished: true }));
    case "TaskDeleted":
      return applyTaskDeleted(s, e.taskId);
    case "ChunkGenerated":
      // One per token: State is left alone (copying the task map per token is what makes a replica
      // slow). Live counts are in the chunk; the runner's end report brings the final count.
      return s;
    case "NodeDownloadProgress": {
      const forNode = { ...(s.downloads[e.nodeId] ?? {}), [e.progress.modelId]: e.progress };
      return { ...s, downloads: { ...s.downloads, [e.nodeId]: forNode } };
    }
    case "TopologyEdgeCreated": {
      const edges = s.edges.filter((x) => !(x.fromNodeId === e.fromNodeId && x.toNodeId === e.toNodeId));
      const edge = { fromNodeId: e.fromNodeId, toNodeId: e.toNodeId, latencyMs: e.latencyMs, bandwidthBytesPerSecond: e.bandwidthBytesPerSecond ?? null };
      return { ...s, edges: [...edges, edge] };
    }
    case "TopologyEdgeDeleted":
      return { ...s, edges: s.edges.filter((x) => !(x.fromNodeId === e.fromNodeId && x.toNodeId === e.toNodeId)) };
    default:
      return assertNever(e);
  }
}

function updateTask(s: State, taskId: TaskId, f: (t: Task) => Task): State {
  const task = s.tasks[taskId];
  if (task === undefined) return s;
  return { ...s, tasks: { ...s.tasks, [taskId]: f(task) } };
}

function applyTaskStatusUpdated(s: State, e: EventOf<"TaskStatusUpdated">): State {
  return updateTask(s, e.taskId, (t) => {
    const counts = {
      heldByRunner: e.fromRunner ? e.status === "Running" : t.heldByRunner,
      tokensGenerated: e.tokensGenerated === null ? t.tokensGenerated : Math.max(t.tokensGenerated, e.tokensGenerated),
      promptTokens: e.promptTokens ?? t.promptTokens,
    };
    // A terminal status is final: a runner's late "Complete" after the master recorded "Cancelled"
    // only contributes its counts.
    if (isTaskTerminal(t.status)) {
      return { ...t, ...counts, finishReason: t.finishReason ?? e.finishReason };
    }
    return {
      ...t,
      ...counts,
      status: e.status,
      finishReason: e.finishReason ?? t.finishReason,
      failureCode: e.failureCode ?? t.failureCode,
      failureReason: e.failureReason ?? t.failureReason,
      prefill: e.status === "Running" ? t.prefill : null,
    };
  });
}

function applyTaskDeleted(s: State, taskId: TaskId): State {
  if (s.tasks[taskId] === undefined) return s;
  const { [taskId]: _removed, ...tasks } = s.tasks;
  return { ...s, tasks: tasks as State["tasks"] };
}

function applyInstanceCreated(s: State, e: EventOf<"InstanceCreated">): State {
  assert(s.instances[e.instance.instanceId] === undefined, "InstanceCreated for an existing instance");
  const runners: Record<string, Runner> = { ...s.runners };
  for (const shard of e.instance.shards) {
    runners[shard.runnerId] = {
      runnerId: shard.runnerId,
      instanceId: e.instance.instanceId,
      nodeId: shard.nodeId,
      status: { kind: "Idle" },
    };
  }
  return {
    ...s,
    instances: { ...s.instances, [e.instance.instanceId]: e.instance },
    runners: runners as State["runners"],
  };
}

/** Cascade: the instance's runners go, and its unfinished tasks fail with the reason. */
function applyInstanceDeleted(s: State, instanceId: InstanceId, reason: string): State {
  const instance = s.instances[instanceId];
  if (instance === undefined) return s;
  const { [instanceId]: _removed, ...instances } = s.instances;
  const runners = Object.fromEntries(Object.entries(s.runners).filter(([, r]) => r.instanceId !== instanceId));
  // Its runners are gone, so none holds a task any more; unfinished tasks fail with the reason.
  const tasks = Object.fromEntries(
    Object.entries(s.tasks).map(([id, t]) => {
      if (t.instanceId !== instanceId) return [id, t];
      if (isTaskTerminal(t.status)) return [id, { ...t, heldByRunner: false }];
      const failed: Task = {
        ...t,
        heldByRunner: false,
        status: "Failed",
        finishReason: "error",
        failureCode: "instance_deleted",
        failureReason: `instance deleted: ${reason}`,
        prefill: null,
      };
      return [id, failed];
    }),
  );
  return {
    ...s,
    instances: instances as State["instances"],
    runners: runners as State["runners"],
    tasks: tasks as State["tasks"],
  };
}

function applyRunnerStatusUpdated(s: State, e: EventOf<"RunnerStatusUpdated">): State {
  const runner = s.runners[e.runnerId];
  if (runner === undefined) return s;
  assert(
    isRunnerTransitionAllowed(runner.status.kind, e.status.kind),
    `runner ${e.runnerId}: ${runner.status.kind} → ${e.status.kind} is not allowed`,
  );
  return { ...s, runners: { ...s.runners, [e.runnerId]: { ...runner, status: e.status } } };
}

/** A node that left takes its download records and edges with it; its instances are deleted. */
function applyNodeTimedOut(s: State, e: EventOf<"NodeTimedOut">): State {
  let next: State = s;
  for (const instance of Object.values(s.instances)) {
    if (instance.shards.some((shard) => shard.nodeId === e.nodeId)) {
      next = applyInstanceDeleted(next, instance.instanceId, `node ${e.nodeId} timed out`);
    }
  }
  const { [e.nodeId]: _node, ...nodes } = next.nodes;
  const { [e.nodeId]: _downloads, ...downloads } = next.downloads;
  return {
    ...next,
    nodes: nodes as State["nodes"],
    downloads: downloads as State["downloads"],
    edges: next.edges.filter((x) => x.fromNodeId !== e.nodeId && x.toNodeId !== e.nodeId),
    masterNodeId: next.masterNodeId === e.nodeId ? null : next.masterNodeId,
  };
}
