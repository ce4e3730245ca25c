// Many random cancels under concurrent streams over a real socket: every request ends with exactly
// one TaskFinished and at most one TaskCancelled, and nothing is left behind (tasks, streams,
// listeners). The seed is printed so a failure replays.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { TaskId } from "../../src/shared/ids.ts";
import { isTaskTerminal } from "../../src/shared/types.ts";
import { chatBody, postJson, SseReader } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import type { FakeCluster } from "../support/fake-cluster.ts";
import { waitUntil } from "../support/fake-cluster.ts";

const REQUEST_COUNT = 160;
const CONCURRENCY = 32;
const TOKENS_PER_TASK = 12;

/** mulberry32: small, seedable, good enough to pick abort points. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Plays a runner: Running, then one token per timer tick until done or the task ended. */
function playRunner(cluster: FakeCluster, taskId: TaskId): void {
  let produced = 0;
  const step = (): void => {
    const task = cluster.state.tasks[taskId];
    if (task === undefined) return;
    if (isTaskTerminal(task.status)) {
      if (task.heldByRunner) cluster.setTaskStatus(taskId, task.status, { finishReason: task.finishReason ?? "cancelled", tokensGenerated: produced });
      return;
    }
    if (produced === 0) cluster.setTaskStatus(taskId, "Running", { promptTokens: 3 });
    if (produced === TOKENS_PER_TASK) {
      cluster.setTaskStatus(taskId, "Complete", { finishReason: "length", tokensGenerated: produced, promptTokens: 3 });
      return;
    }
    produced++;
    cluster.chunk(taskId, `t${produced} `);
    setTimeout(step, 1);
  };
  setTimeout(step, 1);
}

type Mode = "complete" | "abort-stream" | "abort-json" | "cancel-by-id" | "complete-json";

async function runOne(url: string, cluster: FakeCluster, mode: Mode, abortAfterTokens: number): Promise<void> {
  const client = new AbortController();
  const stream = mode !== "abort-json" && mode !== "complete-json";
  const pending = fetch(`${url}/v1/chat/completions`, { ...postJson(chatBody({ stream })), signal: client.signal });
  if (!stream) {
    if (mode === "abort-json") setTimeout(() => client.abort(), 1 + abortAfterTokens);
    const response = await pending.catch(() => null);
    if (response !== null) await response.text().catch(() => "");
    return;
  }
  const response = await pending;
  const reader = new SseReader(response.body!);
  const tokens = (text: string): number => (text.match(/"content":"t\d+ "/g) ?? []).length;
  if (mode === "complete") {
    await reader.readAll();
    assert.match(reader.text, /\[DONE\]/);
    return;
  }
  await reader.readUntil((text) => tokens(text) >= abortAfterTokens || text.includes("[DONE]"));
  if (mode === "abort-stream") {
    client.abort();
    return;
  }
  const id = /"id":"(chatcmpl-[^"]+)"/.exec(reader.text)?.[1];
  assert.ok(id !== undefined);
  const cancel = await fetch(`${url}/v1/cancel/${id}`, { method: "POST" });
  assert.ok(cancel.status === 200 || cancel.status === 404, `cancel answered ${cancel.status}`);
  await cancel.text();
  await reader.readAll();
  assert.match(reader.text, /\[DONE\]/);
}

test(`${REQUEST_COUNT} requests, ${CONCURRENCY} at a time, cancelled at random points, leave nothing behind`, async () => {
  const seed = Number(process.env.SKEIN_SEED ?? Date.now() % 1_000_000);
  console.log(JSON.stringify({ seed }));
  const next = random(seed);
  const { server, cluster } = await startTestServer();
  cluster.onTaskCreated = (task) => {
    if (task.status === "Pending") playRunner(cluster, task.taskId);
  };
  const modes: Mode[] = ["complete", "abort-stream", "abort-json", "cancel-by-id", "complete-json"];
  const startedAtMs = performance.now();
  try {
    let issued = 0;
    const worker = async (): Promise<void> => {
      while (issued < REQUEST_COUNT) {
        issued++;
        const mode = modes[Math.floor(next() * modes.length)]!;
        await runOne(server.url, cluster, mode, 1 + Math.floor(next() * (TOKENS_PER_TASK - 1)));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const sent = cluster.sent("TextGeneration");
    // A JSON request aborted within a millisecond may never reach the handler: no command then.
    assert.ok(sent.length > REQUEST_COUNT / 2 && sent.length <= REQUEST_COUNT, `${sent.length} commands`);
    await waitUntil(() => server.liveTaskCount() === 0, "every request's stream finished", 5_000);
    await waitUntil(() => Object.keys(cluster.state.tasks).length === 0, "every task deleted", 5_000);
    for (const { commandId } of sent) {
      assert.equal(cluster.finishesOf(commandId), 1, `${commandId}: TaskFinished count (seed ${seed})`);
      assert.ok(cluster.cancelsOf(commandId) <= 1, `${commandId}: TaskCancelled count (seed ${seed})`);
    }
    assert.equal(cluster.listenerCount, 0, "no StateView listener left");
    console.log(JSON.stringify({ measure: "cancel storm", requests: REQUEST_COUNT, concurrency: CONCURRENCY, wallMs: Math.round(performance.now() - startedAtMs) }));
  } finally {
    await server.close();
  }
});
