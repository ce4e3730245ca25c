// The forward pass against llama.cpp itself (node-llama-cpp, CPU, 1 thread, flash attention off —
// its classic attention path is the one we reproduce operation for operation) on fixture GGUFs.
//
// Tolerance: log-probabilities of every vocabulary entry within 0.1 of llama.cpp's. Most types
// match to 1e-5; the bound leaves room for the rare activation that rounds to the other 8-bit
// value after a float-order difference, which moves a tiny random model's logits by up to ~0.05.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LlamaModel } from "node-llama-cpp";
import { GgmlType, ggmlTypeName } from "../../src/engine/gguf/ggml-types.ts";
import { ShardForward } from "../../src/engine/forward.ts";
import { writeModelFixture, type FixtureArch, type ModelFixtureSpec } from "../support/gguf-model-fixture.ts";
import { disposeOracle, withOracleModel } from "../support/llama-oracle.ts";

const LOGPROB_TOLERANCE = 0.1;
const directory = mkdtempSync(join(tmpdir(), "skein-forward-"));
after(async () => {
  await disposeOracle();
  rmSync(directory, { recursive: true, force: true });
});

const K_TYPES = new Set([GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K]);

function spec(arch: FixtureArch, tensorType: GgmlType, seed = 3): ModelFixtureSpec {
  const k = K_TYPES.has(tensorType);
  return {
    arch,
    vocab: "tiny",
    nLayer: 2,
    nEmbd: k ? 256 : 128,
    nHead: 4,
    nHeadKv: 2,
    nFf: k ? 512 : 256,
    contextLength: 256,
    tensorType,
    tiedOutput: arch === "qwen2",
    seed,
    ...(arch === "qwen3" ? { headDim: 64 } : {}),
  };
}

function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** llama.cpp's log-probabilities after each prefix in `steps` (prompt, then one token per step). */
async function oracleLogprobs(model: LlamaModel, steps: readonly (readonly number[])[]): Promise<Float64Array[]> {
  const context = await model.createContext({ contextSize: 128, threads: 1, flashAttention: false });
  try {
    const sequence = context.getSequence();
    const out: Float64Array[] = [];
    for (const step of steps) {
      const items = step.map((t, i) =>
        i === step.length - 1
          ? ([t, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }] as const)
          : t,
      ) as Parameters<typeof sequence.controlledEvaluate>[0];
      const results = await sequence.controlledEvaluate(items);
      const probabilities = results.at(-1)?.next.probabilities;
      assert.ok(probabilities, "llama.cpp returned probabilities");
      const row = new Float64Array(probabilities.size).fill(-Infinity);
      for (const [token, p] of probabilities) row[token] = Math.log(p);
      out.push(row);
    }
    return out;
  } finally {
    await context.dispose();
  }
}

/** Our log-probabilities over the same steps, one shard. */
function ourLogprobs(path: string, steps: readonly (readonly number[])[]): Float64Array[] {
  const shard = ShardForward.open(path);
  const cache = shard.createCache(128);
  try {
    let pos = 0;
    return steps.map((step) => {
      const { hidden, nTokens } = shard.forwardHidden(cache, { tokens: step }, pos);
      pos += step.length;
      return logSoftmax(shard.logits(hidden, nTokens));
    });
  } finally {
    cache.free();
    shard.close();
  }
}

const PROMPT = [1, 5, 9, 33, 70, 100, 7, 200, 3, 17];
const STEPS = [PROMPT, [42], [77]];
const TYPES = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
];

for (const arch of ["llama", "qwen2", "qwen3"] as const) {
  test(`${arch}: logits of the prompt and two decode steps match llama.cpp for every tensor type`, async () => {
    for (const type of TYPES) {
      const path = join(directory, `${arch}-${ggmlTypeName(type)}.gguf`);
      writeModelFixture(path, spec(arch, type));
      const ours = ourLogprobs(path, STEPS);
      const theirs = await withOracleModel(path, (model) => oracleLogprobs(model, STEPS));
      for (let s = 0; s < STEPS.length; s++) {
        const a = ours[s]!;
        const b = theirs[s]!;
        assert.equal(a.length, b.length, "vocabulary sizes");
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
        assert.ok(worst <= LOGPROB_TOLERANCE, `${arch} ${ggmlTypeName(type)} step ${s}: max |Δ logprob| ${worst}`);
        const sorted = Array.from(a).sort((x, y) => y - x);
        if (sorted[0]! - sorted[1]! > 2 * LOGPROB_TOLERANCE) {
          assert.equal(argmax(a), argmax(b), `${arch} ${ggmlTypeName(type)} step ${s}: argmax`);
        }
      }
    }
  });
}

test("llama with Llama 3 rope scaling (rope_freqs) and untied head matches llama.cpp", async () => {
  const path = join(directory, "llama3-scaled.gguf");
  writeModelFixture(path, {
    ...spec("llama", GgmlType.Q8_0),
    llama3RopeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContextLength: 64 },
  });
  const ours = ourLogprobs(path, STEPS);
  const theirs = await withOracleModel(path, (model) => oracleLogprobs(model, STEPS));
  for (let s = 0; s < STEPS.length; s++) {
    let worst = 0;
    for (let i = 0; i < ours[s]!.length; i++) worst = Math.max(worst, Math.abs(ours[s]![i]! - theirs[s]![i]!));
    assert.ok(worst <= LOGPROB_TOLERANCE, `step ${s}: max |Δ logprob| ${worst}`);
  }
});
