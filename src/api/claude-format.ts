// Pure translation between Anthropic's Messages API (POST /v1/messages) and skein's vocabulary:
// request body → GenerationParams, answer → message object and stream events. No I/O.
import { z } from "zod";
import { ID_LENGTH_MAX } from "../shared/ids.ts";
import { CHAT_MESSAGES_MAX, GENERATION_TOKENS_MAX, STOP_STRINGS_MAX, TOOL_NAME_CHARS_MAX, TOOLS_MAX } from "../shared/limits.ts";
import type { ChatMessage, GenerationParams, ToolCall, ToolChoice, ToolDefinition } from "../shared/types.ts";
import type { AnswerToolCall } from "./answer.ts";
import { ApiError } from "./errors.ts";
import { CONTENT_PARTS_MAX, parseWith } from "./openai-format.ts";
import type { TaskEnd, TaskUsage } from "./task-stream.ts";
import type { ToolSelection } from "./tools.ts";
import { argumentsObject, nameToolResults, selectTools } from "./tools.ts";

const TextBlockSchema = z.object({ type: z.literal("text"), text: z.string() });
const ToolUseBlockSchema = z.object({
  type: z.literal("tool_use"),
  id: z.string().min(1).max(ID_LENGTH_MAX),
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  input: z.record(z.string(), z.unknown()),
});
const ToolResultBlockSchema = z.object({
  type: z.literal("tool_result"),
  tool_use_id: z.string().min(1).max(ID_LENGTH_MAX),
  content: z.union([z.string(), z.array(TextBlockSchema).max(CONTENT_PARTS_MAX)]).optional(),
  is_error: z.boolean().optional(),
});
const ContentBlockSchema = z.discriminatedUnion("type", [TextBlockSchema, ToolUseBlockSchema, ToolResultBlockSchema], {
  error: 'content blocks must be "text", "tool_use" or "tool_result" (images and documents are not supported)',
});

const MessageSchema = z.object({
  role: z.enum(["user", "assistant"]),
  content: z.union([z.string(), z.array(ContentBlockSchema).max(CONTENT_PARTS_MAX)]),
});

const ToolSchema = z.object({
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  description: z.string().optional(),
  input_schema: z.record(z.string(), z.unknown()),
});

const ToolChoiceSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("auto") }).loose(),
  z.object({ type: z.literal("any") }).loose(),
  z.object({ type: z.literal("none") }).loose(),
  z.object({ type: z.literal("tool"), name: z.string().min(1).max(TOOL_NAME_CHARS_MAX) }).loose(),
]);

/** Unknown fields (metadata, thinking, service_tier …) are stripped, as Anthropic's newer fields would be. */
export const MessagesRequestSchema = z.object({
  model: z.string().min(1).max(ID_LENGTH_MAX),
  // Anthropic requires max_tokens; a missing one is the 400 its clients expect.
  max_tokens: z.number({ error: "required: the maximum number of tokens to generate" }).int().min(1).max(GENERATION_TOKENS_MAX),
  messages: z.array(MessageSchema).min(1).max(CHAT_MESSAGES_MAX),
  system: z.union([z.string(), z.array(TextBlockSchema).max(CONTENT_PARTS_MAX)]).optional(),
  stop_sequences: z.array(z.string().min(1)).max(STOP_STRINGS_MAX).optional(),
  stream: z.boolean().optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  tools: z.array(ToolSchema).max(TOOLS_MAX).optional(),
  tool_choice: ToolChoiceSchema.optional(),
});
export type MessagesRequest = z.infer<typeof MessagesRequestSchema>;

export function parseMessagesRequest(body: unknown): MessagesRequest {
  return parseWith(MessagesRequestSchema, body);
}

type Block = z.infer<typeof ContentBlockSchema>;

function textOfBlocks(blocks: readonly { text: string }[]): string {
  return blocks.map((b) => b.text).join("\n");
}

/** One Anthropic message becomes one or more chat messages: tool results are turns of their own. */
function toChatMessages(message: z.infer<typeof MessageSchema>): ChatMessage[] {
  if (typeof message.content === "string") return [{ role: message.role, content: message.content }];
  const blocks: readonly Block[] = message.content;
  const text = textOfBlocks(blocks.filter((b) => b.type === "text"));
  if (message.role === "assistant") {
    const calls: ToolCall[] = blocks.flatMap((b) => (b.type === "tool_use" ? [{ id: b.id, name: b.name, arguments: JSON.stringify(b.input) }] : []));
    return [{ role: "assistant", content: text, ...(calls.length === 0 ? {} : { toolCalls: calls }) }];
  }
  const results: ChatMessage[] = blocks.flatMap((b) =>
    b.type === "tool_result"
      ? [{ role: "tool" as const, content: typeof b.content === "string" ? b.content : textOfBlocks(b.content ?? []), toolCallId: b.tool_use_id }]
      : [],
  );
  const hasText = blocks.some((b) => b.type === "text");
  return hasText || results.length === 0 ? [...results, { role: "user", content: text }] : results;
}

function toolChoiceOf(choice: MessagesRequest["tool_choice"]): ToolChoice | null {
  if (choice === undefined) return null;
  switch (choice.type) {
    case "auto":
      return "auto";
    case "any":
      return "required";
    case "none":
      return "none";
    case "tool":
      return { name: choice.name };
  }
}

export function toolSelectionOf(request: MessagesRequest): ToolSelection {
  const tools: ToolDefinition[] = (request.tools ?? []).map((t) => ({
    name: t.name,
    ...(t.description === undefined ? {} : { description: t.description }),
    parameters: t.input_schema,
  }));
  return selectTools(tools, toolChoiceOf(request.tool_choice), "tool_choice");
}

/** Anthropic's defaults where the request is silent; penalties and min_p do not exist there. */
export function toGenerationParams(request: MessagesRequest): GenerationParams {
  const system = request.system === undefined ? "" : typeof request.system === "string" ? request.system : textOfBlocks(request.system);
  const messages: ChatMessage[] = [...(system === "" ? [] : [{ role: "system" as const, content: system }]), ...request.messages.flatMap(toChatMessages)];
  if (messages.length > CHAT_MESSAGES_MAX) {
    throw new ApiError(400, { message: `messages: at most ${CHAT_MESSAGES_MAX} turns, tool results included`, param: "messages", code: "invalid_request" });
  }
  return {
    messages: nameToolResults(messages),
    maxTokens: request.max_tokens,
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    topK: request.top_k ?? 0,
    minP: 0,
    seed: null,
    stop: request.stop_sequences ?? [],
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logprobs: false,
    topLogprobs: 0,
    ...toolSelectionOf(request),
  };
}

// ── answers ──────────────────────────────────────────────────────────────────────────────────

export type StopReason = "end_turn" | "max_tokens" | "tool_use";

/** The runner does not say which stop string matched, so stop_sequence is always null. */
export function stopReasonOf(end: TaskEnd, calledTools: boolean): StopReason {
  if (calledTools) return "tool_use";
  return end.status !== "Cancelled" && end.finishReason === "length" ? "max_tokens" : "end_turn";
}

export interface MessageIdentity {
  readonly id: string;
  readonly model: string;
}

export const usageJson = (usage: TaskUsage): { input_tokens: number; output_tokens: number } => ({
  input_tokens: usage.promptTokens,
  output_tokens: usage.completionTokens,
});

export function toolUseBlock(call: AnswerToolCall): Record<string, unknown> {
  return { type: "tool_use", id: call.id, name: call.name, input: argumentsObject(call.arguments) };
}

export function messageJson(who: MessageIdentity, text: string, calls: readonly AnswerToolCall[], end: TaskEnd): Record<string, unknown> {
  const content = [...(text !== "" || calls.length === 0 ? [{ type: "text", text }] : []), ...calls.map(toolUseBlock)];
  return {
    id: who.id,
    type: "message",
    role: "assistant",
    model: who.model,
    content,
    stop_reason: stopReasonOf(end, calls.length > 0),
    stop_sequence: null,
    usage: usageJson(end.usage),
  };
}

/** message_start: the message with no content yet. */
export function messageStartEvent(who: MessageIdentity, promptTokens: number): Record<string, unknown> {
  return {
    type: "message_start",
    message: { id: who.id, type: "message", role: "assistant", model: who.model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: promptTokens, output_tokens: 0 } },
  };
}

export function messageDeltaEvent(end: TaskEnd, calledTools: boolean): Record<string, unknown> {
  return { type: "message_delta", delta: { stop_reason: stopReasonOf(end, calledTools), stop_sequence: null }, usage: usageJson(end.usage) };
}
