// The wire and state vocabulary of skein: one zod schema per message, TS types inferred from them.
// Commands flow API → master, events flow master → every node (indexed), worker events flow
// worker → master (unindexed, validated and then indexed by the master).
import { z } from "zod";
import {
  CommandIdSchema,
  InstanceIdSchema,
  ModelIdSchema,
  NodeIdSchema,
  RunnerIdSchema,
  TaskIdSchema,
} from "./ids.ts";
import { CHAT_MESSAGES_MAX, CLUSTER_MEMBERS_MAX, GENERATION_TOKENS_MAX, PIPELINE_TASKS_IN_FLIGHT_MAX, STOP_STRINGS_MAX, TOOL_CALLS_PER_MESSAGE_MAX, TOOL_NAME_CHARS_MAX, TOOLS_MAX } from "./limits.ts";

// ── generation parameters ─────────────────────────────────────────────────────────────────────

export const ChatRoleSchema = z.enum(["system", "developer", "user", "assistant", "tool"]);
export type ChatRole = z.infer<typeof ChatRoleSchema>;

/** A function the model may call; `parameters` is a JSON schema, passed to the chat template as is. */
export const ToolDefinitionSchema = z.object({
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  description: z.string().optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});
export type ToolDefinition = z.infer<typeof ToolDefinitionSchema>;

/** A call the model made, as the API returned it; `arguments` is the JSON text of an object. */
export const ToolCallSchema = z.object({
  id: z.string().min(1),
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  arguments: z.string(),
});
export type ToolCall = z.infer<typeof ToolCallSchema>;

/** "auto": the model decides; "none": no tools offered; "required": it must call one; or a named one. */
export const ToolChoiceSchema = z.union([z.enum(["auto", "none", "required"]), z.object({ name: z.string().min(1).max(TOOL_NAME_CHARS_MAX) })]);
export type ToolChoice = z.infer<typeof ToolChoiceSchema>;

export const ChatMessageSchema = z.object({
  role: ChatRoleSchema,
  content: z.string(),
  /** An assistant turn's calls (its content may be ""). */
  toolCalls: z.array(ToolCallSchema).max(TOOL_CALLS_PER_MESSAGE_MAX).optional(),
  /** A "tool" turn: the call this is the result of. */
  toolCallId: z.string().optional(),
  /** A "tool" turn: the function's name (templates such as Llama's and Ollama clients use it). */
  name: z.string().optional(),
});
export type ChatMessage = z.infer<typeof ChatMessageSchema>;

/** Sampling and stopping, already normalised by the API adapter (snake_case → camelCase, defaults). */
export const GenerationParamsSchema = z.object({
  messages: z.array(ChatMessageSchema).min(1).max(CHAT_MESSAGES_MAX),
  maxTokens: z.number().int().min(1).max(GENERATION_TOKENS_MAX).nullable(),
  temperature: z.number().min(0).max(2),
  topP: z.number().gt(0).max(1),
  topK: z.number().int().min(0),
  minP: z.number().min(0).max(1),
  seed: z.number().int().nullable(),
  stop: z.array(z.string().min(1)).max(STOP_STRINGS_MAX),
  presencePenalty: z.number().min(-2).max(2),
  frequencyPenalty: z.number().min(-2).max(2),
  repetitionPenalty: z.number().gt(0).max(10),
  logprobs: z.boolean(),
  topLogprobs: z.number().int().min(0).max(20),
  /** Functions offered to the model through its chat template; absent or empty: none. */
  tools: z.array(ToolDefinitionSchema).max(TOOLS_MAX).optional(),
  toolChoice: ToolChoiceSchema.optional(),
});
export type GenerationParams = z.infer<typeof GenerationParamsSchema>;

// ── statuses ──────────────────────────────────────────────────────────────────────────────────

export const TaskStatusSchema = z.enum(["Pending", "Running", "Complete", "Cancelled", "Failed"]);
export type TaskStatus = z.infer<typeof TaskStatusSchema>;
export const TERMINAL_TASK_STATUSES: readonly TaskStatus[] = ["Complete", "Cancelled", "Failed"];
export const isTaskTerminal = (s: TaskStatus): boolean => TERMINAL_TASK_STATUSES.includes(s);

export const FinishReasonSchema = z.enum(["stop", "length", "cancelled", "error"]);
export type FinishReason = z.infer<typeof FinishReasonSchema>;

/** Why a task failed, in a form the API maps to an HTTP status (the reason string is for people). */
export const FailureCodeSchema = z.enum([
  "no_instance", // no instance serves the model (503)
  "queue_full", // the instance's queue is at TASKS_PENDING_PER_INSTANCE_MAX (429)
  "too_many_tasks", // TASKS_MAX reached (429)
  "bad_request", // the engine refused the input, e.g. a prompt longer than the context (400)
  "runner_failed", // the runner crashed, hung or failed (500)
  "instance_deleted", // the instance went away under the task (503)
  "node_restarted", // the node holding the client restarted (500)
  "internal", // a bug (500)
  "timeout", // the task ran past its prefill or decode timeout and was stopped (504)
]);
export type FailureCode = z.infer<typeof FailureCodeSchema>;

const RunnerStatusUnionSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("Idle") }),
  z.object({ kind: z.literal("Loading"), layersLoaded: z.number().int().min(0), layerCount: z.number().int().min(0) }),
  z.object({ kind: z.literal("Loaded") }),
  z.object({ kind: z.literal("WarmingUp") }),
  z.object({ kind: z.literal("Ready") }),
  /**
   * The tasks the runner works on, oldest first. One for a single-node instance; a pipeline's first
   * stage interleaves up to runnerTaskSlots(stageCount) so that every stage computes at once.
   */
  z.object({ kind: z.literal("Running"), taskIds: z.array(TaskIdSchema).min(1).max(PIPELINE_TASKS_IN_FLIGHT_MAX) }),
  z.object({ kind: z.literal("ShuttingDown") }),
  z.object({ kind: z.literal("Shutdown") }),
  z.object({ kind: z.literal("Failed"), reason: z.string() }),
]);

/** Logs written before runners held several tasks say `Running{taskId}`: read as `Running{taskIds:[taskId]}`. */
function upgradeRunnerStatus(value: unknown): unknown {
  if (typeof value !== "object" || value === null) return value;
  const v = value as { kind?: unknown; taskId?: unknown; taskIds?: unknown };
  return v.kind === "Running" && v.taskIds === undefined && v.taskId !== undefined ? { kind: "Running", taskIds: [v.taskId] } : value;
}

export const RunnerStatusSchema = z.preprocess(upgradeRunnerStatus, RunnerStatusUnionSchema);
export type RunnerStatus = z.infer<typeof RunnerStatusSchema>;
export type RunnerStatusKind = RunnerStatus["kind"];

// ── state entities ────────────────────────────────────────────────────────────────────────────

export const NodeInfoSchema = z.object({
  nodeId: NodeIdSchema,
  hostname: z.string(),
  memoryTotalBytes: z.number().min(0),
  memoryAvailableBytes: z.number().min(0),
  cores: z.number().int().min(1),
  addresses: z.array(z.string()),
  apiPort: z.number().int().min(0).max(65535),
  clusterPort: z.number().int().min(0).max(65535),
  /**
   * When the node's process started (ms since the epoch). A different value in a later report means
   * the process restarted: the client connections its API held are gone.
   */
  startedAtMs: z.number().min(0).optional(),
});
export type NodeInfo = z.infer<typeof NodeInfoSchema>;

export const ShardSchema = z.object({
  runnerId: RunnerIdSchema,
  nodeId: NodeIdSchema,
  layerStart: z.number().int().min(0),
  layerEnd: z.number().int().min(1),
});
export type Shard = z.infer<typeof ShardSchema>;

export const ShardingSchema = z.enum(["pipeline"]);
export type Sharding = z.infer<typeof ShardingSchema>;

export const InstanceSchema = z.object({
  instanceId: InstanceIdSchema,
  modelId: ModelIdSchema,
  sharding: ShardingSchema,
  layerCount: z.number().int().min(1),
  /** The model's size when placed: placement counts each shard's share (see placement.ts) as claimed on its node. */
  sizeBytes: z.number().min(0).optional(),
  /** Of sizeBytes, what only the last shard holds (output head); absent: 0. */
  headBytes: z.number().min(0).optional(),
  /** The PlaceInstance that created it, so the API that asked can tell its instance from others. */
  placedByCommandId: CommandIdSchema.optional(),
  /** Ordered by layerStart; together they cover [0, layerCount) without gaps. */
  shards: z.array(ShardSchema).min(1),
});
export type Instance = z.infer<typeof InstanceSchema>;

export const RunnerSchema = z.object({
  runnerId: RunnerIdSchema,
  instanceId: InstanceIdSchema,
  nodeId: NodeIdSchema,
  status: RunnerStatusSchema,
  /**
   * The TCP port where this runner accepts the previous pipeline stage (later stages only; on the
   * runner's node's address). Absent until the runner reports it with RunnerStageListening.
   */
  stagePort: z.number().int().min(1).max(65535).optional(),
});
export type Runner = z.infer<typeof RunnerSchema>;

export const TaskSchema = z.object({
  taskId: TaskIdSchema,
  commandId: CommandIdSchema,
  /** null when no instance could take the task (it is then created Failed with failureCode). */
  instanceId: InstanceIdSchema.nullable(),
  modelId: ModelIdSchema,
  /** The node whose API holds the client connection; if that node restarts, its tasks are orphans. */
  originNodeId: NodeIdSchema,
  status: TaskStatusSchema,
  params: GenerationParamsSchema,
  promptTokens: z.number().int().min(0),
  tokensGenerated: z.number().int().min(0),
  prefill: z.object({ processedTokens: z.number().int().min(0), totalTokens: z.number().int().min(0) }).nullable(),
  finishReason: FinishReasonSchema.nullable(),
  failureCode: FailureCodeSchema.nullable(),
  failureReason: z.string().nullable(),
  /** A runner works on the task: from its Running report until its end report (or its instance is gone). */
  heldByRunner: z.boolean(),
  /** The API is done with the task (TaskFinished). It is deleted once it is also ended and released. */
  clientFinished: z.boolean(),
});
export type Task = z.infer<typeof TaskSchema>;

export const DownloadProgressSchema = z.object({
  modelId: ModelIdSchema,
  /** "removed": the node deleted its copy (DELETE /models/{id}); it no longer holds the model. */
  status: z.enum(["pending", "downloading", "complete", "failed", "removed"]),
  downloadedBytes: z.number().min(0),
  totalBytes: z.number().min(0),
  error: z.string().nullable(),
});
export type DownloadProgress = z.infer<typeof DownloadProgressSchema>;

// ── events (master → all, indexed) ───────────────────────────────────────────────────────────

export const ChunkSchema = z.object({
  /** 0-based position of this chunk in the task's stream. */
  index: z.number().int().min(0),
  text: z.string(),
  /** Tokens generated so far, including this chunk's. */
  tokensGenerated: z.number().int().min(0),
  logprobs: z
    .array(z.object({ token: z.string(), logprob: z.number(), top: z.array(z.object({ token: z.string(), logprob: z.number() })) }))
    .nullable(),
});
export type Chunk = z.infer<typeof ChunkSchema>;

export const EventSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("MasterChanged"), nodeId: NodeIdSchema, term: z.number().int().min(0) }),
  z.object({ type: z.literal("NodeGatheredInfo"), info: NodeInfoSchema }),
  z.object({ type: z.literal("NodeTimedOut"), nodeId: NodeIdSchema }),
  z.object({ type: z.literal("InstanceCreated"), instance: InstanceSchema }),
  z.object({ type: z.literal("InstanceDeleted"), instanceId: InstanceIdSchema, reason: z.string() }),
  z.object({ type: z.literal("RunnerStatusUpdated"), runnerId: RunnerIdSchema, status: RunnerStatusSchema }),
  /** A pipeline stage's runner listens for its upstream stage on this port (reported after each (re)start). */
  z.object({ type: z.literal("RunnerStageListening"), runnerId: RunnerIdSchema, port: z.number().int().min(1).max(65535) }),
  /**
   * The voting members of the replicated log (one added or removed at a time), and the id of the
   * cluster they form: two clusters that meet compare ids to decide which one the other joins.
   */
  z.object({
    type: z.literal("ClusterMembersChanged"),
    clusterId: z.string().min(1).max(128),
    members: z.array(NodeIdSchema).min(1).max(CLUSTER_MEMBERS_MAX),
  }),
  z.object({ type: z.literal("TaskCreated"), task: TaskSchema }),
  z.object({
    type: z.literal("TaskStatusUpdated"),
    taskId: TaskIdSchema,
    status: TaskStatusSchema,
    finishReason: FinishReasonSchema.nullable(),
    failureCode: FailureCodeSchema.nullable(),
    failureReason: z.string().nullable(),
    /** True when a worker reported it about its runner (stamped by the master), false for the master's own. */
    fromRunner: z.boolean(),
    /** Final counts, when the runner reports the end of a task. */
    tokensGenerated: z.number().int().min(0).nullable(),
    promptTokens: z.number().int().min(0).nullable(),
  }),
  z.object({ type: z.literal("TaskPrefillProgress"), taskId: TaskIdSchema, processedTokens: z.number().int().min(0), totalTokens: z.number().int().min(0) }),
  z.object({ type: z.literal("TaskClientFinished"), taskId: TaskIdSchema }),
  z.object({ type: z.literal("TaskDeleted"), taskId: TaskIdSchema }),
  z.object({ type: z.literal("ChunkGenerated"), taskId: TaskIdSchema, chunk: ChunkSchema }),
  z.object({ type: z.literal("NodeDownloadProgress"), nodeId: NodeIdSchema, progress: DownloadProgressSchema }),
  z.object({
    type: z.literal("TopologyEdgeCreated"),
    fromNodeId: NodeIdSchema,
    toNodeId: NodeIdSchema,
    latencyMs: z.number().min(0).nullable(),
    /** Measured by the link's probe; optional because events logged before it existed lack it. */
    bandwidthBytesPerSecond: z.number().min(0).nullable().optional(),
  }),
  z.object({ type: z.literal("TopologyEdgeDeleted"), fromNodeId: NodeIdSchema, toNodeId: NodeIdSchema }),
]);
export type Event = z.infer<typeof EventSchema>;
export type EventType = Event["type"];
export type EventOf<T extends EventType> = Extract<Event, { type: T }>;

export const IndexedEventSchema = z.object({
  idx: z.number().int().min(0),
  /** Master's clock when the event was indexed (ms since the epoch). Latency is measured from these. */
  atMs: z.number(),
  event: EventSchema,
});
export type IndexedEvent = z.infer<typeof IndexedEventSchema>;

/**
 * Events a worker may report about what it owns (its runners and their tasks). The master checks
 * them against State before indexing; anything else from a worker is refused.
 */
export const WORKER_EVENT_TYPES = [
  "NodeGatheredInfo",
  "RunnerStatusUpdated",
  "RunnerStageListening",
  "TaskStatusUpdated",
  "TaskPrefillProgress",
  "ChunkGenerated",
  "NodeDownloadProgress",
] as const satisfies readonly EventType[];
export type WorkerEvent = EventOf<(typeof WORKER_EVENT_TYPES)[number]>;

// ── commands (API → master) ──────────────────────────────────────────────────────────────────

/** What the master needs to know of a model to place it (from its card). */
export const ModelPlacementInfoSchema = z.object({
  modelId: ModelIdSchema,
  layerCount: z.number().int().min(1),
  sizeBytes: z.number().min(0),
  /** Of sizeBytes, what only the last stage holds (ModelCard.headBytes); absent: spread over the layers. */
  headBytes: z.number().min(0).optional(),
});
export type ModelPlacementInfo = z.infer<typeof ModelPlacementInfoSchema>;

export const CommandSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("TextGeneration"),
    commandId: CommandIdSchema,
    modelId: ModelIdSchema,
    originNodeId: NodeIdSchema,
    params: GenerationParamsSchema,
  }),
  z.object({ type: z.literal("TaskCancelled"), cancelledCommandId: CommandIdSchema }),
  z.object({ type: z.literal("TaskFinished"), finishedCommandId: CommandIdSchema }),
  z.object({
    type: z.literal("PlaceInstance"),
    commandId: CommandIdSchema,
    model: ModelPlacementInfoSchema,
    minNodes: z.number().int().min(1),
    sharding: ShardingSchema,
  }),
  z.object({ type: z.literal("DeleteInstance"), commandId: CommandIdSchema, instanceId: InstanceIdSchema }),
  z.object({ type: z.literal("RequestEventLog"), sinceIdx: z.number().int().min(0) }),
]);
export type Command = z.infer<typeof CommandSchema>;
export type CommandOf<T extends Command["type"]> = Extract<Command, { type: T }>;
