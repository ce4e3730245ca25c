// Renders a model's chat template (tokenizer.chat_template, a Jinja template written for Hugging
// Face transformers) into the prompt text the model was trained on.
import { Template } from "@huggingface/jinja";
import type { ChatMessage, ToolDefinition } from "../shared/types.ts";
import type { TokenTexts } from "./tokenizer/token-index.ts";

/** A template that does not parse or fails while rendering: the request, not the runner, is at fault. */
export class ChatTemplateError extends Error {
  override name = "ChatTemplateError";
}

export interface ChatTemplateSpecialTokens {
  /** Text of the BOS token, or "" when the model has none. */
  readonly bosToken: string;
  readonly eosToken: string;
}

export interface ChatTemplateRenderOptions {
  /** End with the header of an assistant turn so the model answers (default true). */
  readonly addGenerationPrompt?: boolean;
  /** Functions offered to the model; absent or empty: the template sees no `tools`. */
  readonly tools?: readonly ToolDefinition[];
}

// @huggingface/jinja provides raise_exception and strftime_now itself.
// Templates are written against Hugging Face transformers' apply_chat_template: snake_case fields,
// OpenAI-shaped tools and tool calls, and call arguments as an object (Llama 3.1 applies `tojson`
// to them; Qwen accepts a string or an object).
function argumentsForTemplate(argumentsJson: string): unknown {
  try {
    const parsed: unknown = JSON.parse(argumentsJson);
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : argumentsJson;
  } catch {
    return argumentsJson;
  }
}

function messageForTemplate(message: ChatMessage): Record<string, unknown> {
  // OpenAI's "developer" role is the newer name of "system", which is all templates know.
  const out: Record<string, unknown> = { role: message.role === "developer" ? "system" : message.role, content: message.content };
  if (message.toolCalls !== undefined && message.toolCalls.length > 0) {
    out["tool_calls"] = message.toolCalls.map((call) => ({
      id: call.id,
      type: "function",
      function: { name: call.name, arguments: argumentsForTemplate(call.arguments) },
    }));
  }
  if (message.toolCallId !== undefined) out["tool_call_id"] = message.toolCallId;
  if (message.name !== undefined) out["name"] = message.name;
  return out;
}

function toolForTemplate(tool: ToolDefinition): Record<string, unknown> {
  const definition: Record<string, unknown> = { name: tool.name };
  if (tool.description !== undefined) definition["description"] = tool.description;
  if (tool.parameters !== undefined) definition["parameters"] = tool.parameters;
  return { type: "function", function: definition };
}

/**
 * Used when a GGUF carries no template: ChatML, which Qwen and many fine-tunes use, and which
 * instruction-tuned models of other families at least tolerate. `ChatTemplate.isFallback` tells.
 */
export const CHATML_FALLBACK_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Template sources larger than this are refused (real ones are up to a few tens of KiB). */
export const CHAT_TEMPLATE_SOURCE_CHARS_MAX = 1024 * 1024;

export class ChatTemplate {
  readonly isFallback: boolean;
  private readonly template: Template;

  /** `source` null: the model has no template and ChatML is used. */
  constructor(source: string | null, private readonly specialTokens: ChatTemplateSpecialTokens) {
    this.isFallback = source === null;
    const text = source ?? CHATML_FALLBACK_TEMPLATE;
    if (text.length > CHAT_TEMPLATE_SOURCE_CHARS_MAX) {
      throw new ChatTemplateError(`chat template of ${text.length} characters is over the limit of ${CHAT_TEMPLATE_SOURCE_CHARS_MAX}`);
    }
    try {
      this.template = new Template(text);
    } catch (error) {
      throw new ChatTemplateError(`the model's chat template does not parse: ${(error as Error).message}`);
    }
  }

  render(messages: readonly ChatMessage[], options: ChatTemplateRenderOptions = {}): string {
    try {
      const context: Record<string, unknown> = {
        messages: messages.map(messageForTemplate),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: this.specialTokens.bosToken,
        eos_token: this.specialTokens.eosToken,
      };
      if (options.tools !== undefined && options.tools.length > 0) context["tools"] = options.tools.map(toolForTemplate);
      return this.template.render(context);
    } catch (error) {
      // Templates raise errors on purpose, e.g. "Conversation roles must alternate user/assistant".
      throw new ChatTemplateError(`the model's chat template failed: ${(error as Error).message}`);
    }
  }
}

/** The chat template of a tokenizer's vocabulary (see Tokenizer.vocabulary). */
export function chatTemplateOf(vocabulary: {
  readonly chatTemplate: string | null;
  readonly tokens: TokenTexts;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
}): ChatTemplate {
  const textOf = (id: number | null): string => (id === null ? "" : (vocabulary.tokens.at(id) ?? ""));
  return new ChatTemplate(vocabulary.chatTemplate, { bosToken: textOf(vocabulary.bosTokenId), eosToken: textOf(vocabulary.eosTokenId) });
}

/** What encodeChat needs of a tokenizer (see src/engine/tokenizer/tokenizer.ts). */
export interface ChatTokenizer {
  readonly vocabulary: {
    readonly tokens: TokenTexts;
    readonly bosTokenId: number | null;
    readonly eosTokenId: number | null;
    readonly addBos: boolean;
    readonly addEos: boolean;
  };
  encode(text: string, options: { readonly addSpecial?: boolean; readonly parseSpecial?: boolean }): number[];
}

/**
 * Renders the conversation and tokenizes it as llama.cpp's server does: special tokens in the
 * rendered text are parsed, and a BOS (EOS) the template wrote itself is dropped when the tokenizer
 * adds one anyway, so the prompt never starts with two.
 */
export function encodeChat(
  tokenizer: ChatTokenizer,
  template: ChatTemplate,
  messages: readonly ChatMessage[],
  tools?: readonly ToolDefinition[],
): number[] {
  let text = template.render(messages, { addGenerationPrompt: true, ...(tools === undefined ? {} : { tools }) });
  const { tokens, bosTokenId, eosTokenId, addBos, addEos } = tokenizer.vocabulary;
  const bosText = bosTokenId === null ? "" : (tokens.at(bosTokenId) ?? "");
  const eosText = eosTokenId === null ? "" : (tokens.at(eosTokenId) ?? "");
  if (addBos && bosText !== "" && text.startsWith(bosText)) text = text.slice(bosText.length);
  if (addEos && eosText !== "" && text.endsWith(eosText)) text = text.slice(0, text.length - eosText.length);
  return tokenizer.encode(text, { addSpecial: true, parseSpecial: true });
}
