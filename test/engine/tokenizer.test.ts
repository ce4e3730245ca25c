import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LlamaModel } from "node-llama-cpp";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { GgufError, GgufValueType, readGguf } from "../../src/engine/gguf/reader.ts";
import { writeGguf } from "../../src/engine/gguf/writer.ts";
import { Tokenizer, cleanUpSpaces } from "../../src/engine/tokenizer/tokenizer.ts";
import { Utf8StreamDecoder, incompleteTailLength } from "../../src/engine/tokenizer/utf8-stream.ts";
import { writeModelFixture, type FixtureVocab } from "../support/gguf-model-fixture.ts";
import { disposeOracle, getOracleLlama } from "../support/llama-oracle.ts";
import { TOKENIZER_CORPUS } from "./tokenizer-corpus.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-tokenizer-"));
after(async () => {
  await disposeOracle();
  rmSync(directory, { recursive: true, force: true });
});

function writeVocabFixture(vocab: FixtureVocab, tokenizerPre?: string): string {
  const path = join(directory, `${vocab}${tokenizerPre === undefined ? "" : `-${tokenizerPre}`}.gguf`);
  writeModelFixture(path, {
    ...(tokenizerPre === undefined ? {} : { tokenizerPre }),
    arch: "llama",
    vocab,
    nLayer: 1,
    nEmbd: 32,
    nHead: 2,
    nHeadKv: 1,
    nFf: 32,
    contextLength: 64,
    tensorType: GgmlType.Q8_0,
    tiedOutput: true,
    seed: 1,
  });
  return path;
}

// The tiny vocabulary again under other pre-tokenizers (llama.cpp's multi-regex "default" split,
// Llama 3's, SmolLM's, GPT-2's, Falcon's, Mistral Tekken's).
const VOCABS: readonly [FixtureVocab, string | undefined][] = [
  ["qwen3", undefined],
  ["llama3", undefined],
  ["tiny", undefined],
  ["tiny", "default"],
  ["tiny", "llama-bpe"],
  ["tiny", "smollm"],
  ["tiny", "gpt-2"],
  ["tiny", "falcon"],
  ["tiny", "tekken"],
  ["tiny-spm", undefined],
];

for (const [vocab, tokenizerPre] of VOCABS) {
  describe(`${vocab} vocabulary${tokenizerPre === undefined ? "" : ` with the ${tokenizerPre} pre-tokenizer`}`, () => {
    let tokenizer: Tokenizer;
    let oracle: LlamaModel;
    before(async () => {
      const path = writeVocabFixture(vocab, tokenizerPre);
      tokenizer = Tokenizer.fromGguf(readGguf(path));
      oracle = await (await getOracleLlama()).loadModel({ modelPath: path });
    });
    after(async () => {
      await oracle.dispose();
    });

    test("tokenizes the corpus exactly as llama.cpp does, with and without special-token parsing", () => {
      for (const text of TOKENIZER_CORPUS) {
        for (const parseSpecial of [false, true]) {
          const expected = [...oracle.tokenize(text, parseSpecial)];
          const actual = tokenizer.encode(text, { addSpecial: false, parseSpecial });
          assert.deepEqual(actual, expected, `${JSON.stringify(text)} (parseSpecial ${parseSpecial})`);
        }
      }
    });

    test("detokenizes as llama.cpp does", () => {
      for (const text of TOKENIZER_CORPUS) {
        const ids = [...oracle.tokenize(text, true)];
        for (const special of [false, true]) {
          const expected = oracle.detokenize(ids as Parameters<LlamaModel["detokenize"]>[0], special);
          assert.equal(tokenizer.decode(ids, { special, cleanSpaces: true }), expected, `${JSON.stringify(text)} (special ${special})`);
        }
      }
    });

    test("decode(encode(text)) gives the text back", () => {
      for (const text of TOKENIZER_CORPUS) {
        const plain = tokenizer.encode(text, { addSpecial: false, parseSpecial: false });
        const parsed = tokenizer.encode(text, { addSpecial: false, parseSpecial: true });
        if (tokenizer.vocabulary.model === "llama") {
          // SentencePiece adds a space after every special token it parses; plain text round-trips.
          if (!/<s>|<\/s>|<unk>/.test(text)) assert.equal(tokenizer.decode(plain), text, JSON.stringify(text));
          continue;
        }
        assert.equal(tokenizer.decode(plain), text, JSON.stringify(text));
        assert.equal(tokenizer.decode(parsed, { special: true }), text, JSON.stringify(text));
      }
    });

    test("adds BOS only when the model asks for it", () => {
      const { bosTokenId, addBos } = tokenizer.vocabulary;
      const withSpecial = tokenizer.encode("Hello");
      const without = tokenizer.encode("Hello", { addSpecial: false });
      assert.deepEqual(withSpecial, addBos && bosTokenId !== null ? [bosTokenId, ...without] : without);
    });

    test("streaming detokenizing never emits a broken character and adds up to the whole text", () => {
      const text = "emoji 🙂😀🎉 👨‍👩‍👧‍👦 中文测试 café e\u0301 日本語";
      const ids = tokenizer.encode(text, { addSpecial: false });
      const stream = tokenizer.createStreamingDetokenizer();
      const chunks = ids.map((id) => stream.push(id));
      chunks.push(stream.flush());
      for (const chunk of chunks) assert.ok(!chunk.includes("\uFFFD"), `chunk ${JSON.stringify(chunk)} has a broken character`);
      // decode() drops SentencePiece's space prefix at the start of a sequence; a stream cannot know where that is.
      const expected = tokenizer.vocabulary.addSpacePrefix ? ` ${tokenizer.decode(ids)}` : tokenizer.decode(ids);
      assert.equal(chunks.join(""), expected);
      if (vocab === "tiny" || vocab === "tiny-spm") {
        assert.ok(chunks.includes(""), "small vocabularies spell emoji byte by byte, so some tokens hold text back");
      }
    });
  });
}

test("end-of-generation tokens follow the vocabulary and llama.cpp's list of end-of-turn texts", () => {
  const qwen = Tokenizer.fromGguf(readGguf(join(directory, "qwen3.gguf")));
  for (const text of ["<|im_end|>", "<|endoftext|>"]) assert.ok(qwen.isEndOfGeneration(qwen.tokenId(text)!), text);
  for (const text of ["<|im_start|>", "Hello", "<think>"]) assert.ok(!qwen.isEndOfGeneration(qwen.tokenId(text)!), text);
  const llama = Tokenizer.fromGguf(readGguf(join(directory, "llama3.gguf")));
  for (const text of ["<|eot_id|>", "<|end_of_text|>"]) assert.ok(llama.isEndOfGeneration(llama.tokenId(text)!), text);
  assert.ok(!llama.isEndOfGeneration(llama.tokenId("<|begin_of_text|>")!));
  assert.equal(llama.tokenText(llama.tokenId("<|eot_id|>")!), "<|eot_id|>");
  assert.equal(llama.decode([llama.tokenId("<|eot_id|>")!]), "");
});

test("an unsupported tokenizer model is refused by name", () => {
  const path = join(directory, "bert.gguf");
  writeGguf(path, {
    metadata: [
      { key: "tokenizer.ggml.model", type: GgufValueType.String, value: "bert" },
      { key: "tokenizer.ggml.tokens", type: GgufValueType.Array, elementType: GgufValueType.String, value: ["a"] },
    ],
    tensors: [],
  });
  assert.throws(() => Tokenizer.fromGguf(readGguf(path)), (error: unknown) => error instanceof GgufError && /tokenizer model "bert"/.test(error.message));
});

test("the UTF-8 stream decoder holds split characters and replaces invalid bytes at once", () => {
  const decoder = new Utf8StreamDecoder();
  const smile = new TextEncoder().encode("🙂"); // 4 bytes
  assert.equal(decoder.push(smile.subarray(0, 1)), "");
  assert.equal(decoder.push(smile.subarray(1, 3)), "");
  assert.equal(decoder.pendingByteCount, 3);
  assert.equal(decoder.push(smile.subarray(3)), "🙂");
  assert.equal(decoder.push(Uint8Array.of(0x61, 0xe4, 0xb8)), "a");
  assert.equal(decoder.push(Uint8Array.of(0xad)), "中");
  assert.equal(decoder.push(Uint8Array.of(0xff, 0x62)), "\uFFFDb"); // never a lead byte
  assert.equal(decoder.push(Uint8Array.of(0x80)), "\uFFFD"); // stray continuation byte
  assert.equal(decoder.push(Uint8Array.of(0xe4)), "");
  assert.equal(decoder.flush(), "\uFFFD");
  assert.equal(new Utf8StreamDecoder().push(Uint8Array.of(0xef, 0xbb, 0xbf, 0x61)), "\ufeffa", "a leading BOM is text");
  assert.equal(incompleteTailLength(Uint8Array.of(0xf0, 0x9f, 0x99)), 3);
  assert.equal(incompleteTailLength(Uint8Array.of(0xf0, 0x9f, 0x99, 0x82)), 0);
});

test("space clean-up follows llama.cpp's detokenize rules", () => {
  assert.equal(cleanUpSpaces("a , b . c ? d ! e"), "a, b. c? d! e");
  assert.equal(cleanUpSpaces("it 's I 'm we 're you 've he 'll don 't ' alone '"), "it's I'm we're you've he 'll don 't'alone '");
});
