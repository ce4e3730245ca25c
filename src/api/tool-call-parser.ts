// Finds tool calls in generated text as it streams, in the two formats tool-capable open models
// write: Qwen / Hermes wrap each call in `<tool_call>{"name":…,"arguments":{…}}</tool_call>`
// anywhere in the answer; Llama 3.x answers with nothing but the call's JSON,
// `{"name":…,"parameters":{…}}` (optionally after `<|python_tag|>`, several joined by ";").
// Pure: text in, pieces out, so each API adapter turns the same pieces into its own wire form.
//
// A call's arguments are streamed as the model writes them once `{"name": "…", "arguments":` (or
// "parameters") has been seen; other key orders are parsed when the call closes. The first
// "</tool_call>" closes a Qwen call, even inside a JSON string: small models drop braces more often
// than they quote that tag. A Llama answer that starts with "{" but not like a call is held to the
// end, when it is either a call in another key order or a plain JSON answer.

export type ParsedPiece =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "toolCallStart"; readonly index: number; readonly name: string }
  /** Concatenated, a call's deltas are exactly its final `arguments`. */
  | { readonly type: "toolCallArguments"; readonly index: number; readonly delta: string }
  | { readonly type: "toolCallEnd"; readonly index: number; readonly name: string; readonly arguments: string };

/** Characters held while deciding (an unclosed call, a JSON answer); past it the text is plain text. */
export const TOOL_CALL_TEXT_CHARS_MAX = 1 << 20;

const OPEN_TAG = "<tool_call>";
const CLOSE_TAG = "</tool_call>";
const PYTHON_TAG = "<|python_tag|>";
/** `{"name": "…", "arguments": ` — what must precede arguments for them to be streamed. */
const CALL_PREFIX = /^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)/;
/** The same at the start of a Llama answer or after the ";" between its calls. */
const JSON_CALL_PREFIX = /^\s*(?:<\|python_tag\|>)?\s*;?\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)/;

interface NamedCall {
  readonly name: string;
  readonly arguments: string;
}

/** A parsed call object's name and arguments (as JSON text), or null when it is not a call. */
export function callFromJson(value: unknown): NamedCall | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const record = value as Record<string, unknown>;
  // OpenAI-style {"function": {...}} wrappers appear in fine-tunes' outputs too.
  const inner = typeof record["function"] === "object" && record["function"] !== null ? (record["function"] as Record<string, unknown>) : record;
  const name = inner["name"];
  if (typeof name !== "string" || name === "") return null;
  const args = inner["arguments"] ?? inner["parameters"] ?? {};
  if (typeof args === "string") {
    // Some models write the arguments as a JSON string, as OpenAI's wire format does.
    try {
      const parsed: unknown = JSON.parse(args);
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) return { name, arguments: args };
    } catch {
      return null;
    }
    return null;
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) return null;
  return { name, arguments: JSON.stringify(args) };
}

function tryParseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

/** The calls of a whole Llama-style answer (one object, an array, or objects joined by ";"), else null. */
export function callsFromWholeAnswer(text: string): NamedCall[] | null {
  let body = text.trim();
  if (body.startsWith(PYTHON_TAG)) body = body.slice(PYTHON_TAG.length).trim();
  if (body === "") return null;
  const whole = tryParseJson(body);
  const values: unknown[] = [];
  if (whole.ok) {
    if (Array.isArray(whole.value)) values.push(...(whole.value as unknown[]));
    else values.push(whole.value);
  } else {
    for (const part of body.split(/;\s*(?=\{)/)) {
      const parsed = tryParseJson(part.trim());
      if (!parsed.ok) return null;
      values.push(parsed.value);
    }
  }
  if (values.length === 0) return null;
  const calls: NamedCall[] = [];
  for (const value of values) {
    const call = callFromJson(value);
    if (call === null) return null;
    calls.push(call);
  }
  return calls;
}

/** Scans a JSON value's text; `end` is the index just past it once complete, else null. */
class JsonValueScanner {
  private inString = false;
  private escaped = false;
  private started: boolean;

  /** `depth` 1: already inside an object, complete at its closing brace. */
  constructor(private depth = 0) {
    this.started = depth > 0;
  }

  /** Feeds `text`; returns how many of its characters belong to the value (all, or up to its end). */
  feed(text: string): { consumed: number; complete: boolean } {
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === "\\") this.escaped = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (ch === '"') this.inString = true;
      else if (ch === "{" || ch === "[") {
        this.depth += 1;
        this.started = true;
      } else if (ch === "}" || ch === "]") {
        this.depth -= 1;
        if (this.started && this.depth === 0) return { consumed: i + 1, complete: true };
      }
    }
    return { consumed: text.length, complete: false };
  }
}

/** How many trailing characters of `text` could begin `tag` (so they are held, not shown). */
function partialTagSuffix(text: string, tag: string): number {
  for (let length = Math.min(tag.length - 1, text.length); length > 0; length--) {
    if (text.endsWith(tag.slice(0, length))) return length;
  }
  return 0;
}

type Mode = "undecided" | "text" | "call" | "wholeJson";

export class ToolCallParser {
  private mode: Mode = "undecided";
  /** Text not yet handed out: the undecided start, a partial tag, a call's body, a whole JSON answer. */
  private held = "";
  /** Whitespace after the last call, shown only if more text follows. */
  private heldWhitespace = "";
  private textShown = false;
  private callIndex = 0;
  /** Within a streamed call: its name once known, and the arguments scanner. */
  private streamingName: string | null = null;
  private streamedArguments = "";
  private scanner: JsonValueScanner | null = null;
  private argumentsComplete = false;
  /** A streamed Llama call: finds the brace that closes the call object after its arguments. */
  private closer: JsonValueScanner | null = null;

  /** Calls completed so far. */
  get callCount(): number {
    return this.callIndex;
  }

  push(text: string): ParsedPiece[] {
    const out: ParsedPiece[] = [];
    this.held += text;
    this.drain(out, false);
    return out;
  }

  /** The answer ended: whatever is held is settled as calls or text. */
  end(): ParsedPiece[] {
    const out: ParsedPiece[] = [];
    this.drain(out, true);
    if (this.mode === "wholeJson") this.settleJsonCalls(out);
    else if (this.mode === "call") this.settleCall(out, this.held, true);
    else if (this.held !== "") this.emitText(out, this.held);
    this.held = "";
    if (this.callIndex === 0 && this.heldWhitespace !== "") out.push({ type: "text", text: this.heldWhitespace });
    this.heldWhitespace = "";
    return out;
  }

  private drain(out: ParsedPiece[], ended: boolean): void {
    for (;;) {
      const before = this.mode + this.held.length;
      if (this.mode === "undecided") this.decide(ended);
      else if (this.mode === "text") this.scanText(out, ended);
      else if (this.mode === "call") this.scanCall(out);
      else this.scanJsonCalls(out);
      if (this.held.length > TOOL_CALL_TEXT_CHARS_MAX && this.streamingName === null && (this.mode === "wholeJson" || this.mode === "call")) {
        // Too long to be a call: show it as the text it is.
        this.emitText(out, (this.mode === "call" ? OPEN_TAG : "") + this.held);
        this.held = "";
        this.mode = "text";
      }
      if (this.mode + this.held.length === before) return;
    }
  }

  private decide(ended: boolean): void {
    const start = this.held.trimStart();
    if (start === "") return;
    if (start.startsWith("{") || start.startsWith(PYTHON_TAG)) this.mode = "wholeJson";
    else if (PYTHON_TAG.startsWith(start) && !ended) return;
    else this.mode = "text";
  }

  private scanText(out: ParsedPiece[], ended: boolean): void {
    const at = this.held.indexOf(OPEN_TAG);
    if (at !== -1) {
      const before = this.held.slice(0, at);
      // Whitespace between text and the first call belongs to the text; between calls it is noise.
      if (before.trim() !== "" || (this.callIndex === 0 && this.textShown)) this.emitText(out, before);
      this.held = this.held.slice(at + OPEN_TAG.length);
      this.heldWhitespace = "";
      this.startCall();
      return;
    }
    const keep = ended ? 0 : partialTagSuffix(this.held, OPEN_TAG);
    const shown = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    if (shown === "") return;
    if (shown.trim() === "" && !ended) {
      // Whitespace may only separate two calls: hold it until real text follows.
      this.heldWhitespace += shown;
      return;
    }
    this.emitText(out, shown);
  }

  private emitText(out: ParsedPiece[], text: string): void {
    const withWhitespace = this.heldWhitespace + text;
    this.heldWhitespace = "";
    if (withWhitespace === "" || (this.callIndex > 0 && withWhitespace.trim() === "")) return;
    this.textShown = true;
    out.push({ type: "text", text: withWhitespace });
  }

  private startCall(): void {
    this.mode = "call";
    this.streamingName = null;
    this.streamedArguments = "";
    this.scanner = null;
    this.argumentsComplete = false;
  }

  private scanCall(out: ParsedPiece[]): void {
    if (this.streamingName === null) {
      const match = CALL_PREFIX.exec(this.held);
      if (match !== null) {
        const name = tryParseJson(`"${match[1] ?? ""}"`);
        if (name.ok && typeof name.value === "string" && name.value !== "") {
          this.streamingName = name.value;
          this.scanner = new JsonValueScanner();
          out.push({ type: "toolCallStart", index: this.callIndex, name: this.streamingName });
          this.held = this.held.slice(match[0].length);
        }
      }
    }
    if (this.scanner !== null && !this.argumentsComplete) {
      const closeAt = this.held.indexOf(CLOSE_TAG);
      const scannable = closeAt === -1 ? this.held : this.held.slice(0, closeAt);
      const { consumed, complete } = this.scanner.feed(scannable);
      const delta = scannable.slice(0, consumed);
      if (delta !== "") {
        this.streamedArguments += delta;
        out.push({ type: "toolCallArguments", index: this.callIndex, delta });
      }
      this.held = this.held.slice(consumed);
      this.argumentsComplete = complete;
    }
    const closeAt = this.held.indexOf(CLOSE_TAG);
    if (closeAt === -1) return;
    const body = this.held.slice(0, closeAt);
    this.held = this.held.slice(closeAt + CLOSE_TAG.length);
    this.settleCall(out, body, false);
  }

  /** A call's body is complete (closed, or the answer ended): emit it as a call, or as the text it was. */
  private settleCall(out: ParsedPiece[], body: string, ended: boolean): void {
    const index = this.callIndex;
    if (this.streamingName !== null) {
      // Arguments already went out as deltas; their total is the call's arguments.
      out.push({ type: "toolCallEnd", index, name: this.streamingName, arguments: this.streamedArguments });
      this.callIndex += 1;
    } else {
      const parsed = tryParseJson(body.trim());
      const call = parsed.ok ? callFromJson(parsed.value) : null;
      if (call === null) {
        out.push({ type: "text", text: OPEN_TAG + body + (ended ? "" : CLOSE_TAG) });
      } else {
        out.push({ type: "toolCallStart", index, name: call.name });
        out.push({ type: "toolCallArguments", index, delta: call.arguments });
        out.push({ type: "toolCallEnd", index, name: call.name, arguments: call.arguments });
        this.callIndex += 1;
      }
    }
    this.mode = "text";
    this.streamingName = null;
    this.scanner = null;
    if (ended) this.held = "";
  }

  /**
   * A Llama answer whose calls start with `{"name": "…", "parameters": ` streams them as they are
   * written; anything else is held and parsed whole at the end.
   */
  private scanJsonCalls(out: ParsedPiece[]): void {
    if (this.streamingName === null) {
      const match = JSON_CALL_PREFIX.exec(this.held);
      if (match === null) return;
      const name = tryParseJson(`"${match[1] ?? ""}"`);
      if (!name.ok || typeof name.value !== "string" || name.value === "") return;
      this.streamingName = name.value;
      this.streamedArguments = "";
      this.scanner = new JsonValueScanner();
      this.argumentsComplete = false;
      this.closer = null;
      out.push({ type: "toolCallStart", index: this.callIndex, name: this.streamingName });
      this.held = this.held.slice(match[0].length);
    }
    if (!this.argumentsComplete && this.scanner !== null) {
      const { consumed, complete } = this.scanner.feed(this.held);
      const delta = this.held.slice(0, consumed);
      if (delta !== "") {
        this.streamedArguments += delta;
        out.push({ type: "toolCallArguments", index: this.callIndex, delta });
      }
      this.held = this.held.slice(consumed);
      this.argumentsComplete = complete;
      if (!complete) return;
      this.closer = new JsonValueScanner(1);
    }
    if (this.closer === null) return;
    const { consumed, complete } = this.closer.feed(this.held);
    this.held = this.held.slice(consumed);
    if (!complete) return;
    out.push({ type: "toolCallEnd", index: this.callIndex, name: this.streamingName, arguments: this.streamedArguments });
    this.callIndex += 1;
    this.streamingName = null;
    this.scanner = null;
    this.closer = null;
  }

  private settleJsonCalls(out: ParsedPiece[]): void {
    if (this.streamingName !== null) {
      // Cut off (max_tokens) inside a call: it ends with what was written.
      out.push({ type: "toolCallEnd", index: this.callIndex, name: this.streamingName, arguments: this.streamedArguments });
      this.callIndex += 1;
      this.streamingName = null;
      return;
    }
    const rest = this.callIndex > 0 ? this.held.replace(/^\s*;/, "") : this.held;
    if (rest.trim() === "") return;
    const calls = callsFromWholeAnswer(rest);
    if (calls === null) {
      out.push({ type: "text", text: rest });
      return;
    }
    for (const call of calls) {
      const index = this.callIndex;
      out.push({ type: "toolCallStart", index, name: call.name });
      out.push({ type: "toolCallArguments", index, delta: call.arguments });
      out.push({ type: "toolCallEnd", index, name: call.name, arguments: call.arguments });
      this.callIndex += 1;
    }
  }
}

/** A parser that finds nothing: for requests without tools, so adapters have one code path. */
export class PlainTextParser {
  readonly callCount = 0;
  push(text: string): ParsedPiece[] {
    return text === "" ? [] : [{ type: "text", text }];
  }
  end(): ParsedPiece[] {
    return [];
  }
}

export type OutputParser = Pick<ToolCallParser, "push" | "end" | "callCount">;

export function outputParserFor(toolsOffered: boolean): OutputParser {
  return toolsOffered ? new ToolCallParser() : new PlainTextParser();
}

/** Pieces merged per call, for answers that are not streamed. */
export interface ParsedAnswer {
  readonly text: string;
  readonly calls: readonly NamedCall[];
}

export function parseWholeAnswer(text: string, toolsOffered: boolean): ParsedAnswer {
  const parser = outputParserFor(toolsOffered);
  return collectPieces([...parser.push(text), ...parser.end()]);
}

export function collectPieces(pieces: readonly ParsedPiece[]): ParsedAnswer {
  let text = "";
  const calls: NamedCall[] = [];
  for (const piece of pieces) {
    if (piece.type === "text") text += piece.text;
    else if (piece.type === "toolCallEnd") calls.push({ name: piece.name, arguments: piece.arguments });
  }
  return { text, calls };
}
