// The generation loop, in process, against FakeEngine: what is emitted, when it stops, what it counts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { generate } from "../../src/runner/generate.ts";
import type { GenerateOptions, GenerationHooks, GenerationOutcome } from "../../src/runner/generate.ts";
import { PREFILL_CHUNK_TARGET_MS, PREFILL_CHUNK_TOKENS, PREFILL_FIRST_CHUNK_TOKENS } from "../../src/shared/limits.ts";
import type { Chunk, GenerationParams } from "../../src/shared/types.ts";
import { FAKE_ENGINE_DEFAULT_TEXT, FAKE_ENGINE_UTF8_TEXT, FakeEngine, fakeShardSpec } from "../support/fake-engine.ts";
import type { FakeEngineOptions } from "../support/fake-engine.ts";
import { promptOfTokens, testParams, testTaskId } from "./fixtures.ts";

interface Run {
  readonly engine: FakeEngine;
  readonly outcome: GenerationOutcome;
  readonly chunks: Chunk[];
  readonly progress: { processedTokens: number; totalTokens: number }[];
  readonly text: string;
}

interface RunSetup {
  readonly engineOptions?: Partial<Record<keyof FakeEngineOptions, unknown>>;
  readonly params?: Partial<GenerationParams>;
  /** Decides cancellation; sees what was emitted so far. */
  readonly cancelWhen?: (seen: { chunks: readonly Chunk[]; prefillChunks: number }) => boolean;
  readonly options?: GenerateOptions;
  readonly onIsCancelled?: () => void;
}

async function run(setup: RunSetup = {}): Promise<Run> {
  const engine = new FakeEngine(fakeShardSpec(setup.engineOptions ?? {}));
  const chunks: Chunk[] = [];
  const progress: { processedTokens: number; totalTokens: number }[] = [];
  const hooks: GenerationHooks = {
    isCancelled: () => {
      setup.onIsCancelled?.();
      return setup.cancelWhen?.({ chunks, prefillChunks: progress.length }) ?? false;
    },
    onPrefillProgress: (processedTokens, totalTokens) => progress.push({ processedTokens, totalTokens }),
    onChunk: (chunk) => chunks.push(chunk),
  };
  const outcome = await generate(engine, { taskId: testTaskId("gen"), params: testParams(setup.params) }, hooks, setup.options);
  return { engine, outcome, chunks, progress, text: chunks.map((c) => c.text).join("") };
}

/** The fake's reply, as text, for its first `tokenCount` ASCII word pieces. */
function defaultReplyWords(wordCount: number): string {
  return FAKE_ENGINE_DEFAULT_TEXT.split(" ").slice(0, wordCount).join(" ");
}

test("generates until maxTokens and ends with finishReason length", async () => {
  const r = await run({ params: { maxTokens: 4 } });
  assert.equal(r.outcome.status, "Complete");
  assert.equal(r.outcome.finishReason, "length");
  assert.equal(r.outcome.tokensGenerated, 4);
  assert.equal(r.text, defaultReplyWords(4));
  assert.deepEqual(r.chunks.map((c) => c.index), [0, 1, 2, 3]);
  assert.deepEqual(r.chunks.map((c) => c.tokensGenerated), [1, 2, 3, 4]);
  assert.ok(r.chunks.every((c) => c.logprobs === null));
  // The last token needs no decode: nothing will be sampled after it.
  assert.equal(r.engine.stats.decodeCalls, 3);
});

test("end-of-generation ends with finishReason stop and is not counted", async () => {
  const r = await run({ engineOptions: { maxReplyTokens: 9 }, params: { maxTokens: 100 } });
  assert.equal(r.outcome.status, "Complete");
  assert.equal(r.outcome.finishReason, "stop");
  assert.equal(r.outcome.tokensGenerated, 9);
  assert.equal(r.text, FAKE_ENGINE_DEFAULT_TEXT);
});

test("the reply repeats the configured text", async () => {
  const r = await run({ engineOptions: { text: "Hello there." }, params: { maxTokens: 5 } });
  assert.equal(r.text, "Hello there. Hello there. Hello");
});

test("counts prompt tokens", async () => {
  const r = await run({ params: { messages: promptOfTokens(37), maxTokens: 1 } });
  assert.equal(r.outcome.promptTokens, 37);
  assert.deepEqual(r.progress, [{ processedTokens: 37, totalTokens: 37 }]);
});

/** A fake clock on which every prefill call takes `msPerCall` (it is read once before and once after each). */
function clockTakingPerCall(msPerCall: number): () => number {
  let reads = 0;
  return () => Math.floor(reads++ / 2) * msPerCall + (reads % 2 === 0 ? msPerCall : 0);
}

test("prefills a first chunk, then chunks of PREFILL_CHUNK_TOKENS on a fast machine, and reports progress after each", async () => {
  const promptTokens = PREFILL_FIRST_CHUNK_TOKENS + 2 * PREFILL_CHUNK_TOKENS + 88;
  const r = await run({ params: { messages: promptOfTokens(promptTokens), maxTokens: 1 }, options: { cancelChecks: true, nowMs: clockTakingPerCall(10) } });
  assert.deepEqual(r.engine.stats.prefillChunkSizes, [PREFILL_FIRST_CHUNK_TOKENS, PREFILL_CHUNK_TOKENS, PREFILL_CHUNK_TOKENS, 88]);
  assert.deepEqual(
    r.progress.map((p) => p.processedTokens),
    [PREFILL_FIRST_CHUNK_TOKENS, PREFILL_FIRST_CHUNK_TOKENS + PREFILL_CHUNK_TOKENS, PREFILL_FIRST_CHUNK_TOKENS + 2 * PREFILL_CHUNK_TOKENS, promptTokens],
  );
  assert.ok(r.progress.every((p) => p.totalTokens === promptTokens));
});

test("on a machine too slow for large chunks, each prefill call is sized to take about PREFILL_CHUNK_TARGET_MS", async () => {
  // Every call takes twice the target: each chunk halves, down to the floor.
  const r = await run({ params: { messages: promptOfTokens(200), maxTokens: 1 }, options: { cancelChecks: true, nowMs: clockTakingPerCall(2 * PREFILL_CHUNK_TARGET_MS) } });
  assert.deepEqual(r.engine.stats.prefillChunkSizes.slice(0, 5), [64, 32, 16, 8, 8]);
  assert.equal(r.engine.stats.prefillChunkSizes.reduce((a, b) => a + b, 0), 200);
  assert.equal(r.outcome.status, "Complete");
});

test("a stop string spanning two tokens is not emitted, nor anything after it", async () => {
  // " brown" and " fox" are separate tokens.
  const r = await run({ params: { stop: [" brown fox"], maxTokens: 100 } });
  assert.equal(r.outcome.finishReason, "stop");
  assert.equal(r.text, "The quick");
  assert.equal(r.outcome.tokensGenerated, 4);
});

test("a stop string starting and ending inside tokens cuts the text there", async () => {
  const r = await run({ params: { stop: ["ick bro"], maxTokens: 100 } });
  assert.equal(r.text, "The qu");
  assert.equal(r.outcome.finishReason, "stop");
  assert.equal(r.outcome.tokensGenerated, 3);
});

test("the earliest of several stop strings wins", async () => {
  const r = await run({ params: { stop: ["lazy", "jumps", "fox"], maxTokens: 100 } });
  assert.equal(r.text, "The quick brown ");
});

test("held-back text that never completes a stop string is emitted at the end", async () => {
  // " dog." ends the reply and is a prefix of the stop string, so it is held, then flushed.
  const r = await run({ engineOptions: { maxReplyTokens: 9 }, params: { stop: ["dog.!"], maxTokens: 100 } });
  assert.equal(r.outcome.finishReason, "stop");
  assert.equal(r.text, FAKE_ENGINE_DEFAULT_TEXT);
  const last = r.chunks.at(-1);
  assert.equal(last?.tokensGenerated, 9);
});

test("held-back text is flushed when maxTokens ends the task", async () => {
  const r = await run({ params: { stop: [" quick!"], maxTokens: 2 } });
  assert.equal(r.outcome.finishReason, "length");
  assert.equal(r.text, "The quick");
});

test("multi-byte characters split across tokens stream as whole characters", async () => {
  const r = await run({ engineOptions: { text: FAKE_ENGINE_UTF8_TEXT }, params: { maxTokens: 100 } });
  assert.equal(r.outcome.tokensGenerated, 100);
  assert.ok(r.text.startsWith(FAKE_ENGINE_UTF8_TEXT), r.text);
  assert.ok(!r.text.includes("\uFFFD"));
  // A lead byte alone yields no text, so there are fewer chunks than tokens.
  assert.ok(r.chunks.length < r.outcome.tokensGenerated);
});

test("a stop string made of a multi-byte character stops at the character", async () => {
  const r = await run({ engineOptions: { text: FAKE_ENGINE_UTF8_TEXT }, params: { stop: ["é"], maxTokens: 100 } });
  assert.equal(r.text, "Un caf");
});

test("logprobs ride along with the chunk that emits their token's text", async () => {
  const r = await run({ params: { logprobs: true, topLogprobs: 2, maxTokens: 3 } });
  const entries = r.chunks.flatMap((c) => c.logprobs ?? []);
  assert.equal(entries.length, 3);
  assert.deepEqual(entries.map((e) => e.token), ["The", " quick", " brown"]);
  assert.ok(entries.every((e) => e.top.length === 2 && e.logprob <= 0));
});

test("cancel before start touches no sequence and counts nothing", async () => {
  const r = await run({ cancelWhen: () => true });
  assert.equal(r.outcome.status, "Cancelled");
  assert.equal(r.outcome.finishReason, "cancelled");
  assert.equal(r.outcome.promptTokens, 0);
  assert.equal(r.outcome.tokensGenerated, 0);
  assert.equal(r.engine.stats.sequencesOpened, 0);
  assert.equal(r.chunks.length, 0);
});

test("cancel during prefill stops before the next prefill chunk", async () => {
  const promptTokens = 3 * PREFILL_CHUNK_TOKENS;
  const r = await run({
    params: { messages: promptOfTokens(promptTokens) },
    cancelWhen: ({ prefillChunks }) => prefillChunks >= 1,
  });
  assert.equal(r.outcome.status, "Cancelled");
  assert.deepEqual(r.engine.stats.prefillChunkSizes, [PREFILL_FIRST_CHUNK_TOKENS]);
  assert.equal(r.outcome.promptTokens, promptTokens);
  assert.equal(r.outcome.tokensGenerated, 0);
  assert.equal(r.engine.stats.decodeCalls, 0);
  assert.equal(r.engine.stats.sequencesFreed, 1);
});

test("cancel after the last prefill chunk stops before the first token", async () => {
  const r = await run({ cancelWhen: ({ prefillChunks }) => prefillChunks >= 1 });
  assert.equal(r.outcome.status, "Cancelled");
  assert.equal(r.chunks.length, 0);
  assert.equal(r.outcome.tokensGenerated, 0);
});

test("cancel during decode stops before the next decode step", async () => {
  const r = await run({
    params: { maxTokens: 100 },
    cancelWhen: ({ chunks }) => chunks.length >= 3,
  });
  assert.equal(r.outcome.status, "Cancelled");
  assert.equal(r.outcome.finishReason, "cancelled");
  assert.equal(r.outcome.tokensGenerated, 3);
  assert.equal(r.chunks.length, 3);
  // Tokens 1 and 2 were decoded to produce tokens 2 and 3; token 3 never was.
  assert.equal(r.engine.stats.decodeCalls, 2);
  assert.equal(r.engine.stats.sequencesFreed, 1);
});

test("a cancel flag set by another event-loop task is seen within one step", async () => {
  let cancelRequested = false;
  let stepsAfterRequest = 0;
  const engine = new FakeEngine(fakeShardSpec());
  // setImmediate models the IPC message: it can only run if generate yields.
  setImmediate(() => (cancelRequested = true));
  const outcome = await generate(engine, { taskId: testTaskId(), params: testParams({ maxTokens: 10_000 }) }, {
    isCancelled: () => cancelRequested,
    onPrefillProgress: () => {},
    onChunk: () => {
      if (cancelRequested) stepsAfterRequest += 1;
    },
  });
  assert.equal(outcome.status, "Cancelled");
  assert.ok(outcome.tokensGenerated < 10, `generated ${outcome.tokensGenerated} tokens`);
  assert.equal(stepsAfterRequest, 0);
});

test("cancelChecks false never polls the flag (benchmark mode)", async () => {
  let polls = 0;
  const r = await run({
    params: { maxTokens: 5 },
    cancelWhen: () => true,
    onIsCancelled: () => (polls += 1),
    options: { cancelChecks: false },
  });
  assert.equal(r.outcome.status, "Complete");
  assert.equal(polls, 0);
});

test("cancel checks are polled before every decode step", async () => {
  let polls = 0;
  const r = await run({ params: { maxTokens: 20 }, onIsCancelled: () => (polls += 1) });
  // start + one prefill chunk + after prefill + one per decode step.
  assert.equal(polls, 3 + r.engine.stats.decodeCalls);
});

test("a prompt longer than the context fails the task as bad_request without breaking the engine", async () => {
  const r = await run({ engineOptions: { contextSize: 8 }, params: { messages: promptOfTokens(20) } });
  assert.equal(r.outcome.status, "Failed");
  if (r.outcome.status !== "Failed") return;
  assert.equal(r.outcome.finishReason, "error");
  assert.equal(r.outcome.failureCode, "bad_request");
  assert.equal(r.outcome.engineBroken, false);
  assert.match(r.outcome.failureReason, /context/);
});

test("an engine fault fails the task, marks the engine broken, keeps real counts and frees the sequence", async () => {
  const r = await run({ engineOptions: { failDecodeAtStep: 2 }, params: { maxTokens: 100 } });
  assert.equal(r.outcome.status, "Failed");
  if (r.outcome.status !== "Failed") return;
  assert.equal(r.outcome.failureCode, "runner_failed");
  assert.equal(r.outcome.engineBroken, true);
  assert.equal(r.outcome.tokensGenerated, 3);
  assert.equal(r.engine.stats.sequencesFreed, 1);
});

test("free() is called exactly once on every path that opened a sequence", async () => {
  const cases: RunSetup[] = [
    { params: { maxTokens: 3 } },
    { engineOptions: { maxReplyTokens: 2 } },
    { params: { stop: ["quick"] } },
    { cancelWhen: ({ chunks }) => chunks.length > 0 },
    { cancelWhen: ({ prefillChunks }) => prefillChunks > 0 },
    { engineOptions: { failDecodeAtStep: 0 } },
  ];
  for (const setup of cases) {
    const r = await run(setup);
    assert.equal(r.engine.stats.sequencesOpened, 1, JSON.stringify(setup));
    assert.equal(r.engine.stats.sequencesFreed, 1, JSON.stringify(setup));
  }
});
