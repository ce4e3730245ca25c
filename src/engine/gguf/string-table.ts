// A GGUF string array kept as the file's UTF-8 bytes plus end offsets. A vocabulary and its merges
// are ~150k strings each; as JS strings they cost tens of MB of heap in every process that only
// wanted the tensor table (a middle pipeline stage, the model store). Strings are decoded on demand.

// ignoreBOM: a leading U+FEFF is text to keep, not a marker to strip.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

export class GgufStringTable {
  /**
   * `ends[i]` is the offset in `bytes` just past string i; string i starts at `ends[i - 1]` (0 for
   * the first).
   */
  constructor(
    /** Every string's UTF-8 bytes, one after another. */
    readonly bytes: Uint8Array,
    readonly ends: Uint32Array,
  ) {
    const last = ends.length > 0 ? ends[ends.length - 1]! : 0;
    if (last > bytes.length) throw new RangeError(`string table ends at ${last}, past its ${bytes.length} bytes`);
  }

  static fromStrings(strings: readonly string[]): GgufStringTable {
    const encoder = new TextEncoder();
    const parts = strings.map((s) => encoder.encode(s));
    const ends = new Uint32Array(parts.length);
    let total = 0;
    parts.forEach((part, index) => (ends[index] = total += part.length));
    const bytes = new Uint8Array(total);
    parts.forEach((part, index) => bytes.set(part, index === 0 ? 0 : ends[index - 1]!));
    return new GgufStringTable(bytes, ends);
  }

  get length(): number {
    return this.ends.length;
  }

  /** Bytes held for the strings (their UTF-8 text) plus the offsets. */
  get sizeBytes(): number {
    return this.bytes.byteLength + this.ends.byteLength;
  }

  /** Where string `index` starts in `bytes`. */
  startOf(index: number): number {
    return index === 0 ? 0 : this.ends[index - 1]!;
  }

  /** The UTF-8 bytes of string `index`: a view, not a copy. */
  bytesAt(index: number): Uint8Array {
    this.check(index);
    return this.bytes.subarray(index === 0 ? 0 : this.ends[index - 1]!, this.ends[index]!);
  }

  at(index: number): string {
    return utf8.decode(this.bytesAt(index));
  }

  /** Every string, decoded afresh (the caller owns the array). */
  toArray(): string[] {
    const out = new Array<string>(this.ends.length);
    for (let index = 0; index < out.length; index++) out[index] = this.at(index);
    return out;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.ends.length) {
      throw new RangeError(`string ${index} is outside a table of ${this.ends.length}`);
    }
  }
}
