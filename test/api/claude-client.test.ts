// The official `@anthropic-ai/sdk` client against a real server on 127.0.0.1, over a FakeCluster
// whose runner the test plays.
import assert from "node:assert/strict";
import { test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { MODEL_ID } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import { waitUntil } from "../support/fake-cluster.ts";

function clientFor(url: string): Anthropic {
  return new Anthropic({ baseURL: url, apiKey: "not-needed", maxRetries: 0, timeout: 5_000 });
}

const WEATHER_TOOL = {
  name: "get_weather",
  description: "Weather in a city",
  input_schema: { type: "object" as const, properties: { city: { type: "string" } }, required: ["city"] },
};

test("anthropic client: streaming, non-streaming, errors, abort and a tool-call round trip", async (t) => {
  const { server, cluster } = await startTestServer();
  const client = clientFor(server.url);
  try {
    await t.test("streaming with the SDK's MessageStream", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Hello", ", ", "world"], "stop", 5));
      const stream = client.messages.stream({ model: MODEL_ID, max_tokens: 16, system: "be kind", messages: [{ role: "user", content: "hi" }] });
      let text = "";
      stream.on("text", (delta) => {
        text += delta;
      });
      const message = await stream.finalMessage();
      assert.equal(text, "Hello, world");
      assert.equal(message.content.length, 1);
      assert.equal(message.content[0]?.type === "text" ? message.content[0].text : null, "Hello, world");
      assert.equal(message.stop_reason, "end_turn");
      assert.equal(message.usage.output_tokens, 3);
      assert.equal(message.usage.input_tokens, 5);
      const sent = cluster.sent("TextGeneration").at(-1)!;
      assert.deepEqual(sent.params.messages, [{ role: "system", content: "be kind" }, { role: "user", content: "hi" }]);
      assert.equal(sent.params.maxTokens, 16);
    });

    await t.test("non-streaming, stop sequences and sampling parameters", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["4", "2"], "length", 3));
      const message = await client.messages.create({
        model: MODEL_ID,
        max_tokens: 2,
        system: [{ type: "text", text: "short" }],
        stop_sequences: ["\n\n"],
        messages: [{ role: "user", content: [{ type: "text", text: "6*7?" }] }],
        // This SDK version's types no longer list the sampling parameters; the API still takes them.
        ...({ temperature: 0.3, top_p: 0.9, top_k: 40 } as object),
      });
      assert.equal(message.type, "message");
      assert.equal(message.role, "assistant");
      assert.equal(message.content[0]?.type, "text");
      assert.equal(message.content[0]?.type === "text" ? message.content[0].text : null, "42");
      assert.equal(message.stop_reason, "max_tokens");
      assert.deepEqual({ input: message.usage.input_tokens, output: message.usage.output_tokens }, { input: 3, output: 2 });
      const params = cluster.sent("TextGeneration").at(-1)!.params;
      assert.deepEqual(params.stop, ["\n\n"]);
      assert.deepEqual([params.temperature, params.topP, params.topK], [0.3, 0.9, 40]);
    });

    await t.test("errors arrive as the SDK's typed errors", async () => {
      await assert.rejects(
        client.messages.create({ model: "no-such-model", max_tokens: 4, messages: [{ role: "user", content: "x" }] }),
        (e: unknown) => e instanceof Anthropic.NotFoundError && (e.error as { error?: { type?: string } }).error?.type === "not_found_error",
      );
      await assert.rejects(
        client.messages.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }] } as unknown as Anthropic.MessageCreateParamsNonStreaming),
        (e: unknown) => e instanceof Anthropic.BadRequestError && /max_tokens/.test(e.message) && (e.error as { error?: { type?: string } }).error?.type === "invalid_request_error",
      );
    });

    await t.test("abort mid-stream cancels the task", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
      const stream = client.messages.stream({ model: MODEL_ID, max_tokens: 1000, messages: [{ role: "user", content: "go on forever" }] });
      let seen = "";
      stream.on("text", (delta) => {
        seen += delta;
        if (seen === "first") stream.abort();
      });
      await assert.rejects(stream.finalMessage(), (e: unknown) => e instanceof Anthropic.APIUserAbortError);
      const id = cluster.sent("TextGeneration").at(-1)!.commandId;
      await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
      assert.equal(cluster.cancelsOf(id), 1);
      assert.equal(seen, "first");
    });

    await t.test("a non-streaming request whose client gives up cancels the task", async () => {
      const controller = new AbortController();
      cluster.onTaskCreated = () => queueMicrotask(() => controller.abort());
      await assert.rejects(client.messages.create({ model: MODEL_ID, max_tokens: 10, messages: [{ role: "user", content: "slow" }] }, { signal: controller.signal }), (e: unknown) => e instanceof Anthropic.APIUserAbortError);
      const id = cluster.sent("TextGeneration").at(-1)!.commandId;
      await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
      assert.equal(cluster.cancelsOf(id), 1);
      assert.equal(cluster.taskOf(id), undefined, "the task is gone");
    });

    await t.test("tool-call round trip: tool_use streamed with input_json_delta, then the tool_result", async () => {
      cluster.onTaskCreated = (task) =>
        queueMicrotask(() => cluster.generate(task.taskId, ["I will check.", "<tool_call>\n", '{"name": "get_weather", ', '"arguments": {"city": ', '"Paris"}}', "\n</tool_call>"]));
      const stream = client.messages.stream({ model: MODEL_ID, max_tokens: 100, tools: [WEATHER_TOOL], messages: [{ role: "user", content: "Weather in Paris?" }] });
      const jsonDeltas: string[] = [];
      stream.on("inputJson", (delta) => {
        jsonDeltas.push(delta);
      });
      const message = await stream.finalMessage();
      assert.equal(message.stop_reason, "tool_use");
      assert.equal(message.content.length, 2);
      const [textBlock, toolBlock] = message.content;
      assert.equal(textBlock?.type === "text" ? textBlock.text : null, "I will check.");
      assert.ok(toolBlock?.type === "tool_use");
      assert.equal(toolBlock.name, "get_weather");
      assert.deepEqual(toolBlock.input, { city: "Paris" });
      assert.match(toolBlock.id, /^toolu_/);
      assert.ok(jsonDeltas.length >= 2, `arguments arrive in pieces: ${JSON.stringify(jsonDeltas)}`);
      const offered = cluster.sent("TextGeneration").at(-1)!.params;
      assert.deepEqual(offered.tools, [{ name: "get_weather", description: "Weather in a city", parameters: WEATHER_TOOL.input_schema }]);

      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Sunny", " in Paris."]));
      const followUp = await client.messages.create({
        model: MODEL_ID,
        max_tokens: 100,
        tools: [WEATHER_TOOL],
        messages: [
          { role: "user", content: "Weather in Paris?" },
          { role: "assistant", content: message.content.map((b) => (b.type === "text" ? { type: "text" as const, text: b.text } : b.type === "tool_use" ? { type: "tool_use" as const, id: b.id, name: b.name, input: b.input } : { type: "text" as const, text: "" })) },
          { role: "user", content: [{ type: "tool_result", tool_use_id: toolBlock.id, content: "sunny, 24 C" }] },
        ],
      });
      assert.equal(followUp.content[0]?.type === "text" ? followUp.content[0].text : null, "Sunny in Paris.");
      assert.equal(followUp.stop_reason, "end_turn");
      const messages = cluster.sent("TextGeneration").at(-1)!.params.messages;
      assert.deepEqual(messages.slice(1), [
        { role: "assistant", content: "I will check.", toolCalls: [{ id: toolBlock.id, name: "get_weather", arguments: '{"city":"Paris"}' }] },
        { role: "tool", content: "sunny, 24 C", toolCallId: toolBlock.id, name: "get_weather" },
      ]);
    });
  } finally {
    await server.close();
  }
});
