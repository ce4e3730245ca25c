// Append-only files of CRC-framed records, for the election's durable store (raft-store.ts).
//
// Record layout, back to back: [u32 LE payload length][u32 LE CRC-32 of payload][payload]. A reader
// keeps the longest prefix of whole records whose CRC matches (and that the caller accepts), so a
// write cut short by a crash, or a damaged tail, is recognised and cut off instead of trusted.
//
// Durability policy — group commit: records are write(2)n synchronously (a crash of this process
// loses nothing once the write returned) and fdatasync'd at most every FSYNC_INTERVAL_MS, so a power
// loss or kernel crash can lose at most the records of the last interval, never older ones.
import { closeSync, fdatasyncSync, openSync, constants as fsConstants, readSync, writeSync } from "node:fs";
import { assert } from "../shared/assert.ts";
import { crc32 } from "../shared/crc32.ts";

/** Longest time an appended record may sit un-fsynced: a machine crash loses at most this much. */
export const FSYNC_INTERVAL_MS = 50;
export const RECORD_HEADER_BYTES = 8;
/** A TaskCreated carries a whole chat (bounded by REQUEST_BODY_BYTES_MAX); anything larger is corruption. */
export const RECORD_PAYLOAD_BYTES_MAX = 64 * 1024 * 1024;
/** How much of the file a scan reads per syscall. */
const SCAN_READ_CHUNK_BYTES = 1024 * 1024;

/** The file ended or changed under us after it was scanned (another writer, a disk error). */
export class RecordFileError extends Error {
  override name = "RecordFileError";
}

/**
 * One record: length and CRC-32 of any payload, so a torn or damaged record is recognised
 * whatever it carries.
 */
export function encodeFramedRecord(payload: Buffer): Buffer {
  assert(payload.length > 0 && payload.length <= RECORD_PAYLOAD_BYTES_MAX, `record payload of ${payload.length} bytes`);
  const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  record.writeUInt32LE(payload.length, 0);
  record.writeUInt32LE(crc32(payload), 4);
  payload.copy(record, RECORD_HEADER_BYTES);
  return record;
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
    const header = reader.bytesAt(position, RECORD_HEADER_BYTES);
    if (header === null) return stop(`torn header (${fileSizeBytes - position} of ${RECORD_HEADER_BYTES} bytes)`);
    const payloadLength = header.readUInt32LE(0);
    const expectedCrc = header.readUInt32LE(4);
    if (payloadLength === 0 || payloadLength > RECORD_PAYLOAD_BYTES_MAX) {
      return stop(`payload length ${payloadLength} out of range`);
    }
    const payload = reader.bytesAt(position + RECORD_HEADER_BYTES, payloadLength);
    if (payload === null) {
      const presentBytes = fileSizeBytes - position - RECORD_HEADER_BYTES;
      return stop(`torn payload (${presentBytes} of ${payloadLength} bytes)`);
    }
    const actualCrc = crc32(payload);
    if (actualCrc !== expectedCrc) return stop(`CRC mismatch (stored ${hex(expectedCrc)}, computed ${hex(actualCrc)})`);
    const problem = checkPayload(payload, recordOffsets.length);
    if (problem !== null) return stop(problem);
    recordOffsets.push(position);
    position += RECORD_HEADER_BYTES + payloadLength;
  }
  return { recordOffsets, validBytes: position, tailReason: null };
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
      const readLength = Math.min(Math.max(length, SCAN_READ_CHUNK_BYTES), this.fileSizeBytes - startBytes);
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
    if (n === 0) throw new RecordFileError(`file ended at byte ${positionBytes + done} while reading`);
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
