// One streamed chat completion. The caller owns the AbortController; an abort ends the stream as
// "stopped" (never as an error), with whatever text arrived kept by the caller.
import { apiFetch } from "./api.svelte.ts";
import type { Progress } from "./sse.ts";
import { parseProgressComment, readSse } from "./sse.ts";

export interface ChatRequestMessage {
  readonly role: "system" | "user" | "assistant";
  readonly content: string;
}

export interface SamplingSettings {
  readonly temperature: number;
  readonly topP: number;
  /** null = until the model stops. */
  readonly maxTokens: number | null;
}

export interface StreamCallbacks {
  onId(completionId: string): void;
  onProgress(progress: Progress): void;
  onDelta(text: string): void;
}

export type StreamOutcome =
  | { readonly kind: "done"; readonly finishReason: string | null; readonly completionTokens: number | null }
  | { readonly kind: "stopped" }
  | { readonly kind: "error"; readonly message: string };

interface ChunkJson {
  id?: string;
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: { completion_tokens?: number } | null;
  error?: { message?: string };
}

export function isAbortError(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

async function errorMessageOf(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as ChunkJson;
    if (body.error?.message) return body.error.message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

export async function streamChat(
  model: string,
  messages: readonly ChatRequestMessage[],
  settings: SamplingSettings,
  signal: AbortSignal,
  callbacks: StreamCallbacks,
): Promise<StreamOutcome> {
  const body = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: settings.temperature,
    top_p: settings.topP,
    ...(settings.maxTokens === null ? {} : { max_tokens: settings.maxTokens }),
  };
  let finishReason: string | null = null;
  let completionTokens: number | null = null;
  try {
    const response = await apiFetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
    if (!response.ok || response.body === null) return { kind: "error", message: await errorMessageOf(response) };
    let sawId = false;
    for await (const item of readSse(response.body)) {
      if (item.kind === "comment") {
        const progress = parseProgressComment(item.text);
        if (progress !== null) callbacks.onProgress(progress);
        continue;
      }
      if (item.data === "[DONE]") return { kind: "done", finishReason, completionTokens };
      const chunk = JSON.parse(item.data) as ChunkJson;
      if (chunk.error !== undefined) return { kind: "error", message: chunk.error.message ?? "The server reported an error" };
      if (!sawId && typeof chunk.id === "string") {
        sawId = true;
        callbacks.onId(chunk.id);
      }
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      if (typeof text === "string" && text !== "") callbacks.onDelta(text);
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      if (typeof chunk.usage?.completion_tokens === "number") completionTokens = chunk.usage.completion_tokens;
    }
    // A stream that ends without [DONE] was cut (by us, or by the network).
    if (signal.aborted) return { kind: "stopped" };
    return { kind: "error", message: "The connection closed before the answer was complete" };
  } catch (error) {
    if (signal.aborted || isAbortError(error)) return { kind: "stopped" };
    return { kind: "error", message: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * Closing the connection already cancels the task on the node; the explicit cancel also reaches it
 * through proxies that keep the upstream connection open. A 404 (already finished) is fine.
 */
export function cancelCompletion(completionId: string): void {
  void apiFetch(`/v1/cancel/${encodeURIComponent(completionId)}`, { method: "POST", keepalive: true }).catch(() => undefined);
}
