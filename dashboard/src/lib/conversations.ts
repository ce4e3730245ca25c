// Conversations live in the browser's localStorage. Pure helpers over plain data; the store in
// chat.svelte.ts owns the reactive copy.

export type MessageStatus = "streaming" | "done" | "stopped" | "error";

export interface AnswerStats {
  readonly timeToFirstTokenMs: number | null;
  readonly tokensPerSecond: number | null;
  readonly completionTokens: number;
}

export interface Message {
  readonly id: string;
  readonly role: "user" | "assistant";
  content: string;
  status: MessageStatus;
  model?: string;
  error?: string;
  finishReason?: string | null;
  stats?: AnswerStats;
}

export interface Conversation {
  readonly id: string;
  title: string;
  readonly createdAtMs: number;
  updatedAtMs: number;
  messages: Message[];
}

export const STORAGE_KEY = "skein.conversations.v1";

/** The part of localStorage used here (tests pass a Map-backed one). */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}
/** localStorage holds ~5 MB per origin; the oldest conversations go first past this count. */
export const CONVERSATIONS_MAX = 200;
const TITLE_CHARS_MAX = 60;

export function newId(): string {
  return crypto.randomUUID();
}

export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0]?.trim() ?? "";
  if (line === "") return "New chat";
  return line.length > TITLE_CHARS_MAX ? `${line.slice(0, TITLE_CHARS_MAX - 1)}…` : line;
}

export function loadConversations(storage: KeyValueStorage): Conversation[] {
  try {
    const raw = storage.getItem(STORAGE_KEY);
    if (raw === null) return [];
    const parsed = JSON.parse(raw) as unknown;
    if (!Array.isArray(parsed)) return [];
    const conversations = parsed.filter(isConversation);
    // An answer that was streaming when the page went away can never finish: it is stopped.
    for (const conversation of conversations) {
      for (const message of conversation.messages) if (message.status === "streaming") message.status = "stopped";
    }
    return conversations;
  } catch {
    return [];
  }
}

export function saveConversations(storage: KeyValueStorage, conversations: readonly Conversation[]): void {
  const kept = [...conversations].sort((a, b) => b.updatedAtMs - a.updatedAtMs).slice(0, CONVERSATIONS_MAX);
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(kept));
  } catch {
    // Quota exceeded: keep working in memory rather than break the chat.
  }
}

function isConversation(value: unknown): value is Conversation {
  if (typeof value !== "object" || value === null) return false;
  const c = value as Record<string, unknown>;
  return typeof c["id"] === "string" && typeof c["title"] === "string" && Array.isArray(c["messages"]) && typeof c["updatedAtMs"] === "number";
}

/** tokens/s over the generation only (first token to last), so a long prefill does not hide decode speed. */
export function computeStats(startedAtMs: number, firstTokenAtMs: number | null, lastTokenAtMs: number | null, completionTokens: number): AnswerStats {
  const timeToFirstTokenMs = firstTokenAtMs === null ? null : firstTokenAtMs - startedAtMs;
  let tokensPerSecond: number | null = null;
  if (firstTokenAtMs !== null && lastTokenAtMs !== null && completionTokens > 1 && lastTokenAtMs > firstTokenAtMs) {
    tokensPerSecond = ((completionTokens - 1) * 1000) / (lastTokenAtMs - firstTokenAtMs);
  }
  return { timeToFirstTokenMs, tokensPerSecond, completionTokens };
}
