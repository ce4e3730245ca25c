// The cancellation chain end to end on one node: real HTTP, master, worker, runner child process
// (FakeEngine test double). Every assertion reads State or the event stream; nothing sleeps.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import type { CommandId } from "../../src/shared/ids.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";
import type { TestNode } from "../support/test-node.ts";
import { chatBody, isIdle, postChat, sseData, startTestNode, taskEvents } from "../support/test-node.ts";

const TOKEN_DELAY_MS = 5;

interface ChunkJson {
  id: string;
  choices: { delta: { content?: string }; finish_reason: string | null }[];
  usage?: { completion_tokens: number };
}

/**
 * A streaming request on its own socket (no keep-alive pool), so the server's socket count is
 * meaningful afterwards. Destroys the socket after `abortAfterChunks` data events, if given.
 */
function rawStream(url: string, body: string, abortAfterChunks: number | null): Promise<"complete" | "aborted"> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${url}/v1/chat/completions`, { method: "POST", agent: false, headers: { "content-type": "application/json" } });
    request.on("response", (response) => {
      let chunks = 0;
      response.setEncoding("utf8");
      response.on("data", (text: string) => {
        chunks += text.split("\n\n").filter((b) => b.startsWith("data:")).length;
        if (abortAfterChunks !== null && chunks >= abortAfterChunks) {
          request.destroy();
          resolve("aborted");
        }
      });
      response.on("end", () => resolve("complete"));
      response.on("error", () => resolve("aborted"));
    });
    request.on("error", (error) => (abortAfterChunks === null ? reject(error) : resolve("aborted")));
    request.end(body);
  });
}

async function waitUntil(condition: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function statusesOf(events: IndexedEvent[]): string[] {
  return events.flatMap((e) => (e.event.type === "TaskStatusUpdated" ? [e.event.status] : e.event.type === "TaskDeleted" ? ["Deleted"] : []));
}

/** Starts a stream and returns once its first content chunk has arrived. */
async function startStream(node: TestNode, body = chatBody({ stream: true })) {
  const controller = new AbortController();
  const response = await postChat(node.url, body, controller.signal);
  assert.equal(response.status, 200);
  const data = sseData(response);
  let id = "";
  let text = "";
  // Pulled by hand: leaving a for-await loop early would close the stream.
  while (text === "") {
    const next = await data.next();
    assert.ok(next.done !== true, "stream ended before its first token");
    const chunk = next.value as ChunkJson;
    id = chunk.id;
    text += chunk.choices[0]?.delta.content ?? "";
  }
  return { controller, data, id: id as CommandId, text };
}

describe("cancellation end to end", () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ engineOptions: { tokenDelayMs: TOKEN_DELAY_MS, prefillDelayMsPerToken: 0 } });
  });
  after(async () => {
    await node.stop();
  });

  const idle = () => node.waitFor(isIdle, "runner Ready and no tasks left");

  test("a streamed request completes; the task is deleted and the runner Ready", async () => {
    const response = await postChat(node.url, chatBody({ stream: true, max_tokens: 8 }));
    const chunks: ChunkJson[] = [];
    let done = false;
    for await (const item of sseData(response)) {
      if (item === "[DONE]") done = true;
      else chunks.push(item as ChunkJson);
    }
    assert.ok(done, "stream ends with [DONE]");
    const last = chunks.at(-1)!;
    assert.equal(last.usage?.completion_tokens, 8);
    assert.equal(chunks.find((c) => c.choices[0]?.finish_reason !== null)?.choices[0]?.finish_reason, "length");
    await idle();
    assert.deepEqual(statusesOf(taskEvents(node.events, last.id)), ["Running", "Complete", "Deleted"]);
  });

  test("client aborts a stream → task Cancelled with its tokens counted, runner Ready, next request works", async () => {
    const stream = await startStream(node);
    stream.controller.abort();
    await idle();
    const events = taskEvents(node.events, stream.id);
    assert.deepEqual(statusesOf(events).filter((s) => s !== "Cancelled").slice(0, 1), ["Running"]);
    const cancelled = events.filter((e) => e.event.type === "TaskStatusUpdated" && e.event.status === "Cancelled");
    assert.ok(cancelled.length >= 1, "task recorded Cancelled");
    const generated = events.filter((e) => e.event.type === "ChunkGenerated").length;
    assert.ok(generated >= 1, "tokens were generated before the cancel");
    const runnerReport = cancelled.find((e) => e.event.type === "TaskStatusUpdated" && e.event.tokensGenerated !== null);
    assert.ok(runnerReport !== undefined, "the runner reported its final count");
    const response = await postChat(node.url, chatBody({ max_tokens: 3 }));
    assert.equal(response.status, 200);
    const json = (await response.json()) as { usage: { completion_tokens: number } };
    assert.equal(json.usage.completion_tokens, 3);
    await idle();
  });

  test("client aborts a NON-streaming request → task Cancelled", async () => {
    const controller = new AbortController();
    const pending = postChat(node.url, chatBody({ max_tokens: 4_000 }), controller.signal).catch((e: unknown) => e);
    const running = await node.waitFor((s) => Object.values(s.tasks).some((t) => t.status === "Running"), "a running task");
    const task = Object.values(running.tasks)[0]!;
    controller.abort();
    assert.ok((await pending) instanceof Error, "fetch rejects with the abort");
    await idle();
    assert.ok(statusesOf(taskEvents(node.events, task.commandId)).includes("Cancelled"));
  });

  test("POST /v1/cancel/{id} ends the stream with finish_reason cancelled; cancelling twice is harmless", async () => {
    const stream = await startStream(node);
    const first = await fetch(`${node.url}/v1/cancel/${stream.id}`, { method: "POST" });
    assert.equal(first.status, 200);
    const second = await fetch(`${node.url}/v1/cancel/${stream.id}`, { method: "POST" });
    assert.ok(second.status === 200 || second.status === 404, `second cancel: ${second.status}`);
    let finish: string | null = null;
    let done = false;
    for await (const item of stream.data) {
      if (item === "[DONE]") done = true;
      else finish = (item as ChunkJson).choices[0]?.finish_reason ?? finish;
    }
    assert.equal(finish, "cancelled");
    assert.ok(done);
    await idle();
  });

  test("cancel after finish → 404, and nothing changes", async () => {
    const response = await postChat(node.url, chatBody({ max_tokens: 2 }));
    const { id } = (await response.json()) as { id: string };
    await idle();
    const lastIdx = node.state().lastIdx;
    const cancel = await fetch(`${node.url}/v1/cancel/${id}`, { method: "POST" });
    assert.equal(cancel.status, 404);
    assert.equal(node.state().lastIdx, lastIdx);
  });

  test("cancel of an unknown or malformed id", async () => {
    assert.equal((await fetch(`${node.url}/v1/cancel/chatcmpl-does-not-exist`, { method: "POST" })).status, 404);
    assert.equal((await fetch(`${node.url}/v1/cancel/${"x".repeat(500)}`, { method: "POST" })).status, 400);
  });

  test("TaskFinished and TaskCancelled for tasks that do not exist are no-ops", async () => {
    const before = node.state();
    node.node.cluster.sendCommand({ type: "TaskFinished", finishedCommandId: "chatcmpl-ghost" as CommandId });
    node.node.cluster.sendCommand({ type: "TaskCancelled", cancelledCommandId: "chatcmpl-ghost" as CommandId });
    // A request after them proves they were processed (commands are handled in order) without harm.
    const response = await postChat(node.url, chatBody({ max_tokens: 1 }));
    assert.equal(response.status, 200);
    await idle();
    assert.deepEqual(node.state().instances, before.instances);
  });

  test("a queued task is cancelled without ever reaching the runner", async () => {
    const running = await startStream(node);
    const controller = new AbortController();
    const queued = postChat(node.url, chatBody({ stream: true }), controller.signal);
    const state = await node.waitFor((s) => Object.values(s.tasks).some((t) => t.status === "Pending"), "a pending task");
    const pendingTask = Object.values(state.tasks).find((t) => t.status === "Pending")!;
    const cancel = await fetch(`${node.url}/v1/cancel/${pendingTask.commandId}`, { method: "POST" });
    assert.equal(cancel.status, 200);
    await node.waitFor((s) => s.tasks[pendingTask.taskId] === undefined || s.tasks[pendingTask.taskId]!.status === "Cancelled", "queued task cancelled");
    running.controller.abort();
    const response = await queued;
    for await (const _ of sseData(response)) {
      // drain until the server closes it
    }
    await idle();
    assert.deepEqual(statusesOf(taskEvents(node.events, pendingTask.commandId)), ["Cancelled", "Deleted"]);
  });

  test("16 concurrent streams, half aborted at random points: every task ends, runner Ready, no socket left", async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 16 }, (_, i) => rawStream(node.url, chatBody({ stream: true, max_tokens: 6 }), i % 2 === 0 ? 1 + Math.floor(Math.random() * 6) : null)),
    );
    assert.equal(outcomes.filter((o) => o === "complete").length, 8);
    await idle();
    assert.equal(node.node.api.liveTaskCount(), 0);
    await waitUntil(async () => (await node.node.api.connectionCount()) === 0, "server sockets closed");
  });
});
