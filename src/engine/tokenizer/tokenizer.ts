// The tokenizer of a GGUF model, matching llama.cpp's tokenize / token_to_piece: special tokens are
// cut out of the text first (longest first), the remaining text is tokenized by byte-level BPE or
// SentencePiece, and BOS/EOS are added as the model asks.
import type { GgufFile } from "../gguf/reader.ts";
import { BpeEncoder } from "./bpe.ts";
import { CHAR_TO_BYTE, byteLevelToBytes } from "./byte-level.ts";
import { preTokenizerConfig } from "./pretokenize.ts";
import { SPM_SPACE, SpmEncoder } from "./spm.ts";
import { TokenIndex, stringTableOf } from "./token-index.ts";
import { Utf8StreamDecoder } from "./utf8-stream.ts";
import { TokenType, readVocabulary, type Vocabulary } from "./vocabulary.ts";

export interface EncodeOptions {
  /** Add BOS/EOS as the model's metadata asks (default true). */
  readonly addSpecial?: boolean;
  /** Recognize control tokens such as <|im_start|> written in the text (default false). User-defined tokens always are. */
  readonly parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Render control tokens (<|im_end|>) as their text instead of nothing (default false). */
  readonly special?: boolean;
  /** Apply llama.cpp's detokenize clean-up (" ," → ",", " 's" → "'s") where the vocabulary asks for it (default false: streaming never does). */
  readonly cleanSpaces?: boolean;
}

/**
 * llama.cpp's clean_spaces passes over detokenized text: drop the space before ? ! . , and before
 * 's 'm 're 've, and the spaces around a lone apostrophe.
 */
export function cleanUpSpaces(text: string): string {
  return text
    .replace(/ ([?!.,])/g, "$1")
    .replace(/ ' /g, "'")
    .replace(/ '(s|m|re|ve)/g, "'$1");
}

/** Text longer than this is refused rather than tokenized (about 16 M tokens of text at worst). */
export const TOKENIZE_TEXT_CHARS_MAX = 64 * 1024 * 1024;

/**
 * Token pieces cached for detokenizing; cleared when full. A server that renders every token of a
 * 150k vocabulary would otherwise keep a small array per token (~20 MB).
 */
export const PIECE_CACHE_MAX = 8192;

type Fragment = { readonly text: string } | { readonly tokenId: number };

const utf8Encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is text to keep, not a marker to strip.
const utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const EMPTY = new Uint8Array(0);

export interface StreamingDetokenizer {
  /** Text that became complete with this token ("" while a character is still split). */
  push(tokenId: number): string;
  /** Ends the stream: held bytes become U+FFFD. */
  flush(): string;
}

export class Tokenizer {
  readonly vocabulary: Vocabulary;
  /** Text → id; also the token texts (duplicate texts resolve to the last id, as in llama.cpp's token_to_id). */
  private readonly tokenIds: TokenIndex;
  private readonly bpe: BpeEncoder | null;
  private readonly spm: SpmEncoder | null;
  /** Longest first, as llama.cpp matches them. */
  private readonly specialTokenIds: readonly number[];
  /** The texts of specialTokenIds, decoded once: every encode scans them. */
  private readonly specialTexts: readonly string[];
  /** Pieces of recently rendered tokens; bounded (see PIECE_CACHE_MAX), not one slot per vocabulary entry. */
  private readonly pieceCache = new Map<number, Uint8Array>();

  constructor(vocabulary: Vocabulary) {
    // The merges live on as BPE ranks by token ids; their texts (MBs for a 150k vocabulary) are not kept.
    this.vocabulary = vocabulary.merges.length === 0 ? vocabulary : { ...vocabulary, merges: [] };
    const texts = stringTableOf(vocabulary.tokens);
    this.tokenIds = new TokenIndex(texts);
    if (vocabulary.model === "gpt2") {
      this.bpe = new BpeEncoder(this.tokenIds, stringTableOf(vocabulary.merges), vocabulary.pre, preTokenizerConfig(vocabulary.pre).ignoreMerges);
      this.spm = null;
    } else {
      this.bpe = null;
      this.spm = new SpmEncoder(this.tokenIds, vocabulary.scores, vocabulary.unknownTokenId);
    }
    const special: number[] = [];
    const byteLength = (id: number): number => texts.ends[id]! - texts.startOf(id);
    vocabulary.tokenTypes.forEach((type, id) => {
      const isSpecial = type === TokenType.Control || type === TokenType.UserDefined || type === TokenType.Unknown;
      if (isSpecial && id < texts.length && byteLength(id) > 0) special.push(id);
    });
    this.specialTokenIds = special.sort((a, b) => byteLength(b) - byteLength(a) || a - b);
    this.specialTexts = this.specialTokenIds.map((id) => texts.at(id));
  }

  static fromGguf(file: GgufFile): Tokenizer {
    return new Tokenizer(readVocabulary(file));
  }

  get tokenCount(): number {
    return this.tokenIds.length;
  }

  tokenId(text: string): number | undefined {
    return this.tokenIds.get(text);
  }

  isEndOfGeneration(tokenId: number): boolean {
    return this.vocabulary.endOfGenerationTokenIds.has(tokenId);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (text.length > TOKENIZE_TEXT_CHARS_MAX) {
      throw new RangeError(`text of ${text.length} characters is over the tokenizer limit of ${TOKENIZE_TEXT_CHARS_MAX}`);
    }
    const addSpecial = options.addSpecial ?? true;
    const { bosTokenId, eosTokenId, addBos, addEos, addSpacePrefix } = this.vocabulary;
    const out: number[] = [];
    if (addSpecial && addBos && bosTokenId !== null) out.push(bosTokenId);
    let previousIsSpecial = true;
    for (const fragment of this.partition(text, options.parseSpecial ?? false)) {
      if ("tokenId" in fragment) {
        out.push(fragment.tokenId);
        previousIsSpecial = true;
        continue;
      }
      if (this.bpe !== null) {
        this.bpe.encode(fragment.text, out);
      } else if (this.spm !== null) {
        const prefixed = addSpacePrefix && previousIsSpecial ? ` ${fragment.text}` : fragment.text;
        this.spm.encode(prefixed.replaceAll(" ", SPM_SPACE), out);
      }
      previousIsSpecial = false;
    }
    if (addSpecial && addEos && eosTokenId !== null) out.push(eosTokenId);
    return out;
  }

  /** Splits out special tokens written in the text, longest token first, as llama.cpp does. */
  private partition(text: string, parseSpecial: boolean): Fragment[] {
    let fragments: Fragment[] = text.length > 0 ? [{ text }] : [];
    for (const [index, id] of this.specialTokenIds.entries()) {
      const type = this.vocabulary.tokenTypes[id];
      if (!parseSpecial && type !== TokenType.UserDefined) continue;
      const tokenText = this.specialTexts[index]!;
      if (!fragments.some((fragment) => "text" in fragment && fragment.text.includes(tokenText))) continue;
      const next: Fragment[] = [];
      for (const fragment of fragments) {
        if (!("text" in fragment)) {
          next.push(fragment);
          continue;
        }
        let position = 0;
        for (let found = fragment.text.indexOf(tokenText); found >= 0; found = fragment.text.indexOf(tokenText, position)) {
          if (found > position) next.push({ text: fragment.text.slice(position, found) });
          next.push({ tokenId: id });
          position = found + tokenText.length;
        }
        if (position < fragment.text.length) next.push({ text: fragment.text.slice(position) });
      }
      fragments = next;
    }
    return fragments;
  }

  /** The bytes a token stands for (llama.cpp's token_to_piece). */
  pieceBytes(tokenId: number, options: DecodeOptions = {}): Uint8Array {
    const { tokenTypes, model } = this.vocabulary;
    const text = this.tokenIds.at(tokenId);
    if (text === undefined) {
      throw new RangeError(`token id ${tokenId} is outside the vocabulary of ${this.tokenIds.length} tokens`);
    }
    const type = tokenTypes[tokenId];
    if (type === TokenType.Control || type === TokenType.Unknown) {
      return options.special === true ? utf8Encoder.encode(text) : EMPTY;
    }
    const cached = this.pieceCache.get(tokenId);
    if (cached !== undefined) return cached;
    let piece: Uint8Array;
    if (type === TokenType.UserDefined) {
      piece = utf8Encoder.encode(text);
    } else if (type === TokenType.Normal) {
      piece = model === "gpt2" ? byteLevelToBytes(text) : utf8Encoder.encode(text.replaceAll(SPM_SPACE, " "));
    } else if (type === TokenType.Byte) {
      const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
      const byte = hex !== null ? Number.parseInt(hex[1]!, 16) : CHAR_TO_BYTE.get(text);
      piece = byte === undefined ? EMPTY : Uint8Array.of(byte);
    } else {
      piece = EMPTY; // unused and undefined tokens render as nothing, as in llama.cpp
    }
    if (this.pieceCache.size >= PIECE_CACHE_MAX) this.pieceCache.clear();
    this.pieceCache.set(tokenId, piece);
    return piece;
  }

  /** Text of a whole sequence. SentencePiece drops the space prefix of the first token, as llama.cpp does. */
  decode(tokenIds: readonly number[], options: DecodeOptions = {}): string {
    const pieces: Uint8Array[] = [];
    let byteCount = 0;
    tokenIds.forEach((id, index) => {
      let piece = this.pieceBytes(id, options);
      if (index === 0 && this.vocabulary.addSpacePrefix && piece[0] === 0x20) piece = piece.subarray(1);
      pieces.push(piece);
      byteCount += piece.length;
    });
    const all = new Uint8Array(byteCount);
    let offset = 0;
    for (const piece of pieces) {
      all.set(piece, offset);
      offset += piece.length;
    }
    const text = utf8Decoder.decode(all);
    return options.cleanSpaces === true && this.vocabulary.cleanSpaces ? cleanUpSpaces(text) : text;
  }

  /** A token on its own, control tokens included, for logprobs (split characters show as U+FFFD). */
  tokenText(tokenId: number): string {
    return utf8Decoder.decode(this.pieceBytes(tokenId, { special: true }));
  }

  /** Streaming-safe detokenizing for one generation: never returns half a UTF-8 character. */
  createStreamingDetokenizer(options: DecodeOptions = {}): StreamingDetokenizer {
    const decoder = new Utf8StreamDecoder();
    return {
      push: (tokenId) => decoder.push(this.pieceBytes(tokenId, options)),
      flush: () => decoder.flush(),
    };
  }
}
