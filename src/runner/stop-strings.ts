// Stop strings with OpenAI semantics: neither the stop string nor anything after it is emitted.
// Text arrives a token at a time, and a stop string may span several tokens, so text that could still
// turn into a stop string is held back until it either completes one (dropped) or cannot (emitted).

export interface StopScan {
  /** Text that is safe to emit now. */
  readonly emit: string;
  /** True when a stop string completed; nothing more may be emitted. */
  readonly stopped: boolean;
}

export class StopStringFilter {
  private held = "";
  private stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  push(text: string): StopScan {
    if (this.stopped) return { emit: "", stopped: true };
    const buffer = this.held + text;
    const stopIndex = earliestStopIndex(buffer, this.stops);
    if (stopIndex !== null) {
      this.held = "";
      this.stopped = true;
      return { emit: buffer.slice(0, stopIndex), stopped: true };
    }
    const heldLength = heldSuffixLength(buffer, this.stops);
    this.held = buffer.slice(buffer.length - heldLength);
    return { emit: buffer.slice(0, buffer.length - heldLength), stopped: false };
  }

  /** At the end of generation (not by a stop string), held text is ordinary text. */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }
}

function earliestStopIndex(buffer: string, stops: readonly string[]): number | null {
  let earliest: number | null = null;
  for (const stop of stops) {
    const index = buffer.indexOf(stop);
    if (index !== -1 && (earliest === null || index < earliest)) earliest = index;
  }
  return earliest;
}

/** Length of the longest suffix of `buffer` that is a proper prefix of some stop string. */
export function heldSuffixLength(buffer: string, stops: readonly string[]): number {
  let longest = 0;
  for (const stop of stops) {
    const lengthMax = Math.min(stop.length - 1, buffer.length);
    for (let length = lengthMax; length > longest; length--) {
      if (buffer.endsWith(stop.slice(0, length))) {
        longest = length;
        break;
      }
    }
  }
  // Never split a surrogate pair between what is emitted and what is held.
  const cut = buffer.length - longest;
  if (cut > 0 && isHighSurrogate(buffer.charCodeAt(cut - 1))) longest += 1;
  return longest;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
