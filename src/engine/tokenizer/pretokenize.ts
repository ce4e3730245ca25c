// Pre-tokenizers split text into words before BPE merges, selected by `tokenizer.ggml.pre`. The
// patterns are the ones the model families' tokenizer.json files declare, as llama.cpp applies them:
// each regex of a list splits every piece further, and text between matches stays a piece.

const CONTRACTIONS = "'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])";

/** Llama 3 ("llama-bpe"): numbers in groups of up to three digits. */
const LLAMA3_PATTERN =
  `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

/** Qwen 2/2.5/3 ("qwen2"): like Llama 3 but one digit per word. */
const QWEN2_PATTERN =
  `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

/** llama.cpp's "default" (GPT-2 style) pre-tokenizer, a list applied in turn. */
const DEFAULT_PATTERNS: readonly string[] = [
  "[\\p{P}\\$\\+<=>\\^~\\|]+",
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
  "\\p{N}+",
  "[0-9][0-9][0-9]",
];

const PATTERNS: ReadonlyMap<string, readonly string[]> = new Map([
  ["llama-bpe", [LLAMA3_PATTERN]],
  ["llama3", [LLAMA3_PATTERN]],
  ["llama-v3", [LLAMA3_PATTERN]],
  ["smaug-bpe", [LLAMA3_PATTERN]],
  ["falcon3", [LLAMA3_PATTERN]],
  ["pixtral", [LLAMA3_PATTERN]],
  ["qwen2", [QWEN2_PATTERN]],
  ["deepseek-r1-qwen", [QWEN2_PATTERN]],
  ["default", DEFAULT_PATTERNS],
]);

// Unicode's White_Space property, which llama.cpp uses for \s. JavaScript's \s differs: it has
// U+FEFF and lacks U+0085.
const WHITESPACE = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

function withUnicodeWhitespace(pattern: string): string {
  return pattern
    .replaceAll("[^\\s", `[^${WHITESPACE}`)
    .replaceAll("\\s", `[${WHITESPACE}]`)
    .replaceAll("\\S", `[^${WHITESPACE}]`);
}

export function isKnownPreTokenizer(name: string): boolean {
  return PATTERNS.has(name);
}

function splitKeepingGaps(piece: string, regex: RegExp): string[] {
  const out: string[] = [];
  let position = 0;
  regex.lastIndex = 0;
  for (let match = regex.exec(piece); match !== null; match = regex.exec(piece)) {
    if (match[0].length === 0) {
      regex.lastIndex++;
      continue;
    }
    if (match.index > position) out.push(piece.slice(position, match.index));
    out.push(match[0]);
    position = match.index + match[0].length;
  }
  if (position < piece.length) out.push(piece.slice(position));
  return out;
}

/** Splits text into pre-tokens; unknown names use llama.cpp's "default" split. */
export function preTokenizerFor(name: string): (text: string) => string[] {
  const regexes = (PATTERNS.get(name) ?? DEFAULT_PATTERNS).map((pattern) => new RegExp(withUnicodeWhitespace(pattern), "gu"));
  return (text) => {
    let pieces = text.length > 0 ? [text] : [];
    for (const regex of regexes) pieces = pieces.flatMap((piece) => splitKeepingGaps(piece, regex));
    return pieces;
  };
}
