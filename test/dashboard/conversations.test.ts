// Conversation storage and answer statistics of the dashboard (plain TypeScript, no DOM).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Conversation, KeyValueStorage } from "../../dashboard/src/lib/conversations.ts";
import { computeStats, CONVERSATIONS_MAX, loadConversations, saveConversations, STORAGE_KEY, titleFrom } from "../../dashboard/src/lib/conversations.ts";

function memoryStorage(): KeyValueStorage & { map: Map<string, string> } {
  const map = new Map<string, string>();
  return { map, getItem: (key) => map.get(key) ?? null, setItem: (key, value) => void map.set(key, value) };
}

function conversation(id: string, updatedAtMs: number, status: "streaming" | "done" | "stopped" = "done"): Conversation {
  return {
    id,
    title: `chat ${id}`,
    createdAtMs: 0,
    updatedAtMs,
    messages: [
      { id: `${id}-u`, role: "user", content: "hi", status: "done" },
      { id: `${id}-a`, role: "assistant", content: "partial", status },
    ],
  };
}

test("conversations round-trip through storage", () => {
  const storage = memoryStorage();
  saveConversations(storage, [conversation("a", 1), conversation("b", 2)]);
  const loaded = loadConversations(storage);
  assert.deepEqual(loaded.map((c) => c.id).sort(), ["a", "b"]);
  assert.equal(loaded.find((c) => c.id === "a")?.messages[1]?.content, "partial");
});

test("an answer still streaming when the page went away loads as stopped", () => {
  const storage = memoryStorage();
  saveConversations(storage, [conversation("a", 1, "streaming")]);
  assert.equal(loadConversations(storage)[0]?.messages[1]?.status, "stopped");
});

test("only the most recent CONVERSATIONS_MAX are kept", () => {
  const storage = memoryStorage();
  const many = Array.from({ length: CONVERSATIONS_MAX + 5 }, (_, i) => conversation(`c${i}`, i));
  saveConversations(storage, many);
  const loaded = loadConversations(storage);
  assert.equal(loaded.length, CONVERSATIONS_MAX);
  assert.ok(!loaded.some((c) => c.id === "c0"), "the oldest went first");
});

test("corrupt or foreign storage content loads as no conversations, never throws", () => {
  for (const raw of ["{not json", '{"a":1}', '[{"id":1}]', "null"]) {
    const storage = memoryStorage();
    storage.map.set(STORAGE_KEY, raw);
    assert.deepEqual(loadConversations(storage), [], raw);
  }
});

test("a full storage does not break saving", () => {
  const storage: KeyValueStorage = { getItem: () => null, setItem: () => { throw new Error("QuotaExceededError"); } };
  assert.doesNotThrow(() => saveConversations(storage, [conversation("a", 1)]));
});

test("titles come from the first line, trimmed and shortened", () => {
  assert.equal(titleFrom("  Hello there\nsecond line"), "Hello there");
  assert.equal(titleFrom("   "), "New chat");
  assert.equal(titleFrom("x".repeat(100)).length, 60);
});

test("tokens/s counts the generation only; TTFT is from the request", () => {
  const stats = computeStats(1_000, 1_500, 3_500, 41);
  assert.equal(stats.timeToFirstTokenMs, 500);
  assert.equal(stats.tokensPerSecond, 20); // 40 tokens after the first, in 2 s
  assert.equal(computeStats(0, null, null, 0).timeToFirstTokenMs, null);
  assert.equal(computeStats(0, 10, 10, 1).tokensPerSecond, null, "one token has no rate");
});
