import assert from "node:assert/strict";
import { test } from "node:test";
import { failureToApiError, statusOfFailure } from "../../src/api/errors.ts";
import { isQueueFull } from "../../src/api/generation.ts";
import { finishReasonOf, logprobsJson, parseChatCompletionRequest, toGenerationParams } from "../../src/api/openai-format.ts";
import type { TaskEnd } from "../../src/api/task-stream.ts";
import { FailureCodeSchema } from "../../src/shared/types.ts";
import { GenerationParamsSchema } from "../../src/shared/types.ts";
import { FakeCluster } from "../support/fake-cluster.ts";

test("every FailureCode maps to its HTTP status; 429 and 503 carry Retry-After", () => {
  const expected = { no_instance: 503, instance_deleted: 503, queue_full: 429, too_many_tasks: 429, bad_request: 400, runner_failed: 500, node_restarted: 500, internal: 500, timeout: 504 } as const;
  for (const code of FailureCodeSchema.options) {
    assert.equal(statusOfFailure(code), expected[code], code);
    const error = failureToApiError(code, null);
    assert.equal(error.body.code, code);
    assert.equal("Retry-After" in error.headers, expected[code] === 429 || expected[code] === 503, code);
  }
  assert.equal(failureToApiError(null, "lost").status, 500);
});

test("toGenerationParams: OpenAI defaults for a minimal request, and the result passes the wire schema", () => {
  const params = toGenerationParams(parseChatCompletionRequest({ model: "m", messages: [{ role: "user", content: "hi" }] }));
  assert.deepEqual(params, {
    messages: [{ role: "user", content: "hi" }],
    maxTokens: null,
    temperature: 1,
    topP: 1,
    topK: 0,
    minP: 0,
    seed: null,
    stop: [],
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logprobs: false,
    topLogprobs: 0,
  });
  assert.ok(GenerationParamsSchema.safeParse(params).success);
});

test("toGenerationParams: every field mapped; text parts joined; max_completion_tokens wins; top_k -1 means off", () => {
  const params = toGenerationParams(
    parseChatCompletionRequest({
      model: "m",
      messages: [
        { role: "developer", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] },
        { role: "assistant", content: null },
      ],
      temperature: 0.2,
      top_p: 0.9,
      top_k: -1,
      min_p: 0.05,
      seed: 11,
      stop: ["x", "y"],
      max_tokens: 10,
      max_completion_tokens: 20,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      repetition_penalty: 1.1,
      logprobs: true,
      top_logprobs: 3,
      n: 1,
    }),
  );
  assert.deepEqual(params.messages, [{ role: "developer", content: "a\nb" }, { role: "assistant", content: "" }]);
  assert.equal(params.maxTokens, 20);
  assert.equal(params.topK, 0);
  assert.deepEqual([params.temperature, params.topP, params.minP, params.seed], [0.2, 0.9, 0.05, 11]);
  assert.deepEqual(params.stop, ["x", "y"]);
  assert.deepEqual([params.presencePenalty, params.frequencyPenalty, params.repetitionPenalty], [0.5, -0.5, 1.1]);
  assert.deepEqual([params.logprobs, params.topLogprobs], [true, 3]);
  assert.ok(GenerationParamsSchema.safeParse(params).success);
});

test("finishReasonOf: cancelled wins, length kept, anything else is stop", () => {
  const end = (status: TaskEnd["status"], finishReason: TaskEnd["finishReason"]): TaskEnd => ({ type: "end", status, finishReason, failureCode: null, failureReason: null, usage: { promptTokens: 0, completionTokens: 0 }, endedBy: "cluster" });
  assert.equal(finishReasonOf(end("Cancelled", null)), "cancelled");
  assert.equal(finishReasonOf(end("Complete", "length")), "length");
  assert.equal(finishReasonOf(end("Complete", "stop")), "stop");
  assert.equal(finishReasonOf(end("Complete", null)), "stop");
});

test("isQueueFull follows the master's rule: the least busy instance's queue decides", async () => {
  const cluster = new FakeCluster({ delivery: "sync" });
  cluster.addNode();
  assert.equal(isQueueFull(cluster.state, "m", 2), false, "no instance: the master answers no_instance");
  cluster.addInstance("m");
  const send = (i: number) => cluster.sendCommand({ type: "TextGeneration", commandId: `chatcmpl-${i}` as never, modelId: "m" as never, originNodeId: cluster.nodeId, params: toGenerationParams(parseChatCompletionRequest({ model: "m", messages: [{ role: "user", content: "q" }] })) });
  send(1);
  assert.equal(isQueueFull(cluster.state, "m", 2), false);
  send(2);
  assert.equal(isQueueFull(cluster.state, "m", 2), true);
  cluster.addInstance("m");
  assert.equal(isQueueFull(cluster.state, "m", 2), false, "a second, idle instance takes the next task");
});

test("logprobs: OpenAI's content list with bytes and top_logprobs; null when not asked", () => {
  const entries = [{ token: "é", logprob: -0.5, top: [{ token: "é", logprob: -0.5 }, { token: "e", logprob: -1.5 }] }];
  assert.deepEqual(logprobsJson(entries), {
    content: [{ token: "é", logprob: -0.5, bytes: [0xc3, 0xa9], top_logprobs: [{ token: "é", logprob: -0.5, bytes: [0xc3, 0xa9] }, { token: "e", logprob: -1.5, bytes: [0x65] }] }],
  });
  assert.equal(logprobsJson(null), null);
});
