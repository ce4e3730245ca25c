// The chat's state: conversations, the one request in flight, and STOP. Exactly one AbortController
// exists per request, for send and regenerate alike; stop() aborts it and the partial answer stays.
import type { ChatRequestMessage, SamplingSettings } from "./chat-stream.ts";
import { cancelCompletion, streamChat } from "./chat-stream.ts";
import type { Conversation, Message } from "./conversations.ts";
import { computeStats, loadConversations, newId, saveConversations, titleFrom } from "./conversations.ts";
import type { Progress } from "./sse.ts";

const SETTINGS_KEY = "skein.settings.v1";
const DEFAULT_SETTINGS: SamplingSettings & { model: string | null } = { temperature: 0.7, topP: 0.95, maxTokens: null, model: null };

interface ActiveRequest {
  readonly controller: AbortController;
  readonly conversationId: string;
  readonly messageId: string;
  completionId: string | null;
}

function loadSettings(): SamplingSettings & { model: string | null } {
  try {
    const raw = localStorage.getItem(SETTINGS_KEY);
    return raw === null ? { ...DEFAULT_SETTINGS } : { ...DEFAULT_SETTINGS, ...(JSON.parse(raw) as object) };
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

class ChatStore {
  conversations = $state<Conversation[]>(loadConversations(localStorage));
  currentId = $state<string | null>(null);
  settings = $state(loadSettings());
  /** Waiting-for-first-token progress of the request in flight. */
  progress = $state<Progress | null>(null);
  // Raw, not proxied: identity comparisons below tell this request from a newer one.
  private active = $state.raw<ActiveRequest | null>(null);

  get current(): Conversation | undefined {
    return this.conversations.find((c) => c.id === this.currentId);
  }

  get streaming(): boolean {
    return this.active !== null;
  }

  get sorted(): Conversation[] {
    return [...this.conversations].sort((a, b) => b.updatedAtMs - a.updatedAtMs);
  }

  saveSettings(): void {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(this.settings));
  }

  newConversation(): void {
    if (this.streaming) this.stop();
    this.currentId = null;
  }

  select(id: string): void {
    this.currentId = id;
  }

  rename(id: string, title: string): void {
    const conversation = this.conversations.find((c) => c.id === id);
    if (conversation === undefined || title.trim() === "") return;
    conversation.title = title.trim();
    this.persist();
  }

  remove(id: string): void {
    if (this.active?.conversationId === id) this.stop();
    this.conversations = this.conversations.filter((c) => c.id !== id);
    if (this.currentId === id) this.currentId = null;
    this.persist();
  }

  send(text: string): void {
    const model = this.settings.model;
    if (this.streaming || text.trim() === "" || model === null) return;
    let conversation = this.current;
    if (conversation === undefined) {
      const nowMs = Date.now();
      this.conversations.push({ id: newId(), title: titleFrom(text), createdAtMs: nowMs, updatedAtMs: nowMs, messages: [] });
      conversation = this.conversations[this.conversations.length - 1]!;
      this.currentId = conversation.id;
    }
    conversation.messages.push({ id: newId(), role: "user", content: text, status: "done" });
    void this.answer(conversation, model);
  }

  /** Replaces the last answer (or answers again after an error) with a new one. */
  regenerate(): void {
    const conversation = this.current;
    const model = this.settings.model;
    if (conversation === undefined || this.streaming || model === null) return;
    const last = conversation.messages[conversation.messages.length - 1];
    if (last?.role === "assistant") conversation.messages.pop();
    if (conversation.messages.length === 0) return;
    void this.answer(conversation, model);
  }

  stop(): void {
    const active = this.active;
    if (active === null) return;
    active.controller.abort();
    if (active.completionId !== null) cancelCompletion(active.completionId);
  }

  private async answer(conversation: Conversation, model: string): Promise<void> {
    const history: ChatRequestMessage[] = conversation.messages
      .filter((m) => m.status !== "error" && m.content !== "")
      .map((m) => ({ role: m.role, content: m.content }));
    conversation.messages.push({ id: newId(), role: "assistant", content: "", status: "streaming", model });
    // The proxied copy: writes through it update the view.
    const message: Message = conversation.messages[conversation.messages.length - 1]!;
    conversation.updatedAtMs = Date.now();
    const active: ActiveRequest = { controller: new AbortController(), conversationId: conversation.id, messageId: message.id, completionId: null };
    this.active = active;
    this.progress = null;
    const startedAtMs = performance.now();
    let firstTokenAtMs: number | null = null;
    let lastTokenAtMs: number | null = null;
    let deltaCount = 0;
    const outcome = await streamChat(model, history, $state.snapshot(this.settings), active.controller.signal, {
      onId: (id) => {
        active.completionId = id;
        // Stop pressed before the id arrived: the explicit cancel goes out now.
        if (active.controller.signal.aborted) cancelCompletion(id);
      },
      onProgress: (progress) => {
        if (this.active === active) this.progress = progress;
      },
      onDelta: (text) => {
        const nowMs = performance.now();
        firstTokenAtMs ??= nowMs;
        lastTokenAtMs = nowMs;
        deltaCount += 1;
        message.content += text;
        if (this.active === active) this.progress = null;
      },
    });
    const completionTokens = outcome.kind === "done" && outcome.completionTokens !== null ? outcome.completionTokens : deltaCount;
    message.stats = computeStats(startedAtMs, firstTokenAtMs, lastTokenAtMs, completionTokens);
    if (outcome.kind === "done") {
      message.status = "done";
      message.finishReason = outcome.finishReason;
    } else if (outcome.kind === "stopped") {
      message.status = "stopped";
    } else {
      message.status = "error";
      message.error = outcome.message;
    }
    conversation.updatedAtMs = Date.now();
    // Only the request that is still current clears the slot: a newer one may already own it.
    if (this.active === active) {
      this.active = null;
      this.progress = null;
    }
    this.persist();
  }

  private persist(): void {
    saveConversations(localStorage, $state.snapshot(this.conversations) as Conversation[]);
  }
}

export const chat = new ChatStore();
