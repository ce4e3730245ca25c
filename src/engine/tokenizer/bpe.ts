// Byte-level BPE (GPT-2, Llama 3, Qwen) as llama.cpp applies it: pre-tokenize, map each word's UTF-8
// bytes to the byte-level alphabet, merge adjacent symbols by merge rank (leftmost first on ties),
// then look each symbol up, spelling unknown ones byte by byte.
import { textToByteLevel } from "./byte-level.ts";
import { mergeSymbols, symbolListOf } from "./merge-queue.ts";
import { preTokenizerFor } from "./pretokenize.ts";
import type { GgufStringTable } from "../gguf/string-table.ts";
import { MergeRanks, type TokenIndex } from "./token-index.ts";

/** Words whose tokens are remembered; prompts repeat words a lot. Cleared when full. */
export const BPE_WORD_CACHE_MAX = 65_536;
/** Longer words (whitespace runs, base64 blobs) are not cached: they rarely repeat and would pin memory. */
export const BPE_CACHED_WORD_CHARS_MAX = 64;

export class BpeEncoder {
  private readonly ranks: MergeRanks;
  private readonly preTokenize: (text: string) => string[];
  private readonly cache = new Map<string, readonly number[]>();

  constructor(
    private readonly tokenIds: TokenIndex,
    merges: GgufStringTable,
    pre: string,
    /** Llama 3: a word that is itself a token is not merged piece by piece. */
    private readonly ignoreMerges: boolean,
  ) {
    this.ranks = new MergeRanks(tokenIds, merges);
    this.preTokenize = preTokenizerFor(pre);
  }

  private rankOf(left: string, right: string): number | null {
    const leftId = this.tokenIds.get(left);
    const rightId = leftId === undefined ? undefined : this.tokenIds.get(right);
    return leftId === undefined || rightId === undefined ? this.ranks.rankOfTexts(left, right) : this.ranks.rankOfIds(leftId, rightId);
  }

  encode(text: string, out: number[]): void {
    for (const word of this.preTokenize(text)) {
      const encoded = textToByteLevel(word);
      let ids = this.cache.get(encoded);
      if (ids === undefined) {
        ids = this.encodeWord(encoded);
        if (encoded.length <= BPE_CACHED_WORD_CHARS_MAX) {
          if (this.cache.size >= BPE_WORD_CACHE_MAX) this.cache.clear();
          this.cache.set(encoded, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
  }

  private encodeWord(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.tokenIds.get(word);
      if (whole !== undefined) return [whole];
    }
    const list = symbolListOf([...word]);
    mergeSymbols(list, (left, right) => this.rankOf(left, right));
    const ids: number[] = [];
    for (const symbol of list.texts) {
      if (symbol === "") continue;
      const id = this.tokenIds.get(symbol);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // Never happens with a consistent vocabulary; llama.cpp then emits the single-byte tokens it finds.
      for (const char of Buffer.from(symbol, "utf8")) {
        const byteId = this.tokenIds.get(String.fromCharCode(char));
        if (byteId !== undefined) ids.push(byteId);
      }
    }
    return ids;
  }
}
