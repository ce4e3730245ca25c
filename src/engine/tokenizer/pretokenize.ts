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

/** StarCoder, SmolLM, Command-R: digits alone, then GPT-2's split. */
const STARCODER_PATTERNS: readonly string[] = ["\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"];
const GPT2_PATTERNS: readonly string[] = ["'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"];
const FALCON_PATTERNS: readonly string[] = [
  "[\\p{P}\\$\\+<=>\\^~\\|`]+",
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
  "[0-9][0-9][0-9]",
];
/** Mistral's Tekken, as llama.cpp adapts it: "upper" means any letter but a-z, "lower" any letter but A-Z. */
const TEKKEN_PATTERN =
  "[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])*(?:(?=\\p{L})[^A-Z])+|[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])+(?:(?=\\p{L})[^A-Z])*|" +
  "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** How llama.cpp treats a `tokenizer.ggml.pre` name (llama-vocab.cpp). */
export interface PreTokenizerConfig {
  readonly patterns: readonly string[];
  /** A word that is itself a token is taken whole, without merging (Llama 3, Tekken). */
  readonly ignoreMerges: boolean;
  /** BOS is added unless the file says otherwise. */
  readonly addBosByDefault: boolean;
  /** llama.cpp's detokenize tidies spaces before punctuation for this vocabulary. */
  readonly cleanSpaces: boolean;
}

function config(patterns: readonly string[], flags: Partial<Omit<PreTokenizerConfig, "patterns">> = {}): PreTokenizerConfig {
  return { patterns, ignoreMerges: false, addBosByDefault: false, cleanSpaces: true, ...flags };
}

const LLAMA3 = config([LLAMA3_PATTERN], { ignoreMerges: true, addBosByDefault: true });
const QWEN2 = config([QWEN2_PATTERN], { cleanSpaces: false });
const DEFAULT = config(DEFAULT_PATTERNS);

const CONFIGS: ReadonlyMap<string, PreTokenizerConfig> = new Map([
  ...["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"].map((name) => [name, LLAMA3] as const),
  ["dbrx", config([LLAMA3_PATTERN])],
  ["smaug-bpe", config([LLAMA3_PATTERN])],
  ...["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"].map((name) => [name, QWEN2] as const),
  ["stablelm2", config([QWEN2_PATTERN])],
  ["megrez", config([QWEN2_PATTERN])],
  ...["starcoder", "refact", "codeshell", "exaone", "minerva-7b"].map((name) => [name, config(STARCODER_PATTERNS)] as const),
  ...["smollm", "command-r"].map((name) => [name, config(STARCODER_PATTERNS, { cleanSpaces: false })] as const),
  ...["gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "exaone4"].map((name) => [name, config(GPT2_PATTERNS)] as const),
  ["falcon", config(FALCON_PATTERNS)],
  ["tekken", config([TEKKEN_PATTERN], { ignoreMerges: true, addBosByDefault: true, cleanSpaces: false })],
  ["default", DEFAULT],
]);

/** The configuration for a pre-tokenizer name; unknown names get llama.cpp's "default" (llama.cpp itself refuses them). */
export function preTokenizerConfig(name: string): PreTokenizerConfig {
  return CONFIGS.get(name) ?? DEFAULT;
}

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
  return CONFIGS.has(name);
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
  const regexes = preTokenizerConfig(name).patterns.map((pattern) => new RegExp(withUnicodeWhitespace(pattern), "gu"));
  return (text) => {
    let pieces = text.length > 0 ? [text] : [];
    for (const regex of regexes) pieces = pieces.flatMap((piece) => splitKeepingGaps(piece, regex));
    return pieces;
  };
}
