import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { getString, getStringArray, getU32, readGguf } from "../../src/engine/gguf/reader.ts";
import { writeModelFixture, type FixtureArch, type FixtureVocab, type ModelFixtureSpec } from "../support/gguf-model-fixture.ts";
import { disposeOracle, oracleGreedyTokens, withOracleModel } from "../support/llama-oracle.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-fixture-"));
after(async () => {
  await disposeOracle();
  rmSync(directory, { recursive: true, force: true });
});

function smallSpec(arch: FixtureArch, vocab: FixtureVocab, tensorType: GgmlType): ModelFixtureSpec {
  const kQuant = [GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K].includes(tensorType);
  return {
    arch,
    vocab,
    nLayer: 2,
    nEmbd: kQuant ? 256 : 64,
    nHead: 4,
    nHeadKv: 2,
    nFf: kQuant ? 512 : 96,
    contextLength: 256,
    tensorType,
    tiedOutput: arch !== "llama",
    seed: 42,
  };
}

test("the same spec writes the same bytes; another seed writes other weights", () => {
  const spec = smallSpec("qwen3", "tiny", GgmlType.Q8_0);
  writeModelFixture(join(directory, "a.gguf"), spec);
  writeModelFixture(join(directory, "b.gguf"), spec);
  writeModelFixture(join(directory, "c.gguf"), { ...spec, seed: 43 });
  const a = readFileSync(join(directory, "a.gguf"));
  assert.ok(a.equals(readFileSync(join(directory, "b.gguf"))));
  assert.ok(!a.equals(readFileSync(join(directory, "c.gguf"))));
});

test("a fixture carries the metadata and tensors each architecture needs", () => {
  const path = join(directory, "meta.gguf");
  const info = writeModelFixture(path, { ...smallSpec("qwen3", "tiny", GgmlType.F16), headDim: 32 });
  const file = readGguf(path);
  assert.equal(getString(file, "general.architecture"), "qwen3");
  assert.equal(getU32(file, "qwen3.block_count"), 2);
  assert.equal(getU32(file, "qwen3.attention.key_length"), 32);
  assert.equal(getString(file, "tokenizer.ggml.model"), "gpt2");
  assert.equal(getStringArray(file, "tokenizer.ggml.tokens").length, info.tokenCount);
  assert.ok(file.tensors.has("blk.1.attn_q_norm.weight"));
  assert.ok(!file.tensors.has("output.weight"), "tied output has no output.weight");
  assert.deepEqual(file.tensors.get("blk.0.attn_q.weight")?.dims, [64, 4 * 32]);
  assert.equal(file.tensors.get("blk.0.attn_q.weight")?.type, GgmlType.F16);
  assert.equal(file.tensors.get("blk.0.attn_norm.weight")?.type, GgmlType.F32);

  const qwen2 = readGguf((writeModelFixture(join(directory, "q2.gguf"), smallSpec("qwen2", "tiny", GgmlType.Q8_0)), join(directory, "q2.gguf")));
  assert.ok(qwen2.tensors.has("blk.0.attn_q.bias"));
  assert.throws(() => writeModelFixture(join(directory, "bad.gguf"), { ...smallSpec("llama", "tiny", GgmlType.Q4_K), nEmbd: 64 }), /cannot be q4_K/);
});

// Each architecture with a few tensor types, and both real vocabularies once: llama.cpp must load the
// file and generate. (Whether our engine matches it is the engine's test.)
const LOADABLE: readonly [FixtureArch, FixtureVocab, GgmlType][] = [
  ["llama", "tiny", GgmlType.F32],
  ["llama", "tiny", GgmlType.Q4_K],
  ["llama", "tiny-spm", GgmlType.Q5_0],
  ["qwen2", "tiny", GgmlType.Q4_0],
  ["qwen3", "tiny", GgmlType.Q6_K],
  ["qwen3", "tiny", GgmlType.BF16],
  ["qwen3", "qwen3", GgmlType.Q8_0],
  ["llama", "llama3", GgmlType.Q8_0],
];

for (const [arch, vocab, tensorType] of LOADABLE) {
  test(`llama.cpp loads a ${arch} fixture (${vocab} vocabulary, ${GgmlType[tensorType]}) and generates`, async () => {
    const path = join(directory, `${arch}-${vocab}-${GgmlType[tensorType]}.gguf`);
    const info = writeModelFixture(path, smallSpec(arch, vocab, tensorType));
    await withOracleModel(path, async (model) => {
      assert.equal(model.fileInfo.metadata.general.architecture, arch);
      const prompt = [...model.tokenize("Hello world, the quick brown fox")];
      assert.ok(prompt.length > 3);
      const generated = await oracleGreedyTokens(model, prompt, 4, 128);
      assert.equal(generated.length, 4);
      for (const token of generated) assert.ok(token >= 0 && token < info.tokenCount);
    });
  });
}
