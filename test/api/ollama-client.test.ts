// The official `ollama` npm client against a real server on 127.0.0.1, over a FakeCluster whose
// runner the test plays; once at /ollama and once at the bare host (its /api/... routes).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Ollama } from "ollama";
import { MODEL_ID, OTHER_MODEL_ID } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import { waitUntil } from "../support/fake-cluster.ts";

test("ollama client: chat stream, generate, tags/show/ps/version, errors, abort and tool calls", async (t) => {
  const { server, cluster } = await startTestServer();
  const client = new Ollama({ host: `${server.url}/ollama` });
  const bare = new Ollama({ host: server.url });
  try {
    await t.test("chat, streamed as NDJSON, with options mapped and eval counts at the end", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Hello", ", ", "world"], "stop", 6));
      const parts = await client.chat({
        model: MODEL_ID,
        messages: [{ role: "system", content: "be kind" }, { role: "user", content: "hi" }],
        stream: true,
        options: { temperature: 0.1, num_predict: 20, stop: ["END"], repeat_penalty: 1.2 },
      });
      let text = "";
      let last: unknown = null;
      for await (const part of parts) {
        text += part.message.content;
        last = part;
      }
      const final = last as { done: boolean; done_reason: string; eval_count: number; prompt_eval_count: number; total_duration: number };
      assert.equal(text, "Hello, world");
      assert.equal(final.done, true);
      assert.equal(final.done_reason, "stop");
      assert.equal(final.eval_count, 3);
      assert.equal(final.prompt_eval_count, 6);
      assert.ok(final.total_duration >= 0);
      const params = cluster.sent("TextGeneration").at(-1)!.params;
      assert.deepEqual(params.messages, [{ role: "system", content: "be kind" }, { role: "user", content: "hi" }]);
      assert.deepEqual([params.temperature, params.maxTokens, params.stop, params.repetitionPenalty, params.topK], [0.1, 20, ["END"], 1.2, 40]);
    });

    await t.test("generate, not streamed, at the bare /api path", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["4", "2"], "length", 3));
      const response = await bare.generate({ model: MODEL_ID, prompt: "6*7?", system: "short", stream: false, options: { num_predict: 2 } });
      assert.equal(response.response, "42");
      assert.equal(response.done, true);
      assert.equal(response.done_reason, "length");
      assert.equal(response.eval_count, 2);
      assert.deepEqual(cluster.sent("TextGeneration").at(-1)!.params.messages, [{ role: "system", content: "short" }, { role: "user", content: "6*7?" }]);
    });

    await t.test("tags, show, ps and version", async () => {
      const tags = await client.list();
      assert.deepEqual(tags.models.map((m) => m.name), [MODEL_ID, OTHER_MODEL_ID]);
      assert.equal(tags.models[0]!.details.format, "gguf");
      const shown = await client.show({ model: `${MODEL_ID}:latest` });
      assert.ok(shown.capabilities.includes("tools"));
      const ps = await bare.ps();
      assert.deepEqual(ps.models.map((m) => m.name), [MODEL_ID]);
      const version = await client.version();
      assert.match(version.version, /^\d+\.\d+\.\d+$/);
    });

    await t.test("errors arrive with the status and Ollama's message", async () => {
      await assert.rejects(client.chat({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }), (e: unknown) => e instanceof Error && e.name === "ResponseError" && (e as { status_code?: number }).status_code === 404);
      await assert.rejects(client.show({ model: "no-such-model" }), (e: unknown) => (e as { status_code?: number }).status_code === 404 && /not found/.test((e as Error).message));
    });

    await t.test("abort via client.abort() cancels the task", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
      const parts = await client.chat({ model: MODEL_ID, messages: [{ role: "user", content: "go on forever" }], stream: true });
      const id = cluster.sent("TextGeneration").at(-1)!.commandId;
      let seen = "";
      await assert.rejects(
        (async () => {
          for await (const part of parts) {
            seen += part.message.content;
            if (seen === "first") client.abort();
          }
        })(),
        (e: unknown) => e instanceof Error && e.name === "AbortError",
      );
      assert.equal(seen, "first");
      await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
      assert.equal(cluster.cancelsOf(id), 1);
    });

    await t.test("tool calls: message.tool_calls streamed, then the tool result goes back", async () => {
      const tools = [{ type: "function", function: { name: "get_weather", description: "Weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ['{"name": "get_weather", ', '"parameters": {"city": "Oslo"}}']));
      const parts = await client.chat({ model: MODEL_ID, messages: [{ role: "user", content: "Weather in Oslo?" }], tools, stream: true });
      const calls: unknown[] = [];
      let text = "";
      for await (const part of parts) {
        calls.push(...(part.message.tool_calls ?? []));
        text += part.message.content;
      }
      assert.equal(text, "");
      assert.deepEqual(calls, [{ function: { name: "get_weather", arguments: { city: "Oslo" } } }]);

      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Cold."]));
      const answer = await client.chat({
        model: MODEL_ID,
        stream: false,
        tools,
        messages: [
          { role: "user", content: "Weather in Oslo?" },
          { role: "assistant", content: "", tool_calls: [{ function: { name: "get_weather", arguments: { city: "Oslo" } } }] },
          { role: "tool", content: "-3 C", tool_name: "get_weather" },
        ],
      });
      assert.equal(answer.message.content, "Cold.");
      const sent = cluster.sent("TextGeneration").at(-1)!.params;
      assert.deepEqual(sent.messages.slice(1), [
        { role: "assistant", content: "", toolCalls: [{ id: "call_1_0", name: "get_weather", arguments: '{"city":"Oslo"}' }] },
        { role: "tool", content: "-3 C", name: "get_weather" },
      ]);
      assert.equal(sent.tools?.[0]?.name, "get_weather");
    });
  } finally {
    await server.close();
  }
});
