// Tool calling and JSON answers, the same for every adapter: which tools reach the chat template for
// a tool_choice, names for tool results, the end-of-answer checks ("required" produced no call,
// json_object produced no JSON) and call ids.
import { randomBytes } from "node:crypto";
import type { ChatMessage, ToolChoice, ToolDefinition } from "../shared/types.ts";
import { ApiError } from "./errors.ts";
import { schemaViolation } from "./json-schema-check.ts";

export interface ToolSelection {
  /** What the template gets; absent when no tool is offered. */
  readonly tools?: ToolDefinition[];
  readonly toolChoice?: ToolChoice;
}

/**
 * "none" offers nothing (the template renders no tool section and no output is parsed as a call);
 * a named function offers only that one, which is what the model can be steered towards without
 * constrained decoding.
 */
export function selectTools(tools: readonly ToolDefinition[], choice: ToolChoice | null, param: string): ToolSelection {
  if (tools.length === 0) {
    if (choice === "required" || (typeof choice === "object" && choice !== null)) {
      throw new ApiError(400, { message: `${param}: a tool choice other than "auto" or "none" needs tools`, param, code: "invalid_request" });
    }
    return {};
  }
  if (choice === "none") return {};
  if (choice === null || choice === "auto") return { tools: [...tools], toolChoice: "auto" };
  if (choice === "required") return { tools: [...tools], toolChoice: "required" };
  const named = tools.find((t) => t.name === choice.name);
  if (named === undefined) {
    throw new ApiError(400, { message: `${param}: no tool named ${JSON.stringify(choice.name)} was given`, param, code: "invalid_request" });
  }
  return { tools: [named], toolChoice: { name: named.name } };
}

/** True when the answer must contain a call ("required" or a named function). */
export function callRequired(choice: ToolChoice | undefined): boolean {
  return choice === "required" || typeof choice === "object";
}

/**
 * "required" cannot be enforced without constrained decoding, so an answer without a call is an
 * error rather than a silent plain-text answer the client did not allow for.
 */
export function toolCallMissing(): ApiError {
  return new ApiError(500, { message: "tool_choice required a tool call, but the model answered without one", type: "server_error", code: "tool_call_missing" });
}

/** Tool results carry the function's name where the API only gives the call id (Llama's template wants it). */
export function nameToolResults(messages: readonly ChatMessage[]): ChatMessage[] {
  const nameById = new Map<string, string>();
  return messages.map((message) => {
    for (const call of message.toolCalls ?? []) nameById.set(call.id, call.name);
    if (message.role !== "tool" || message.name !== undefined || message.toolCallId === undefined) return message;
    const name = nameById.get(message.toolCallId);
    return name === undefined ? message : { ...message, name };
  });
}

/** A call id in the style of the API (`call_…`, `toolu_…`, `fc_…`). */
export function newToolCallId(prefix: string): string {
  return `${prefix}${randomBytes(12).toString("hex")}`;
}

/**
 * JSON mode is best effort: the answer is checked, not constrained. A non-JSON answer, or one that
 * breaks the requested schema (null: none), is an error naming what is wrong.
 */
export function jsonAnswerInvalid(text: string, schema: unknown = null): ApiError | null {
  const shown = JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return new ApiError(500, { message: `response format: the model's answer is not valid JSON: ${shown}`, type: "server_error", code: "invalid_json_output" });
  }
  const violation = schemaViolation(value, schema);
  if (violation === null) return null;
  return new ApiError(500, { message: `response format: the model's answer does not match the JSON schema: ${violation}: ${shown}`, type: "server_error", code: "json_schema_mismatch" });
}

/** Arguments JSON text as an object, for APIs whose calls carry objects (Anthropic, Ollama). */
export function argumentsObject(argumentsJson: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(argumentsJson);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // A call cut off by max_tokens: its arguments are incomplete.
  }
  return {};
}
