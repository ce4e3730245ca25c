// Turns a stream of byte pieces into text without ever emitting half a character: a multi-byte
// UTF-8 sequence split across tokens is held back until its last byte arrives. Invalid bytes become
// U+FFFD at once, so nothing is held forever.

// ignoreBOM: a leading U+FEFF is text to keep, not a marker to strip.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Length of the sequence a lead byte starts, or 0 for a byte that cannot start one. */
function sequenceLength(byte: number): number {
  if (byte < 0x80) return 1;
  if (byte >= 0xc2 && byte <= 0xdf) return 2;
  if (byte >= 0xe0 && byte <= 0xef) return 3;
  if (byte >= 0xf0 && byte <= 0xf4) return 4;
  return 0;
}

/** How many bytes at the end of `bytes` are the start of a sequence still waiting for its rest. */
export function incompleteTailLength(bytes: Uint8Array): number {
  const lookback = Math.min(3, bytes.length);
  for (let back = 1; back <= lookback; back++) {
    const byte = bytes[bytes.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // continuation: keep looking for the lead byte
    const needed = sequenceLength(byte);
    return needed > back ? back : 0;
  }
  return 0;
}

export class Utf8StreamDecoder {
  private pending: Uint8Array = new Uint8Array(0);

  /** Appends bytes and returns the text that is now complete. */
  push(bytes: Uint8Array): string {
    let all = bytes;
    if (this.pending.length > 0) {
      all = new Uint8Array(this.pending.length + bytes.length);
      all.set(this.pending);
      all.set(bytes, this.pending.length);
    }
    const holdBytes = incompleteTailLength(all);
    this.pending = all.slice(all.length - holdBytes);
    return decoder.decode(all.subarray(0, all.length - holdBytes));
  }

  /** Bytes held back, waiting for the rest of a character. */
  get pendingByteCount(): number {
    return this.pending.length;
  }

  /** Ends the stream: whatever is held becomes U+FFFD. */
  flush(): string {
    const rest = decoder.decode(this.pending);
    this.pending = new Uint8Array(0);
    return rest;
  }
}
