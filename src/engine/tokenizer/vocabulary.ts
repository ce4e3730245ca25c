// The tokenizer description a GGUF file carries (tokenizer.ggml.*), with the token attributes
// llama.cpp derives from it (some tokens are treated as control tokens by their text). Token texts
// and merges stay in the file's compact string tables: no JS string per token is kept.
import { preTokenizerConfig } from "./pretokenize.ts";
import { GgufError, GgufStringTable, getBool, getInteger, getNumberArray, getString, getStringTable, hasKey, type GgufFile } from "../gguf/reader.ts";
import type { TokenTexts } from "./token-index.ts";

export enum TokenType {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

export type TokenizerModel = "gpt2" | "llama";

export interface Vocabulary {
  readonly model: TokenizerModel;
  /** Pre-tokenizer name (tokenizer.ggml.pre); "default" when absent. */
  readonly pre: string;
  /** Token texts by id (a string array or the file's string table). */
  readonly tokens: TokenTexts;
  readonly tokenTypes: Uint8Array;
  /** SentencePiece merge priorities; empty for BPE. */
  readonly scores: Float32Array;
  /** BPE merges as "left right"; empty for SentencePiece, and in a Tokenizer's vocabulary (it keeps them as ranks). */
  readonly merges: TokenTexts;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly eotTokenId: number | null;
  readonly unknownTokenId: number | null;
  readonly paddingTokenId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** SentencePiece: prefix a space to text that starts the input or follows a special token. */
  readonly addSpacePrefix: boolean;
  /** llama.cpp's detokenize tidies " ," " 's" and the like for these vocabularies (see cleanUpSpaces). */
  readonly cleanSpaces: boolean;
  /** Tokens that end a generation (EOS, EOT, EOM and llama.cpp's list of end-of-turn texts). */
  readonly endOfGenerationTokenIds: ReadonlySet<number>;
  readonly chatTemplate: string | null;
}

/** Vocabularies larger than this are refused as corrupt (real ones are up to ~260k). */
export const VOCABULARY_TOKENS_MAX = 1 << 22;

// Texts llama.cpp treats as end-of-generation, forcing them to control tokens (llama-vocab.cpp).
const END_OF_GENERATION_TEXTS: ReadonlySet<string> = new Set([
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
  "<|end_of_text|>", "<end_of_utterance>", "</s>",
]);
// Fill-in-the-middle and similar markers, also forced to control tokens by llama.cpp.
const CONTROL_LOOKING_TEXTS: ReadonlySet<string> = new Set([
  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|fim_repo|>", "<|repo_name|>", "<|file_sep|>",
  "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>", "<fim-repo>", "<fim_prefix>", "<fim_middle>",
  "<fim_suffix>", "<fim_pad>", "<PRE>", "<MID>", "<SUF>", "<PAD>", "<REPO>", "[PAD]", "<reponame>",
  "<|code_prefix|>", "<|code_middle|>", "<|code_suffix|>", "<|prefix|>", "<|middle|>", "<|suffix|>",
]);
// llama.cpp also ends generation at these fill-in-the-middle tokens.
const FIM_END_TEXTS: ReadonlySet<string> = new Set(["<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<reponame>", "<REPO>"]);

const NO_MERGES = new GgufStringTable(new Uint8Array(0), new Uint32Array(0));
/** First UTF-8 bytes of the texts above: all ASCII. */
const SPECIAL_FIRST_BYTES: ReadonlySet<number> = new Set(
  [...END_OF_GENERATION_TEXTS, ...CONTROL_LOOKING_TEXTS, ...FIM_END_TEXTS].map((text) => {
    const code = text.charCodeAt(0);
    if (code >= 0x80) throw new Error(`"${text}" does not start with an ASCII character`);
    return code;
  }),
);

function optionalTokenId(file: GgufFile, key: string, tokenCount: number): number | null {
  if (!hasKey(file, key)) return null;
  const id = getInteger(file, key);
  // Converters write -1 or out-of-range ids for "none".
  return id >= 0 && id < tokenCount ? id : null;
}

export function readVocabulary(file: GgufFile): Vocabulary {
  const modelName = getString(file, "tokenizer.ggml.model");
  if (modelName !== "gpt2" && modelName !== "llama") {
    throw new GgufError(`${file.path}: tokenizer model "${modelName}" is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)`);
  }
  const model: TokenizerModel = modelName;
  const tokens = getStringTable(file, "tokenizer.ggml.tokens");
  if (tokens.length === 0 || tokens.length > VOCABULARY_TOKENS_MAX) {
    throw new GgufError(`${file.path}: tokenizer.ggml.tokens has ${tokens.length} tokens`);
  }
  const tokenTypes = new Uint8Array(tokens.length).fill(TokenType.Normal);
  if (hasKey(file, "tokenizer.ggml.token_type")) {
    const types = getNumberArray(file, "tokenizer.ggml.token_type");
    if (types.length !== tokens.length) {
      throw new GgufError(`${file.path}: tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`);
    }
    types.forEach((type, id) => (tokenTypes[id] = type >= 0 && type <= TokenType.Byte ? type : TokenType.Undefined));
  }
  // Only SentencePiece reads scores: a BPE vocabulary without them gets an empty array, not 600 KB of zeros.
  const scores = new Float32Array(model === "llama" || hasKey(file, "tokenizer.ggml.scores") ? tokens.length : 0);
  if (hasKey(file, "tokenizer.ggml.scores")) {
    const values = getNumberArray(file, "tokenizer.ggml.scores");
    if (values.length !== tokens.length) {
      throw new GgufError(`${file.path}: tokenizer.ggml.scores has ${values.length} entries for ${tokens.length} tokens`);
    }
    scores.set(values);
  }
  let merges = NO_MERGES;
  if (model === "gpt2") {
    if (!hasKey(file, "tokenizer.ggml.merges")) throw new GgufError(`${file.path}: a gpt2 tokenizer needs tokenizer.ggml.merges`);
    merges = getStringTable(file, "tokenizer.ggml.merges");
  }
  const tokenCount = tokens.length;
  const isSentencePiece = model === "llama";
  // llama.cpp's defaults per tokenizer family, which the file's own keys override.
  const bosTokenId = hasKey(file, "tokenizer.ggml.bos_token_id") ? optionalTokenId(file, "tokenizer.ggml.bos_token_id", tokenCount) : isSentencePiece ? 1 : null;
  const eosTokenId = hasKey(file, "tokenizer.ggml.eos_token_id") ? optionalTokenId(file, "tokenizer.ggml.eos_token_id", tokenCount) : isSentencePiece ? 2 : null;
  const unknownTokenId = hasKey(file, "tokenizer.ggml.unknown_token_id") ? optionalTokenId(file, "tokenizer.ggml.unknown_token_id", tokenCount) : isSentencePiece ? 0 : null;
  const pre = getString(file, "tokenizer.ggml.pre", "default");
  const preConfig = preTokenizerConfig(pre);
  const addBos = getBool(file, "tokenizer.ggml.add_bos_token", isSentencePiece || (model === "gpt2" && preConfig.addBosByDefault));
  const addEos = getBool(file, "tokenizer.ggml.add_eos_token", false);
  const addSpacePrefix = getBool(file, "tokenizer.ggml.add_space_prefix", isSentencePiece);

  let eotTokenId = optionalTokenId(file, "tokenizer.ggml.eot_token_id", tokenCount);
  const endOfGeneration = new Set<number>();
  for (let id = 0; id < tokenCount; id++) {
    // Only a token that starts like one of the texts is decoded: 150k short-lived strings otherwise.
    const start = tokens.startOf(id);
    if (start === tokens.ends[id] || !SPECIAL_FIRST_BYTES.has(tokens.bytes[start]!)) continue;
    const text = tokens.at(id);
    const isEndOfGeneration = END_OF_GENERATION_TEXTS.has(text);
    if (isEndOfGeneration || CONTROL_LOOKING_TEXTS.has(text)) tokenTypes[id] = TokenType.Control;
    if (isEndOfGeneration || FIM_END_TEXTS.has(text)) endOfGeneration.add(id);
    if (eotTokenId === null && isEndOfGeneration && text !== "<|eom_id|>") eotTokenId = id;
  }
  const eomTokenId = optionalTokenId(file, "tokenizer.ggml.eom_token_id", tokenCount);
  for (const id of [eosTokenId, eotTokenId, eomTokenId]) if (id !== null) endOfGeneration.add(id);

  return {
    model,
    pre,
    tokens,
    tokenTypes,
    scores,
    merges,
    bosTokenId,
    eosTokenId,
    eotTokenId,
    unknownTokenId,
    paddingTokenId: optionalTokenId(file, "tokenizer.ggml.padding_token_id", tokenCount),
    addBos,
    addEos,
    addSpacePrefix,
    cleanSpaces: model === "gpt2" && preConfig.cleanSpaces,
    endOfGenerationTokenIds: endOfGeneration,
    chatTemplate: hasKey(file, "tokenizer.chat_template") ? getString(file, "tokenizer.chat_template") : null,
  };
}
