// Differential test: random texts built from awkward pieces must tokenize exactly as llama.cpp does.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import type { LlamaModel } from "node-llama-cpp";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { readGguf } from "../../src/engine/gguf/reader.ts";
import { Tokenizer } from "../../src/engine/tokenizer/tokenizer.ts";
import { writeModelFixture, type FixtureVocab } from "../support/gguf-model-fixture.ts";
import { disposeOracle, getOracleLlama } from "../support/llama-oracle.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-tokenizer-random-"));
after(async () => {
  await disposeOracle();
  rmSync(directory, { recursive: true, force: true });
});

// Pieces chosen to hit pre-tokenizer edges: whitespace kinds, digits, contractions, marks, emoji, CJK, specials.
const PIECES = [
  " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u0085", "\ufeff", "a", "The", "hello", "HELLO", "'s", "'LL", "'", "7", "42",
  "123456", "3.14", "-", "!", "?!", "...", "(", "){", "=>", "é", "e\u0301", "ß", "中", "文字", "한", "ا", "🙂", "👨‍👩‍👧", "🇫🇷", "\u0000",
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|", "|>", "<think>", "<s>",
];

const randomText = fc.array(fc.oneof(fc.constantFrom(...PIECES), fc.string({ unit: "grapheme", maxLength: 4 })), { maxLength: 24 }).map((parts) => parts.join(""));

const CASES: readonly [FixtureVocab, string | undefined][] = [
  ["tiny", undefined],
  ["tiny", "tekken"],
  ["tiny", "smollm"],
  ["qwen3", undefined],
  ["tiny-spm", undefined],
];

for (const [vocab, tokenizerPre] of CASES) {
  test(`${vocab}${tokenizerPre === undefined ? "" : ` (${tokenizerPre})`}: random texts tokenize as in llama.cpp`, async () => {
    const path = join(directory, `${vocab}-${tokenizerPre ?? "own"}.gguf`);
    writeModelFixture(path, { ...(tokenizerPre === undefined ? {} : { tokenizerPre }), arch: "qwen3", vocab, nLayer: 1, nEmbd: 32, nHead: 2, nHeadKv: 1, nFf: 32, contextLength: 64, tensorType: GgmlType.Q8_0, tiedOutput: true, seed: 1 });
    const tokenizer = Tokenizer.fromGguf(readGguf(path));
    const oracle: LlamaModel = await (await getOracleLlama()).loadModel({ modelPath: path });
    try {
      fc.assert(
        fc.property(randomText, fc.boolean(), (text, parseSpecial) => {
          assert.deepEqual(tokenizer.encode(text, { addSpecial: false, parseSpecial }), [...oracle.tokenize(text, parseSpecial)]);
          assert.equal(tokenizer.decode(tokenizer.encode(text, { addSpecial: false })), text);
        }),
        { numRuns: Number(process.env["SKEIN_FUZZ_RUNS"] ?? 300) },
      );
    } finally {
      await oracle.dispose();
    }
  });
}
