// Pre-tokenizers split text into words before BPE merges, selected by `tokenizer.ggml.pre`. The
// patterns are the ones the model families' tokenizer.json files declare; JavaScript has no inline
// (?i:…), so the contraction alternatives spell out both cases.

const CONTRACTIONS = "'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])";

/** Llama 3 ("llama-bpe"): numbers in groups of up to three digits. */
const LLAMA3_PATTERN =
  `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

/** Qwen 2/2.5/3 ("qwen2"): like Llama 3 but one digit per word. */
const QWEN2_PATTERN =
  `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

/** GPT-2's original split, llama.cpp's fallback for unknown pre-tokenizer names. */
const GPT2_PATTERN = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`;

const PATTERNS: ReadonlyMap<string, string> = new Map([
  ["llama-bpe", LLAMA3_PATTERN],
  ["llama3", LLAMA3_PATTERN],
  ["smaug-bpe", LLAMA3_PATTERN],
  ["qwen2", QWEN2_PATTERN],
  ["deepseek-r1-qwen", QWEN2_PATTERN],
  ["gpt2", GPT2_PATTERN],
  ["default", GPT2_PATTERN],
]);

export function knownPreTokenizers(): readonly string[] {
  return [...PATTERNS.keys()];
}

/** Splits `text` into pre-tokens; unknown names fall back to GPT-2's split, as llama.cpp does. */
export function preTokenizerFor(name: string): (text: string) => string[] {
  const pattern = PATTERNS.get(name) ?? GPT2_PATTERN;
  return (text) => {
    const regex = new RegExp(pattern, "gu");
    return text.match(regex) ?? [];
  };
}
