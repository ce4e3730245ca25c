// The cluster State every node holds a replica of. It is derived only by `apply` from indexed
// events, so anything the cluster needs after a restart or failover lives here, never beside it.
import type { CommandId, InstanceId, NodeId, RunnerId, TaskId } from "./ids.ts";
import type { DownloadProgress, Instance, NodeInfo, Runner, Task } from "./types.ts";

export interface State {
  /** Index of the last applied event; -1 before the first. */
  readonly lastIdx: number;
  readonly masterNodeId: NodeId | null;
  readonly masterTerm: number;
  /** The cluster this log belongs to (ClusterMembersChanged); null before the first. */
  readonly clusterId: string | null;
  /** Voting members of the replicated log, in the order the master listed them. */
  readonly members: readonly NodeId[];
  readonly nodes: Readonly<Record<NodeId, NodeInfo>>;
  readonly instances: Readonly<Record<InstanceId, Instance>>;
  readonly runners: Readonly<Record<RunnerId, Runner>>;
  readonly tasks: Readonly<Record<TaskId, Task>>;
  readonly downloads: Readonly<Record<NodeId, Readonly<Record<string, DownloadProgress>>>>;
  readonly edges: readonly {
    readonly fromNodeId: NodeId;
    readonly toNodeId: NodeId;
    readonly latencyMs: number | null;
    readonly bandwidthBytesPerSecond: number | null;
  }[];
}

export const emptyState = (): State => ({
  lastIdx: -1,
  masterNodeId: null,
  masterTerm: 0,
  clusterId: null,
  members: [],
  nodes: {},
  instances: {},
  runners: {},
  tasks: {},
  downloads: {},
  edges: [],
});

// Small total lookups: a missing key is an expected operating condition, never an exception.
export const getTask = (s: State, id: TaskId): Task | undefined => s.tasks[id];
export const getRunner = (s: State, id: RunnerId): Runner | undefined => s.runners[id];
export const getInstance = (s: State, id: InstanceId): Instance | undefined => s.instances[id];

/** Tasks are keyed by TaskId; clients know the CommandId. Bounded by TASKS_MAX, so a scan is fine. */
export function findTaskByCommandId(s: State, commandId: CommandId): Task | undefined {
  for (const task of Object.values(s.tasks)) if (task.commandId === commandId) return task;
  return undefined;
}

export const instancesOfModel = (s: State, modelId: string): Instance[] =>
  Object.values(s.instances).filter((i) => i.modelId === modelId);

/** Tasks of an instance in creation order (TaskCreated order = object insertion order). */
export const tasksOfInstance = (s: State, instanceId: InstanceId | null): Task[] =>
  Object.values(s.tasks).filter((t) => t.instanceId === instanceId);

/** The wire shape of GET /state: the contract's snake_case top-level keys. */
export function stateToJson(s: State): Record<string, unknown> {
  return {
    master_node_id: s.masterNodeId,
    master_term: s.masterTerm,
    cluster_id: s.clusterId,
    members: s.members,
    last_idx: s.lastIdx,
    nodes: s.nodes,
    instances: s.instances,
    runners: s.runners,
    tasks: s.tasks,
    downloads: s.downloads,
    edges: s.edges,
  };
}
