// Claude, Responses and Ollama adapters through app.request() over a FakeCluster: exact wire
// formats, each API's own error shape and status (middleware errors included), failures
// mid-stream, and a client that goes away cancelling its task.
import assert from "node:assert/strict";
import { test } from "node:test";
import { anthropicErrorType, errorFlavorOf } from "../../src/api/errors.ts";
import { toGenerationParams as claudeParams, parseMessagesRequest } from "../../src/api/claude-format.ts";
import { chatToGenerationParams, OllamaChatRequestSchema } from "../../src/api/ollama-format.ts";
import { parseWith } from "../../src/api/openai-format.ts";
import { outputItems, parseResponsesRequest, ResponseEvents, toGenerationParams as responsesParams } from "../../src/api/responses-format.ts";
import { AnswerAssembler } from "../../src/api/answer.ts";
import { TASKS_PENDING_PER_INSTANCE_MAX } from "../../src/shared/limits.ts";
import { GenerationParamsSchema } from "../../src/shared/types.ts";
import { makeFixture, MODEL_ID, OTHER_MODEL_ID, parseSse, postJson, SseReader } from "../support/api-fixture.ts";
import type { FakeCluster } from "../support/fake-cluster.ts";
import { waitUntil } from "../support/fake-cluster.ts";

const BASE = "http://skein.test";

const messagesBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ model: MODEL_ID, max_tokens: 32, messages: [{ role: "user", content: "hi" }], ...extra });
const responsesBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ model: MODEL_ID, input: "hi", ...extra });
const ollamaChatBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], ...extra });

function replyWith(cluster: FakeCluster, pieces: readonly string[]): void {
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, pieces, "stop", 4));
}

function fillQueue(cluster: FakeCluster): void {
  for (let i = 0; i < TASKS_PENDING_PER_INSTANCE_MAX; i++) cluster.sendCommand({ type: "TextGeneration", commandId: `filler-${i}` as never, modelId: MODEL_ID as never, originNodeId: cluster.nodeId, params: claudeParams(parseMessagesRequest(messagesBody())) });
}

test("errors take the shape of the API the path belongs to", () => {
  const table: [string, ReturnType<typeof errorFlavorOf>][] = [
    ["/v1/chat/completions", "openai"],
    ["/v1/responses", "openai"],
    ["/v1/messages", "anthropic"],
    ["/v1/messages/count_tokens", "anthropic"],
    ["/v1/messagesx", "openai"],
    ["/api/chat", "ollama"],
    ["/ollama/api/tags", "ollama"],
    ["/state", "openai"],
  ];
  for (const [path, flavor] of table) assert.equal(errorFlavorOf(path), flavor, path);
  assert.deepEqual([400, 401, 403, 404, 413, 429, 500, 503, 529].map(anthropicErrorType), [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "overloaded_error",
  ]);
});

test("every adapter's params pass the wire schema, tool turns included", () => {
  const claude = claudeParams(
    parseMessagesRequest(
      messagesBody({
        system: [{ type: "text", text: "sys" }],
        tools: [{ name: "f", input_schema: { type: "object" } }],
        tool_choice: { type: "any" },
        messages: [
          { role: "user", content: "q" },
          { role: "assistant", content: [{ type: "tool_use", id: "toolu_1", name: "f", input: { a: 1 } }] },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: [{ type: "text", text: "r" }] }, { type: "text", text: "and?" }] },
        ],
      }),
    ),
  );
  assert.deepEqual(claude.messages, [
    { role: "system", content: "sys" },
    { role: "user", content: "q" },
    { role: "assistant", content: "", toolCalls: [{ id: "toolu_1", name: "f", arguments: '{"a":1}' }] },
    { role: "tool", content: "r", toolCallId: "toolu_1", name: "f" },
    { role: "user", content: "and?" },
  ]);
  assert.equal(claude.toolChoice, "required");
  const responses = responsesParams(
    parseResponsesRequest(
      responsesBody({
        input: [
          { role: "user", content: [{ type: "input_text", text: "q" }] },
          { type: "reasoning", id: "rs_1", summary: [] },
          { type: "function_call", call_id: "call_1", name: "f", arguments: "{}" },
          { type: "function_call", call_id: "call_2", name: "g", arguments: "{}" },
          { type: "function_call_output", call_id: "call_2", output: "two" },
        ],
      }),
    ),
  );
  assert.deepEqual(responses.messages.slice(1), [
    { role: "assistant", content: "", toolCalls: [{ id: "call_1", name: "f", arguments: "{}" }, { id: "call_2", name: "g", arguments: "{}" }] },
    { role: "tool", content: "two", toolCallId: "call_2", name: "g" },
  ]);
  const ollama = chatToGenerationParams(parseWith(OllamaChatRequestSchema, ollamaChatBody({ options: { num_predict: -1, seed: 3 } })));
  assert.deepEqual([ollama.maxTokens, ollama.seed, ollama.temperature, ollama.topK, ollama.topP, ollama.repetitionPenalty], [null, 3, 0.8, 40, 0.9, 1.1]);
  for (const params of [claude, responses, ollama]) assert.ok(GenerationParamsSchema.safeParse(params).success, JSON.stringify(GenerationParamsSchema.safeParse(params).error));
});

test("claude: the exact event sequence of a streamed answer", async () => {
  const { app, cluster } = makeFixture();
  replyWith(cluster, ["Hel", "lo"]);
  const response = await app.request(`${BASE}/v1/messages`, postJson(messagesBody({ stream: true })));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/);
  const events = parseSse(await response.text()).filter((e) => e.data !== null);
  const payloads = events.map((e) => JSON.parse(e.data!) as Record<string, unknown>);
  assert.deepEqual(
    events.map((e) => e.event),
    payloads.map((p) => p["type"]),
    "every SSE event name equals its payload's type",
  );
  assert.deepEqual(
    payloads.map((p) => p["type"]),
    ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"],
  );
  assert.deepEqual(payloads[3], { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hel" } });
  assert.deepEqual(payloads[6], { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { input_tokens: 4, output_tokens: 2 } });
  const start = payloads[0]!["message"] as Record<string, unknown>;
  assert.match(String(start["id"]), /^msg_/);
  assert.deepEqual(start["content"], []);
  assert.deepEqual(start["usage"], { input_tokens: 4, output_tokens: 0 }, "message_start already knows the prompt's size");
});

test("claude: errors in Anthropic's shape with the right status, from handlers and middleware alike", async (t) => {
  const { app, cluster } = makeFixture();
  const cases: { name: string; init: RequestInit; status: number; type: string; message?: RegExp }[] = [
    { name: "missing max_tokens", init: postJson({ model: MODEL_ID, messages: [{ role: "user", content: "x" }] }), status: 400, type: "invalid_request_error", message: /max_tokens/ },
    { name: "image block", init: postJson(messagesBody({ messages: [{ role: "user", content: [{ type: "image", source: {} }] }] })), status: 400, type: "invalid_request_error" },
    { name: "temperature above 1", init: postJson(messagesBody({ temperature: 1.5 })), status: 400, type: "invalid_request_error", message: /temperature/ },
    { name: "broken JSON (middleware)", init: { method: "POST", headers: { "content-type": "application/json" }, body: "{" }, status: 400, type: "invalid_request_error" },
    { name: "unknown model", init: postJson(messagesBody({ model: "nope" })), status: 404, type: "not_found_error" },
    { name: "tool choice naming no tool", init: postJson(messagesBody({ tools: [{ name: "f", input_schema: {} }], tool_choice: { type: "tool", name: "g" } })), status: 400, type: "invalid_request_error" },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const response = await app.request(`${BASE}/v1/messages`, c.init);
      assert.equal(response.status, c.status);
      const body = (await response.json()) as { type: string; error: { type: string; message: string } };
      assert.equal(body.type, "error");
      assert.deepEqual(Object.keys(body.error).sort(), ["message", "type"]);
      assert.equal(body.error.type, c.type);
      if (c.message !== undefined) assert.match(body.error.message, c.message);
    });
  }
  await t.test("queue full is a 429 rate_limit_error", async () => {
    fillQueue(cluster);
    await waitUntil(() => Object.keys(cluster.state.tasks).length === TASKS_PENDING_PER_INSTANCE_MAX, "queue filled");
    const response = await app.request(`${BASE}/v1/messages`, postJson(messagesBody()));
    assert.equal(response.status, 429);
    assert.equal(((await response.json()) as { error: { type: string } }).error.type, "rate_limit_error");
  });
});

test("claude: a failure mid-stream is an error event; a vanished client cancels the task", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) =>
    queueMicrotask(() => {
      cluster.setTaskStatus(task.taskId, "Running");
      cluster.chunk(task.taskId, "partial");
      cluster.setTaskStatus(task.taskId, "Failed", { finishReason: "error", failureCode: "runner_failed", failureReason: "runner crashed" });
    });
  const failed = parseSse(await (await app.request(`${BASE}/v1/messages`, postJson(messagesBody({ stream: true })))).text());
  const last = failed.at(-1)!;
  assert.equal(last.event, "error");
  assert.deepEqual(JSON.parse(last.data!), { type: "error", error: { type: "api_error", message: "runner crashed" } });

  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
  const response = await app.request(`${BASE}/v1/messages`, postJson(messagesBody({ stream: true })));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes('"first"'));
  const id = cluster.sent("TextGeneration").at(-1)!.commandId;
  await reader.cancel();
  await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
  assert.equal(cluster.cancelsOf(id), 1);
});

test("responses: numbered events that add up to the final response; errors in OpenAI's shape", async (t) => {
  const { app, cluster } = makeFixture();
  await t.test("event sequence", async () => {
    replyWith(cluster, ["a", "b"]);
    const response = await app.request(`${BASE}/v1/responses`, postJson(responsesBody({ stream: true })));
    const payloads = parseSse(await response.text())
      .filter((e) => e.data !== null)
      .map((e) => JSON.parse(e.data!) as Record<string, unknown>);
    assert.deepEqual(
      payloads.map((p) => p["type"]),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    assert.deepEqual(
      payloads.map((p) => p["sequence_number"]),
      payloads.map((_, i) => i),
    );
    const final = payloads.at(-1)!["response"] as { output: { content: { text: string }[] }[]; usage: { output_tokens: number } };
    assert.equal(final.output[0]!.content[0]!.text, "ab");
    assert.equal(final.usage.output_tokens, 2);
  });
  await t.test("a failure mid-stream ends in response.failed", async () => {
    cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.setTaskStatus(task.taskId, "Failed", { finishReason: "error", failureCode: "runner_failed", failureReason: "boom" }));
    const response = await app.request(`${BASE}/v1/responses`, postJson(responsesBody({ stream: true, model: MODEL_ID })));
    assert.equal(response.status, 200, "the stream had started when the task failed");
    const events = parseSse(await response.text()).filter((e) => e.data !== null);
    const last = JSON.parse(events.at(-1)!.data!) as { type: string; response: { status: string; error: { code: string; message: string } } };
    assert.equal(events.at(-1)!.event, "response.failed");
    assert.equal(last.response.status, "failed");
    assert.deepEqual(last.response.error, { code: "runner_failed", message: "boom" });
  });
  for (const [name, body, param] of [
    ["previous_response_id", responsesBody({ previous_response_id: "resp_1" }), "previous_response_id"],
    ["a hosted tool", responsesBody({ tools: [{ type: "web_search" }] }), "tools.0.type"],
    ["an empty input list", responsesBody({ input: [] }), "input"],
  ] as const) {
    await t.test(`400: ${name}`, async () => {
      const response = await app.request(`${BASE}/v1/responses`, postJson(body));
      assert.equal(response.status, 400);
      const error = ((await response.json()) as { error: { param: string | null; type: string } }).error;
      assert.equal(error.type, "invalid_request_error");
      assert.equal(error.param, param);
    });
  }
});

test("ollama: NDJSON stream, stream:false, and the bare /api mount", async () => {
  const { app, cluster } = makeFixture();
  replyWith(cluster, ["Hi", "!"]);
  const response = await app.request(`${BASE}/ollama/api/chat`, postJson(ollamaChatBody()));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /application\/x-ndjson/);
  const lines = (await response.text()).split("\n");
  assert.equal(lines.pop(), "", "every line ends with a newline");
  const objects = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.deepEqual(
    objects.map((o) => [(o["message"] as { content: string }).content, o["done"]]),
    [
      ["Hi", false],
      ["!", false],
      ["", true],
    ],
  );
  const final = objects.at(-1)!;
  assert.equal(final["done_reason"], "stop");
  assert.equal(final["eval_count"], 2);
  assert.equal(final["prompt_eval_count"], 4);
  for (const key of ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"]) assert.equal(typeof final[key], "number", key);

  replyWith(cluster, ["Whole"]);
  const whole = (await (await app.request(`${BASE}/api/generate`, postJson({ model: `${MODEL_ID}:latest`, prompt: "x", stream: false }))).json()) as Record<string, unknown>;
  assert.equal(whole["response"], "Whole");
  assert.equal(whole["done"], true);
  assert.equal(cluster.sent("TextGeneration").at(-1)!.modelId, MODEL_ID);

  const load = (await (await app.request(`${BASE}/api/generate`, postJson({ model: OTHER_MODEL_ID }))).json()) as Record<string, unknown>;
  assert.deepEqual([load["done"], load["done_reason"]], [true, "load"]);
  assert.equal(cluster.sent("PlaceInstance").at(-1)?.model.modelId, OTHER_MODEL_ID, "an empty prompt loads the model");
  assert.equal((await app.request(`${BASE}/api/generate`, postJson({ model: "nope" }))).status, 404);
  const loadChat = (await (await app.request(`${BASE}/api/chat`, postJson({ model: MODEL_ID, messages: [] }))).json()) as Record<string, unknown>;
  assert.deepEqual([loadChat["done"], loadChat["done_reason"]], [true, "load"]);
});

test("ollama: errors are {error} with the status, for bad bodies, unknown models and unknown routes", async () => {
  const { app } = makeFixture();
  const cases: [string, string, RequestInit, number][] = [
    ["bad body", "/api/chat", postJson({ model: MODEL_ID, messages: "hi" }), 400],
    ["image", "/api/chat", postJson(ollamaChatBody({ messages: [{ role: "user", content: "x", images: ["aGk="] }] })), 400],
    ["raw prompt", "/ollama/api/generate", postJson({ model: MODEL_ID, prompt: "x", raw: true }), 400],
    ["unknown model", "/api/chat", postJson(ollamaChatBody({ model: "nope" })), 404],
    ["show unknown", "/api/show", postJson({ model: "nope" }), 404],
    ["unknown route", "/ollama/api/pull", postJson({ model: "x" }), 404],
    ["not JSON", "/api/chat", { method: "POST", headers: { "content-type": "text/plain" }, body: "x" }, 400],
  ];
  for (const [name, path, init, status] of cases) {
    const response = await app.request(`${BASE}${path}`, init);
    assert.equal(response.status, status, name);
    const body = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ["error"], name);
    assert.equal(typeof body["error"], "string", name);
  }
});

test("ollama: a client that stops reading cancels the task; a JSON-format answer that is not JSON is an error line", async () => {
  const { app, cluster } = makeFixture();
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
  const response = await app.request(`${BASE}/api/chat`, postJson(ollamaChatBody()));
  const reader = new SseReader(response.body!);
  await reader.readUntil((text) => text.includes('"first"'));
  const id = cluster.sent("TextGeneration").at(-1)!.commandId;
  await reader.cancel();
  await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
  assert.equal(cluster.cancelsOf(id), 1);

  replyWith(cluster, ["not json"]);
  const text = await (await app.request(`${BASE}/api/chat`, postJson(ollamaChatBody({ format: "json" })))).text();
  const last = JSON.parse(text.trim().split("\n").at(-1)!) as Record<string, unknown>;
  assert.match(String(last["error"]), /not valid JSON/);
});

test("responses: streamed events for text then a call match the whole answer's output", () => {
  const request = parseResponsesRequest(responsesBody({ tools: [{ type: "function", name: "f" }] }));
  const who = { id: "resp_x", model: MODEL_ID, createdSeconds: 1, request };
  const end = { type: "end", status: "Complete", finishReason: "stop", failureCode: null, failureReason: null, usage: { promptTokens: 1, completionTokens: 2 }, endedBy: "cluster" } as const;
  const assembler = new AnswerAssembler({ toolsOffered: true, json: false, callIdPrefix: "call_" });
  const events = new ResponseEvents(who);
  const all = [...events.start()];
  for (const piece of ["Let me see. <tool", '_call>{"name": "f", "arguments": {"a"', ": 1}}</tool_call>"]) all.push(...events.pieces(assembler.push(piece)));
  all.push(...events.pieces(assembler.end()), ...events.finish(end, null));
  const final = all.at(-1) as { type: string; response: { output: unknown[] } };
  assert.equal(final.type, "response.completed");
  assert.deepEqual(final.response.output, outputItems(who, assembler.text, assembler.calls));
  const added = all.filter((e) => e.type === "response.output_item.added").map((e) => e["output_index"]);
  const done = all.filter((e) => e.type === "response.output_item.done").map((e) => e["output_index"]);
  assert.deepEqual([added, done], [[0, 1], [0, 1]]);
  const deltas = all.filter((e) => e.type === "response.function_call_arguments.delta").map((e) => e["delta"]);
  assert.equal(deltas.join(""), '{"a": 1}');
});

test("claude: keep-alives are comments before message_start and ping events after it", async () => {
  const { app, cluster } = makeFixture();
  const response = await app.request(`${BASE}/v1/messages`, postJson(messagesBody({ stream: true })));
  const reader = new SseReader(response.body!);
  // The fixture's keep-alive is 50 ms: comments until message_start, then a ping right after it and
  // another one when idle.
  await reader.readUntil((text) => text.split(": keep-alive").length - 1 >= 2);
  assert.ok(!reader.text.includes("message_start"), "message_start waits for the first token");
  cluster.chunk(cluster.taskOf(cluster.sent("TextGeneration").at(-1)!.commandId)!.taskId, "x");
  await reader.readUntil((text) => text.split("event: ping").length - 1 >= 2);
  const id = cluster.sent("TextGeneration").at(-1)!.commandId;
  await reader.cancel();
  await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
});

test("json_schema formats are checked in chat completions, responses and ollama", async () => {
  const { app, cluster } = makeFixture();
  const schema = { type: "object", properties: { n: { type: "integer" } }, required: ["n"] };
  const requests: [string, string, Record<string, unknown>][] = [
    ["chat", "/v1/chat/completions", { model: MODEL_ID, messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "n", schema } } }],
    ["responses", "/v1/responses", responsesBody({ text: { format: { type: "json_schema", name: "n", schema } } })],
    ["ollama", "/api/chat", ollamaChatBody({ stream: false, format: schema })],
  ];
  for (const [name, path, body] of requests) {
    replyWith(cluster, ['{"n": 1}']);
    assert.equal((await app.request(`${BASE}${path}`, postJson(body))).status, 200, `${name}: fits`);
    replyWith(cluster, ['{"n": "one"}']);
    const refused = await app.request(`${BASE}${path}`, postJson(body));
    assert.equal(refused.status, 500, `${name}: does not fit`);
    assert.match(await refused.text(), /n should be integer/, name);
  }
});
