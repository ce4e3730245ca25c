// The stage-to-stage vocabulary of a pipeline, carried as msgpack bodies over an authenticated Link
// (src/net/link.ts). Downstream (stage k → k+1): open, activation, end. Upstream (last stage → … →
// stage 0, relayed by every middle stage): token, ack, failed. Every body is validated on arrival; one
// that does not parse is dropped and logged, never trusted and never a crash.
//
// Cancellation needs no message of its own: stage 0 checks for it before every step and, instead of
// the step's activation, sends `end` — so every stage stops at the same step and frees its slot.
import { z } from "zod";
import { TaskIdSchema } from "../shared/ids.ts";
import type { TaskId } from "../shared/ids.ts";
import { GENERATION_TOKENS_MAX, PREFILL_CHUNK_TOKENS } from "../shared/limits.ts";
import { GenerationParamsSchema } from "../shared/types.ts";

/** Failure reasons crossing a stage link are cut to this many characters. */
export const STAGE_REASON_CHARS_MAX = 2048;
/** Top alternatives a token message may carry (OpenAI's maximum). */
export const STAGE_TOP_LOGPROBS_MAX = 20;

export const SamplingParamsSchema = GenerationParamsSchema.pick({
  temperature: true,
  topK: true,
  topP: true,
  minP: true,
  repetitionPenalty: true,
  presencePenalty: true,
  frequencyPenalty: true,
  seed: true,
  logprobs: true,
  topLogprobs: true,
});

const tokenIdSchema = z.number().int().min(0);
/** Steps count prefill chunks and decode steps of one task, from 0. */
const stepSchema = z.number().int().min(0).max(GENERATION_TOKENS_MAX + GENERATION_TOKENS_MAX / PREFILL_CHUNK_TOKENS);
const bytesSchema = z.custom<Uint8Array>((b) => b instanceof Uint8Array, "hidden must be bytes");

export const StageEndReasonSchema = z.enum(["complete", "cancelled", "failed"]);
export type StageEndReason = z.infer<typeof StageEndReasonSchema>;

export const DownstreamMessageSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("open"), taskId: TaskIdSchema, sampling: SamplingParamsSchema, promptTokenCount: z.number().int().min(1) }),
  z
    .object({
      type: z.literal("activation"),
      taskId: TaskIdSchema,
      step: stepSchema,
      /** The step's token ids: the last stage's sampler records them for its penalties. */
      tokenIds: z.array(tokenIdSchema).min(1).max(PREFILL_CHUNK_TOKENS),
      /** nTokens × hiddenSize little-endian float32s: the previous stage's output. */
      hidden: bytesSchema,
      nTokens: z.number().int().min(1).max(PREFILL_CHUNK_TOKENS),
      /** True on a prompt's last chunk and every decode step: the last stage answers with a token, else an ack. */
      sample: z.boolean(),
    })
    .refine((m) => m.tokenIds.length === m.nTokens, "tokenIds must hold nTokens ids")
    .refine((m) => m.hidden.byteLength % (4 * m.nTokens) === 0, "hidden must hold nTokens rows of float32"),
  z.object({ type: z.literal("end"), taskId: TaskIdSchema, reason: StageEndReasonSchema }),
]);
export type DownstreamMessage = z.infer<typeof DownstreamMessageSchema>;

export const UpstreamMessageSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("token"),
    taskId: TaskIdSchema,
    step: stepSchema,
    tokenId: tokenIdSchema,
    logprob: z.number().nullable(),
    topLogprobs: z.array(z.object({ tokenId: tokenIdSchema, logprob: z.number() })).max(STAGE_TOP_LOGPROBS_MAX),
  }),
  z.object({ type: z.literal("ack"), taskId: TaskIdSchema, step: stepSchema }),
  z.object({
    type: z.literal("failed"),
    taskId: TaskIdSchema,
    reason: z.string().max(STAGE_REASON_CHARS_MAX),
    /** The stage refused the request (e.g. the prompt does not fit its context): the client's fault. */
    inputError: z.boolean(),
  }),
]);
export type UpstreamMessage = z.infer<typeof UpstreamMessageSchema>;

/**
 * A stage's first body on an accepted link, sent once its side of the handshake is done. The
 * connecting stage sends nothing before it: a frame that shares a TCP read with the handshake's last
 * frame would still meet the handshake's frame-size limit on the accepting side.
 */
export const STAGE_READY = { type: "ready" } as const;

export const isStageReady = (body: unknown): boolean => (body as { type?: unknown } | null)?.type === "ready";

export type StageParse<T> = { readonly ok: true; readonly message: T } | { readonly ok: false; readonly error: string };

export function parseDownstreamMessage(raw: unknown): StageParse<DownstreamMessage> {
  const r = DownstreamMessageSchema.safeParse(raw);
  return r.success ? { ok: true, message: r.data } : { ok: false, error: firstIssue(r.error) };
}

export function parseUpstreamMessage(raw: unknown): StageParse<UpstreamMessage> {
  const r = UpstreamMessageSchema.safeParse(raw);
  return r.success ? { ok: true, message: r.data } : { ok: false, error: firstIssue(r.error) };
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  return issue === undefined ? "invalid message" : `${issue.path.join(".") || "(root)"}: ${issue.message}`;
}

/** The bytes of hidden states as they go on the wire (a view, no copy). */
export function hiddenToBytes(hidden: Float32Array): Uint8Array {
  return new Uint8Array(hidden.buffer, hidden.byteOffset, hidden.byteLength);
}

/** Hidden states from wire bytes; copies, because a received buffer need not be 4-byte aligned. */
export function hiddenFromBytes(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
}

export function cutReason(reason: string): string {
  return reason.length <= STAGE_REASON_CHARS_MAX ? reason : `${reason.slice(0, STAGE_REASON_CHARS_MAX - 1)}…`;
}

export const failedMessage = (taskId: TaskId, reason: string, inputError: boolean): UpstreamMessage => ({
  type: "failed",
  taskId,
  reason: cutReason(reason),
  inputError,
});
