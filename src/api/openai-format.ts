// Pure translation between OpenAI's chat-completions wire shapes and skein's vocabulary: request
// body → GenerationParams, task updates → chunk / completion objects. No I/O, so it is unit-tested
// as tables.
import { z } from "zod";
import { ID_LENGTH_MAX } from "../shared/ids.ts";
import { CHAT_MESSAGES_MAX, GENERATION_TOKENS_MAX, STOP_STRINGS_MAX } from "../shared/limits.ts";
import type { Chunk, FinishReason, GenerationParams } from "../shared/types.ts";
import { ChatRoleSchema } from "../shared/types.ts";
import { ApiError } from "./errors.ts";
import type { TaskEnd, TaskUsage } from "./task-stream.ts";

/** Text parts in one message; more is a malformed request, not a long prompt. */
export const CONTENT_PARTS_MAX = 1024;

const TextPartSchema = z.object({ type: z.literal("text"), text: z.string() });

const RequestMessageSchema = z.object({
  role: ChatRoleSchema,
  // null is what clients send for an assistant turn that only called tools.
  content: z.union([z.string(), z.array(TextPartSchema).max(CONTENT_PARTS_MAX), z.null()], {
    error: 'content must be a string or an array of {"type":"text","text":…} parts (only text is supported)',
  }),
});

const penalty = z.number().min(-2).max(2).nullish();
const tokenCount = z.number().int().min(1).max(GENERATION_TOKENS_MAX).nullish();

/** Unknown fields are stripped (zod's default), so newer clients' extras do not break requests. */
export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1).max(ID_LENGTH_MAX),
  messages: z.array(RequestMessageSchema).min(1).max(CHAT_MESSAGES_MAX),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  // -1 is how vLLM-style clients say "disabled"; it means the same as 0 here.
  top_k: z.number().int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(STOP_STRINGS_MAX)]).nullish(),
  max_tokens: tokenCount,
  max_completion_tokens: tokenCount,
  presence_penalty: penalty,
  frequency_penalty: penalty,
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  n: z.number().int().nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

/** The first zod issue as an OpenAI 400 naming the offending parameter. */
export function invalidRequest(error: z.ZodError): ApiError {
  const issue = error.issues[0];
  const param = issue === undefined || issue.path.length === 0 ? null : issue.path.map(String).join(".");
  const message = issue === undefined ? "invalid request body" : `${param ?? "body"}: ${issue.message}`;
  return new ApiError(400, { message, param, code: "invalid_request" });
}

export function parseChatCompletionRequest(body: unknown): ChatCompletionRequest {
  const parsed = ChatCompletionRequestSchema.safeParse(body);
  if (!parsed.success) throw invalidRequest(parsed.error);
  const request = parsed.data;
  if (request.n !== null && request.n !== undefined && request.n !== 1) {
    throw new ApiError(400, { message: `n: only n=1 is supported, got ${request.n}`, param: "n", code: "invalid_request" });
  }
  return request;
}

/** OpenAI's defaults where the request is silent. */
export function toGenerationParams(request: ChatCompletionRequest): GenerationParams {
  const stop = request.stop ?? [];
  return {
    messages: request.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === "string" ? m.content : m.content === null ? "" : m.content.map((p) => p.text).join("\n"),
    })),
    maxTokens: request.max_completion_tokens ?? request.max_tokens ?? null,
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    topK: Math.max(0, request.top_k ?? 0),
    minP: request.min_p ?? 0,
    seed: request.seed ?? null,
    stop: typeof stop === "string" ? [stop] : stop,
    presencePenalty: request.presence_penalty ?? 0,
    frequencyPenalty: request.frequency_penalty ?? 0,
    repetitionPenalty: request.repetition_penalty ?? 1,
    logprobs: request.logprobs ?? false,
    topLogprobs: request.top_logprobs ?? 0,
  };
}

// ── responses ────────────────────────────────────────────────────────────────────────────────

export type OpenAiFinishReason = "stop" | "length" | "cancelled";

export function finishReasonOf(end: TaskEnd): OpenAiFinishReason {
  if (end.status === "Cancelled") return "cancelled";
  const reason: FinishReason | null = end.finishReason;
  return reason === "length" ? "length" : "stop";
}

export function usageJson(usage: TaskUsage): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  };
}

type LogprobEntry = NonNullable<Chunk["logprobs"]>[number];

function logprobJson(entry: LogprobEntry): Record<string, unknown> {
  return {
    token: entry.token,
    logprob: entry.logprob,
    bytes: [...Buffer.from(entry.token, "utf8")],
    top_logprobs: entry.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: [...Buffer.from(t.token, "utf8")] })),
  };
}

export function logprobsJson(entries: readonly LogprobEntry[] | null): { content: Record<string, unknown>[] } | null {
  return entries === null ? null : { content: entries.map(logprobJson) };
}

export interface CompletionIdentity {
  readonly id: string;
  readonly model: string;
  readonly createdSeconds: number;
}

function chunkEnvelope(who: CompletionIdentity, choice: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: who.id,
    object: "chat.completion.chunk",
    created: who.createdSeconds,
    model: who.model,
    system_fingerprint: null,
    choices: [{ index: 0, logprobs: null, finish_reason: null, ...choice }],
    ...extra,
  };
}

export const roleChunk = (who: CompletionIdentity): Record<string, unknown> =>
  chunkEnvelope(who, { delta: { role: "assistant", content: "" } });

export const contentChunk = (who: CompletionIdentity, chunk: Chunk, withLogprobs: boolean): Record<string, unknown> =>
  chunkEnvelope(who, { delta: { content: chunk.text }, logprobs: withLogprobs ? logprobsJson(chunk.logprobs ?? []) : null });

export const finalChunk = (who: CompletionIdentity, end: TaskEnd): Record<string, unknown> =>
  chunkEnvelope(who, { delta: {}, finish_reason: finishReasonOf(end) }, { usage: usageJson(end.usage) });

export function completionJson(
  who: CompletionIdentity,
  text: string,
  logprobs: readonly LogprobEntry[] | null,
  end: TaskEnd,
): Record<string, unknown> {
  return {
    id: who.id,
    object: "chat.completion",
    created: who.createdSeconds,
    model: who.model,
    system_fingerprint: null,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: text, refusal: null },
        logprobs: logprobsJson(logprobs),
        finish_reason: finishReasonOf(end),
      },
    ],
    usage: usageJson(end.usage),
  };
}
