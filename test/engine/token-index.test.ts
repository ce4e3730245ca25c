import { test } from "node:test";
import assert from "node:assert/strict";
import { GgufStringTable } from "../../src/engine/gguf/string-table.ts";
import { MergeRanks, TokenIndex, stringTableOf } from "../../src/engine/tokenizer/token-index.ts";
import { fixtureVocabulary } from "../support/gguf-model-fixture.ts";

/** What the tokenizer used before the compact index: a Map from text to the last id with it. */
function mapIndexOf(tokens: readonly string[]): Map<string, number> {
  const map = new Map<string, number>();
  tokens.forEach((text, id) => map.set(text, id));
  return map;
}

test("a string table returns every string and its UTF-8 bytes, and refuses ids outside it", () => {
  const strings = ["a", "", "Ġthe", "<|im_end|>", "héllo 世界 🙂", "\uFEFFbom"];
  const table = GgufStringTable.fromStrings(strings);
  assert.equal(table.length, strings.length);
  assert.deepEqual(table.toArray(), strings);
  strings.forEach((text, index) => assert.deepEqual(table.bytesAt(index), new TextEncoder().encode(text)));
  assert.throws(() => table.at(strings.length), RangeError);
  assert.throws(() => table.at(-1), RangeError);
  assert.throws(() => new GgufStringTable(new Uint8Array(2), Uint32Array.of(3)), RangeError);
});

for (const vocab of ["qwen3", "llama3", "tiny-spm"] as const) {
  test(`the compact index gives every ${vocab} token the id a Map of its texts gives`, () => {
    const { tokens } = fixtureVocabulary(vocab);
    const expected = mapIndexOf(tokens);
    const index = new TokenIndex(stringTableOf(tokens));
    assert.equal(index.length, tokens.length);
    for (let id = 0; id < tokens.length; id++) {
      const text = tokens[id]!;
      assert.equal(index.get(text), expected.get(text), text);
      assert.equal(index.at(id), text);
      const bytes = new TextEncoder().encode(text);
      assert.equal(index.getBytes(bytes, 0, bytes.length), expected.get(text), text);
    }
    assert.equal(index.at(tokens.length), undefined);
    assert.equal(index.at(-1), undefined);
  });
}

test("texts that are not tokens have no id: prefixes, extensions, lone surrogates, U+FFFD", () => {
  const index = new TokenIndex(stringTableOf(["ab", "abc", "\uFFFD", "😀", "x"]));
  assert.equal(index.get("ab"), 0);
  assert.equal(index.get("a"), undefined);
  assert.equal(index.get("abcd"), undefined);
  assert.equal(index.get(""), undefined);
  // A lone surrogate would encode as U+FFFD; it must not find the U+FFFD token.
  assert.equal(index.get("\uD83D"), undefined);
  assert.equal(index.get("\uDE00"), undefined);
  assert.equal(index.get("\uFFFD"), 2);
  assert.equal(index.get("😀"), 3);
});

test("duplicate token texts resolve to the last id, as llama.cpp's token_to_id", () => {
  const index = new TokenIndex(stringTableOf(["a", "b", "a", "c", "a"]));
  assert.equal(index.get("a"), 4);
  assert.equal(index.get("b"), 1);
});

test("every merge of the real vocabularies has the rank a Map of merge texts gives", () => {
  for (const vocab of ["qwen3", "llama3"] as const) {
    const { tokens, merges } = fixtureVocabulary(vocab);
    const index = new TokenIndex(stringTableOf(tokens));
    const ranks = new MergeRanks(index, stringTableOf(merges));
    const expected = new Map<string, number>();
    merges.forEach((merge, rank) => {
      if (merge.indexOf(" ", 1) >= 0 && !expected.has(merge)) expected.set(merge, rank);
    });
    let checked = 0;
    for (const [merge, rank] of expected) {
      const separator = merge.indexOf(" ", 1);
      const left = index.get(merge.slice(0, separator));
      const right = index.get(merge.slice(separator + 1));
      const got = left !== undefined && right !== undefined ? ranks.rankOfIds(left, right) : ranks.rankOfTexts(merge.slice(0, separator), merge.slice(separator + 1));
      assert.equal(got, rank, merge);
      checked++;
    }
    assert.ok(checked > 100_000, `${vocab}: only ${checked} merges`);
  }
});

test("merge ranks: first duplicate wins, pairs that are no merge have none, sides that are not tokens keep their text", () => {
  const tokens = ["a", "b", "ab", "c", "b c"];
  const index = new TokenIndex(stringTableOf(tokens));
  const ranks = new MergeRanks(index, stringTableOf(["a b", "ab c", "a b", "x y", "nospace", "a b c", "q b c"]));
  assert.equal(ranks.rankOfIds(0, 1), 0);
  assert.equal(ranks.rankOfIds(2, 3), 1);
  assert.equal(ranks.rankOfIds(1, 0), null);
  assert.equal(ranks.rankOfTexts("x", "y"), 3);
  assert.equal(ranks.rankOfTexts("nospace", ""), null);
  // "a b c" splits at its first space: ("a", "b c"), both tokens; never ("a b", "c").
  assert.equal(ranks.rankOfIds(0, 4), 5);
  assert.equal(ranks.rankOfTexts("a b", "c"), null);
  // "q b c" splits into ("q", "b c"), and "q" is no token.
  assert.equal(ranks.rankOfTexts("q", "b c"), 6);
  assert.equal(ranks.rankOfTexts("q b", "c"), null);
});
