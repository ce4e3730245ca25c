// FakeEngine: a deterministic test double for the Engine contract. It needs no model file; it
// "generates" a fixed English text, with delays that busy-wait (blocking, like native compute) so
// cancellation and the watchdog are tested against an engine that does not yield.
//
// Tokens are word pieces (a word with its leading whitespace). A piece with non-ASCII characters is
// spelled as one token per UTF-8 byte (like SentencePiece's byte fallback), so a text such as
// FAKE_ENGINE_UTF8_TEXT splits multi-byte characters across tokens and exercises streaming
// detokenization.
import { EngineInputError } from "../../src/engine/engine.ts";
import type { Engine, EngineModule, EngineShardSpec, SampledToken, Sequence } from "../../src/engine/engine.ts";
import type { ChatMessage, GenerationParams, ToolDefinition } from "../../src/shared/types.ts";

export const FAKE_ENGINE_DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog.";
/** "é" and "è" are two UTF-8 bytes each, so each becomes two byte tokens. */
export const FAKE_ENGINE_UTF8_TEXT = "Un café crème, très bien.";
const CONTEXT_SIZE_DEFAULT = 4096;
const REPLY_TOKENS_DEFAULT = 1 << 20;

export const FAKE_EOS_TOKEN_ID = 0;
/** Ids 1..256 are the bytes 0..255; word pieces follow. */
const BYTE_TOKEN_ID_FIRST = 1;
const WORD_TOKEN_ID_FIRST = BYTE_TOKEN_ID_FIRST + 256;

export interface FakeEngineOptions {
  readonly tokenDelayMs: number;
  readonly prefillDelayMsPerToken: number;
  readonly loadDelayMsPerLayer: number;
  readonly text: string;
  readonly maxReplyTokens: number;
  readonly failLoad: boolean;
  readonly hangOnPromptContaining: string | null;
  readonly contextSize: number;
  /** Decode step (0-based) at which decode throws a plain Error (an engine fault, not an input error). */
  readonly failDecodeAtStep: number | null;
  /** After load, send one malformed IPC message to the parent (tests the supervisor's validation). */
  readonly sendInvalidIpcAfterLoad: boolean;
}

export function fakeEngineOptions(spec: EngineShardSpec): FakeEngineOptions {
  const o = spec.options;
  return {
    tokenDelayMs: numberOption(o, "tokenDelayMs", 0),
    prefillDelayMsPerToken: numberOption(o, "prefillDelayMsPerToken", 0),
    loadDelayMsPerLayer: numberOption(o, "loadDelayMsPerLayer", 0),
    text: typeof o["text"] === "string" && o["text"] !== "" ? o["text"] : FAKE_ENGINE_DEFAULT_TEXT,
    maxReplyTokens: numberOption(o, "maxReplyTokens", REPLY_TOKENS_DEFAULT),
    failLoad: o["failLoad"] === true,
    hangOnPromptContaining: typeof o["hangOnPromptContaining"] === "string" ? o["hangOnPromptContaining"] : null,
    contextSize: numberOption(o, "contextSize", spec.contextSize ?? CONTEXT_SIZE_DEFAULT),
    failDecodeAtStep: typeof o["failDecodeAtStep"] === "number" ? o["failDecodeAtStep"] : null,
    sendInvalidIpcAfterLoad: o["sendInvalidIpcAfterLoad"] === true,
  };
}

function numberOption(options: Readonly<Record<string, unknown>>, name: string, fallback: number): number {
  const value = options[name];
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

/** Blocks the thread, as a native kernel would. */
function busyWaitMs(ms: number): void {
  if (ms <= 0) return;
  const untilMs = performance.now() + ms;
  while (performance.now() < untilMs) {
    // spin
  }
}

/** What a test can observe about the engine's use. */
export interface FakeEngineStats {
  loaded: boolean;
  closed: boolean;
  sequencesOpened: number;
  sequencesFreed: number;
  prefillChunkSizes: number[];
  decodeCalls: number;
}

class FakeVocabulary {
  private readonly pieces: string[] = [];
  private readonly idByPiece = new Map<string, number>();
  private readonly encoder = new TextEncoder();

  encode(text: string): number[] {
    const ids: number[] = [];
    for (const word of text.match(/\s*\S+|\s+/g) ?? []) {
      // ASCII runs are word pieces; anything else falls back to one token per UTF-8 byte.
      for (const run of word.match(/[\x00-\x7f]+|[^\x00-\x7f]+/g) ?? []) {
        if (/^[\x00-\x7f]/.test(run)) ids.push(this.wordId(run));
        else for (const byte of this.encoder.encode(run)) ids.push(BYTE_TOKEN_ID_FIRST + byte);
      }
    }
    return ids;
  }

  bytesOf(tokenId: number): Uint8Array {
    if (tokenId === FAKE_EOS_TOKEN_ID) return new Uint8Array();
    if (tokenId < WORD_TOKEN_ID_FIRST) return Uint8Array.of(tokenId - BYTE_TOKEN_ID_FIRST);
    const piece = this.pieces[tokenId - WORD_TOKEN_ID_FIRST];
    if (piece === undefined) throw new Error(`FakeEngine: unknown token id ${tokenId}`);
    return this.encoder.encode(piece);
  }

  private wordId(piece: string): number {
    const known = this.idByPiece.get(piece);
    if (known !== undefined) return known;
    const id = WORD_TOKEN_ID_FIRST + this.pieces.length;
    this.pieces.push(piece);
    this.idByPiece.set(piece, id);
    return id;
  }
}

export class FakeEngine implements Engine {
  readonly options: FakeEngineOptions;
  readonly stats: FakeEngineStats = {
    loaded: false,
    closed: false,
    sequencesOpened: 0,
    sequencesFreed: 0,
    prefillChunkSizes: [],
    decodeCalls: 0,
  };
  readonly vocabulary = new FakeVocabulary();
  /** The reply's first pass, then the pass that repeats (with a separating space). */
  private readonly replyFirstIds: number[];
  private readonly replyRepeatIds: number[];
  private lastPromptText = "";

  constructor(private readonly spec: EngineShardSpec) {
    this.options = fakeEngineOptions(spec);
    this.replyFirstIds = this.vocabulary.encode(this.options.text);
    this.replyRepeatIds = this.vocabulary.encode(` ${this.options.text}`);
  }

  async load(onProgress: (layersLoaded: number, layerCount: number) => void): Promise<void> {
    const layerCount = this.spec.layerEnd - this.spec.layerStart;
    for (let layer = 0; layer < layerCount; layer++) {
      busyWaitMs(this.options.loadDelayMsPerLayer);
      if (this.options.failLoad) throw new Error("FakeEngine: failLoad option set");
      onProgress(layer + 1, layerCount);
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.stats.loaded = true;
    if (this.options.sendInvalidIpcAfterLoad) process.send?.({ type: "notAMessage", from: "FakeEngine" });
  }

  async warmup(): Promise<void> {
    // Nothing is cached lazily, so there is nothing to warm.
  }

  /** Offered tools become one prompt line, so a test sees them arrive as extra prompt tokens. */
  encodeChat(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] = []): number[] {
    const toolLine = tools.length === 0 ? "" : `<tools> ${tools.map((t) => t.name).join(" ")}\n`;
    const text = toolLine + messages.map((m) => `<${m.role}> ${m.content}\n`).join("");
    const ids = this.vocabulary.encode(text);
    if (ids.length > this.options.contextSize) {
      throw new EngineInputError(`prompt has ${ids.length} tokens; the context holds ${this.options.contextSize}`);
    }
    this.lastPromptText = text;
    return ids;
  }

  openSequence(params: GenerationParams, promptTokenCount: number): Sequence {
    if (promptTokenCount > this.options.contextSize) {
      throw new EngineInputError(`prompt has ${promptTokenCount} tokens; the context holds ${this.options.contextSize}`);
    }
    this.stats.sequencesOpened += 1;
    const hang = this.options.hangOnPromptContaining !== null && this.lastPromptText.includes(this.options.hangOnPromptContaining);
    return new FakeSequence(this, params, hang);
  }

  close(): void {
    this.stats.closed = true;
  }

  /** Token the reply has at output position `position` (0-based). */
  replyTokenAt(position: number): number {
    if (position >= this.options.maxReplyTokens) return FAKE_EOS_TOKEN_ID;
    const first = this.replyFirstIds;
    if (position < first.length) return first[position] ?? FAKE_EOS_TOKEN_ID;
    const repeat = this.replyRepeatIds;
    return repeat[(position - first.length) % repeat.length] ?? FAKE_EOS_TOKEN_ID;
  }
}

class FakeSequence implements Sequence {
  private position = 0;
  private prefilledTokens = 0;
  private freed = false;
  private readonly decoder = new TextDecoder("utf-8");
  private readonly isolatedDecoder = new TextDecoder("utf-8");

  constructor(
    private readonly engine: FakeEngine,
    private readonly params: GenerationParams,
    private readonly hang: boolean,
  ) {}

  prefill(tokenIds: readonly number[]): void {
    this.assertLive();
    busyWaitMs(this.engine.options.prefillDelayMsPerToken * tokenIds.length);
    this.prefilledTokens += tokenIds.length;
    this.engine.stats.prefillChunkSizes.push(tokenIds.length);
  }

  sample(): SampledToken {
    this.assertLive();
    const contextFull = this.prefilledTokens + this.position >= this.engine.options.contextSize;
    const tokenId = contextFull ? FAKE_EOS_TOKEN_ID : this.engine.replyTokenAt(this.position);
    // Fake but deterministic probabilities, varied by the seed so a test can tell seeds apart.
    const seed = this.params.seed ?? 0;
    const logprob = -((((this.position + 1) * 7919 + seed) % 1000) / 1000);
    const topLogprobs = [{ tokenId, logprob }, { tokenId: this.engine.replyTokenAt(this.position + 1), logprob: logprob - 1 }];
    return { tokenId, logprob, topLogprobs: topLogprobs.slice(0, this.params.topLogprobs) };
  }

  decode(tokenId: number): void {
    this.assertLive();
    void tokenId;
    const step = this.engine.stats.decodeCalls;
    this.engine.stats.decodeCalls += 1;
    if (this.engine.options.failDecodeAtStep === step) throw new Error(`FakeEngine: decode failed at step ${step}`);
    if (this.hang) {
      for (;;) {
        // Never returns: the runner's heartbeat stops and the watchdog must kill the process.
      }
    }
    busyWaitMs(this.engine.options.tokenDelayMs);
    this.position += 1;
  }

  isEndOfGeneration(tokenId: number): boolean {
    return tokenId === FAKE_EOS_TOKEN_ID;
  }

  detokenize(tokenId: number): string {
    return this.decoder.decode(this.engine.vocabulary.bytesOf(tokenId), { stream: true });
  }

  tokenText(tokenId: number): string {
    return this.isolatedDecoder.decode(this.engine.vocabulary.bytesOf(tokenId));
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.engine.stats.sequencesFreed += 1;
  }

  private assertLive(): void {
    if (this.freed) throw new Error("FakeEngine: sequence used after free()");
  }
}

export function createEngine(spec: EngineShardSpec): Engine {
  return new FakeEngine(spec);
}

export const fakeEngineModule: EngineModule = { createEngine };

/** A shard spec for the fake engine; tests override what they need. */
export function fakeShardSpec(options: Partial<Record<keyof FakeEngineOptions, unknown>> = {}, layerCount = 4): EngineShardSpec {
  return {
    modelId: "fake-model",
    modelPath: null,
    layerStart: 0,
    layerEnd: layerCount,
    layerCount,
    contextSize: null,
    threads: 1,
    options,
  };
}
