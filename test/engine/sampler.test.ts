import { test } from "node:test";
import assert from "node:assert/strict";
import { GREEDY_SAMPLER_PARAMS, Sampler, expNonPositive, sampleToken, samplerParamsOf, seededRandom, type SamplerParams } from "../../src/engine/sampler.ts";

function params(overrides: Partial<SamplerParams>): SamplerParams {
  return { ...GREEDY_SAMPLER_PARAMS, ...overrides };
}

function logitsOf(values: readonly number[]): Float32Array {
  return Float32Array.from(values);
}

/** Logits whose softmax is exactly `probabilities`. */
function logitsFromProbabilities(probabilities: readonly number[]): Float32Array {
  return Float32Array.from(probabilities.map((p) => Math.log(p)));
}

function counts(logits: Float32Array, samplerParams: SamplerParams, draws: number): number[] {
  const tally = new Array<number>(logits.length).fill(0);
  const random = seededRandom(12345);
  for (let draw = 0; draw < draws; draw++) tally[sampleToken(logits, [], samplerParams, random).tokenId]!++;
  return tally;
}

const GREEDY_TABLE: readonly { name: string; logits: number[]; recent?: number[]; params?: Partial<SamplerParams>; expected: number }[] = [
  { name: "arg max", logits: [0.1, 2.5, -1, 2.4], expected: 1 },
  { name: "ties go to the lowest id", logits: [1, 3, 3, 0], expected: 1 },
  { name: "NaN never wins", logits: [Number.NaN, 0.5, 0.2], expected: 1 },
  { name: "repetition penalty divides a positive logit", logits: [2.0, 1.9], recent: [0], params: { repetitionPenalty: 1.1 }, expected: 1 },
  { name: "a weak repetition penalty does not flip", logits: [2.0, 1.9], recent: [0], params: { repetitionPenalty: 1.01 }, expected: 0 },
  { name: "repetition penalty multiplies a negative logit", logits: [-1, -1.05], recent: [0], params: { repetitionPenalty: 1.1 }, expected: 1 },
  { name: "frequency penalty counts occurrences", logits: [1, 0.5], recent: [0, 0, 0], params: { frequencyPenalty: 0.2 }, expected: 1 },
  { name: "a small frequency penalty does not flip", logits: [1, 0.5], recent: [0, 0, 0], params: { frequencyPenalty: 0.1 }, expected: 0 },
  { name: "presence penalty applies once", logits: [1, 0.5], recent: [0, 0, 0], params: { presencePenalty: 0.6 }, expected: 1 },
  { name: "negative presence penalty encourages", logits: [0.5, 1], recent: [0], params: { presencePenalty: -0.6 }, expected: 0 },
  { name: "penalties only see the last N tokens", logits: [2.0, 1.9, 0], recent: [0, 2, 2, 2], params: { repetitionPenalty: 2, penaltyLastN: 3 }, expected: 0 },
  { name: "penaltyLastN 0 turns penalties off", logits: [2.0, 1.9], recent: [0], params: { repetitionPenalty: 2, penaltyLastN: 0 }, expected: 0 },
  { name: "top_k 1 at temperature 1 is greedy", logits: [0, 1, 0.9], params: { temperature: 1, topK: 1 }, expected: 1 },
  { name: "min_p 0.99 at temperature 1 keeps only the best", logits: [0, 1, 0.9], params: { temperature: 1, minP: 0.99 }, expected: 1 },
  { name: "top_p tiny at temperature 1 keeps only the best", logits: [0, 1, 0.9], params: { temperature: 1, topP: 0.01 }, expected: 1 },
];

for (const row of GREEDY_TABLE) {
  test(`deterministic choice: ${row.name}`, () => {
    for (let seed = 0; seed < 20; seed++) {
      const sampled = sampleToken(logitsOf(row.logits), row.recent ?? [], params(row.params ?? {}), seededRandom(seed));
      assert.equal(sampled.tokenId, row.expected);
    }
  });
}

const FILTER_TABLE: readonly { name: string; probabilities: number[]; params: Partial<SamplerParams>; allowed: number[] }[] = [
  { name: "top_p 0.5 keeps the 0.5 token", probabilities: [0.5, 0.3, 0.2], params: { topP: 0.5 }, allowed: [0] },
  { name: "top_p 0.8 keeps the two best", probabilities: [0.5, 0.3, 0.2], params: { topP: 0.8 }, allowed: [0, 1] },
  { name: "top_p 0.81 keeps all three", probabilities: [0.5, 0.3, 0.2], params: { topP: 0.81 }, allowed: [0, 1, 2] },
  { name: "min_p 0.5 keeps p ≥ 0.25", probabilities: [0.5, 0.3, 0.2], params: { minP: 0.5 }, allowed: [0, 1] },
  { name: "top_k 2", probabilities: [0.2, 0.5, 0.3], params: { topK: 2 }, allowed: [1, 2] },
  { name: "top_k then top_p judge top_k's renormalized mass", probabilities: [0.4, 0.4, 0.2], params: { topK: 2, topP: 0.6 }, allowed: [0, 1] },
  { name: "top_p then min_p", probabilities: [0.4, 0.3, 0.2, 0.1], params: { topP: 0.85, minP: 0.6 }, allowed: [0, 1] },
];

for (const row of FILTER_TABLE) {
  test(`filters: ${row.name} — every kept token appears, no other does`, () => {
    const tally = counts(logitsFromProbabilities(row.probabilities), params({ temperature: 1, ...row.params }), 3000);
    tally.forEach((count, tokenId) => {
      if (row.allowed.includes(tokenId)) assert.ok(count > 0, `token ${tokenId} never drawn`);
      else assert.equal(count, 0, `token ${tokenId} drawn ${count} times`);
    });
  });
}

test("temperature 1 draws tokens in proportion to their probabilities", () => {
  const probabilities = [0.5, 0.25, 0.15, 0.1];
  const draws = 40_000;
  const tally = counts(logitsFromProbabilities(probabilities), params({ temperature: 1 }), draws);
  probabilities.forEach((p, tokenId) => assert.ok(Math.abs(tally[tokenId]! / draws - p) < 0.01, `token ${tokenId}: ${tally[tokenId]! / draws} vs ${p}`));
});

test("temperature sharpens and flattens the distribution", () => {
  const logits = logitsFromProbabilities([0.6, 0.4]);
  const cold = counts(logits, params({ temperature: 0.1 }), 5000);
  const hot = counts(logits, params({ temperature: 10 }), 5000);
  assert.ok(cold[0]! / 5000 > 0.98, `cold: ${cold[0]}`);
  assert.ok(Math.abs(hot[0]! / 5000 - 0.51) < 0.03, `hot: ${hot[0]}`); // 0.6^0.1 / (0.6^0.1 + 0.4^0.1) ≈ 0.51
});

test("top_p on a large flat vocabulary grows its candidate list until it covers the mass", () => {
  const logits = new Float32Array(10_000); // all equal: ties keep the lowest ids
  const tally = counts(logits, params({ temperature: 1, topP: 0.9 }), 3000);
  const highestDrawn = tally.reduce((highest, count, tokenId) => (count > 0 ? tokenId : highest), -1);
  assert.ok(highestDrawn > 8000 && highestDrawn <= 9000, `highest token drawn: ${highestDrawn}`);
});

test("the same seed replays the same tokens; another seed does not", () => {
  const logits = logitsFromProbabilities(new Array(50).fill(1 / 50));
  const run = (seed: number | null): { seed: number; tokens: number[] } => {
    const sampler = new Sampler(params({ temperature: 1, seed }));
    return { seed: sampler.seed, tokens: Array.from({ length: 30 }, () => sampler.sample(logits).tokenId) };
  };
  assert.deepEqual(run(7).tokens, run(7).tokens);
  assert.notDeepEqual(run(7).tokens, run(8).tokens);
  const unseeded = run(null);
  assert.deepEqual(run(unseeded.seed).tokens, unseeded.tokens, "a random seed is reported so the run can be replayed");
});

test("the Sampler's history feeds the penalties, up to penaltyLastN tokens", () => {
  const logits = logitsOf([2.0, 1.9]);
  const sampler = new Sampler(params({ repetitionPenalty: 1.5, penaltyLastN: 2 }));
  assert.equal(sampler.sample(logits).tokenId, 0);
  sampler.accept(0);
  assert.equal(sampler.sample(logits).tokenId, 1);
  sampler.accept(1);
  sampler.accept(1);
  assert.equal(sampler.sample(logits).tokenId, 0, "token 0 fell out of the window");
  for (let index = 0; index < 100; index++) sampler.accept(1);
  assert.equal(sampler.sample(logits).tokenId, 0);
});

test("logprobs are the model's own (raw softmax), sorted, and absent unless asked for", () => {
  const logits = logitsOf([1, 3, 2, 0]);
  const logNormalizer = Math.log([1, 3, 2, 0].reduce((sum, x) => sum + Math.exp(x), 0));
  const sampled = sampleToken(logits, [1], params({ repetitionPenalty: 5, logprobs: true, topLogprobs: 3 }), seededRandom(1));
  assert.equal(sampled.tokenId, 2, "the penalty moved the choice");
  assert.ok(Math.abs(sampled.logprob! - (2 - logNormalizer)) < 1e-6);
  assert.deepEqual(sampled.topLogprobs.map((entry) => entry.tokenId), [1, 2, 0]);
  assert.ok(Math.abs(sampled.topLogprobs[0]!.logprob - (3 - logNormalizer)) < 1e-6);
  const plain = sampleToken(logits, [], params({}), seededRandom(1));
  assert.equal(plain.logprob, null);
  assert.deepEqual(plain.topLogprobs, []);
  const onlyTop = sampleToken(logits, [], params({ topLogprobs: 1 }), seededRandom(1));
  assert.deepEqual(onlyTop.topLogprobs.map((entry) => entry.tokenId), [1]);
  assert.ok(onlyTop.logprob !== null);
});

test("a fully masked row still yields a token, and bad parameters are refused", () => {
  const masked = new Float32Array([-Infinity, -Infinity, -Infinity]);
  assert.equal(sampleToken(masked, [], params({ temperature: 1, topK: 2 }), seededRandom(1)).tokenId, 0);
  assert.equal(sampleToken(masked, [], params({}), seededRandom(1)).tokenId, 0);
  assert.throws(() => sampleToken(new Float32Array(0), [], params({}), seededRandom(1)), /empty/);
  assert.throws(() => new Sampler(params({ penaltyLastN: -1 })), /penaltyLastN/);
});

test("a request's generation parameters map onto the sampler's", () => {
  const mapped = samplerParamsOf({
    messages: [{ role: "user", content: "x" }],
    maxTokens: null,
    temperature: 0.7,
    topP: 0.9,
    topK: 40,
    minP: 0.05,
    seed: 3,
    stop: [],
    presencePenalty: 0.1,
    frequencyPenalty: 0.2,
    repetitionPenalty: 1.1,
    logprobs: true,
    topLogprobs: 2,
  });
  assert.deepEqual(mapped, {
    temperature: 0.7,
    topK: 40,
    topP: 0.9,
    minP: 0.05,
    repetitionPenalty: 1.1,
    presencePenalty: 0.1,
    frequencyPenalty: 0.2,
    penaltyLastN: 64,
    seed: 3,
    logprobs: true,
    topLogprobs: 2,
  });
});

test("the table exp is within 3e-6 of Math.exp and 0 where it should be", () => {
  const random = seededRandom(99);
  for (let sample = 0; sample < 100_000; sample++) {
    const x = -random() * 63.9;
    const relativeError = Math.abs(expNonPositive(x) / Math.exp(x) - 1);
    assert.ok(relativeError < 3e-6, `x = ${x}: relative error ${relativeError}`);
  }
  assert.equal(expNonPositive(0), 1);
  assert.equal(expNonPositive(-65), 0);
  assert.equal(expNonPositive(-Infinity), 0);
  assert.equal(expNonPositive(Number.NaN), 0);
});
