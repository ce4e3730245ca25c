// The official `openai` npm client (v6) against a real server on 127.0.0.1: what users run.
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";
import { MODEL_ID } from "../support/api-fixture.ts";
import { startTestServer } from "../support/api-server.ts";
import { waitUntil } from "../support/fake-cluster.ts";

function clientFor(url: string): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: "not-needed", maxRetries: 0, timeout: 5_000 });
}

test("openai client: streaming, non-streaming, models, errors and abort via stream.controller", async (t) => {
  const { server, cluster } = await startTestServer();
  const client = clientFor(server.url);
  try {
    await t.test("streaming", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["Hello", ", ", "world"], "stop", 4));
      const stream = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } });
      let text = "";
      let finishReason: string | null = null;
      let usage: OpenAI.CompletionUsage | null | undefined = null;
      let role: string | undefined;
      for await (const chunk of stream) {
        role ??= chunk.choices[0]?.delta.role;
        text += chunk.choices[0]?.delta.content ?? "";
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        usage = chunk.usage ?? usage;
      }
      assert.equal(role, "assistant");
      assert.equal(text, "Hello, world");
      assert.equal(finishReason, "stop");
      assert.deepEqual(usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });
    });

    await t.test("non-streaming", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.generate(task.taskId, ["4", "2"], "length", 3));
      const completion = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "system", content: "be brief" }, { role: "user", content: [{ type: "text", text: "6*7?" }] }], max_tokens: 2 });
      assert.equal(completion.object, "chat.completion");
      assert.equal(completion.choices[0]!.message.content, "42");
      assert.equal(completion.choices[0]!.finish_reason, "length");
      assert.deepEqual(completion.usage, { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 });
      const sent = cluster.sent("TextGeneration").at(-1)!;
      assert.equal(completion.id, sent.commandId);
      assert.deepEqual(sent.params.messages, [{ role: "system", content: "be brief" }, { role: "user", content: "6*7?" }]);
    });

    await t.test("models list", async () => {
      const page = await client.models.list();
      assert.equal(page.data[0]!.id, MODEL_ID);
    });

    await t.test("errors arrive as typed API errors with the status", async () => {
      await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }), (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
      await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }], n: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "n");
    });

    await t.test("abort via stream.controller.abort() cancels the task", async () => {
      cluster.onTaskCreated = (task) => queueMicrotask(() => cluster.chunk(task.taskId, "first"));
      const stream = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "go on forever" }], stream: true });
      const id = cluster.sent("TextGeneration").at(-1)!.commandId;
      let seen = "";
      try {
        for await (const chunk of stream) {
          seen += chunk.choices[0]?.delta.content ?? "";
          if (seen === "first") stream.controller.abort();
        }
      } catch (error) {
        assert.ok(error instanceof OpenAI.APIUserAbortError || (error instanceof Error && error.name === "AbortError"), String(error));
      }
      assert.equal(seen, "first");
      await waitUntil(() => cluster.finishesOf(id) === 1, "TaskFinished");
      assert.equal(cluster.cancelsOf(id), 1);
      const order = cluster.commands.filter((c) => (c.type === "TaskCancelled" && c.cancelledCommandId === id) || (c.type === "TaskFinished" && c.finishedCommandId === id)).map((c) => c.type);
      assert.deepEqual(order, ["TaskCancelled", "TaskFinished"]);
    });
  } finally {
    await server.close();
  }
});
