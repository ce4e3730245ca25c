// Overload on a real node: the queue is served first come first served and tells streaming clients
// where they stand, a full queue answers 429 with Retry-After, and tasks over their prefill or decode
// timeout fail with a clear 504 while the runner stays usable.
import assert from "node:assert/strict";
import { test } from "node:test";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../../src/shared/limits.ts";
import type { State } from "../../src/shared/state.ts";
import { chatBody, isIdle, postChat, startTestNode } from "../support/test-node.ts";

const liveTaskCount = (s: State): number => Object.values(s.tasks).filter((t) => t.status === "Pending" || t.status === "Running").length;

test("FIFO: queued requests start in arrival order, and each streaming client hears its queue position", async () => {
  const node = await startTestNode({ engineOptions: { tokenDelayMs: 15 } });
  try {
    // Warm the instance up first, so the order below is the queue's, not the loading's.
    assert.equal((await postChat(node.url, chatBody({ max_tokens: 1 }))).status, 200);
    await node.waitFor(isIdle, "warm");
    const head = await postChat(node.url, chatBody({ stream: true, max_tokens: 25 }));
    await node.waitFor((s) => Object.values(s.tasks).some((t) => t.status === "Running"), "the first request running");
    const queued: Promise<string>[] = [];
    for (let i = 1; i <= 4; i++) {
      const response = await postChat(node.url, chatBody({ stream: true, max_tokens: 2 }));
      assert.equal(response.status, 200);
      queued.push(response.text());
      await node.waitFor((s) => liveTaskCount(s) === i + 1, `request ${i} queued`);
    }
    const headText = await head.text();
    const texts = await Promise.all(queued);
    assert.match(headText, /data: \[DONE\]/);
    texts.forEach((text, i) => {
      assert.match(text, /data: \[DONE\]/, `request ${i + 1} completed`);
      assert.match(text, new RegExp(`^: queue position ${i + 1}$`, "m"), `request ${i + 1} was told it is number ${i + 1}`);
      if (i > 0) assert.match(text, /^: queue position 1$/m, `request ${i + 1} moved up to the front`);
    });
    const createdOrder = node.events.flatMap((e) => (e.event.type === "TaskCreated" ? [e.event.task.taskId] : []));
    const startedOrder = node.events.flatMap((e) => (e.event.type === "TaskStatusUpdated" && e.event.status === "Running" ? [e.event.taskId] : []));
    assert.deepEqual(startedOrder, createdOrder, "tasks started in the order they were created");
    await node.waitFor(isIdle, "idle");
  } finally {
    await node.stop();
  }
});

test("a full queue answers 429 with Retry-After in the API's error shape; the node serves again once it drains", async () => {
  const node = await startTestNode({ engineOptions: { tokenDelayMs: 5 } });
  const controller = new AbortController();
  try {
    assert.equal((await postChat(node.url, chatBody({ max_tokens: 1 }))).status, 200);
    await node.waitFor(isIdle, "warm");
    const waiting: Promise<Response>[] = [];
    // One running, TASKS_PENDING_PER_INSTANCE_MAX waiting.
    for (let i = 0; i <= TASKS_PENDING_PER_INSTANCE_MAX; i++) waiting.push(postChat(node.url, chatBody({ stream: true }), controller.signal));
    await node.waitFor((s) => liveTaskCount(s) === TASKS_PENDING_PER_INSTANCE_MAX + 1, "queue full", 20_000);
    const refused = await postChat(node.url, chatBody({ max_tokens: 1 }));
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get("retry-after") ?? "", /^\d+$/);
    const body = (await refused.json()) as { error: { message: string; type: string } };
    assert.equal(body.error.type, "rate_limit_error");
    assert.match(body.error.message, new RegExp(String(TASKS_PENDING_PER_INSTANCE_MAX)));
    controller.abort();
    await Promise.allSettled(waiting);
    await node.waitFor(isIdle, "drained", 20_000);
    assert.equal((await postChat(node.url, chatBody({ max_tokens: 1 }))).status, 200);
  } finally {
    controller.abort();
    await node.stop();
  }
});

test("task timeouts: a prefill or a decode over its limit fails with 504 naming the limit; the runner serves the next request", async () => {
  const node = await startTestNode({
    engineOptions: { tokenDelayMs: 10, prefillDelayMsPerToken: 2 },
    node: { taskTimeouts: { prefillTimeoutMs: 400, decodeTimeoutMs: 600 } },
  });
  try {
    const decode = await postChat(node.url, chatBody({ max_tokens: 1000 }));
    assert.equal(decode.status, 504);
    const decodeError = (await decode.json()) as { error: { message: string; code: string } };
    assert.equal(decodeError.error.code, "timeout");
    assert.match(decodeError.error.message, /timed out.*decode timeout of 600 ms \([1-9]\d* tokens generated\)/);
    await node.waitFor(isIdle, "runner free after the decode timeout");

    // ~1,500 prompt tokens × 2 ms: 3 s of prefill, stopped at the next chunk after 400 ms.
    const streamed = await postChat(node.url, chatBody({ stream: true, messages: [{ role: "user", content: "word ".repeat(1500) }] }));
    assert.equal(streamed.status, 200);
    const text = await streamed.text();
    assert.match(text, /"code":"timeout"/);
    assert.match(text, /prefill timeout of 400 ms/);
    assert.doesNotMatch(text, /\[DONE\]/);
    await node.waitFor(isIdle, "runner free after the prefill timeout");

    const ok = await postChat(node.url, chatBody({ max_tokens: 3 }));
    assert.equal(ok.status, 200, "the same runner answers the next request");
    const failures = node.events.flatMap((e) => (e.event.type === "RunnerStatusUpdated" && e.event.status.kind === "Failed" ? [e] : []));
    assert.equal(failures.length, 0, "a timeout stops the task, not the runner");
  } finally {
    await node.stop();
  }
});

test("a task over its timeout on a runner that is stuck: the watchdog kills the runner, the task fails as a timeout, a new runner serves", async () => {
  const node = await startTestNode({
    engineOptions: { hangOnPromptContaining: "HANG" },
    watchdogTimeoutMs: 1_500,
    // FakeEngine hangs in its first decode step: prefill or decode, whichever phase it is in, times out.
    node: { taskTimeouts: { prefillTimeoutMs: 300, decodeTimeoutMs: 300 } },
  });
  try {
    const response = await postChat(node.url, chatBody({ messages: [{ role: "user", content: "please HANG now" }] }));
    assert.equal(response.status, 504);
    const error = (await response.json()) as { error: { message: string; code: string } };
    assert.equal(error.error.code, "timeout");
    assert.match(error.error.message, /timed out.*timeout of 300 ms.*did not stop.*(hung|heartbeat)/);
    await node.waitFor(isIdle, "runner replaced", 20_000);
    assert.equal((await postChat(node.url, chatBody({ max_tokens: 2 }))).status, 200);
  } finally {
    await node.stop();
  }
});
