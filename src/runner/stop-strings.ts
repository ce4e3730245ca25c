// Stop strings with OpenAI semantics: neither the stop string nor anything after it is emitted.
// Text arrives a token at a time, and a stop string may span several tokens, so text that could still
// turn into a stop string is held back until it either completes one (dropped) or cannot (emitted).
//
// Each stop string is matched by a Knuth–Morris–Pratt automaton fed one UTF-16 unit at a time, so the
// cost is linear in the generated text whatever the stop strings look like (a request may send long,
// repetitive ones). Generation stops where a stop string first completes; the cut is at its start.

export interface StopScan {
  /** Text that is safe to emit now. */
  readonly emit: string;
  /** True when a stop string completed; nothing more may be emitted. */
  readonly stopped: boolean;
}

class StopMatcher {
  /** failure[i]: length of the longest proper prefix of stop[0..i] that is also its suffix. */
  private readonly failure: Int32Array;
  /** Length of the longest prefix of the stop string that ends the text seen so far. */
  matchedLength = 0;

  constructor(readonly stop: string) {
    this.failure = prefixFunction(stop);
  }

  /** Feeds one UTF-16 unit; returns true when the whole stop string has just been seen. */
  step(code: number): boolean {
    let matched = this.matchedLength;
    while (matched > 0 && this.stop.charCodeAt(matched) !== code) matched = this.failure[matched - 1] ?? 0;
    if (this.stop.charCodeAt(matched) === code) matched += 1;
    if (matched === this.stop.length) {
      this.matchedLength = this.failure[matched - 1] ?? 0;
      return true;
    }
    this.matchedLength = matched;
    return false;
  }
}

function prefixFunction(text: string): Int32Array {
  const failure = new Int32Array(text.length);
  let matched = 0;
  for (let i = 1; i < text.length; i++) {
    while (matched > 0 && text.charCodeAt(i) !== text.charCodeAt(matched)) matched = failure[matched - 1] ?? 0;
    if (text.charCodeAt(i) === text.charCodeAt(matched)) matched += 1;
    failure[i] = matched;
  }
  return failure;
}

export class StopStringFilter {
  private readonly matchers: StopMatcher[];
  /** Text not yet emitted: it ends with the longest partial match of any stop string. */
  private held = "";
  private stopped = false;

  constructor(stops: readonly string[]) {
    this.matchers = stops.filter((s) => s.length > 0).map((s) => new StopMatcher(s));
  }

  push(text: string): StopScan {
    if (this.stopped) return { emit: "", stopped: true };
    const buffer = this.held + text;
    for (let i = 0; i < text.length; i++) {
      const stopStart = this.stepAll(text.charCodeAt(i), this.held.length + i);
      if (stopStart !== null) {
        this.stopped = true;
        this.held = "";
        return { emit: buffer.slice(0, stopStart), stopped: true };
      }
    }
    const cut = safeCut(buffer, buffer.length - this.longestPartialMatch());
    this.held = buffer.slice(cut);
    return { emit: buffer.slice(0, cut), stopped: false };
  }

  /** At the end of generation (not by a stop string), held text is ordinary text. */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }

  /**
   * Steps every matcher over the unit at `bufferIndex`; returns where the stop string that completed
   * there starts (the longest, when several complete at once), or null.
   */
  private stepAll(code: number, bufferIndex: number): number | null {
    let start: number | null = null;
    for (const matcher of this.matchers) {
      if (!matcher.step(code)) continue;
      const matchStart = bufferIndex - matcher.stop.length + 1;
      if (start === null || matchStart < start) start = matchStart;
    }
    return start;
  }

  private longestPartialMatch(): number {
    let longest = 0;
    for (const matcher of this.matchers) longest = Math.max(longest, matcher.matchedLength);
    return longest;
  }
}

/** Moves a cut left so that it never splits a surrogate pair between emitted and held text. */
function safeCut(text: string, cut: number): number {
  if (cut > 0 && isHighSurrogate(text.charCodeAt(cut - 1))) return cut - 1;
  return cut;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
