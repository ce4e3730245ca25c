// The official `openai` client (v6) against a real server on 127.0.0.1: the Responses API (text and
// function tools, streamed and whole), chat-completion tool calls, tool_choice, JSON mode and
// logprobs. A FakeCluster plays the runner.
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";
import type { TaskId } from "../../src/shared/ids.ts";
import { MODEL_ID } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import type { FakeCluster } from "../support/fake-cluster.ts";
import { waitUntil } from "../support/fake-cluster.ts";

function clientFor(url: string): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: "not-needed", maxRetries: 0, timeout: 5_000 });
}

const QWEN_CALL = ["<tool_call>\n", '{"name": "get_weather", "arguments": ', '{"city": "Paris"', "}}\n</tool_call>"];
const WEATHER_PARAMETERS = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };

function replyWith(cluster: FakeCluster, pieces: readonly string[], finish: "stop" | "length" = "stop"): void {
  cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, pieces, finish, 9));
}

test("openai client: responses API, chat tool calls, tool_choice, json mode and logprobs", async (t) => {
  const { server, cluster } = await startTestServer();
  const client = clientFor(server.url);
  try {
    await t.test("responses: streamed text with the SDK's event stream, usage at the end", async () => {
      replyWith(cluster, ["Hello", ", ", "world"]);
      const stream = client.responses.stream({ model: MODEL_ID, instructions: "be kind", input: "hi" });
      const types: string[] = [];
      let text = "";
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === "response.output_text.delta") text += event.delta;
      }
      const response = await stream.finalResponse();
      assert.equal(text, "Hello, world");
      assert.equal(response.output_text, "Hello, world");
      assert.equal(response.status, "completed");
      assert.deepEqual(response.usage && [response.usage.input_tokens, response.usage.output_tokens], [9, 3]);
      assert.equal(types[0], "response.created");
      assert.equal(types.at(-1), "response.completed");
      assert.ok(types.includes("response.output_item.added") && types.includes("response.output_text.done"));
      assert.deepEqual(cluster.sent("TextGeneration").at(-1)!.params.messages, [{ role: "system", content: "be kind" }, { role: "user", content: "hi" }]);
    });

    await t.test("responses: non-streaming, cut by max_output_tokens is incomplete", async () => {
      replyWith(cluster, ["4", "2"], "length");
      const response = await client.responses.create({ model: MODEL_ID, input: [{ role: "user", content: "6*7?" }], max_output_tokens: 2 });
      assert.equal(response.output_text, "42");
      assert.equal(response.status, "incomplete");
      assert.equal(response.incomplete_details?.reason, "max_output_tokens");
    });

    await t.test("responses: function call streamed, then its output sent back", async () => {
      replyWith(cluster, QWEN_CALL);
      const tools: OpenAI.Responses.FunctionTool[] = [{ type: "function", name: "get_weather", description: "Weather", parameters: WEATHER_PARAMETERS, strict: false }];
      const stream = client.responses.stream({ model: MODEL_ID, input: "Weather in Paris?", tools });
      const argumentDeltas: string[] = [];
      for await (const event of stream) {
        if (event.type === "response.function_call_arguments.delta") argumentDeltas.push(event.delta);
      }
      const response = await stream.finalResponse();
      const call = response.output.find((item) => item.type === "function_call");
      assert.ok(call !== undefined && call.type === "function_call", JSON.stringify(response.output));
      assert.equal(call.name, "get_weather");
      assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });
      assert.ok(argumentDeltas.length >= 2, `arguments arrive in pieces: ${JSON.stringify(argumentDeltas)}`);
      assert.equal(argumentDeltas.join(""), call.arguments);

      replyWith(cluster, ["Sunny."]);
      const followUp = await client.responses.create({
        model: MODEL_ID,
        tools,
        input: [{ role: "user", content: "Weather in Paris?" }, { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments }, { type: "function_call_output", call_id: call.call_id, output: "sunny" }],
      });
      assert.equal(followUp.output_text, "Sunny.");
      assert.deepEqual(cluster.sent("TextGeneration").at(-1)!.params.messages.slice(1), [
        { role: "assistant", content: "", toolCalls: [{ id: call.call_id, name: "get_weather", arguments: call.arguments }] },
        { role: "tool", content: "sunny", toolCallId: call.call_id, name: "get_weather" },
      ]);
    });

    await t.test("chat: streamed delta.tool_calls accumulate into the SDK's final message", async () => {
      replyWith(cluster, QWEN_CALL);
      const tools: OpenAI.Chat.ChatCompletionTool[] = [{ type: "function", function: { name: "get_weather", parameters: WEATHER_PARAMETERS } }];
      const stream = client.chat.completions.stream({ model: MODEL_ID, messages: [{ role: "user", content: "Weather in Paris?" }], tools });
      const completion = await stream.finalChatCompletion();
      const choice = completion.choices[0]!;
      assert.equal(choice.finish_reason, "tool_calls");
      const calls = choice.message.tool_calls ?? [];
      assert.equal(calls.length, 1);
      const call = calls[0]!;
      assert.ok(call.type === "function");
      assert.equal(call.function.name, "get_weather");
      assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
      assert.match(call.id, /^call_/);

      replyWith(cluster, ["It is sunny."]);
      const answer = await client.chat.completions.create({
        model: MODEL_ID,
        tools,
        messages: [{ role: "user", content: "Weather in Paris?" }, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "sunny" }],
      });
      assert.equal(answer.choices[0]!.message.content, "It is sunny.");
      assert.equal(answer.choices[0]!.finish_reason, "stop");
      assert.deepEqual(cluster.sent("TextGeneration").at(-1)!.params.messages.at(-1), { role: "tool", content: "sunny", toolCallId: call.id, name: "get_weather" });
    });

    await t.test("chat: non-streaming Llama-style call; tool_choice none offers no tools; required without a call is an error", async () => {
      const tools: OpenAI.Chat.ChatCompletionTool[] = [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }];
      replyWith(cluster, ['{"name": "lookup", "parameters": {"q": "x"}}']);
      const called = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "find x" }], tools });
      assert.equal(called.choices[0]!.message.content, null);
      assert.deepEqual(called.choices[0]!.message.tool_calls?.map((c) => (c.type === "function" ? [c.function.name, c.function.arguments] : null)), [["lookup", '{"q": "x"}']]);

      replyWith(cluster, ['{"name": "lookup", "parameters": {}}']);
      const none = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "find x" }], tools, tool_choice: "none" });
      assert.equal(none.choices[0]!.message.content, '{"name": "lookup", "parameters": {}}');
      assert.equal(cluster.sent("TextGeneration").at(-1)!.params.tools, undefined);

      replyWith(cluster, ["no call"]);
      await assert.rejects(
        client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "find x" }], tools, tool_choice: "required" }),
        (e: unknown) => e instanceof OpenAI.InternalServerError && e.code === "tool_call_missing",
      );
      await assert.rejects(
        client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }], tools, tool_choice: { type: "function", function: { name: "nope" } } }),
        (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "tool_choice",
      );
    });

    await t.test("chat: response_format json_object passes JSON and refuses other text", async () => {
      replyWith(cluster, ['{"a": ', "1}"]);
      const ok = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "json please" }], response_format: { type: "json_object" } });
      assert.deepEqual(JSON.parse(ok.choices[0]!.message.content ?? ""), { a: 1 });
      replyWith(cluster, ["not json"]);
      await assert.rejects(
        client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "json please" }], response_format: { type: "json_object" } }),
        (e: unknown) => e instanceof OpenAI.InternalServerError && e.code === "invalid_json_output",
      );
    });

    await t.test("chat: logprobs and top_logprobs, streamed and whole", async () => {
      const emitWithLogprobs = (taskId: TaskId): void => {
        cluster.setTaskStatus(taskId, "Running", { promptTokens: 2 });
        cluster.emit({ type: "ChunkGenerated", taskId, chunk: { index: 0, text: "Hi", tokensGenerated: 1, logprobs: [{ token: "Hi", logprob: -0.5, top: [{ token: "Hi", logprob: -0.5 }, { token: "Yo", logprob: -1.5 }] }] } });
        cluster.setTaskStatus(taskId, "Complete", { finishReason: "stop", promptTokens: 2, tokensGenerated: 1 });
      };
      cluster.onTaskCreated = (task) => queueMicrotask(() => emitWithLogprobs(task.taskId));
      const whole = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], logprobs: true, top_logprobs: 2 });
      const content = whole.choices[0]!.logprobs?.content ?? [];
      assert.deepEqual(content.map((c) => [c.token, c.logprob, c.top_logprobs.map((t) => t.token)]), [["Hi", -0.5, ["Hi", "Yo"]]]);
      assert.deepEqual(cluster.sent("TextGeneration").at(-1)!.params.topLogprobs, 2);

      const stream = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], logprobs: true, top_logprobs: 2, stream: true });
      const streamed: string[] = [];
      for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []).map((c) => c.token));
      assert.deepEqual(streamed, ["Hi"]);
      await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], top_logprobs: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "top_logprobs");
    });

    await t.test("responses: abort mid-stream cancels the task", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
      const stream = await client.responses.create({ model: MODEL_ID, input: "go on forever", stream: true });
      const id = cluster.sent("TextGeneration").at(-1)!.commandId;
      let seen = "";
      try {
        for await (const event of stream) {
          if (event.type === "response.output_text.delta") seen += event.delta;
          if (seen === "first") stream.controller.abort();
        }
      } catch (error) {
        assert.ok(error instanceof OpenAI.APIUserAbortError || (error instanceof Error && error.name === "AbortError"), String(error));
      }
      assert.equal(seen, "first");
      await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
      assert.equal(cluster.cancelsOf(id), 1);
    });
  } finally {
    await server.close();
  }
});
