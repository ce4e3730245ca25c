// Cancellation during prefill, and a runner killed mid-token, on a real node.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runnerPids } from "../support/processes.ts";
import { chatBody, isIdle, postChat, sseData, startTestNode, taskEvents } from "../support/test-node.ts";

test("cancel during prefill: stops between prompt chunks, no token generated, runner Ready", async () => {
  // 2 ms per prompt token × a prompt of ~1,500 words ≈ 3 s of prefill in 256-token chunks.
  const node = await startTestNode({ engineOptions: { tokenDelayMs: 1, prefillDelayMsPerToken: 2 } });
  try {
    const prompt = "word ".repeat(1500);
    const controller = new AbortController();
    const response = await postChat(node.url, chatBody({ stream: true, messages: [{ role: "user", content: prompt }] }), controller.signal);
    assert.equal(response.status, 200);
    const progressed = await node.waitFor(
      (s) => Object.values(s.tasks).some((t) => (t.prefill?.processedTokens ?? 0) > 0),
      "prefill progress",
    );
    const task = Object.values(progressed.tasks)[0]!;
    assert.ok(task.prefill!.processedTokens < task.prefill!.totalTokens, "cancel lands mid-prefill");
    controller.abort();
    await node.waitFor(isIdle, "idle after cancel");
    const events = taskEvents(node.events, task.commandId);
    assert.equal(events.filter((e) => e.event.type === "ChunkGenerated").length, 0);
    const final = events.find((e) => e.event.type === "TaskStatusUpdated" && e.event.tokensGenerated !== null);
    assert.ok(final?.event.type === "TaskStatusUpdated" && final.event.tokensGenerated === 0);
    const progress = events.filter((e) => e.event.type === "TaskPrefillProgress");
    assert.ok(progress.length < 6, `stopped before the prompt ended (${progress.length} chunks of ~6)`);
  } finally {
    await node.stop();
  }
});

test("runner SIGKILLed mid-token: the client gets an error event, the runner is replaced, the next request works", async () => {
  const node = await startTestNode({ engineOptions: { tokenDelayMs: 5 } });
  try {
    const response = await postChat(node.url, chatBody({ stream: true }));
    const items: unknown[] = [];
    let killed = false;
    for await (const item of sseData(response)) {
      items.push(item);
      if (!killed && items.length >= 3) {
        const pids = runnerPids(process.pid);
        assert.equal(pids.length, 1, "one runner process");
        process.kill(pids[0]!, "SIGKILL");
        killed = true;
      }
    }
    const error = items.find((i) => typeof i === "object" && i !== null && "error" in i) as { error: { message: string } } | undefined;
    assert.ok(error !== undefined, "an error event was streamed");
    assert.match(error.error.message, /runner/i);
    await node.waitFor(isIdle, "runner replaced and Ready", 20_000);
    const next = await postChat(node.url, chatBody({ max_tokens: 3 }));
    assert.equal(next.status, 200);
    assert.equal(((await next.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);
    await node.waitFor(isIdle, "Ready after the next request");
    const statuses = node.events.flatMap((e) => (e.event.type === "RunnerStatusUpdated" ? [e.event.status.kind] : []));
    assert.ok(statuses.includes("Failed"), "runner recorded Failed");
    assert.equal(statuses.at(-1), "Ready");
  } finally {
    await node.stop();
  }
});

test("a hung runner is killed by the watchdog and its task fails with a clear reason", async () => {
  const node = await startTestNode({ engineOptions: { hangOnPromptContaining: "HANG" }, watchdogTimeoutMs: 1_500 });
  try {
    const response = await postChat(node.url, chatBody({ messages: [{ role: "user", content: "please HANG now" }] }));
    assert.equal(response.status, 500);
    const body = (await response.json()) as { error: { message: string } };
    assert.match(body.error.message, /hung|heartbeat/i);
    await node.waitFor(isIdle, "runner replaced", 20_000);
  } finally {
    await node.stop();
  }
});
