// SentencePiece-style tokenizing (Llama 2, Mistral: tokenizer.ggml.model "llama") as llama.cpp does
// it: spaces become ▁, characters merge pairwise into the token with the highest score (leftmost on
// ties). A merge only ever forms a token, so a final symbol that is not a token is a single
// character outside the vocabulary: it is spelled with <0xXX> byte tokens.
import { mergeSymbols, symbolListOf } from "./merge-queue.ts";

export const SPM_SPACE = "\u2581";

export class SpmEncoder {
  constructor(
    private readonly tokenIds: { get(text: string): number | undefined },
    private readonly scores: Float32Array,
    private readonly unknownTokenId: number | null,
  ) {}

  /** Encodes text that is already whitespace-escaped (spaces as ▁). */
  encode(escapedText: string, out: number[]): void {
    const list = symbolListOf([...escapedText]);
    mergeSymbols(list, (left, right) => {
      const id = this.tokenIds.get(left + right);
      return id === undefined ? null : -this.scores[id]!;
    });
    for (const symbol of list.texts) {
      if (symbol === "") continue;
      const id = this.tokenIds.get(symbol);
      if (id !== undefined) out.push(id);
      else for (const byte of Buffer.from(symbol, "utf8")) out.push(this.byteToken(byte));
    }
  }

  private byteToken(byte: number): number {
    const hex = byte.toString(16).toUpperCase().padStart(2, "0");
    const id = this.tokenIds.get(`<0x${hex}>`) ?? this.tokenIds.get(String.fromCharCode(byte)) ?? this.unknownTokenId;
    if (id === undefined || id === null) throw new Error(`SentencePiece vocabulary has no token for byte 0x${hex}`);
    return id;
  }
}
