// Token text → id, and (left id, right id) → BPE merge rank, in flat typed arrays over the
// vocabulary's UTF-8 bytes. The JS Maps they replace held ~150k strings and ~150k entries each
// (about 25 MB of heap per runner for a Qwen or Llama 3 vocabulary); these hold about 5 MB.
import { GgufStringTable } from "../gguf/string-table.ts";

/** What a vocabulary's token texts (or merges) must offer: a string array or a GGUF string table. */
export interface TokenTexts {
  readonly length: number;
  at(index: number): string | undefined;
}

export function stringTableOf(texts: TokenTexts): GgufStringTable {
  if (texts instanceof GgufStringTable) return texts;
  const strings = new Array<string>(texts.length);
  for (let index = 0; index < strings.length; index++) strings[index] = texts.at(index) ?? "";
  return GgufStringTable.fromStrings(strings);
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const EMPTY_SLOT = -1;
/** Slots per entry at least: linear probing stays short below ~2/3 full. */
const SLOTS_PER_ENTRY_MIN = 1.5;

function slotCountFor(entryCount: number): number {
  let slots = 16;
  while (slots < entryCount * SLOTS_PER_ENTRY_MIN) slots *= 2;
  return slots;
}

function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let hash = FNV_OFFSET;
  for (let at = start; at < end; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
  return hash >>> 0;
}

/**
 * The code point at `index` of `text`, or -1 for a lone surrogate: such a string is not valid
 * UTF-8 and names no token (a token's text was decoded from UTF-8, so it never holds one).
 */
function codePointAt(text: string, index: number): number {
  const unit = text.charCodeAt(index);
  if (unit < 0xd800 || unit > 0xdfff) return unit;
  if (unit >= 0xdc00) return -1;
  const low = text.charCodeAt(index + 1);
  if (!(low >= 0xdc00 && low <= 0xdfff)) return -1;
  return 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
}

/** FNV-1a of the UTF-8 encoding of `text` (equal to hashBytes of those bytes), or -1 if it is not valid UTF-16. */
function hashString(text: string): number {
  let hash = FNV_OFFSET;
  for (let index = 0; index < text.length; index++) {
    const cp = codePointAt(text, index);
    if (cp < 0) return -1;
    if (cp < 0x80) {
      hash = Math.imul(hash ^ cp, FNV_PRIME);
    } else if (cp < 0x800) {
      hash = Math.imul(hash ^ (0xc0 | (cp >> 6)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
    } else if (cp < 0x10000) {
      hash = Math.imul(hash ^ (0xe0 | (cp >> 12)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
    } else {
      hash = Math.imul(hash ^ (0xf0 | (cp >> 18)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | ((cp >> 12) & 0x3f)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
      hash = Math.imul(hash ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
      index++;
    }
  }
  return hash >>> 0;
}

/** Whether bytes[start, end) is the UTF-8 encoding of `text` (already known to be valid UTF-16). */
function bytesEqualString(bytes: Uint8Array, start: number, end: number, text: string): boolean {
  let at = start;
  for (let index = 0; index < text.length; index++) {
    const cp = codePointAt(text, index);
    if (cp < 0x80) {
      if (at >= end || bytes[at++] !== cp) return false;
    } else if (cp < 0x800) {
      if (at + 2 > end || bytes[at++] !== (0xc0 | (cp >> 6)) || bytes[at++] !== (0x80 | (cp & 0x3f))) return false;
    } else if (cp < 0x10000) {
      if (at + 3 > end || bytes[at++] !== (0xe0 | (cp >> 12)) || bytes[at++] !== (0x80 | ((cp >> 6) & 0x3f)) || bytes[at++] !== (0x80 | (cp & 0x3f))) return false;
    } else {
      if (
        at + 4 > end ||
        bytes[at++] !== (0xf0 | (cp >> 18)) ||
        bytes[at++] !== (0x80 | ((cp >> 12) & 0x3f)) ||
        bytes[at++] !== (0x80 | ((cp >> 6) & 0x3f)) ||
        bytes[at++] !== (0x80 | (cp & 0x3f))
      ) {
        return false;
      }
      index++;
    }
  }
  return at === end;
}

function bytesEqual(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number, bEnd: number): boolean {
  if (aEnd - aStart !== bEnd - bStart) return false;
  for (let offset = 0; offset < aEnd - aStart; offset++) if (a[aStart + offset] !== b[bStart + offset]) return false;
  return true;
}

/** Token text → id over a string table (open addressing, linear probing). */
export class TokenIndex {
  private readonly slots: Int32Array;
  private readonly mask: number;

  constructor(readonly texts: GgufStringTable) {
    const slotCount = slotCountFor(texts.length);
    this.slots = new Int32Array(slotCount).fill(EMPTY_SLOT);
    this.mask = slotCount - 1;
    const { bytes } = texts;
    for (let id = 0; id < texts.length; id++) {
      const start = texts.startOf(id);
      const end = texts.ends[id]!;
      // Duplicate texts resolve to the last id, as in llama.cpp's token_to_id.
      this.slots[this.findBytes(bytes, start, end)] = id;
    }
  }

  get length(): number {
    return this.texts.length;
  }

  at(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.texts.length ? this.texts.at(id) : undefined;
  }

  /** The id of the token whose text is `text`. */
  get(text: string): number | undefined {
    const hash = hashString(text);
    if (hash < 0) return undefined;
    const { bytes, ends } = this.texts;
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const id = this.slots[slot]!;
      if (id === EMPTY_SLOT) return undefined;
      if (bytesEqualString(bytes, this.texts.startOf(id), ends[id]!, text)) return id;
    }
  }

  /** The id of the token whose UTF-8 text is bytes[start, end). */
  getBytes(bytes: Uint8Array, start: number, end: number): number | undefined {
    const id = this.slots[this.findBytes(bytes, start, end)]!;
    return id === EMPTY_SLOT ? undefined : id;
  }

  /** The slot holding these bytes, or the empty slot where they would go. */
  private findBytes(bytes: Uint8Array, start: number, end: number): number {
    const own = this.texts.bytes;
    for (let slot = hashBytes(bytes, start, end) & this.mask; ; slot = (slot + 1) & this.mask) {
      const id = this.slots[slot]!;
      if (id === EMPTY_SLOT) return slot;
      if (bytesEqual(own, this.texts.startOf(id), this.texts.ends[id]!, bytes, start, end)) return slot;
    }
  }
}

// ignoreBOM: a leading U+FEFF is text to keep, not a marker to strip.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** The length prefix keeps ("a b", "c") and ("a", "b c") apart. */
function textPairKey(left: string, right: string): string {
  return `${left.length}:${left} ${right}`;
}

function pairHash(left: number, right: number): number {
  return (Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca77)) >>> 0;
}

/**
 * BPE merge ranks keyed by the token ids of the two sides, as llama.cpp's bpe_ranks is keyed by
 * the pair of texts (a merge "a b" is split at the first space after its first character). A
 * merge whose side is not a token cannot be keyed by ids; those few keep their text.
 */
export class MergeRanks {
  /** Per slot: a rank, or EMPTY_SLOT. */
  private readonly slots: Int32Array;
  /** Per rank: the token ids of its two sides (EMPTY_SLOT for merges kept by text). */
  private readonly lefts: Int32Array;
  private readonly rights: Int32Array;
  private readonly mask: number;
  private readonly byText = new Map<string, number>();

  constructor(index: TokenIndex, merges: GgufStringTable) {
    const slotCount = slotCountFor(merges.length);
    this.slots = new Int32Array(slotCount).fill(EMPTY_SLOT);
    this.lefts = new Int32Array(merges.length).fill(EMPTY_SLOT);
    this.rights = new Int32Array(merges.length).fill(EMPTY_SLOT);
    this.mask = slotCount - 1;
    const { bytes } = merges;
    for (let rank = 0; rank < merges.length; rank++) {
      const start = merges.startOf(rank);
      const end = merges.ends[rank]!;
      let separator = -1;
      for (let at = start + 1; at < end; at++) {
        if (bytes[at] === 0x20) {
          separator = at;
          break;
        }
      }
      if (separator < 0) continue;
      const left = index.getBytes(bytes, start, separator);
      const right = index.getBytes(bytes, separator + 1, end);
      if (left === undefined || right === undefined) {
        const key = textPairKey(utf8.decode(bytes.subarray(start, separator)), utf8.decode(bytes.subarray(separator + 1, end)));
        if (!this.byText.has(key)) this.byText.set(key, rank);
        continue;
      }
      const slot = this.find(left, right);
      // The first of duplicate merges keeps its rank.
      if (this.slots[slot] !== EMPTY_SLOT) continue;
      this.slots[slot] = rank;
      this.lefts[rank] = left;
      this.rights[rank] = right;
    }
  }

  /** Rank of merging the tokens `left` and `right`, or null. */
  rankOfIds(left: number, right: number): number | null {
    const rank = this.slots[this.find(left, right)]!;
    return rank === EMPTY_SLOT ? null : rank;
  }

  /** Rank of merging two texts that are not both tokens (see the class comment). */
  rankOfTexts(left: string, right: string): number | null {
    return this.byText.size === 0 ? null : (this.byText.get(textPairKey(left, right)) ?? null);
  }

  private find(left: number, right: number): number {
    for (let slot = pairHash(left, right) & this.mask; ; slot = (slot + 1) & this.mask) {
      const rank = this.slots[slot]!;
      if (rank === EMPTY_SLOT || (this.lefts[rank] === left && this.rights[rank] === right)) return slot;
    }
  }
}
