// The durable half of the election core: what a node must find again after a crash (term, vote,
// snapshot, log), written from RaftDriver's `persist(hard)` hook.
//
// Three files in one directory:
//   term-vote.json    {term, votedFor}; replaced atomically (tmp, fsync, rename, fsync dir), only when
//                     term or vote change — elections are rare.
//   snapshot.msgpack  the Snapshot<State>; replaced atomically when the snapshot advances.
//   entries.log       CRC-framed records (record-file.ts): first a header
//                     {prevIndex, prevTerm} naming the entry just before the first record, then one
//                     {term, event} per entry, indexes consecutive. Appended in place; a conflicting
//                     suffix is cut off with ftruncate; rewritten atomically when the snapshot has
//                     passed at least half of it (compaction) or when the log no longer overlaps it.
//
// persist() compares the hard state with what it wrote last and does only the difference. Raft's
// Log Matching property makes that cheap: two logs that hold an entry with the same index and term
// agree on everything before it, so where the file and the new log part ways is found by a binary
// search over terms, and the common case (entries appended) costs one comparison.
//
// Durability. Every byte is written with write(2) before persist() returns, so it survives kill -9 of
// this process. term-vote.json, snapshot.msgpack, every truncation and every rewrite are fsynced before
// persist() returns. Appended entries are fdatasync'd in groups, at most fsyncIntervalMs (50 ms by
// default) after the write: a power loss or kernel crash can lose the entries appended in that last
// window although this node already acknowledged them to the leader. If a majority of the cluster
// loses power within the same 50 ms, an entry reported committed may be lost. fsyncIntervalMs: 0
// fdatasyncs inside every persist() instead (the price is one fdatasync per persist).
//
// A torn tail or a corrupt record in entries.log is cut off with a warning (the longest valid prefix
// is kept); an unreadable term-vote or snapshot file is reported and ignored. Nothing on disk can make
// open() throw, except I/O errors themselves.
import { closeSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, constants as fsConstants, readSync, renameSync } from "node:fs";
import { join } from "node:path";
import { Packr } from "msgpackr";
import { z } from "zod";
import { assert } from "../shared/assert.ts";
import { NodeIdSchema } from "../shared/ids.ts";
import type { NodeId } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import { emptyState } from "../shared/state.ts";
import type { IndexedEvent } from "../shared/types.ts";
import { IndexedEventSchema } from "../shared/types.ts";
import { encodeFramedRecord, FSYNC_INTERVAL_MS, readFully, scanFramedRecords, syncDirectory, writeFully } from "./record-file.ts";
import type { HardState } from "./driver.ts";
import type { LogEntry, Snapshot } from "./raft.ts";
import { StateSchema } from "./skein-log.ts";

export type SkeinHardState = HardState<IndexedEvent, State>;

export const RAFT_TERM_VOTE_FILE = "term-vote.json";
export const RAFT_SNAPSHOT_FILE = "snapshot.msgpack";
export const RAFT_ENTRIES_FILE = "entries.log";
/** A snapshot file larger than this is not read (it could not have come from one State). */
export const RAFT_SNAPSHOT_BYTES_MAX = 1024 * 1024 * 1024;

export interface RaftStoreOptions {
  /** Longest time an appended entry may sit un-fsynced; 0 fsyncs in every persist(). */
  readonly fsyncIntervalMs?: number;
}

export interface RaftStoreOpenResult {
  readonly store: RaftStore;
  /** null: nothing on disk (a fresh node). */
  readonly hard: SkeinHardState | null;
  /** What open() dropped or could not read, for the log; null when everything was intact. */
  readonly warning: string | null;
}

const EMPTY_SNAPSHOT: Snapshot<State> = { lastIndex: -1, lastTerm: 0, state: emptyState() };

const termVoteSchema = z.object({ term: z.number().int().min(0), votedFor: NodeIdSchema.nullable() });
const headerSchema = z.object({ prevIndex: z.number().int().min(-1), prevTerm: z.number().int().min(0) });
const entryRecordSchema = z.object({ term: z.number().int().min(0), event: IndexedEventSchema });
const snapshotSchema = z.object({ lastIndex: z.number().int().min(-1), lastTerm: z.number().int().min(0), state: StateSchema });

// Records (msgpackr's shared structures) off: the file must decode alone, with any later msgpackr.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** What the constructor takes over from open(). */
interface StoreInit {
  readonly term: number;
  readonly votedFor: NodeId | null;
  readonly snapshot: Snapshot<State>;
  readonly fd: number;
  readonly prevIndex: number;
  readonly prevTerm: number;
  readonly terms: number[];
  readonly offsets: number[];
  readonly fileSizeBytes: number;
  readonly headerBytes: number;
}

export class RaftStore {
  private termWritten: number;
  private votedForWritten: NodeId | null;
  private snapshotWritten: Snapshot<State>;
  private fd: number | null;
  /** The entries file: index and term of the entry before its first record, */
  private prevIndex: number;
  private prevTerm: number;
  /** then the term and byte offset of each entry record (entry prevIndex + 1 + i). 16 bytes per entry. */
  private terms: number[];
  private offsets: number[];
  private fileSizeBytes: number;
  /** Bytes of the header record. */
  private headerBytes: number;
  private unsyncedWrites = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private syncChain: Promise<void> = Promise.resolve();
  private syncError: Error | null = null;
  private readonly fsyncIntervalMs: number;
  /** Counters for tests and benchmarks. */
  readonly stats = { appendedEntries: 0, truncations: 0, rewrites: 0, snapshotWrites: 0, termVoteWrites: 0, fdatasyncs: 0 };

  private constructor(
    readonly dir: string,
    init: StoreInit,
    options: RaftStoreOptions,
  ) {
    this.termWritten = init.term;
    this.votedForWritten = init.votedFor;
    this.snapshotWritten = init.snapshot;
    this.fd = init.fd;
    this.prevIndex = init.prevIndex;
    this.prevTerm = init.prevTerm;
    this.terms = init.terms;
    this.offsets = init.offsets;
    this.fileSizeBytes = init.fileSizeBytes;
    this.headerBytes = init.headerBytes;
    this.fsyncIntervalMs = options.fsyncIntervalMs ?? FSYNC_INTERVAL_MS;
  }

  /** Opens (creating `dir` if needed) and reads back the last persisted hard state. */
  static open(dir: string, options: RaftStoreOptions = {}): RaftStoreOpenResult {
    mkdirSync(dir, { recursive: true });
    const warnings: string[] = [];

    const termVote = readTermVote(join(dir, RAFT_TERM_VOTE_FILE), warnings);
    const snapshotRead = readSnapshot(join(dir, RAFT_SNAPSHOT_FILE), warnings);
    const snapshot = snapshotRead ?? EMPTY_SNAPSHOT;

    const entriesPath = join(dir, RAFT_ENTRIES_FILE);
    let fd = openSync(entriesPath, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o644);
    const fileSizeBytes = fstatSync(fd).size;
    let header: { prevIndex: number; prevTerm: number } | null = null;
    const terms: number[] = [];
    const events: IndexedEvent[] = [];
    const scan = scanFramedRecords(fd, fileSizeBytes, (payload, recordNumber) => {
      const json = parseJson(payload);
      if (recordNumber === 0) {
        const parsed = headerSchema.safeParse(json);
        if (!parsed.success) return "not an entries-file header";
        header = parsed.data;
        return null;
      }
      const parsed = entryRecordSchema.safeParse(json);
      if (!parsed.success) return `not an entry (${parsed.error.issues[0]?.message ?? "invalid"})`;
      const expectedIndex = header!.prevIndex + recordNumber;
      if (parsed.data.event.idx !== expectedIndex) return `entry ${parsed.data.event.idx} where ${expectedIndex} was expected`;
      const previousTerm = terms.at(-1) ?? header!.prevTerm;
      if (parsed.data.term < previousTerm) return `entry ${expectedIndex} of term ${parsed.data.term} after term ${previousTerm}`;
      terms.push(parsed.data.term);
      events.push(parsed.data.event as IndexedEvent);
      return null;
    });
    if (scan.tailReason !== null && fileSizeBytes > 0) warnings.push(`${RAFT_ENTRIES_FILE}: dropped ${fileSizeBytes - scan.validBytes} bytes at the end (${scan.tailReason})`);

    let init: StoreInit;
    const h = header as { prevIndex: number; prevTerm: number } | null;
    if (h === null) {
      // Empty or unusable from the first byte: start the file over, based on the snapshot.
      closeSync(fd);
      fd = writeEntriesFileAtomically(dir, snapshot.lastIndex, snapshot.lastTerm, []);
      const headerBytes = fstatSync(fd).size;
      init = { term: 0, votedFor: null, snapshot, fd, prevIndex: snapshot.lastIndex, prevTerm: snapshot.lastTerm, terms: [], offsets: [], fileSizeBytes: headerBytes, headerBytes };
    } else {
      if (scan.tailReason !== null) {
        // Made durable before anything lands behind it.
        ftruncateSync(fd, scan.validBytes);
        fdatasyncSync(fd);
      }
      const headerBytes = scan.recordOffsets[1] ?? scan.validBytes;
      init = {
        term: 0,
        votedFor: null,
        snapshot,
        fd,
        prevIndex: h.prevIndex,
        prevTerm: h.prevTerm,
        terms,
        offsets: scan.recordOffsets.slice(1),
        fileSizeBytes: scan.validBytes,
        headerBytes,
      };
    }

    // The log is what the file holds after the snapshot — if the file agrees with the snapshot at its
    // last index (the rule InstallSnapshot follows). A file that does not (a crash between writing a
    // new snapshot and rewriting the file) holds nothing the node may keep; the next persist rewrites it.
    const log: LogEntry<IndexedEvent>[] = [];
    const termInFile = (index: number): number | undefined => (index === init.prevIndex ? init.prevTerm : init.terms[index - init.prevIndex - 1]);
    if (termInFile(snapshot.lastIndex) === snapshot.lastTerm) {
      for (let i = snapshot.lastIndex - init.prevIndex; i < init.terms.length; i++) log.push({ term: init.terms[i]!, index: init.prevIndex + 1 + i, payload: events[i]! });
    } else if (init.terms.length > 0 && init.prevIndex + init.terms.length > snapshot.lastIndex) {
      warnings.push(`${RAFT_ENTRIES_FILE}: entries ${init.prevIndex + 1}..${init.prevIndex + init.terms.length} do not continue the snapshot at ${snapshot.lastIndex} (term ${snapshot.lastTerm}); dropped`);
    }

    // The term never goes below one the node has seen in its own log (a lost term file must not let
    // it vote twice in a term it already took part in as far as its log shows).
    const lastTerm = log.at(-1)?.term ?? snapshot.lastTerm;
    const term = Math.max(termVote?.term ?? 0, lastTerm);
    const votedFor = termVote !== null && termVote.term === term ? termVote.votedFor : null;
    init = { ...init, term, votedFor };
    const store = new RaftStore(dir, init, options);
    const nothing = termVote === null && snapshotRead === null && init.terms.length === 0;
    const hard: SkeinHardState | null = nothing ? null : { term, votedFor, snapshot, log };
    return { store, hard, warning: warnings.length === 0 ? null : warnings.join("; ") };
  }

  /** Byte size of entries.log (for tests and metrics). */
  get entriesFileBytes(): number {
    return this.fileSizeBytes;
  }

  /**
   * Makes `hard` what open() will return. Synchronous: call it from RaftDriver's persist hook, which
   * runs before the step's messages leave.
   */
  persist(hard: SkeinHardState): void {
    assert(this.fd !== null, "RaftStore.persist after close");
    if (this.syncError !== null) throw this.syncError;
    if (hard.term !== this.termWritten || hard.votedFor !== this.votedForWritten) {
      writeFileAtomically(this.dir, RAFT_TERM_VOTE_FILE, Buffer.from(JSON.stringify({ term: hard.term, votedFor: hard.votedFor }), "utf8"));
      this.termWritten = hard.term;
      this.votedForWritten = hard.votedFor;
      this.stats.termVoteWrites++;
    }
    // By reference: the core makes a new snapshot object only when it compacts or installs one, and
    // an owner that builds its own (a node founding or leaving a cluster) may reuse an index and term
    // for another State, which must not be mistaken for the one on disk.
    if (hard.snapshot !== this.snapshotWritten) {
      writeFileAtomically(this.dir, RAFT_SNAPSHOT_FILE, packr.pack(hard.snapshot));
      this.stats.snapshotWrites++;
      this.snapshotWritten = hard.snapshot;
    }
    this.persistEntries(hard.snapshot, hard.log);
  }

  /** fdatasyncs what was appended (after the one in flight, if any). */
  sync(): Promise<void> {
    const run = async (): Promise<void> => {
      if (!this.unsyncedWrites || this.fd === null) return;
      this.unsyncedWrites = false;
      const fd = this.fd;
      await new Promise<void>((resolve) => {
        fdatasync(fd, (err) => {
          if (err !== null) this.syncError = err;
          else this.stats.fdatasyncs++;
          resolve();
        });
      });
    };
    this.syncChain = this.syncChain.then(run);
    return this.syncChain;
  }

  /** Flushes and closes. Idempotent. */
  async close(): Promise<void> {
    if (this.fd === null) return;
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.syncChain;
    const fd = this.fd;
    if (fd === null) return;
    this.fd = null;
    try {
      if (this.unsyncedWrites) fdatasyncSync(fd);
      this.unsyncedWrites = false;
    } finally {
      closeSync(fd);
    }
    if (this.syncError !== null) throw this.syncError;
  }

  // ── entries ─────────────────────────────────────────────────────────────────────────────────

  private termInFile(index: number): number | undefined {
    return index === this.prevIndex ? this.prevTerm : this.terms[index - this.prevIndex - 1];
  }

  private persistEntries(snapshot: Snapshot<State>, log: readonly LogEntry<IndexedEvent>[]): void {
    const termInLog = (index: number): number | undefined => (index === snapshot.lastIndex ? snapshot.lastTerm : log[index - snapshot.lastIndex - 1]?.term);
    const fileLast = this.prevIndex + this.terms.length;
    const logLast = snapshot.lastIndex + log.length;
    const lo = Math.max(this.prevIndex, snapshot.lastIndex);
    const hi = Math.min(fileLast, logLast);
    if (lo > hi || this.termInFile(lo) !== termInLog(lo)) {
      // File and log share no entry (a snapshot installed past the file, or a different history).
      this.rewrite(snapshot, log);
      return;
    }
    // The last index where both agree: by Log Matching, agreement holds on a prefix of [lo, hi].
    let agreed = lo;
    if (this.termInFile(hi) === termInLog(hi)) {
      agreed = hi;
    } else {
      let bad = hi;
      while (bad - agreed > 1) {
        const mid = agreed + Math.floor((bad - agreed) / 2);
        if (this.termInFile(mid) === termInLog(mid)) agreed = mid;
        else bad = mid;
      }
    }
    if (agreed < fileLast) this.truncateAfter(agreed);
    if (agreed < logLast) this.append(log.slice(agreed - snapshot.lastIndex));
    this.compactIfWorthIt(snapshot, log);
  }

  private append(entries: readonly LogEntry<IndexedEvent>[]): void {
    const fd = this.fd!;
    const parts: Buffer[] = [];
    let positionBytes = this.fileSizeBytes;
    const newOffsets: number[] = [];
    for (const entry of entries) {
      assert(entry.index === this.prevIndex + this.terms.length + parts.length + 1, `RaftStore: entry ${entry.index} out of order`);
      const record = encodeEntry(entry);
      parts.push(record);
      newOffsets.push(positionBytes);
      positionBytes += record.length;
    }
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    try {
      writeFully(fd, data, this.fileSizeBytes);
    } catch (err) {
      // A partial record would sit in front of every later append: take it back out.
      try {
        ftruncateSync(fd, this.fileSizeBytes);
      } catch {
        // open() cuts the torn tail off after a restart.
      }
      throw err;
    }
    for (let i = 0; i < entries.length; i++) {
      this.terms.push(entries[i]!.term);
      this.offsets.push(newOffsets[i]!);
    }
    this.fileSizeBytes = positionBytes;
    this.stats.appendedEntries += entries.length;
    this.wroteUnsynced();
  }

  /** Cuts every record after entry `index` off; durable at once (rare: only a conflicting suffix). */
  private truncateAfter(index: number): void {
    const keep = index - this.prevIndex;
    const sizeBytes = this.offsets[keep]!;
    ftruncateSync(this.fd!, sizeBytes);
    // A truncation that a power loss undid would bring back entries this node has already replaced
    // in the leader's eyes; unlike appends it is rare, so it is not grouped.
    fdatasyncSync(this.fd!);
    this.terms.length = keep;
    this.offsets.length = keep;
    this.fileSizeBytes = sizeBytes;
    this.stats.truncations++;
  }

  /** Compaction: once the snapshot covers at least half the file, the file is rewritten without that half. */
  private compactIfWorthIt(snapshot: Snapshot<State>, log: readonly LogEntry<IndexedEvent>[]): void {
    const dead = snapshot.lastIndex - this.prevIndex;
    if (dead <= 0) return;
    const firstLiveOffset = dead < this.terms.length ? this.offsets[dead]! : this.fileSizeBytes;
    const deadBytes = firstLiveOffset - this.headerBytes;
    const liveBytes = this.fileSizeBytes - firstLiveOffset;
    if (deadBytes < liveBytes) return;
    this.rewrite(snapshot, log, firstLiveOffset);
  }

  /**
   * Replaces the file with header(snapshot) + the log, atomically. With `copyFromOffset`, the log's
   * records are copied from this file as they are (compaction), not encoded again.
   */
  private rewrite(snapshot: Snapshot<State>, log: readonly LogEntry<IndexedEvent>[], copyFromOffset?: number): void {
    let body: Buffer;
    let bodyOffsets: number[];
    if (copyFromOffset !== undefined) {
      body = Buffer.allocUnsafe(this.fileSizeBytes - copyFromOffset);
      readFully(this.fd!, body, copyFromOffset);
      const first = snapshot.lastIndex - this.prevIndex;
      bodyOffsets = this.offsets.slice(first).map((o) => o - copyFromOffset);
    } else {
      const parts = log.map(encodeEntry);
      body = Buffer.concat(parts);
      bodyOffsets = [];
      let position = 0;
      for (const part of parts) {
        bodyOffsets.push(position);
        position += part.length;
      }
    }
    const terms = copyFromOffset !== undefined ? this.terms.slice(snapshot.lastIndex - this.prevIndex) : log.map((e) => e.term);
    assert(terms.length === log.length, `RaftStore: rewrite of ${terms.length} entries for a log of ${log.length}`);
    // Anything appended but not fsynced is about to be fsynced in the new file; the old fd goes.
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    const oldFd = this.fd!;
    this.fd = writeEntriesFileAtomically(this.dir, snapshot.lastIndex, snapshot.lastTerm, [body]);
    // An fdatasync of the old fd may still be in flight; closing it once that settles is enough.
    void this.syncChain.then(() => closeSync(oldFd));
    this.unsyncedWrites = false;
    const headerBytes = encodeHeader(snapshot.lastIndex, snapshot.lastTerm).length;
    this.prevIndex = snapshot.lastIndex;
    this.prevTerm = snapshot.lastTerm;
    this.terms = terms;
    this.offsets = bodyOffsets.map((o) => o + headerBytes);
    this.headerBytes = headerBytes;
    this.fileSizeBytes = headerBytes + body.length;
    this.stats.rewrites++;
  }

  private wroteUnsynced(): void {
    this.unsyncedWrites = true;
    if (this.fsyncIntervalMs <= 0) {
      fdatasyncSync(this.fd!);
      this.unsyncedWrites = false;
      this.stats.fdatasyncs++;
      return;
    }
    if (this.syncTimer !== null) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      void this.sync();
    }, this.fsyncIntervalMs);
    // The data is already written; an exiting process does not need to wait for the timer.
    this.syncTimer.unref();
  }
}

// ── encoding ────────────────────────────────────────────────────────────────────────────────────

function encodeHeader(prevIndex: number, prevTerm: number): Buffer {
  return encodeFramedRecord(Buffer.from(JSON.stringify({ prevIndex, prevTerm }), "utf8"));
}

function encodeEntry(entry: LogEntry<IndexedEvent>): Buffer {
  return encodeFramedRecord(Buffer.from(JSON.stringify({ term: entry.term, event: entry.payload }), "utf8"));
}

function parseJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString("utf8"));
  } catch {
    return undefined;
  }
}

// ── files ───────────────────────────────────────────────────────────────────────────────────────

/** tmp, write, fsync, rename, fsync dir: a reader sees the old file or the new one, whole. */
function writeFileAtomically(dir: string, name: string, data: Buffer): void {
  const tmpPath = join(dir, `${name}.tmp`);
  const fd = openSync(tmpPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o644);
  try {
    writeFully(fd, data, 0);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmpPath, join(dir, name));
  syncDirectory(dir);
}

/** Writes header + body parts to a new entries file, swaps it in, and returns it open for appends. */
function writeEntriesFileAtomically(dir: string, prevIndex: number, prevTerm: number, body: readonly Buffer[]): number {
  const tmpPath = join(dir, `${RAFT_ENTRIES_FILE}.tmp`);
  const fd = openSync(tmpPath, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o644);
  try {
    writeFully(fd, Buffer.concat([encodeHeader(prevIndex, prevTerm), ...body]), 0);
    fdatasyncSync(fd);
    renameSync(tmpPath, join(dir, RAFT_ENTRIES_FILE));
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  syncDirectory(dir);
  return fd;
}

function readTermVote(path: string, warnings: string[]): { term: number; votedFor: NodeId | null } | null {
  const data = readIfExists(path, 4096, warnings);
  if (data === null) return null;
  const parsed = termVoteSchema.safeParse(parseJson(data));
  if (!parsed.success) {
    warnings.push(`${RAFT_TERM_VOTE_FILE}: unreadable, ignored (the term is taken from the log)`);
    return null;
  }
  return parsed.data as { term: number; votedFor: NodeId | null };
}

function readSnapshot(path: string, warnings: string[]): Snapshot<State> | null {
  const data = readIfExists(path, RAFT_SNAPSHOT_BYTES_MAX, warnings);
  if (data === null) return null;
  let decoded: unknown;
  try {
    decoded = packr.unpack(data);
  } catch {
    decoded = undefined;
  }
  const parsed = snapshotSchema.safeParse(decoded);
  if (!parsed.success || parsed.data.state.lastIdx !== parsed.data.lastIndex) {
    warnings.push(`${RAFT_SNAPSHOT_FILE}: unreadable, ignored (the node catches up from the leader)`);
    return null;
  }
  return parsed.data as Snapshot<State>;
}

function readIfExists(path: string, bytesMax: number, warnings: string[]): Buffer | null {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  try {
    const sizeBytes = fstatSync(fd).size;
    if (sizeBytes > bytesMax) {
      warnings.push(`${path}: ${sizeBytes} bytes, more than ${bytesMax}; ignored`);
      return null;
    }
    const data = Buffer.allocUnsafe(sizeBytes);
    let done = 0;
    while (done < sizeBytes) {
      const n = readSync(fd, data, done, sizeBytes - done, done);
      if (n === 0) break;
      done += n;
    }
    return data.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}
