// The master's durable record: an append-only file of IndexedEvents, idx consecutive from 0.
//
// Record layout, back to back: [u32 LE payload length][u32 LE CRC-32 of payload][payload], where the
// payload is the IndexedEvent as UTF-8 JSON.
//
// Durability policy — group commit. append() write(2)s its records synchronously and in order, so
// once it returns the records survive a crash of this process (they are in the OS page cache).
// fdatasync runs at most once every FSYNC_INTERVAL_MS, on a timer armed by the first append after
// a sync, and once more on close(). A power loss or kernel crash can therefore lose at most the
// events appended during the last interval (plus an fdatasync still in flight), and never corrupts
// older records: bytes are only ever added at the end, and open() keeps the longest valid prefix,
// cutting off (and reporting) a torn or corrupt tail so the node starts anyway.
import { closeSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, constants as fsConstants, readSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { assert } from "../shared/assert.ts";
import { crc32 } from "../shared/crc32.ts";
import { EVENT_LOG_PAGE_MAX } from "../shared/limits.ts";
import type { IndexedEvent } from "../shared/types.ts";
import { IndexedEventSchema } from "../shared/types.ts";

/** Longest time an appended event may sit un-fsynced: a machine crash loses at most this much. */
export const FSYNC_INTERVAL_MS = 50;
export const EVENT_RECORD_HEADER_BYTES = 8;
/** A TaskCreated carries a whole chat (bounded by REQUEST_BODY_BYTES_MAX); anything larger is corruption. */
export const EVENT_RECORD_PAYLOAD_BYTES_MAX = 64 * 1024 * 1024;
/** How much of the file open() reads per syscall while scanning. */
const OPEN_READ_CHUNK_BYTES = 1024 * 1024;

/** What open() cut off the end of the file, and why. */
export interface EventLogWarning {
  readonly droppedBytes: number;
  /** Bytes (and records) kept: the valid prefix. */
  readonly validBytes: number;
  readonly validEventCount: number;
  readonly reason: string;
}

/** The file changed under us after open() (another writer, a disk error). */
export class EventLogCorruptError extends Error {
  override name = "EventLogCorruptError";
}

export class EventLog {
  /** Byte offset of the record with idx i. Bounded by the file: 8 bytes of memory per event. */
  private readonly recordOffsets: number[];
  private fileSizeBytes: number;
  private fd: number | null;
  private closing = false;
  private unsyncedWrites = false;
  private syncTimer: NodeJS.Timeout | null = null;
  /** Serialises fdatasyncs: one at a time, and close() waits for the last one. */
  private syncChain: Promise<void> = Promise.resolve();
  /** A failed fdatasync means written data may be lost; it is rethrown by the next append/close. */
  private syncError: Error | null = null;
  private fdatasyncsDone = 0;

  private constructor(
    readonly path: string,
    fd: number,
    scan: ScanResult,
    /** Set when open() dropped a torn or corrupt tail; the caller logs it. */
    readonly warning: EventLogWarning | null,
  ) {
    this.fd = fd;
    this.recordOffsets = scan.recordOffsets;
    this.fileSizeBytes = scan.validBytes;
  }

  /** Opens (creating the file and its directory if needed), validates, and truncates a bad tail. */
  static open(path: string): EventLog {
    mkdirSync(dirname(path), { recursive: true });
    let fd: number;
    let created = false;
    try {
      fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      fd = openSync(path, fsConstants.O_RDWR);
    }
    if (created) syncDirectory(dirname(path));
    const fileSizeBytes = fstatSync(fd).size;
    const scan = scanFramedRecords(fd, fileSizeBytes, checkPayload);
    let warning: EventLogWarning | null = null;
    if (scan.tailReason !== null) {
      warning = {
        droppedBytes: fileSizeBytes - scan.validBytes,
        validBytes: scan.validBytes,
        validEventCount: scan.recordOffsets.length,
        reason: scan.tailReason,
      };
      // Made durable before any append lands behind it.
      ftruncateSync(fd, scan.validBytes);
      fdatasyncSync(fd);
    }
    return new EventLog(path, fd, scan, warning);
  }

  /** Number of events in the log. */
  get count(): number {
    return this.recordOffsets.length;
  }

  /** idx of the last event; -1 when empty (the same convention as State.lastIdx). */
  get lastIdx(): number {
    return this.recordOffsets.length - 1;
  }

  get sizeBytes(): number {
    return this.fileSizeBytes;
  }

  /** fdatasyncs completed so far: group commit makes this far smaller than the number of appends. */
  get fdatasyncCount(): number {
    return this.fdatasyncsDone;
  }

  /** Writes the events in order, synchronously; their idx must continue the log without a gap. */
  append(events: readonly IndexedEvent[]): void {
    assert(this.fd !== null && !this.closing, "EventLog.append after close");
    if (this.syncError !== null) throw this.syncError;
    if (events.length === 0) return;
    const parts: Buffer[] = [];
    const offsets: number[] = [];
    let positionBytes = this.fileSizeBytes;
    for (const [i, event] of events.entries()) {
      const expectedIdx = this.recordOffsets.length + i;
      assert(event.idx === expectedIdx, `EventLog.append: idx ${event.idx}, expected ${expectedIdx}`);
      const record = encodeRecord(event);
      parts.push(record);
      offsets.push(positionBytes);
      positionBytes += record.length;
    }
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    try {
      writeFully(this.fd, data, this.fileSizeBytes);
    } catch (err) {
      // A partial record would sit in front of every later append: take it back out.
      try {
        ftruncateSync(this.fd, this.fileSizeBytes);
      } catch {
        // open() will cut the torn tail off after a restart.
      }
      throw err;
    }
    this.fileSizeBytes = positionBytes;
    for (const offset of offsets) this.recordOffsets.push(offset);
    this.unsyncedWrites = true;
    this.armSyncTimer();
  }

  /** Events with idx ≥ sinceIdx, at most min(limit, EVENT_LOG_PAGE_MAX) of them, in idx order. */
  readSince(sinceIdx: number, limit: number = EVENT_LOG_PAGE_MAX): IndexedEvent[] {
    assert(this.fd !== null, "EventLog.readSince after close");
    assert(Number.isInteger(sinceIdx) && sinceIdx >= 0, `readSince: bad idx ${sinceIdx}`);
    const eventCount = Math.min(Math.max(0, Math.floor(limit)), EVENT_LOG_PAGE_MAX);
    if (sinceIdx >= this.recordOffsets.length || eventCount === 0) return [];
    const endIdx = Math.min(this.recordOffsets.length, sinceIdx + eventCount);
    const startBytes = this.recordOffsets[sinceIdx]!;
    const endBytes = endIdx < this.recordOffsets.length ? this.recordOffsets[endIdx]! : this.fileSizeBytes;
    const data = Buffer.allocUnsafe(endBytes - startBytes);
    readFully(this.fd, data, startBytes);
    return decodeRange(data, sinceIdx, endIdx - sinceIdx);
  }

  /** Forces an fdatasync now (after the one in flight, if any). */
  sync(): Promise<void> {
    const run = async (): Promise<void> => {
      if (!this.unsyncedWrites || this.fd === null) return;
      this.unsyncedWrites = false;
      const fd = this.fd;
      await new Promise<void>((resolve) => {
        fdatasync(fd, (err) => {
          if (err !== null) this.syncError = err;
          else this.fdatasyncsDone++;
          resolve();
        });
      });
    };
    this.syncChain = this.syncChain.then(run);
    return this.syncChain;
  }

  /** Syncs what is unsynced and closes the file. Idempotent. */
  async close(): Promise<void> {
    if (this.fd === null || this.closing) return;
    this.closing = true;
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.syncChain;
    const fd = this.fd;
    this.fd = null;
    try {
      if (this.unsyncedWrites) fdatasyncSync(fd);
      this.unsyncedWrites = false;
    } finally {
      closeSync(fd);
    }
    if (this.syncError !== null) throw this.syncError;
  }

  private armSyncTimer(): void {
    if (this.syncTimer !== null) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      void this.sync();
    }, FSYNC_INTERVAL_MS);
    // The data is already written; an exiting process does not need to wait for the timer.
    this.syncTimer.unref();
  }
}

// ── records ───────────────────────────────────────────────────────────────────────────────────

/** One record: header and payload, as append() writes it. */
export function encodeRecord(event: IndexedEvent): Buffer {
  const payload = Buffer.from(JSON.stringify(event), "utf8");
  assert(payload.length <= EVENT_RECORD_PAYLOAD_BYTES_MAX, `event ${event.idx} is ${payload.length} bytes`);
  return encodeFramedRecord(payload);
}

/**
 * The framing alone, shared with other append-only files (src/election/raft-store.ts): length and
 * CRC-32 of any payload, so a torn or damaged record is recognised whatever it carries.
 */
export function encodeFramedRecord(payload: Buffer): Buffer {
  assert(payload.length > 0 && payload.length <= EVENT_RECORD_PAYLOAD_BYTES_MAX, `record payload of ${payload.length} bytes`);
  const record = Buffer.allocUnsafe(EVENT_RECORD_HEADER_BYTES + payload.length);
  record.writeUInt32LE(payload.length, 0);
  record.writeUInt32LE(crc32(payload), 4);
  payload.copy(record, EVENT_RECORD_HEADER_BYTES);
  return record;
}

/** Decodes records that open() already validated; the CRC is checked again against later damage. */
function decodeRange(data: Buffer, firstIdx: number, eventCount: number): IndexedEvent[] {
  const events: IndexedEvent[] = [];
  let position = 0;
  for (let i = 0; i < eventCount; i++) {
    const payloadLength = data.readUInt32LE(position);
    const expectedCrc = data.readUInt32LE(position + 4);
    const payload = data.subarray(position + EVENT_RECORD_HEADER_BYTES, position + EVENT_RECORD_HEADER_BYTES + payloadLength);
    if (payload.length !== payloadLength || crc32(payload) !== expectedCrc) {
      throw new EventLogCorruptError(`event ${firstIdx + i} changed on disk after the log was opened`);
    }
    const event = JSON.parse(payload.toString("utf8")) as IndexedEvent;
    if (event.idx !== firstIdx + i) throw new EventLogCorruptError(`record for idx ${firstIdx + i} holds idx ${event.idx}`);
    events.push(event);
    position += EVENT_RECORD_HEADER_BYTES + payloadLength;
  }
  return events;
}

export interface ScanResult {
  readonly recordOffsets: number[];
  readonly validBytes: number;
  /** Why scanning stopped before the end of the file; null when the whole file is valid. */
  readonly tailReason: string | null;
}

/**
 * Walks the file keeping the longest prefix of valid records: whole, CRC intact, and accepted by
 * `checkPayload` (given the payload and the record's position; it returns why not, or null).
 */
export function scanFramedRecords(fd: number, fileSizeBytes: number, checkPayload: (payload: Buffer, recordNumber: number) => string | null): ScanResult {
  const reader = new ChunkReader(fd, fileSizeBytes);
  const recordOffsets: number[] = [];
  let position = 0;
  const stop = (reason: string): ScanResult => ({
    recordOffsets,
    validBytes: position,
    tailReason: `record ${recordOffsets.length} at byte ${position}: ${reason}`,
  });
  while (position < fileSizeBytes) {
    const header = reader.bytesAt(position, EVENT_RECORD_HEADER_BYTES);
    if (header === null) return stop(`torn header (${fileSizeBytes - position} of ${EVENT_RECORD_HEADER_BYTES} bytes)`);
    const payloadLength = header.readUInt32LE(0);
    const expectedCrc = header.readUInt32LE(4);
    if (payloadLength === 0 || payloadLength > EVENT_RECORD_PAYLOAD_BYTES_MAX) {
      return stop(`payload length ${payloadLength} out of range`);
    }
    const payload = reader.bytesAt(position + EVENT_RECORD_HEADER_BYTES, payloadLength);
    if (payload === null) {
      const presentBytes = fileSizeBytes - position - EVENT_RECORD_HEADER_BYTES;
      return stop(`torn payload (${presentBytes} of ${payloadLength} bytes)`);
    }
    const actualCrc = crc32(payload);
    if (actualCrc !== expectedCrc) return stop(`CRC mismatch (stored ${hex(expectedCrc)}, computed ${hex(actualCrc)})`);
    const problem = checkPayload(payload, recordOffsets.length);
    if (problem !== null) return stop(problem);
    recordOffsets.push(position);
    position += EVENT_RECORD_HEADER_BYTES + payloadLength;
  }
  return { recordOffsets, validBytes: position, tailReason: null };
}

function checkPayload(payload: Buffer, expectedIdx: number): string | null {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString("utf8"));
  } catch {
    return "payload is not JSON";
  }
  const parsed = IndexedEventSchema.safeParse(json);
  if (!parsed.success) return `payload is not an IndexedEvent (${parsed.error.issues[0]?.message ?? "invalid"})`;
  if (parsed.data.idx !== expectedIdx) return `idx ${parsed.data.idx} where ${expectedIdx} was expected`;
  return null;
}

const hex = (n: number): string => `0x${n.toString(16).padStart(8, "0")}`;

/** Serves byte ranges of the file from a window read in large chunks. */
class ChunkReader {
  private window: Buffer = Buffer.alloc(0);
  private windowStartBytes = 0;

  constructor(
    private readonly fd: number,
    private readonly fileSizeBytes: number,
  ) {}

  /** The bytes [start, start+length), or null when the file ends first. Valid until the next call. */
  bytesAt(startBytes: number, length: number): Buffer | null {
    if (startBytes + length > this.fileSizeBytes) return null;
    const windowEndBytes = this.windowStartBytes + this.window.length;
    if (startBytes < this.windowStartBytes || startBytes + length > windowEndBytes) {
      const readLength = Math.min(Math.max(length, OPEN_READ_CHUNK_BYTES), this.fileSizeBytes - startBytes);
      this.window = Buffer.allocUnsafe(readLength);
      this.windowStartBytes = startBytes;
      readFully(this.fd, this.window, startBytes);
    }
    const offset = startBytes - this.windowStartBytes;
    return this.window.subarray(offset, offset + length);
  }
}

export function readFully(fd: number, into: Buffer, positionBytes: number): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, positionBytes + done);
    if (n === 0) throw new EventLogCorruptError(`event log ended at byte ${positionBytes + done} while reading`);
    done += n;
  }
}

export function writeFully(fd: number, data: Buffer, positionBytes: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, positionBytes + done);
}

/** Makes a new file's directory entry durable; not every platform can open a directory. */
export function syncDirectory(path: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(path, fsConstants.O_RDONLY);
    fdatasyncSync(fd);
  } catch {
    // Best effort (Windows cannot fsync a directory).
  } finally {
    if (fd !== null) closeSync(fd);
  }
}
