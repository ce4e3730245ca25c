// The cancel chain over real sockets: @hono/node-server must turn a closed connection into an abort
// for SSE and JSON responses alike, and close() must cancel what is in flight and really stop.
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { test } from "node:test";
import { chatBody, dataEvents, postJson, SseReader } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import type { FakeCluster } from "../support/fake-cluster.ts";
import { waitUntil } from "../support/fake-cluster.ts";

function cleanupOrder(cluster: FakeCluster, commandId: string): string[] {
  return cluster.commands.flatMap((c) =>
    c.type === "TaskCancelled" && c.cancelledCommandId === commandId ? ["cancel"] : c.type === "TaskFinished" && c.finishedCommandId === commandId ? ["finish"] : [],
  );
}

const onlyTextGeneration = (cluster: FakeCluster): string => {
  const sent = cluster.sent("TextGeneration");
  assert.equal(sent.length, 1);
  return sent[0]!.commandId;
};

test("fetch + AbortController on a stream: one TaskCancelled then one TaskFinished", async () => {
  const { server, cluster } = await startTestServer();
  try {
    cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "tok"));
    const client = new AbortController();
    const response = await fetch(`${server.url}/v1/chat/completions`, { ...postJson(chatBody({ stream: true })), signal: client.signal });
    assert.equal(response.status, 200);
    const reader = new SseReader(response.body!);
    await reader.readUntil((text) => text.includes('"tok"'));
    const id = onlyTextGeneration(cluster);
    const abortedAtMs = performance.now();
    client.abort();
    await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
    const latencyMs = performance.now() - abortedAtMs;
    assert.deepEqual(cleanupOrder(cluster, id), ["cancel", "finish"]);
    assert.equal(server.liveTaskCount(), 0);
    console.log(JSON.stringify({ measure: "stream client abort → TaskFinished sent", latencyMs: Number(latencyMs.toFixed(2)) }));
  } finally {
    await server.close();
  }
});

test("a closed socket on a NON-stream request cancels the task too", async () => {
  const { server, cluster } = await startTestServer();
  try {
    const client = new AbortController();
    const pending = fetch(`${server.url}/v1/chat/completions`, { ...postJson(chatBody()), signal: client.signal }).catch((e: unknown) => e);
    await waitUntil(() => cluster.sent("TextGeneration").length === 1 && cluster.taskOf(cluster.sent("TextGeneration")[0]!.commandId) !== undefined, "task created");
    const id = onlyTextGeneration(cluster);
    const abortedAtMs = performance.now();
    client.abort();
    await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
    const latencyMs = performance.now() - abortedAtMs;
    assert.deepEqual(cleanupOrder(cluster, id), ["cancel", "finish"]);
    assert.ok((await pending) instanceof Error);
    console.log(JSON.stringify({ measure: "non-stream client abort → TaskFinished sent", latencyMs: Number(latencyMs.toFixed(2)) }));
  } finally {
    await server.close();
  }
});

test("a socket destroyed mid-stream (no fetch abort, just the TCP close) cancels the task", async () => {
  const { server, cluster } = await startTestServer();
  try {
    cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "tok"));
    const url = new URL(`${server.url}/v1/chat/completions`);
    const body = JSON.stringify(chatBody({ stream: true }));
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        res.on("data", (data: Buffer) => {
          if (data.toString().includes('"tok"')) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on("error", () => undefined);
      req.end(body);
      setTimeout(() => reject(new Error("no token within 3 s")), 3_000).unref();
    });
    const id = onlyTextGeneration(cluster);
    await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
    assert.deepEqual(cleanupOrder(cluster, id), ["cancel", "finish"]);
  } finally {
    await server.close();
  }
});

test("a non-stream answer is a plain JSON response with Content-Length, not chunked", async () => {
  const { server, cluster } = await startTestServer();
  try {
    cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["ok"]));
    const response = await fetch(`${server.url}/v1/chat/completions`, postJson(chatBody()));
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /application\/json/);
    assert.ok(Number(response.headers.get("content-length")) > 0);
    assert.equal(response.headers.get("transfer-encoding"), null);
    await response.json();
  } finally {
    await server.close();
  }
});

test("normal completion over a socket: no TaskCancelled, exactly one TaskFinished", async () => {
  const { server, cluster } = await startTestServer();
  try {
    cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["a", "b"]));
    const response = await fetch(`${server.url}/v1/chat/completions`, postJson(chatBody({ stream: true })));
    const data = dataEvents((await readAll(response.body!)).events());
    assert.equal(data.at(-1), "[DONE]");
    const id = onlyTextGeneration(cluster);
    // The response is over; give a stray late cancel every chance to show up before judging.
    await waitUntil(() => server.liveTaskCount() === 0, "stream closed");
    assert.deepEqual(cleanupOrder(cluster, id), ["finish"]);
  } finally {
    await server.close();
  }
});

async function readAll(body: ReadableStream<Uint8Array>): Promise<SseReader> {
  const reader = new SseReader(body);
  await reader.readAll();
  return reader;
}

test("close(): in-flight stream, JSON request and /events are ended, tasks cancelled, server stops", async () => {
  const { server, cluster } = await startTestServer();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "tok"));
  const streamResponse = await fetch(`${server.url}/v1/chat/completions`, postJson(chatBody({ stream: true })));
  const streamReader = new SseReader(streamResponse.body!);
  await streamReader.readUntil((text) => text.includes('"tok"'));
  const json = fetch(`${server.url}/v1/chat/completions`, postJson(chatBody()));
  const events = await fetch(`${server.url}/events`);
  const eventsReader = new SseReader(events.body!);
  await waitUntil(() => cluster.sent("TextGeneration").length === 2, "two requests in flight");
  // A finished keep-alive connection must not hold close() up either.
  await (await fetch(`${server.url}/node_id`)).json();

  const closedAtMs = performance.now();
  await server.close();
  const closeMs = performance.now() - closedAtMs;

  for (const sent of cluster.sent("TextGeneration")) assert.deepEqual(cleanupOrder(cluster, sent.commandId), ["cancel", "finish"]);
  const jsonResponse = await json;
  assert.equal(jsonResponse.status, 503);
  assert.equal(((await jsonResponse.json()) as { error: { code: string } }).error.code, "server_shutdown");
  await streamReader.readAll();
  assert.match(streamReader.text, /server_shutdown/);
  await eventsReader.readAll();
  assert.equal(server.liveTaskCount(), 0);
  await assert.rejects(fetch(`${server.url}/node_id`));
  console.log(JSON.stringify({ measure: "server close with 3 live streams", closeMs: Number(closeMs.toFixed(2)) }));
});
