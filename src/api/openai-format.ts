// Pure translation between OpenAI's chat-completions wire shapes and skein's vocabulary: request
// body → GenerationParams, task updates → chunk / completion objects. No I/O, so it is unit-tested
// as tables.
import { z } from "zod";
import { ID_LENGTH_MAX } from "../shared/ids.ts";
import { CHAT_MESSAGES_MAX, GENERATION_TOKENS_MAX, STOP_STRINGS_MAX, TOOL_CALLS_PER_MESSAGE_MAX, TOOL_NAME_CHARS_MAX, TOOLS_MAX } from "../shared/limits.ts";
import type { ChatMessage, Chunk, FinishReason, GenerationParams, ToolDefinition } from "../shared/types.ts";
import { ChatRoleSchema } from "../shared/types.ts";
import { ApiError } from "./errors.ts";
import type { AnswerToolCall } from "./answer.ts";
import type { TaskEnd, TaskUsage } from "./task-stream.ts";
import type { ToolSelection } from "./tools.ts";
import { nameToolResults, selectTools } from "./tools.ts";

/** Text parts in one message; more is a malformed request, not a long prompt. */
export const CONTENT_PARTS_MAX = 1024;

const TextPartSchema = z.object({ type: z.literal("text"), text: z.string() });

const RequestToolCallSchema = z.object({
  id: z.string().min(1).max(ID_LENGTH_MAX),
  type: z.literal("function").optional(),
  function: z.object({ name: z.string().min(1).max(TOOL_NAME_CHARS_MAX), arguments: z.string() }),
});

const RequestMessageSchema = z.object({
  role: ChatRoleSchema,
  // null (or absent) is what clients send for an assistant turn that only called tools.
  content: z
    .union([z.string(), z.array(TextPartSchema).max(CONTENT_PARTS_MAX), z.null()], {
      error: 'content must be a string or an array of {"type":"text","text":…} parts (only text is supported)',
    })
    .optional(),
  tool_calls: z.array(RequestToolCallSchema).max(TOOL_CALLS_PER_MESSAGE_MAX).nullish(),
  tool_call_id: z.string().max(ID_LENGTH_MAX).nullish(),
  name: z.string().max(TOOL_NAME_CHARS_MAX).nullish(),
});

export const FunctionToolSchema = z.object({
  type: z.literal("function"),
  function: z.object({
    name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
    description: z.string().nullish(),
    parameters: z.record(z.string(), z.unknown()).nullish(),
  }),
});

const ToolChoiceRequestSchema = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1).max(TOOL_NAME_CHARS_MAX) }) }),
]);

export const ResponseFormatSchema = z.object({
  type: z.enum(["text", "json_object", "json_schema"]),
  json_schema: z.unknown().optional(),
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
  tools: z.array(FunctionToolSchema).max(TOOLS_MAX).nullish(),
  tool_choice: ToolChoiceRequestSchema.nullish(),
  // Calls are parsed in the order the model writes them; nothing stops it writing several.
  parallel_tool_calls: z.boolean().nullish(),
  response_format: ResponseFormatSchema.nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

/** The first zod issue as an OpenAI 400 naming the offending parameter. */
export function invalidRequest(error: z.ZodError): ApiError {
  const issue = error.issues[0];
  const param = issue === undefined || issue.path.length === 0 ? null : issue.path.map(String).join(".");
  const message = issue === undefined ? "invalid request body" : `${param ?? "body"}: ${issue.message}`;
  return new ApiError(400, { message, param, code: "invalid_request" });
}

/** Validates a request body; the first issue becomes a 400 that names the field. */
export function parseWith<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw invalidRequest(parsed.error);
  return parsed.data;
}

export function parseChatCompletionRequest(body: unknown): ChatCompletionRequest {
  const request = parseWith(ChatCompletionRequestSchema, body);
  if (request.n !== null && request.n !== undefined && request.n !== 1) {
    throw new ApiError(400, { message: `n: only n=1 is supported, got ${request.n}`, param: "n", code: "invalid_request" });
  }
  if ((request.top_logprobs ?? 0) > 0 && request.logprobs !== true) {
    throw new ApiError(400, { message: "top_logprobs: logprobs must be true when top_logprobs is set", param: "top_logprobs", code: "invalid_request" });
  }
  return request;
}

type RequestMessage = z.infer<typeof RequestMessageSchema>;

export function textOfContent(content: string | readonly { text: string }[] | null | undefined): string {
  if (content === null || content === undefined) return "";
  return typeof content === "string" ? content : content.map((p) => p.text).join("\n");
}

function toChatMessage(m: RequestMessage): ChatMessage {
  const message: ChatMessage = { role: m.role, content: textOfContent(m.content) };
  const calls = m.tool_calls ?? [];
  return {
    ...message,
    ...(calls.length === 0 ? {} : { toolCalls: calls.map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })) }),
    ...(m.tool_call_id === null || m.tool_call_id === undefined ? {} : { toolCallId: m.tool_call_id }),
    ...(m.name === null || m.name === undefined || m.role !== "tool" ? {} : { name: m.name }),
  };
}

/** The request's tools and tool_choice in skein's vocabulary, narrowed by the choice. */
export function toolSelectionOf(request: ChatCompletionRequest): ToolSelection {
  const tools: ToolDefinition[] = (request.tools ?? []).map((t) => ({
    name: t.function.name,
    ...(t.function.description === null || t.function.description === undefined ? {} : { description: t.function.description }),
    ...(t.function.parameters === null || t.function.parameters === undefined ? {} : { parameters: t.function.parameters }),
  }));
  const choice = request.tool_choice ?? null;
  return selectTools(tools, typeof choice === "object" && choice !== null ? { name: choice.function.name } : choice, "tool_choice");
}

/** True when the answer must be JSON (json_object, or json_schema). */
export function wantsJson(request: { response_format?: { type: string } | null | undefined }): boolean {
  const type = request.response_format?.type;
  return type === "json_object" || type === "json_schema";
}

/** The schema of response_format json_schema (`{json_schema:{name, schema}}`), or null. */
export function jsonSchemaOf(request: { response_format?: { type: string; json_schema?: unknown } | null | undefined }): unknown {
  const format = request.response_format;
  if (format?.type !== "json_schema") return null;
  const spec = format.json_schema;
  return typeof spec === "object" && spec !== null && "schema" in spec ? (spec as { schema: unknown }).schema : null;
}

/** OpenAI's defaults where the request is silent. */
export function toGenerationParams(request: ChatCompletionRequest): GenerationParams {
  const stop = request.stop ?? [];
  return {
    messages: nameToolResults(request.messages.map(toChatMessage)),
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
    ...toolSelectionOf(request),
  };
}

// ── responses ────────────────────────────────────────────────────────────────────────────────

export type OpenAiFinishReason = "stop" | "length" | "cancelled" | "tool_calls";

export function finishReasonOf(end: TaskEnd, calledTools = false): OpenAiFinishReason {
  if (end.status === "Cancelled") return "cancelled";
  if (calledTools) return "tool_calls";
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
  textChunk(who, chunk.text, withLogprobs ? (chunk.logprobs ?? []) : null);

/** Text the tool-call parser let through; logprobs (null: not asked for) ride with it. */
export const textChunk = (who: CompletionIdentity, text: string, logprobs: readonly LogprobEntry[] | null): Record<string, unknown> =>
  chunkEnvelope(who, { delta: { content: text }, logprobs: logprobsJson(logprobs) });

export const toolCallStartChunk = (who: CompletionIdentity, index: number, id: string, name: string): Record<string, unknown> =>
  chunkEnvelope(who, { delta: { tool_calls: [{ index, id, type: "function", function: { name, arguments: "" } }] } });

export const toolCallArgumentsChunk = (who: CompletionIdentity, index: number, delta: string): Record<string, unknown> =>
  chunkEnvelope(who, { delta: { tool_calls: [{ index, function: { arguments: delta } }] } });

export const finalChunk = (who: CompletionIdentity, end: TaskEnd, calledTools = false): Record<string, unknown> =>
  chunkEnvelope(who, { delta: {}, finish_reason: finishReasonOf(end, calledTools) }, { usage: usageJson(end.usage) });


export function completionJson(
  who: CompletionIdentity,
  text: string,
  logprobs: readonly LogprobEntry[] | null,
  end: TaskEnd,
  calls: readonly AnswerToolCall[] = [],
): Record<string, unknown> {
  const toolCalls = calls.map((call) => ({ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }));
  return {
    id: who.id,
    object: "chat.completion",
    created: who.createdSeconds,
    model: who.model,
    system_fingerprint: null,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          // OpenAI sends null content for an answer that is only calls.
          content: calls.length > 0 && text === "" ? null : text,
          refusal: null,
          ...(calls.length === 0 ? {} : { tool_calls: toolCalls }),
        },
        logprobs: logprobsJson(logprobs),
        finish_reason: finishReasonOf(end, calls.length > 0),
      },
    ],
    usage: usageJson(end.usage),
  };
}
