// The IPC vocabulary between a runner child process and its supervisor. Each direction is one
// discriminated union with one zod schema; both ends validate what they receive, and a message that
// does not parse is logged and dropped (never a crash, never a guess). Control is expressed by message
// type — `cancel{taskId}` vs `cancelAll` — so no id can double as a sentinel.
import { z } from "zod";
import { StageEndpointSchema, StageRoleSchema } from "../pipeline/stage-endpoint.ts";
import { TaskIdSchema } from "../shared/ids.ts";
import { ChunkSchema, FailureCodeSchema, FinishReasonSchema, GenerationParamsSchema, RunnerStatusSchema } from "../shared/types.ts";

/** `engineModule` is a file URL, an absolute path or a package name: bounded like any outside string. */
export const ENGINE_MODULE_LENGTH_MAX = 4096;
/** Log lines and failure reasons crossing the channel are cut to this many characters. */
export const RUNNER_TEXT_LENGTH_MAX = 8192;

export const EngineShardSpecSchema = z
  .object({
    modelId: z.string().min(1),
    modelPath: z.string().nullable(),
    layerStart: z.number().int().min(0),
    layerEnd: z.number().int().min(1),
    layerCount: z.number().int().min(1),
    contextSize: z.number().int().min(1).nullable(),
    threads: z.number().int().min(1).nullable(),
    options: z.record(z.string(), z.unknown()),
  })
  .refine((s) => s.layerStart < s.layerEnd, "layerStart must be below layerEnd")
  .refine((s) => s.layerEnd <= s.layerCount, "layerEnd must not exceed layerCount");

// ── parent → child ────────────────────────────────────────────────────────────────────────────

export const ToRunnerMessageSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("load"),
    spec: EngineShardSpecSchema,
    engineModule: z.string().min(1).max(ENGINE_MODULE_LENGTH_MAX),
    /** Present when the shard is one stage of a multi-stage pipeline. */
    stage: StageRoleSchema.optional(),
  }),
  /** Where the next pipeline stage listens (again whenever it moves); null: unknown for now. */
  z.object({ type: z.literal("setDownstream"), endpoint: StageEndpointSchema.nullable() }),
  z.object({ type: z.literal("warmup") }),
  z.object({ type: z.literal("startTask"), taskId: TaskIdSchema, params: GenerationParamsSchema }),
  z.object({ type: z.literal("cancel"), taskId: TaskIdSchema }),
  z.object({ type: z.literal("cancelAll") }),
  z.object({ type: z.literal("shutdown") }),
]);
export type ToRunnerMessage = z.infer<typeof ToRunnerMessageSchema>;

// ── child → parent ────────────────────────────────────────────────────────────────────────────

export const TaskEndStatusSchema = z.enum(["Complete", "Cancelled", "Failed"]);
export type TaskEndStatus = z.infer<typeof TaskEndStatusSchema>;

export const RunnerLogLevelSchema = z.enum(["debug", "info", "warn", "error"]);
export type RunnerLogLevel = z.infer<typeof RunnerLogLevelSchema>;

export const FromRunnerMessageSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("status"), status: RunnerStatusSchema }),
  z.object({
    type: z.literal("prefillProgress"),
    taskId: TaskIdSchema,
    processedTokens: z.number().int().min(0),
    totalTokens: z.number().int().min(0),
  }),
  z.object({ type: z.literal("chunk"), taskId: TaskIdSchema, chunk: ChunkSchema }),
  z.object({
    type: z.literal("taskEnded"),
    taskId: TaskIdSchema,
    status: TaskEndStatusSchema,
    finishReason: FinishReasonSchema,
    failureReason: z.string().max(RUNNER_TEXT_LENGTH_MAX).nullable(),
    failureCode: FailureCodeSchema.nullable(),
    promptTokens: z.number().int().min(0),
    tokensGenerated: z.number().int().min(0),
  }),
  z.object({ type: z.literal("heartbeat") }),
  /** A later pipeline stage accepts its previous stage on this port. */
  z.object({ type: z.literal("stageListening"), port: z.number().int().min(1).max(65535) }),
  /** Pipeline sequences (KV slots) this stage holds now; sent on every change. */
  z.object({ type: z.literal("stageSlots"), openSlotCount: z.number().int().min(0) }),
  z.object({
    type: z.literal("log"),
    level: RunnerLogLevelSchema,
    message: z.string().max(RUNNER_TEXT_LENGTH_MAX),
    fields: z.record(z.string(), z.unknown()),
  }),
]);
export type FromRunnerMessage = z.infer<typeof FromRunnerMessageSchema>;

// ── parsing ───────────────────────────────────────────────────────────────────────────────────

export type ParseResult<T> = { readonly ok: true; readonly message: T } | { readonly ok: false; readonly error: string };

export function parseToRunnerMessage(raw: unknown): ParseResult<ToRunnerMessage> {
  return toResult(ToRunnerMessageSchema.safeParse(raw));
}

export function parseFromRunnerMessage(raw: unknown): ParseResult<FromRunnerMessage> {
  return toResult(FromRunnerMessageSchema.safeParse(raw));
}

function toResult<T>(r: { success: true; data: T } | { success: false; error: z.ZodError }): ParseResult<T> {
  if (r.success) return { ok: true, message: r.data };
  return { ok: false, error: truncateText(z.prettifyError(r.error)) };
}

export function truncateText(text: string): string {
  return text.length <= RUNNER_TEXT_LENGTH_MAX ? text : `${text.slice(0, RUNNER_TEXT_LENGTH_MAX - 1)}…`;
}
