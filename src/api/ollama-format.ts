// Pure translation between Ollama's API (/api/chat, /api/generate and the model listings) and
// skein's vocabulary. Ollama's own sampling defaults apply where a request is silent, so a client
// that worked against Ollama answers the same way here. No I/O.
import { z } from "zod";
import type { ModelCard } from "../models/model-card.ts";
import { ID_LENGTH_MAX } from "../shared/ids.ts";
import { CHAT_MESSAGES_MAX, GENERATION_TOKENS_MAX, STOP_STRINGS_MAX, TOOL_CALLS_PER_MESSAGE_MAX, TOOL_NAME_CHARS_MAX, TOOLS_MAX } from "../shared/limits.ts";
import type { ChatMessage, GenerationParams, ToolDefinition } from "../shared/types.ts";
import type { AnswerToolCall } from "./answer.ts";
import { ApiError } from "./errors.ts";
import { FunctionToolSchema } from "./openai-format.ts";
import type { TaskEnd } from "./task-stream.ts";
import { argumentsObject, nameToolResults, selectTools } from "./tools.ts";

/**
 * The Ollama API version this adapter speaks. Clients compare it to decide which endpoints and
 * fields exist (tools, structured formats), so it is Ollama's numbering, not skein's.
 */
export const OLLAMA_COMPAT_VERSION = "0.12.0";

/** Ollama's defaults (its Modelfile documentation), applied where a request is silent. */
export const OLLAMA_DEFAULTS = { temperature: 0.8, topK: 40, topP: 0.9, repeatPenalty: 1.1 } as const;

const OptionsSchema = z
  .object({
    temperature: z.number().min(0).max(2).optional(),
    top_p: z.number().gt(0).max(1).optional(),
    top_k: z.number().int().min(0).optional(),
    min_p: z.number().min(0).max(1).optional(),
    seed: z.number().int().optional(),
    // -1: until the model stops; -2: until the context is full (both: no limit here).
    num_predict: z.number().int().min(-2).max(GENERATION_TOKENS_MAX).optional(),
    stop: z.array(z.string().min(1)).max(STOP_STRINGS_MAX).optional(),
    repeat_penalty: z.number().gt(0).max(10).optional(),
    presence_penalty: z.number().min(-2).max(2).optional(),
    frequency_penalty: z.number().min(-2).max(2).optional(),
  })
  .loose();

/** "json" or a JSON schema: both are checked as JSON (schemas are not enforced). */
const FormatSchema = z.union([z.literal("json"), z.literal(""), z.record(z.string(), z.unknown())]);

const OllamaToolCallSchema = z.object({
  function: z.object({ name: z.string().min(1).max(TOOL_NAME_CHARS_MAX), arguments: z.record(z.string(), z.unknown()).optional() }),
});

const OllamaMessageSchema = z.object({
  role: z.enum(["system", "user", "assistant", "tool"]),
  content: z.string().optional(),
  images: z.array(z.string()).max(0, { error: "images are not supported" }).nullish(),
  tool_calls: z.array(OllamaToolCallSchema).max(TOOL_CALLS_PER_MESSAGE_MAX).nullish(),
  tool_name: z.string().max(TOOL_NAME_CHARS_MAX).optional(),
});

const common = {
  model: z.string().min(1).max(ID_LENGTH_MAX),
  stream: z.boolean().optional(),
  format: FormatSchema.optional(),
  options: OptionsSchema.optional(),
  keep_alive: z.union([z.string(), z.number()]).optional(),
};

export const OllamaChatRequestSchema = z.object({
  ...common,
  messages: z.array(OllamaMessageSchema).max(CHAT_MESSAGES_MAX),
  tools: z.array(FunctionToolSchema).max(TOOLS_MAX).optional(),
});
export type OllamaChatRequest = z.infer<typeof OllamaChatRequestSchema>;

export const OllamaGenerateRequestSchema = z.object({
  ...common,
  prompt: z.string().optional(),
  system: z.string().optional(),
  images: z.array(z.string()).max(0, { error: "images are not supported" }).nullish(),
  raw: z.boolean().optional(),
});
export type OllamaGenerateRequest = z.infer<typeof OllamaGenerateRequestSchema>;

/** Ollama names models "name:tag"; a card id asked for with the implicit ":latest" is the same model. */
export function modelNameCandidates(name: string): string[] {
  return name.endsWith(":latest") ? [name, name.slice(0, -":latest".length)] : [name];
}

type OllamaOptions = z.infer<typeof OptionsSchema>;

function sampling(options: OllamaOptions | undefined): Omit<GenerationParams, "messages"> {
  const o = options ?? {};
  const numPredict = o.num_predict;
  return {
    maxTokens: numPredict === undefined || numPredict < 0 ? null : Math.max(1, numPredict),
    temperature: o.temperature ?? OLLAMA_DEFAULTS.temperature,
    topP: o.top_p ?? OLLAMA_DEFAULTS.topP,
    topK: o.top_k ?? OLLAMA_DEFAULTS.topK,
    minP: o.min_p ?? 0,
    seed: o.seed ?? null,
    stop: o.stop ?? [],
    presencePenalty: o.presence_penalty ?? 0,
    frequencyPenalty: o.frequency_penalty ?? 0,
    repetitionPenalty: o.repeat_penalty ?? OLLAMA_DEFAULTS.repeatPenalty,
    logprobs: false,
    topLogprobs: 0,
  };
}

export const wantsJsonFormat = (format: OllamaChatRequest["format"]): boolean => format !== undefined && format !== "";

/** A `format` object is the JSON schema the answer is checked against. */
export const jsonSchemaOfFormat = (format: OllamaChatRequest["format"]): unknown => (typeof format === "object" ? format : null);

/** Ollama's calls carry no ids; ids are made up per position so a result can name its call. */
function toChatMessage(message: z.infer<typeof OllamaMessageSchema>, position: number): ChatMessage {
  const calls = (message.tool_calls ?? []).map((call, index) => ({
    id: `call_${position}_${index}`,
    name: call.function.name,
    arguments: JSON.stringify(call.function.arguments ?? {}),
  }));
  return {
    role: message.role,
    content: message.content ?? "",
    ...(calls.length === 0 ? {} : { toolCalls: calls }),
    ...(message.role === "tool" && message.tool_name !== undefined ? { name: message.tool_name } : {}),
  };
}

export function chatToGenerationParams(request: OllamaChatRequest): GenerationParams {
  if (request.messages.length === 0) throw new ApiError(400, { message: "messages: at least one message is required", param: "messages", code: "invalid_request" });
  const tools: ToolDefinition[] = (request.tools ?? []).map((t) => ({
    name: t.function.name,
    ...(t.function.description === null || t.function.description === undefined ? {} : { description: t.function.description }),
    ...(t.function.parameters === null || t.function.parameters === undefined ? {} : { parameters: t.function.parameters }),
  }));
  return { messages: nameToolResults(request.messages.map(toChatMessage)), ...sampling(request.options), ...selectTools(tools, null, "tools") };
}

/**
 * /api/generate goes through the chat template as a one-turn conversation: the engine has no raw
 * completion entry point, so `raw: true` is refused rather than silently templated.
 */
export function generateToGenerationParams(request: OllamaGenerateRequest): GenerationParams {
  if (request.raw === true) throw new ApiError(400, { message: "raw: raw prompts are not supported; the model's chat template is always applied", param: "raw", code: "invalid_request" });
  const messages: ChatMessage[] = [
    ...(request.system === undefined || request.system === "" ? [] : [{ role: "system" as const, content: request.system }]),
    { role: "user", content: request.prompt ?? "" },
  ];
  return { messages, ...sampling(request.options) };
}

// ── answers ──────────────────────────────────────────────────────────────────────────────────

export type DoneReason = "stop" | "length";

export const doneReasonOf = (end: TaskEnd): DoneReason => (end.status !== "Cancelled" && end.finishReason === "length" ? "length" : "stop");

export interface OllamaTimings {
  readonly startedMs: number;
  /** When the first token arrived (prompt evaluation done); null if none did. */
  readonly firstTokenMs: number | null;
  readonly endedMs: number;
}

const NS_PER_MS = 1_000_000;

/** Ollama's counters: durations in nanoseconds, counts in tokens. */
export function statsJson(end: TaskEnd, timings: OllamaTimings): Record<string, number> {
  const firstMs = timings.firstTokenMs ?? timings.endedMs;
  return {
    total_duration: Math.round((timings.endedMs - timings.startedMs) * NS_PER_MS),
    load_duration: 0,
    prompt_eval_count: end.usage.promptTokens,
    prompt_eval_duration: Math.round((firstMs - timings.startedMs) * NS_PER_MS),
    eval_count: end.usage.completionTokens,
    eval_duration: Math.round((timings.endedMs - firstMs) * NS_PER_MS),
  };
}

export const ollamaToolCalls = (calls: readonly AnswerToolCall[]): Record<string, unknown>[] =>
  calls.map((call) => ({ function: { name: call.name, arguments: argumentsObject(call.arguments) } }));

export function assistantMessage(text: string, calls: readonly AnswerToolCall[]): Record<string, unknown> {
  return { role: "assistant", content: text, ...(calls.length === 0 ? {} : { tool_calls: ollamaToolCalls(calls) }) };
}

/** `details` of a model in /api/tags, /api/show and /api/ps; skein's cards know only the format. */
export function detailsJson(): Record<string, unknown> {
  return { parent_model: "", format: "gguf", family: "", families: null, parameter_size: "", quantization_level: "" };
}

/** Cards carry no dates; the epoch says "unknown" in a form every client parses. */
const UNKNOWN_TIME = new Date(0).toISOString();

export function tagJson(card: ModelCard): Record<string, unknown> {
  return { name: card.modelId, model: card.modelId, modified_at: UNKNOWN_TIME, size: card.sizeBytes, digest: "", details: detailsJson() };
}

export function showJson(card: ModelCard): Record<string, unknown> {
  return {
    license: "",
    modelfile: `# served by skein\nFROM ${card.modelId}\n`,
    parameters: "",
    template: "",
    details: detailsJson(),
    model_info: { "general.name": card.name, "general.block_count": card.layerCount, "general.context_length": card.contextLength },
    capabilities: ["completion", "tools"],
    modified_at: UNKNOWN_TIME,
  };
}
