// The Claude, Ollama and Responses adapters on a real node: real HTTP, master, worker and runner
// child processes serving the FakeEngine test double. The engine "writes" a Qwen-style tool call,
// so tools travel the whole way (command, State, runner, encodeChat) and the call comes back
// parsed; aborting a client mid-stream leaves the task Cancelled and the node idle.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { Ollama } from "ollama";
import OpenAI from "openai";
import type { IndexedEvent } from "../../src/shared/types.ts";
import { FakeEngine, fakeShardSpec } from "../support/fake-engine.ts";
import type { TestNode } from "../support/test-node.ts";
import { fakeModelCard, isIdle, startTestNode } from "../support/test-node.ts";

const TOOL_MODEL = "fake-tools";
const SLOW_MODEL = "fake-slow";
const CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
/** Exactly the call, then end of generation. */
const CALL_TOKENS = new FakeEngine(fakeShardSpec({ text: CALL_TEXT })).vocabulary.encode(CALL_TEXT).length;

let node: TestNode;

before(async () => {
  node = await startTestNode({
    cards: [fakeModelCard({ text: CALL_TEXT, maxReplyTokens: CALL_TOKENS }, TOOL_MODEL), fakeModelCard({ tokenDelayMs: 5 }, SLOW_MODEL)],
  });
});

after(async () => {
  await node.stop();
});

/** Tasks that reached Cancelled (the master and then the runner each report it). */
function cancelledTaskCount(events: readonly IndexedEvent[]): number {
  return new Set(events.flatMap((e) => (e.event.type === "TaskStatusUpdated" && e.event.status === "Cancelled" ? [e.event.taskId] : []))).size;
}

test("anthropic SDK on a real node: the engine's tool call comes back as a tool_use block", async () => {
  const client = new Anthropic({ baseURL: node.url, apiKey: "x", maxRetries: 0, timeout: 20_000 });
  const tools = [{ name: "get_weather", description: "Weather", input_schema: { type: "object" as const, properties: { city: { type: "string" } } } }];
  const withTools = await client.messages.stream({ model: TOOL_MODEL, max_tokens: 100, tools, messages: [{ role: "user", content: "Weather in Paris?" }] }).finalMessage();
  assert.equal(withTools.stop_reason, "tool_use");
  const block = withTools.content.find((b) => b.type === "tool_use");
  assert.ok(block !== undefined && block.type === "tool_use", JSON.stringify(withTools.content));
  assert.equal(block.name, "get_weather");
  assert.deepEqual(block.input, { city: "Paris" });

  // Without tools the same text is plain text, and the prompt is shorter by the tools line.
  const plain = await client.messages.create({ model: TOOL_MODEL, max_tokens: 100, messages: [{ role: "user", content: "Weather in Paris?" }] });
  assert.equal(plain.content[0]?.type === "text" ? plain.content[0].text : null, CALL_TEXT);
  assert.ok(withTools.usage.input_tokens > plain.usage.input_tokens, `tools reached the engine: ${withTools.usage.input_tokens} > ${plain.usage.input_tokens}`);
  await node.waitFor(isIdle, "node idle after the requests");
});

test("openai responses on a real node: function_call output item", async () => {
  const client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: "x", maxRetries: 0, timeout: 20_000 });
  const response = await client.responses.create({ model: TOOL_MODEL, input: "Weather?", tools: [{ type: "function", name: "get_weather", parameters: { type: "object" }, strict: false }] });
  const call = response.output.find((item) => item.type === "function_call");
  assert.ok(call !== undefined && call.type === "function_call", JSON.stringify(response.output));
  assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });
  await node.waitFor(isIdle, "node idle after the request");
});

test("ollama client on a real node: abort mid-stream ends the task Cancelled and frees the runner", async () => {
  const client = new Ollama({ host: `${node.url}/ollama` });
  const cancelledBefore = cancelledTaskCount(node.events);
  const parts = await client.chat({ model: SLOW_MODEL, messages: [{ role: "user", content: "talk forever" }], stream: true });
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const part of parts) {
        if (part.message.content !== "") received += 1;
        if (received === 3) parts.abort();
      }
    })(),
    (e: unknown) => e instanceof Error && e.name === "AbortError",
  );
  // Parts already buffered in the client may still be yielded after abort(): at least 3 arrived.
  assert.ok(received >= 3, `received ${received}`);
  await node.waitFor((state) => isIdle(state), "task deleted and runners Ready after the abort");
  assert.equal(cancelledTaskCount(node.events), cancelledBefore + 1);
});

test("anthropic SDK on a real node: abort mid-stream ends the task Cancelled and frees the runner", async () => {
  const client = new Anthropic({ baseURL: node.url, apiKey: "x", maxRetries: 0, timeout: 20_000 });
  const cancelledBefore = cancelledTaskCount(node.events);
  const stream = client.messages.stream({ model: SLOW_MODEL, max_tokens: 2_000, messages: [{ role: "user", content: "talk forever" }] });
  let deltas = 0;
  stream.on("text", () => {
    deltas += 1;
    if (deltas === 3) stream.abort();
  });
  await assert.rejects(stream.finalMessage(), (e: unknown) => e instanceof Anthropic.APIUserAbortError);
  await node.waitFor((state) => isIdle(state), "task deleted and runners Ready after the abort");
  assert.equal(cancelledTaskCount(node.events), cancelledBefore + 1);
});
