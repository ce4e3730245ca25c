// Pure translation between OpenAI's Responses API (POST /v1/responses) and skein's vocabulary:
// request → GenerationParams, and answer pieces → the stream of typed events (response.created,
// output items, output_text / function_call_arguments deltas, response.completed). No I/O.
import { z } from "zod";
import { ID_LENGTH_MAX } from "../shared/ids.ts";
import { CHAT_MESSAGES_MAX, GENERATION_TOKENS_MAX, TOOL_NAME_CHARS_MAX, TOOLS_MAX } from "../shared/limits.ts";
import type { ChatMessage, GenerationParams, ToolCall, ToolChoice, ToolDefinition } from "../shared/types.ts";
import type { AnswerPiece, AnswerToolCall } from "./answer.ts";
import { ApiError } from "./errors.ts";
import { CONTENT_PARTS_MAX, parseWith, ResponseFormatSchema } from "./openai-format.ts";
import type { TaskEnd } from "./task-stream.ts";
import type { ToolSelection } from "./tools.ts";
import { nameToolResults, selectTools } from "./tools.ts";

const TextContentSchema = z.object({ type: z.enum(["input_text", "output_text"]), text: z.string() }).loose();

const MessageItemSchema = z.object({
  type: z.literal("message").optional(),
  role: z.enum(["user", "assistant", "system", "developer"]),
  content: z.union([z.string(), z.array(TextContentSchema, { error: "only input_text / output_text content is supported" }).max(CONTENT_PARTS_MAX)]),
});
const FunctionCallItemSchema = z.object({
  type: z.literal("function_call"),
  call_id: z.string().min(1).max(ID_LENGTH_MAX),
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  arguments: z.string(),
});
const FunctionCallOutputItemSchema = z.object({
  type: z.literal("function_call_output"),
  call_id: z.string().min(1).max(ID_LENGTH_MAX),
  output: z.string(),
});
/** Reasoning items that clients echo back are accepted and dropped (skein's models do not emit them). */
const ReasoningItemSchema = z.object({ type: z.literal("reasoning") }).loose();

const InputItemSchema = z.union([MessageItemSchema, FunctionCallItemSchema, FunctionCallOutputItemSchema, ReasoningItemSchema], {
  error: "input items must be messages, function_call or function_call_output items",
});

const FunctionToolSchema = z.object({
  type: z.literal("function"),
  name: z.string().min(1).max(TOOL_NAME_CHARS_MAX),
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown()).nullish(),
  strict: z.boolean().nullish(),
});

const ToolChoiceRequestSchema = z.union([z.enum(["none", "auto", "required"]), z.object({ type: z.literal("function"), name: z.string().min(1).max(TOOL_NAME_CHARS_MAX) })]);

export const ResponsesRequestSchema = z.object({
  model: z.string().min(1).max(ID_LENGTH_MAX),
  input: z.union([z.string(), z.array(InputItemSchema).min(1).max(CHAT_MESSAGES_MAX)]),
  instructions: z.string().nullish(),
  stream: z.boolean().nullish(),
  max_output_tokens: z.number().int().min(1).max(GENERATION_TOKENS_MAX).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  tools: z.array(FunctionToolSchema, { error: "only function tools are supported" }).max(TOOLS_MAX).nullish(),
  tool_choice: ToolChoiceRequestSchema.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  text: z.object({ format: ResponseFormatSchema.loose().nullish() }).nullish(),
  // Conversation state lives with the client: a stored response cannot be continued.
  previous_response_id: z.null({ error: "previous_response_id is not supported; send the whole conversation as input" }).optional(),
});
export type ResponsesRequest = z.infer<typeof ResponsesRequestSchema>;

export function parseResponsesRequest(body: unknown): ResponsesRequest {
  return parseWith(ResponsesRequestSchema, body);
}

type InputItem = z.infer<typeof InputItemSchema>;

/** Consecutive function_call items are one assistant turn with several calls. */
function toChatMessages(items: readonly InputItem[]): ChatMessage[] {
  const messages: ChatMessage[] = [];
  let pendingCalls: ToolCall[] = [];
  const flushCalls = (): void => {
    if (pendingCalls.length === 0) return;
    const last = messages[messages.length - 1];
    // A call right after the assistant's own text belongs to that turn.
    if (last !== undefined && last.role === "assistant" && last.toolCalls === undefined) messages[messages.length - 1] = { ...last, toolCalls: pendingCalls };
    else messages.push({ role: "assistant", content: "", toolCalls: pendingCalls });
    pendingCalls = [];
  };
  for (const item of items) {
    if (item.type === "reasoning") continue;
    if (item.type === "function_call") {
      pendingCalls.push({ id: item.call_id, name: item.name, arguments: item.arguments });
      continue;
    }
    flushCalls();
    if (item.type === "function_call_output") {
      messages.push({ role: "tool", content: item.output, toolCallId: item.call_id });
    } else {
      const content = typeof item.content === "string" ? item.content : item.content.map((p) => p.text).join("\n");
      messages.push({ role: item.role, content });
    }
  }
  flushCalls();
  return messages;
}

export function toolSelectionOf(request: ResponsesRequest): ToolSelection {
  const tools: ToolDefinition[] = (request.tools ?? []).map((t) => ({
    name: t.name,
    ...(t.description === null || t.description === undefined ? {} : { description: t.description }),
    ...(t.parameters === null || t.parameters === undefined ? {} : { parameters: t.parameters }),
  }));
  const choice = request.tool_choice ?? null;
  const selected: ToolChoice | null = typeof choice === "object" && choice !== null ? { name: choice.name } : choice;
  return selectTools(tools, selected, "tool_choice");
}

export function wantsJson(request: ResponsesRequest): boolean {
  const type = request.text?.format?.type;
  return type === "json_object" || type === "json_schema";
}

/** text.format `{type:"json_schema", name, schema}`: the schema, or null. */
export function jsonSchemaOf(request: ResponsesRequest): unknown {
  const format = request.text?.format;
  return format?.type === "json_schema" ? (format["schema"] ?? null) : null;
}

export function toGenerationParams(request: ResponsesRequest): GenerationParams {
  const input: ChatMessage[] = typeof request.input === "string" ? [{ role: "user", content: request.input }] : toChatMessages(request.input);
  const instructions = request.instructions ?? "";
  const messages = [...(instructions === "" ? [] : [{ role: "system" as const, content: instructions }]), ...input];
  if (messages.length === 0) throw new ApiError(400, { message: "input: no message to answer", param: "input", code: "invalid_request" });
  return {
    messages: nameToolResults(messages),
    maxTokens: request.max_output_tokens ?? null,
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    topK: 0,
    minP: 0,
    seed: null,
    stop: [],
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logprobs: false,
    topLogprobs: 0,
    ...toolSelectionOf(request),
  };
}

// ── answers ──────────────────────────────────────────────────────────────────────────────────

export interface ResponseIdentity {
  readonly id: string;
  readonly model: string;
  readonly createdSeconds: number;
  /** Echoed back as the API does. */
  readonly request: ResponsesRequest;
}

type ResponseStatus = "in_progress" | "completed" | "incomplete" | "cancelled" | "failed";

function statusOf(end: TaskEnd): ResponseStatus {
  if (end.status === "Cancelled") return "cancelled";
  if (end.status === "Failed") return "failed";
  return end.finishReason === "length" ? "incomplete" : "completed";
}

export function usageJson(end: TaskEnd): Record<string, unknown> {
  const { promptTokens, completionTokens } = end.usage;
  return {
    input_tokens: promptTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: promptTokens + completionTokens,
  };
}

/** The response object: in_progress (no end yet) or final. */
export function responseJson(who: ResponseIdentity, output: readonly Record<string, unknown>[], end: TaskEnd | null, error: ApiError | null = null): Record<string, unknown> {
  const status: ResponseStatus = error !== null ? "failed" : end === null ? "in_progress" : statusOf(end);
  const r = who.request;
  return {
    id: who.id,
    object: "response",
    created_at: who.createdSeconds,
    status,
    error: error === null ? null : { code: error.body.code ?? "server_error", message: error.body.message },
    incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
    instructions: r.instructions ?? null,
    max_output_tokens: r.max_output_tokens ?? null,
    model: who.model,
    output,
    parallel_tool_calls: r.parallel_tool_calls ?? true,
    previous_response_id: null,
    temperature: r.temperature ?? 1,
    text: { format: r.text?.format ?? { type: "text" } },
    tool_choice: r.tool_choice ?? "auto",
    tools: r.tools ?? [],
    top_p: r.top_p ?? 1,
    usage: end === null ? null : usageJson(end),
  };
}

const messageItem = (id: string, text: string, status: "in_progress" | "completed"): Record<string, unknown> => ({
  type: "message",
  id,
  status,
  role: "assistant",
  content: status === "in_progress" ? [] : [{ type: "output_text", text, annotations: [] }],
});

/** The item id of a call; its call_id is the id the model's call was given. */
const functionCallItemId = (callId: string): string => `fc_${callId.replace(/^call_/, "")}`;

const functionCallItem = (call: AnswerToolCall, status: "in_progress" | "completed"): Record<string, unknown> => ({
  type: "function_call",
  id: functionCallItemId(call.id),
  call_id: call.id,
  name: call.name,
  arguments: status === "in_progress" ? "" : call.arguments,
  status,
});

/** The output of a whole answer. */
export function outputItems(who: ResponseIdentity, text: string, calls: readonly AnswerToolCall[]): Record<string, unknown>[] {
  return [...(text !== "" || calls.length === 0 ? [messageItem(`msg_${who.id}`, text, "completed")] : []), ...calls.map((c) => functionCallItem(c, "completed"))];
}

type StreamEvent = Record<string, unknown> & { type: string };

/**
 * Turns answer pieces into Responses stream events, numbering them and keeping the output items,
 * so that what the events add up to is exactly the final response.
 */
export class ResponseEvents {
  private sequenceNumber = 0;
  private readonly output: Record<string, unknown>[] = [];
  /** The message item text is going to, while it is open. */
  private openMessage: { id: string; outputIndex: number; text: string } | null = null;
  private readonly openCalls = new Map<number, { outputIndex: number; itemId: string; callId: string; name: string }>();

  constructor(private readonly who: ResponseIdentity) {}

  start(): StreamEvent[] {
    const response = responseJson(this.who, [], null);
    return [this.event("response.created", { response }), this.event("response.in_progress", { response })];
  }

  pieces(pieces: readonly AnswerPiece[]): StreamEvent[] {
    const events: StreamEvent[] = [];
    for (const piece of pieces) {
      if (piece.type === "text") events.push(...this.text(piece.text));
      else if (piece.type === "callStart") {
        events.push(...this.closeMessage());
        const outputIndex = this.output.length;
        const call: AnswerToolCall = { id: piece.id, name: piece.name, arguments: "" };
        this.output.push(functionCallItem(call, "in_progress"));
        this.openCalls.set(piece.index, { outputIndex, itemId: functionCallItemId(piece.id), callId: piece.id, name: piece.name });
        events.push(this.event("response.output_item.added", { output_index: outputIndex, item: functionCallItem(call, "in_progress") }));
      } else if (piece.type === "callArguments") {
        const open = this.openCalls.get(piece.index);
        if (open !== undefined) events.push(this.event("response.function_call_arguments.delta", { item_id: open.itemId, output_index: open.outputIndex, delta: piece.delta }));
      } else {
        const open = this.openCalls.get(piece.index);
        if (open === undefined) continue;
        this.openCalls.delete(piece.index);
        const item = functionCallItem(piece.call, "completed");
        this.output[open.outputIndex] = item;
        events.push(this.event("response.function_call_arguments.done", { item_id: open.itemId, output_index: open.outputIndex, name: piece.call.name, arguments: piece.call.arguments }));
        events.push(this.event("response.output_item.done", { output_index: open.outputIndex, item }));
      }
    }
    return events;
  }

  /** The last events: the open message closed, then completed / incomplete / failed. */
  finish(end: TaskEnd, error: ApiError | null): StreamEvent[] {
    const events = this.closeMessage();
    if (this.output.length === 0 && error === null) {
      // An answer with no text still has its (empty) message, as the API's do.
      events.push(...this.text(""), ...this.closeMessage());
    }
    const response = responseJson(this.who, this.output, end, error);
    const type = error !== null ? "response.failed" : response["status"] === "incomplete" ? "response.incomplete" : "response.completed";
    events.push(this.event(type, { response }));
    return events;
  }

  failed(error: ApiError): StreamEvent[] {
    return [this.event("error", { code: error.body.code, message: error.body.message, param: null })];
  }

  private text(delta: string): StreamEvent[] {
    const events: StreamEvent[] = [];
    if (this.openMessage === null) {
      const outputIndex = this.output.length;
      const id = `msg_${this.who.id}${outputIndex === 0 ? "" : `_${outputIndex}`}`;
      this.openMessage = { id, outputIndex, text: "" };
      this.output.push(messageItem(id, "", "in_progress"));
      events.push(this.event("response.output_item.added", { output_index: outputIndex, item: messageItem(id, "", "in_progress") }));
      events.push(this.event("response.content_part.added", { item_id: id, output_index: outputIndex, content_index: 0, part: { type: "output_text", text: "", annotations: [] } }));
    }
    const open = this.openMessage;
    open.text += delta;
    if (delta !== "") events.push(this.event("response.output_text.delta", { item_id: open.id, output_index: open.outputIndex, content_index: 0, delta, logprobs: [] }));
    return events;
  }

  private closeMessage(): StreamEvent[] {
    const open = this.openMessage;
    if (open === null) return [];
    this.openMessage = null;
    const item = messageItem(open.id, open.text, "completed");
    this.output[open.outputIndex] = item;
    return [
      this.event("response.output_text.done", { item_id: open.id, output_index: open.outputIndex, content_index: 0, text: open.text, logprobs: [] }),
      this.event("response.content_part.done", { item_id: open.id, output_index: open.outputIndex, content_index: 0, part: { type: "output_text", text: open.text, annotations: [] } }),
      this.event("response.output_item.done", { output_index: open.outputIndex, item }),
    ];
  }

  private event(type: string, body: Record<string, unknown>): StreamEvent {
    const event: StreamEvent = { type, ...body, sequence_number: this.sequenceNumber };
    this.sequenceNumber += 1;
    return event;
  }
}
