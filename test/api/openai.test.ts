import assert from "node:assert/strict";
import { test } from "node:test";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../../src/shared/limits.ts";
import type { Task } from "../../src/shared/types.ts";
import { chatBody, dataEvents, makeFixture, MODEL_ID, OTHER_MODEL_ID, postJson, SseReader } from "../support/api-fixture.ts";
import { waitUntil } from "../support/fake-cluster.ts";

const URL_CHAT = "http://skein.test/v1/chat/completions";

async function errorOf(response: Response): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  const body = (await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  return body.error;
}

test("400 for bodies that are not a valid chat request, naming the parameter", async (t) => {
  const { app, cluster } = makeFixture();
  const cases: { name: string; body: unknown; param: string | null }[] = [
    { name: "n=2", body: chatBody({ n: 2 }), param: "n" },
    { name: "bad role", body: chatBody({ messages: [{ role: "wizard", content: "hi" }] }), param: "messages.0.role" },
    { name: "temperature as string", body: chatBody({ temperature: "hot" }), param: "temperature" },
    { name: "temperature out of range", body: chatBody({ temperature: 3 }), param: "temperature" },
    { name: "no messages", body: chatBody({ messages: [] }), param: "messages" },
    { name: "no model", body: { messages: [{ role: "user", content: "hi" }] }, param: "model" },
    { name: "image part", body: chatBody({ messages: [{ role: "user", content: [{ type: "image_url", image_url: "x" }] }] }), param: "messages.0.content" },
    { name: "stream as string", body: chatBody({ stream: "yes" }), param: "stream" },
    { name: "max_tokens zero", body: chatBody({ max_tokens: 0 }), param: "max_tokens" },
    { name: "too many stop strings", body: chatBody({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), param: "stop" },
    { name: "an array body", body: [chatBody()], param: null },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const response = await app.request(URL_CHAT, postJson(c.body));
      assert.equal(response.status, 400);
      const error = await errorOf(response);
      assert.equal(error.type, "invalid_request_error");
      assert.equal(error.param, c.param);
    });
  }
  assert.equal(cluster.commands.length, 0);
});

test("400 for invalid JSON and for a wrong content type, with a clear message", async () => {
  const { app, cluster } = makeFixture();
  const broken = await app.request(URL_CHAT, { method: "POST", headers: { "content-type": "application/json" }, body: '{"model": "tiny-model",' });
  assert.equal(broken.status, 400);
  assert.match((await errorOf(broken)).message, /not valid JSON/);
  const text = await app.request(URL_CHAT, { method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify(chatBody()) });
  assert.equal(text.status, 400);
  const error = await errorOf(text);
  assert.match(error.message, /application\/json/);
  assert.equal(error.code, "invalid_content_type");
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("unknown extra fields are ignored", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["ok"]));
  const response = await app.request(URL_CHAT, postJson(chatBody({ user: "u1", metadata: { a: 1 }, parallel_tool_calls: false })));
  assert.equal(response.status, 200);
});

test("413 when the body is over the limit, by header and by counted bytes", async () => {
  const { app, cluster } = makeFixture({ app: { bodyBytesMax: 1000 } });
  const big = JSON.stringify(chatBody({ messages: [{ role: "user", content: "x".repeat(2000) }] }));
  const declared = await app.request(URL_CHAT, { method: "POST", headers: { "content-type": "application/json", "content-length": String(big.length) }, body: big });
  assert.equal(declared.status, 413);
  assert.equal((await errorOf(declared)).code, "request_too_large");
  // A chunked body has no Content-Length: only counting catches it.
  const bytes = new TextEncoder().encode(big);
  const chunked = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 100) controller.enqueue(bytes.slice(i, i + 100));
      controller.close();
    },
  });
  const counted = await app.request(URL_CHAT, { method: "POST", headers: { "content-type": "application/json" }, body: chunked, duplex: "half" } as RequestInit);
  assert.equal(counted.status, 413);
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("404 model_not_found for a model neither the registry nor State knows", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(URL_CHAT, postJson(chatBody({ model: "no-such-model" })));
  assert.equal(response.status, 404);
  const error = await errorOf(response);
  assert.equal(error.code, "model_not_found");
  assert.equal(error.param, "model");
  assert.equal(cluster.commands.length, 0);
});

test("429 with Retry-After when the model's queue is full, before any command is sent", async () => {
  const { app, cluster } = makeFixture();
  for (let i = 0; i < TASKS_PENDING_PER_INSTANCE_MAX; i++) cluster.sendCommand({ ...textGeneration(cluster), commandId: `chatcmpl-fill-${i}` as never });
  await waitUntil(() => Object.keys(cluster.state.tasks).length === TASKS_PENDING_PER_INSTANCE_MAX, "queue filled");
  const sentBefore = cluster.commands.length;
  const response = await app.request(URL_CHAT, postJson(chatBody()));
  assert.equal(response.status, 429);
  assert.equal(response.headers.get("retry-after"), "1");
  assert.equal((await errorOf(response)).code, "queue_full");
  assert.equal(cluster.commands.length, sentBefore);
});

function textGeneration(cluster: ReturnType<typeof makeFixture>["cluster"]) {
  return {
    type: "TextGeneration" as const,
    commandId: "chatcmpl-x" as never,
    modelId: MODEL_ID as never,
    originNodeId: cluster.nodeId,
    params: { messages: [{ role: "user" as const, content: "q" }], maxTokens: null, temperature: 1, topP: 1, topK: 0, minP: 0, seed: null, stop: [], presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, logprobs: false, topLogprobs: 0 },
  };
}

test("a task the master creates Failed maps to its status (queue_full → 429) even for stream:true", async () => {
  const { app, cluster } = makeFixture();
  // The master's view changed after the pre-check: it refuses the task itself.
  cluster.sendCommand = (command) => {
    cluster.commands.push(command);
    if (command.type !== "TextGeneration") return;
    queueMicrotask(() => {
      const task: Task = { taskId: "task-1" as never, commandId: command.commandId, instanceId: null, modelId: command.modelId, originNodeId: command.originNodeId, status: "Failed", params: command.params, promptTokens: 0, tokensGenerated: 0, prefill: null, finishReason: "error", failureCode: "queue_full", failureReason: "queue full", heldByRunner: false, clientFinished: false };
      cluster.emit({ type: "TaskCreated", task });
    });
  };
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  assert.equal(response.status, 429);
  assert.equal(response.headers.get("retry-after"), "1");
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  assert.equal(cluster.cancelsOf(id), 0);
  assert.equal(cluster.finishesOf(id), 1);
});

test("no instance: the model is placed (PlaceInstance from its card), then served", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["placed"]));
  const response = await app.request(URL_CHAT, postJson(chatBody({ model: OTHER_MODEL_ID })));
  assert.equal(response.status, 200);
  const place = cluster.sent("PlaceInstance");
  assert.equal(place.length, 1);
  assert.deepEqual(place[0]!.model, { modelId: OTHER_MODEL_ID, layerCount: 4, sizeBytes: 1024 * 1024 });
  assert.equal(place[0]!.minNodes, 1);
  assert.equal(place[0]!.sharding, "pipeline");
  const body = (await response.json()) as { choices: { message: { content: string } }[] };
  assert.equal(body.choices[0]!.message.content, "placed");
});

test("concurrent requests for an unplaced model share one PlaceInstance", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["x"]));
  const responses = await Promise.all([1, 2, 3].map(() => app.request(URL_CHAT, postJson(chatBody({ model: OTHER_MODEL_ID })))));
  assert.deepEqual(responses.map((r) => r.status), [200, 200, 200]);
  assert.equal(cluster.sent("PlaceInstance").length, 1);
});

test("503 when the model cannot be placed: the master stays silent, the wait is bounded", async () => {
  const { app, cluster } = makeFixture({ cluster: { placementPossible: false } });
  const response = await app.request(URL_CHAT, postJson(chatBody({ model: OTHER_MODEL_ID })));
  assert.equal(response.status, 503);
  const error = await errorOf(response);
  assert.equal(error.code, "no_instance");
  assert.match(error.message, /no instance was created within 100 ms/);
  assert.equal(cluster.sent("TextGeneration").length, 0);
});

test("503 at once when placement says the model does not fit", async () => {
  const huge = makeFixture({ app: { models: { list: () => [], get: (id) => (id === "huge" ? { modelId: "huge" as never, name: "huge", layerCount: 4, sizeBytes: 1e15, contextLength: 1, path: null, engineModule: null, engineOptions: {} } : undefined) } } });
  const response = await huge.app.request(URL_CHAT, postJson(chatBody({ model: "huge" })));
  assert.equal(response.status, 503);
  assert.match((await errorOf(response)).message, /huge/);
  assert.equal(huge.cluster.commands.length, 0);
});

test("stream: role delta first, content chunks, usage on the last chunk, then [DONE]", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Hel", "lo", "!"], "length", 5));
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/);
  const data = dataEvents((await readAllInto(response)).events());
  assert.equal(data.at(-1), "[DONE]");
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as ChunkJson);
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  for (const c of chunks) {
    assert.equal(c.id, id);
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.model, MODEL_ID);
  }
  assert.deepEqual(chunks[0]!.choices[0]!.delta, { role: "assistant", content: "" });
  assert.equal(chunks.slice(1, -1).map((c) => c.choices[0]!.delta.content).join(""), "Hello!");
  const last = chunks.at(-1)!;
  assert.equal(last.choices[0]!.finish_reason, "length");
  assert.deepEqual(last.usage, { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === undefined && c.choices[0]!.finish_reason === null));
  assert.equal(cluster.cancelsOf(id), 0);
  assert.equal(cluster.finishesOf(id), 1);
});

interface ChunkJson {
  id: string;
  object: string;
  model: string;
  choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: unknown;
}

/** Reads a whole response body and returns an SseReader-like holder of its text. */
async function readAllInto(response: Response): Promise<SseReader> {
  const reader = new SseReader(response.body!);
  await reader.readAll();
  return reader;
}

test("non-stream: chat.completion JSON with usage, id = command id, one TaskFinished and no cancel", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["4", "2"], "stop", 9));
  const response = await app.request(URL_CHAT, postJson(chatBody({ temperature: 0, max_completion_tokens: 5, stop: "\n", seed: 3 })));
  assert.equal(response.status, 200);
  const body = (await response.json()) as Record<string, unknown> & { choices: { message: { role: string; content: string }; finish_reason: string }[] };
  const sent = cluster.sent("TextGeneration")[0]!;
  assert.equal(body.id, sent.commandId);
  assert.equal(body.object, "chat.completion");
  assert.deepEqual(body.choices[0]!.message, { role: "assistant", content: "42", refusal: null });
  assert.equal(body.choices[0]!.finish_reason, "stop");
  assert.deepEqual(body.usage, { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
  assert.equal(sent.params.temperature, 0);
  assert.equal(sent.params.maxTokens, 5);
  assert.deepEqual(sent.params.stop, ["\n"]);
  assert.equal(sent.params.seed, 3);
  assert.equal(cluster.cancelsOf(sent.commandId), 0);
  assert.equal(cluster.finishesOf(sent.commandId), 1);
});

test("non-stream failure: error JSON with the mapped status", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.setTaskStatus(task.taskId, "Failed", { failureCode: "bad_request", failureReason: "prompt is longer than the context (4096 tokens)" }));
  const response = await app.request(URL_CHAT, postJson(chatBody()));
  assert.equal(response.status, 400);
  const error = await errorOf(response);
  assert.equal(error.code, "bad_request");
  assert.match(error.message, /longer than the context/);
});

test("a failure after streaming began is one error event, then the stream closes without [DONE]", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) =>
    queueMicrotask(() => {
      cluster.chunk(task.taskId, "par");
      cluster.setTaskStatus(task.taskId, "Failed", { failureCode: "runner_failed", failureReason: "runner crashed" });
    });
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  assert.equal(response.status, 200);
  const data = dataEvents((await readAllInto(response)).events());
  assert.notEqual(data.at(-1), "[DONE]");
  const last = JSON.parse(data.at(-1)!) as { error: { code: string; message: string; type: string } };
  assert.equal(last.error.code, "runner_failed");
  assert.equal(last.error.message, "runner crashed");
  assert.equal(data.filter((d) => d.includes('"error"')).length, 1);
});

test("while waiting for the first token: keep-alive comments, loading and prefill progress", async () => {
  const { app, cluster } = makeFixture();
  let taskId: Task["taskId"] | null = null;
  cluster.onTaskCreated = (task) => (taskId = task.taskId);
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes(": keep-alive"));
  const runnerId = cluster.runnerOf(Object.keys(cluster.state.instances)[0] as never);
  cluster.emit({ type: "RunnerStatusUpdated", runnerId, status: { kind: "Idle" } });
  cluster.emit({ type: "RunnerStatusUpdated", runnerId, status: { kind: "Loading", layersLoaded: 2, layerCount: 4 } });
  await reader.readUntil((text) => text.includes(": loading 2/4 layers"));
  cluster.emit({ type: "TaskPrefillProgress", taskId: taskId!, processedTokens: 256, totalTokens: 1000 });
  await reader.readUntil((text) => text.includes(": prefill 256/1000 tokens"));
  cluster.generate(taskId!, ["done"]);
  await reader.readAll();
  assert.equal(dataEvents(reader.events()).at(-1), "[DONE]");
});

test("client abort of a stream (reader.cancel): exactly one TaskCancelled, then one TaskFinished", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes('"first"'));
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  assert.equal(cluster.cancelsOf(id), 0);
  await reader.cancel();
  await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
  const order = cluster.commands.filter((c) => c.type === "TaskCancelled" || c.type === "TaskFinished").map((c) => c.type);
  assert.deepEqual(order, ["TaskCancelled", "TaskFinished"]);
  assert.equal(cluster.taskOf(id), undefined);
});

test("client abort of a non-stream request (its signal): TaskCancelled, then TaskFinished", async () => {
  const { app, cluster } = makeFixture();
  const client = new AbortController();
  const pending = app.request(new Request(URL_CHAT, { ...postJson(chatBody()), signal: client.signal }));
  await waitUntil(() => cluster.sent("TextGeneration").length === 1 && cluster.taskOf(cluster.sent("TextGeneration")[0]!.commandId) !== undefined, "task created");
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  client.abort();
  await Promise.resolve(pending).catch(() => undefined);
  await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
  assert.equal(cluster.cancelsOf(id), 1);
});

test("POST /v1/cancel/{id} mid-stream: final chunk says cancelled with usage, then [DONE]; twice is fine", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "partial"));
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes('"partial"'));
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  const first = await app.request(`http://skein.test/v1/cancel/${id}`, { method: "POST" });
  assert.equal(first.status, 200);
  assert.deepEqual(await first.json(), { id, object: "chat.completion.cancellation", cancelled: true, status: "Pending" });
  await reader.readAll();
  const data = dataEvents(reader.events());
  assert.equal(data.at(-1), "[DONE]");
  const last = JSON.parse(data.at(-2)!) as { choices: { finish_reason: string }[]; usage: { completion_tokens: number } };
  assert.equal(last.choices[0]!.finish_reason, "cancelled");
  assert.equal(last.usage.completion_tokens, 1);
  assert.equal(cluster.cancelsOf(id), 1);
  assert.equal(cluster.finishesOf(id), 1);
  // The task is gone now: a second cancel is a 404, never a crash.
  const second = await app.request(`http://skein.test/v1/cancel/${id}`, { method: "POST" });
  assert.equal(second.status, 404);
});

test("POST /v1/cancel twice while the task lives: both 200, one TaskCancelled from the stream", async () => {
  const { app, cluster } = makeFixture();
  const pending = app.request(URL_CHAT, postJson(chatBody()));
  await waitUntil(() => cluster.sent("TextGeneration").length === 1 && cluster.taskOf(cluster.sent("TextGeneration")[0]!.commandId) !== undefined, "task created");
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  // The fake master would end the task at the first cancel; hold it so both calls see it live.
  const realSend = cluster.sendCommand.bind(cluster);
  cluster.sendCommand = (c) => (c.type === "TaskCancelled" ? void cluster.commands.push(c) : realSend(c));
  const a = await app.request(`http://skein.test/v1/cancel/${id}`, { method: "POST" });
  const b = await app.request(`http://skein.test/v1/cancel/${id}`, { method: "POST" });
  assert.deepEqual([a.status, b.status], [200, 200]);
  assert.equal(((await b.json()) as { status: string }).status, "Pending");
  assert.equal(cluster.cancelsOf(id), 1);
  cluster.setTaskStatus(cluster.taskOf(id)!.taskId, "Cancelled", { finishReason: "cancelled" });
  const response = await pending;
  assert.equal(response.status, 200);
  const body = (await response.json()) as { choices: { finish_reason: string }[] };
  assert.equal(body.choices[0]!.finish_reason, "cancelled");
  assert.equal(cluster.finishesOf(id), 1);
});

test("POST /v1/cancel: 400 for a malformed id, 404 for an unknown one", async () => {
  const { app, cluster } = makeFixture();
  const malformed = await app.request("http://skein.test/v1/cancel/bad%20id!", { method: "POST" });
  assert.equal(malformed.status, 400);
  const unknown = await app.request("http://skein.test/v1/cancel/chatcmpl-nope", { method: "POST" });
  assert.equal(unknown.status, 404);
  assert.equal((await errorOf(unknown)).code, "task_not_found");
  assert.equal(cluster.commands.length, 0);
});

test("cancelAll: a live stream gets one error event and the task is cancelled and finished", async () => {
  const fixture = makeFixture();
  const { app, cluster } = fixture;
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "x"));
  const response = await app.request(URL_CHAT, postJson(chatBody({ stream: true })));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes('"x"'));
  fixture.cancelAll("server shutting down");
  await reader.readAll();
  const last = JSON.parse(dataEvents(reader.events()).at(-1)!) as { error: { code: string } };
  assert.equal(last.error.code, "server_shutdown");
  const id = cluster.sent("TextGeneration")[0]!.commandId;
  assert.equal(cluster.cancelsOf(id), 1);
  assert.equal(cluster.finishesOf(id), 1);
  assert.equal(fixture.liveTaskCount(), 0);
});

test("GET /v1/models: registry cards (default first), then models of running instances", async () => {
  const { app, cluster } = makeFixture();
  cluster.addInstance("runtime-only-model");
  const response = await app.request("http://skein.test/v1/models");
  const body = (await response.json()) as { object: string; data: { id: string; object: string }[] };
  assert.equal(body.object, "list");
  assert.deepEqual(body.data.map((m) => m.id), [MODEL_ID, OTHER_MODEL_ID, "runtime-only-model"]);
  assert.ok(body.data.every((m) => m.object === "model"));
});

test("a model known only from State (a running instance) is served", async () => {
  const { app, cluster } = makeFixture();
  cluster.addInstance("runtime-only-model");
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["y"]));
  const response = await app.request(URL_CHAT, postJson(chatBody({ model: "runtime-only-model" })));
  assert.equal(response.status, 200);
});

test("unknown routes answer the OpenAI error shape, and every response has a bounded request id", async () => {
  const { app } = makeFixture();
  const response = await app.request("http://skein.test/v2/nothing", { headers: { "x-request-id": "abc-123" } });
  assert.equal(response.status, 404);
  assert.equal(response.headers.get("x-request-id"), "abc-123");
  assert.equal((await errorOf(response)).type, "not_found_error");
  const hostile = await app.request("http://skein.test/state", { headers: { "x-request-id": "x".repeat(500) } });
  assert.match(hostile.headers.get("x-request-id") ?? "", /^req-[0-9a-f-]{36}$/);
});
