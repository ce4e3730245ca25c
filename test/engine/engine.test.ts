// The GGUF engine through the Engine contract the runner uses: load progress, chat encoding,
// sequences, sampling, context limits, and bad files failing with clear errors (never a crash).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineInputError, type EngineShardSpec } from "../../src/engine/engine.ts";
import { ShardForward } from "../../src/engine/forward.ts";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { GgufError } from "../../src/engine/gguf/gguf-types.ts";
import { chooseContextSize, createEngine, GgufEngine, kvBytesPerToken } from "../../src/engine/gguf-engine.ts";
import { readGguf } from "../../src/engine/gguf/reader.ts";
import { readModelArch } from "../../src/engine/model.ts";
import type { GenerationParams } from "../../src/shared/types.ts";
import { writeModelFixture, type ModelFixtureSpec } from "../support/gguf-model-fixture.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-engine-"));
after(() => rmSync(directory, { recursive: true, force: true }));

const FIXTURE: ModelFixtureSpec = {
  arch: "qwen2",
  vocab: "tiny",
  nLayer: 3,
  nEmbd: 128,
  nHead: 4,
  nHeadKv: 2,
  nFf: 256,
  contextLength: 256,
  tensorType: GgmlType.Q4_0,
  tiedOutput: true,
  seed: 5,
};
const modelPath = join(directory, "model.gguf");
writeModelFixture(modelPath, FIXTURE);

function spec(overrides: Partial<EngineShardSpec> = {}): EngineShardSpec {
  return {
    modelId: "fixture",
    modelPath,
    layerStart: 0,
    layerEnd: FIXTURE.nLayer,
    layerCount: FIXTURE.nLayer,
    contextSize: 128,
    threads: 2,
    options: {},
    ...overrides,
  };
}

const GREEDY: GenerationParams = {
  messages: [{ role: "user", content: "hi" }],
  maxTokens: 16,
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: 1,
  stop: [],
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  logprobs: false,
  topLogprobs: 0,
} as GenerationParams;

function generate(engine: GgufEngine, params: GenerationParams, prompt: readonly number[], count: number): number[] {
  const sequence = engine.openSequence(params, prompt.length);
  try {
    sequence.prefill(prompt);
    const out: number[] = [];
    for (let i = 0; i < count; i++) {
      const t = sequence.sample().tokenId;
      out.push(t);
      sequence.decode(t);
    }
    return out;
  } finally {
    sequence.free();
  }
}

test("load reports every layer, then greedy generation equals the raw forward pass", async () => {
  const engine = createEngine(spec()) as GgufEngine;
  const progress: number[] = [];
  await engine.load((done, total) => {
    assert.equal(total, FIXTURE.nLayer);
    progress.push(done);
  });
  assert.deepEqual(progress, [1, 2, 3]);
  await engine.warmup();
  const prompt = engine.encodeChat([{ role: "user", content: "Hello there" }]);
  assert.ok(prompt.length > 3);
  const ours = generate(engine, GREEDY, prompt, 16);
  engine.close();

  const shard = ShardForward.open(modelPath);
  const cache = shard.createCache(128);
  const expected: number[] = [];
  let input: readonly number[] = prompt;
  let pos = 0;
  for (let i = 0; i < 16; i++) {
    const s = shard.forwardHidden(cache, { tokens: input }, pos);
    pos += input.length;
    const logits = shard.logits(s.hidden, s.nTokens);
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
    expected.push(best);
    input = [best];
  }
  cache.free();
  shard.close();
  assert.deepEqual(ours, expected);
});

test("prefill in chunks gives the same tokens as one prefill", async () => {
  const engine = createEngine(spec()) as GgufEngine;
  await engine.load(() => {});
  const prompt = engine.encodeChat([{ role: "user", content: "The quick brown fox jumps over the lazy dog, twice." }]);
  const whole = generate(engine, GREEDY, prompt, 8);
  const sequence = engine.openSequence(GREEDY, prompt.length);
  for (let at = 0; at < prompt.length; at += 5) sequence.prefill(prompt.slice(at, at + 5));
  const chunked: number[] = [];
  for (let i = 0; i < 8; i++) {
    const t = sequence.sample().tokenId;
    chunked.push(t);
    sequence.decode(t);
  }
  sequence.free();
  sequence.free();
  engine.close();
  assert.deepEqual(chunked, whole);
});

test("seeded sampling is reproducible and logprobs are reported when asked", async () => {
  const engine = createEngine(spec()) as GgufEngine;
  await engine.load(() => {});
  const prompt = engine.encodeChat([{ role: "user", content: "Tell me a story" }]);
  const params = { ...GREEDY, temperature: 1.2, topK: 40, seed: 1234, logprobs: true, topLogprobs: 3 } as GenerationParams;
  const a = generate(engine, params, prompt, 12);
  const b = generate(engine, params, prompt, 12);
  const c = generate(engine, { ...params, seed: 999 } as GenerationParams, prompt, 12);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const sequence = engine.openSequence(params, prompt.length);
  sequence.prefill(prompt);
  const sampled = sequence.sample();
  assert.ok(sampled.logprob !== null && sampled.logprob <= 0);
  assert.equal(sampled.topLogprobs.length, 3);
  sequence.free();
  engine.close();
});

test("prompts that do not fit the context are EngineInputErrors", async () => {
  const engine = createEngine(spec({ contextSize: 16 })) as GgufEngine;
  await engine.load(() => {});
  const long = "word ".repeat(200);
  assert.throws(() => engine.encodeChat([{ role: "user", content: long }]), EngineInputError);
  assert.throws(() => engine.openSequence(GREEDY, 16), EngineInputError);
  const sequence = engine.openSequence(GREEDY, 4);
  sequence.prefill([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  sequence.decode(sequence.sample().tokenId);
  assert.throws(() => sequence.decode(3), EngineInputError);
  assert.throws(() => sequence.prefill([100000]), EngineInputError);
  sequence.free();
  engine.close();
});

test("the default context is the model's own, capped by memory", () => {
  const arch = readModelArch(readGguf(modelPath));
  assert.equal(chooseContextSize(arch, spec({ contextSize: null })), 256);
  assert.equal(chooseContextSize(arch, spec({ contextSize: 77 })), 77);
  const long = { ...arch, contextLength: 32768 };
  const perToken = kvBytesPerToken(long, FIXTURE.nLayer);
  // A quarter of memory is the KV budget.
  assert.equal(chooseContextSize(long, spec({ contextSize: null }), perToken * 4 * 4096), 4096);
  assert.equal(chooseContextSize(long, spec({ contextSize: null }), perToken * 4 * 10), 512);
  assert.equal(chooseContextSize(long, spec({ contextSize: null }), perToken * 4 * 100_000), 32768);
});

test("a pipeline stage maps only its layers and refuses whole-model sequences", async () => {
  const engine = createEngine(spec({ layerStart: 1, layerEnd: 2 })) as GgufEngine;
  const progress: number[] = [];
  await engine.load((done) => progress.push(done));
  assert.deepEqual(progress, [1]);
  assert.throws(() => engine.openSequence(GREEDY, 1), /pipeline stage/);
  const slot = engine.openStage();
  const out = slot.forwardHidden({ hidden: new Float32Array(2 * FIXTURE.nEmbd).fill(0.5), nTokens: 2 });
  assert.equal(out.hidden.length, 2 * FIXTURE.nEmbd);
  assert.equal(slot.pos, 2);
  slot.free();
  engine.close();
});

test("only the first pipeline stage has a tokenizer; later stages forward and sample without one", async () => {
  const first = createEngine(spec({ layerStart: 0, layerEnd: 1 })) as GgufEngine;
  const last = createEngine(spec({ layerStart: 1, layerEnd: FIXTURE.nLayer })) as GgufEngine;
  await first.load(() => {});
  await last.load(() => {});
  try {
    assert.ok(first.tokenizer.tokenCount > 0);
    assert.throws(() => last.tokenizer, /later pipeline stage/);
    assert.throws(() => last.encodeChat([{ role: "user", content: "hi" }]), /later pipeline stage/);
    const head = first.openStageSequence(GREEDY);
    const tail = last.openStageSequence(GREEDY);
    const prompt = first.encodeChat([{ role: "user", content: "hi" }]);
    const mid = head.forward({ tokens: prompt }, prompt);
    const out = tail.forward({ hidden: mid.hidden, nTokens: mid.nTokens }, prompt);
    const token = tail.sample(out.hidden, out.nTokens).tokenId;
    assert.ok(Number.isInteger(token) && token >= 0 && token < first.tokenizer.tokenCount);
    assert.equal(typeof head.isEndOfGeneration(token), "boolean");
    assert.equal(typeof head.tokenText(token), "string");
    assert.throws(() => tail.isEndOfGeneration(token), /later pipeline stage/);
    assert.throws(() => tail.tokenText(token), /later pipeline stage/);
    assert.throws(() => tail.detokenize(token), /first stage/);
    head.free();
    tail.free();
  } finally {
    first.close();
    last.close();
  }
});

/** Byte offset of a tensor's info record (just after its name) in the header. */
function tensorInfoOffset(bytes: Buffer, name: string): number {
  const at = bytes.indexOf(Buffer.from(name));
  assert.ok(at > 0, `found ${name}`);
  return at + name.length;
}

test("bad files fail with clear errors and no crash", async () => {
  const good = readFileSync(modelPath);
  const load = async (bytes: Buffer): Promise<void> => {
    const path = join(directory, "bad.gguf");
    writeFileSync(path, bytes);
    const engine = createEngine(spec({ modelPath: path }));
    try {
      await engine.load(() => {});
    } finally {
      engine.close();
    }
  };
  await assert.rejects(load(good.subarray(0, Math.floor(good.length * 0.6))), (e: Error) => e instanceof GgufError && /truncated|out of bounds/i.test(e.message));
  await assert.rejects(load(good.subarray(0, 20)), GgufError);
  const badMagic = Buffer.from(good);
  badMagic.write("GGUX", 0);
  await assert.rejects(load(badMagic), /bad magic/);
  // Record layout after the name: u32 n_dims, n_dims × u64 dims, u32 type, u64 offset.
  const name = "blk.1.attn_q.weight";
  const typeAt = tensorInfoOffset(good, name) + 4 + 2 * 8;
  const unknownType = Buffer.from(good);
  unknownType.writeUInt32LE(99, typeAt);
  await assert.rejects(load(unknownType), /unknown ggml type id 99/);
  const unsupportedType = Buffer.from(good);
  unsupportedType.writeUInt32LE(GgmlType.IQ2_XXS, typeAt);
  await assert.rejects(load(unsupportedType), /iq2_xxs|IQ2_XXS|size/i);
  const farOffset = Buffer.from(good);
  farOffset.writeBigUInt64LE(1n << 40n, typeAt + 4);
  await assert.rejects(load(farOffset), GgufError);
  const otherArch = join(directory, "other-arch.gguf");
  copyFileSync(modelPath, otherArch);
  const archBytes = readFileSync(otherArch);
  const archAt = archBytes.indexOf(Buffer.from("qwen2"));
  archBytes.write("phi_2", archAt);
  await assert.rejects(load(archBytes), /architecture "phi_2" is not supported/);
});

test("a spec whose layer count disagrees with the file is refused", async () => {
  const engine = createEngine(spec({ layerCount: 5, layerEnd: 5 }));
  await assert.rejects(engine.load(() => {}), /the model has 3 layers, the shard spec says 5/);
  engine.close();
});

test("logits written into a caller's buffer equal fresh ones; a wrong-sized buffer is refused", () => {
  const shard = ShardForward.open(modelPath);
  const cache = shard.createCache(32);
  try {
    const s = shard.forwardHidden(cache, { tokens: [1, 2, 3] }, 0);
    const fresh = shard.logits(s.hidden, s.nTokens);
    const into = new Float32Array(shard.arch.vocabSize).fill(Number.NaN);
    const written = shard.logits(s.hidden, s.nTokens, false, into);
    assert.equal(written, into);
    assert.deepEqual(into, fresh);
    const all = shard.logits(s.hidden, s.nTokens, true, new Float32Array(3 * shard.arch.vocabSize));
    assert.deepEqual(all.subarray(2 * shard.arch.vocabSize), fresh);
    assert.throws(() => shard.logits(s.hidden, s.nTokens, true, into), /expected/);
  } finally {
    cache.free();
    shard.close();
  }
});

test("a long prefill chunk (feed-forward in token blocks) gives bit-identical hidden states to short chunks", () => {
  const shard = ShardForward.open(modelPath);
  const whole = shard.createCache(256);
  const pieces = shard.createCache(256);
  try {
    // 200 tokens: more than one feed-forward block of the native layer (64 tokens), and a ragged last block.
    const tokens = Array.from({ length: 200 }, (_, i) => (i * 7 + 3) % shard.arch.vocabSize);
    const one = shard.forwardHidden(whole, { tokens }, 0).hidden;
    const parts: Float32Array[] = [];
    for (let at = 0; at < tokens.length; at += 50) parts.push(shard.forwardHidden(pieces, { tokens: tokens.slice(at, at + 50) }, at).hidden);
    const chunked = new Float32Array(one.length);
    parts.forEach((part, index) => chunked.set(part, index * 50 * shard.arch.nEmbd));
    assert.deepEqual(one, chunked);
  } finally {
    whole.free();
    pieces.free();
    shard.close();
  }
});

test("token embeddings go into a caller's buffer when given; a buffer that is too small is refused", () => {
  const shard = ShardForward.open(modelPath);
  const a = shard.createCache(32);
  const b = shard.createCache(32);
  try {
    const fresh = shard.forwardHidden(a, { tokens: [1, 2, 3] }, 0).hidden;
    const buffer = new Float32Array(5 * shard.arch.nEmbd).fill(Number.NaN);
    const reused = shard.forwardHidden(b, { tokens: [1, 2, 3] }, 0, buffer).hidden;
    assert.equal(reused.buffer, buffer.buffer);
    assert.deepEqual(reused, fresh);
    assert.throws(() => shard.forwardHidden(b, { tokens: [4, 5, 6] }, 3, new Float32Array(2 * shard.arch.nEmbd)), RangeError);
  } finally {
    a.free();
    b.free();
    shard.close();
  }
});
