// The durable store behind RaftDriver's persist hook: what persist() was last given is what open()
// returns — after close(), after a "kill" (the store simply abandoned, never closed), through
// truncations, compactions and snapshot installs — and a damaged directory never crashes open().
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { after, test } from "node:test";
import type { SkeinHardState } from "../../src/election/raft-store.ts";
import { RAFT_ENTRIES_FILE, RAFT_SNAPSHOT_FILE, RAFT_TERM_VOTE_FILE, RaftStore } from "../../src/election/raft-store.ts";
import { Prng } from "../../src/election/prng.ts";
import type { LogEntry, Snapshot } from "../../src/election/raft.ts";
import { apply } from "../../src/shared/apply.ts";
import type { NodeId, TaskId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";
import { hardAtStep } from "./fixtures/store-history.ts";

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "skein-raft-store-"));
  dirs.push(dir);
  return dir;
}

/** An entry whose event is a MasterChanged (it folds into State) tagged so two histories differ. */
function entry(index: number, term: number, tag = ""): LogEntry<IndexedEvent> {
  return { index, term, payload: { idx: index, atMs: 1_000 + index, event: { type: "MasterChanged", nodeId: `n${tag}${index % 5}` as NodeId, term } } };
}
const entries = (from: number, to: number, term: number, tag = ""): LogEntry<IndexedEvent>[] => Array.from({ length: to - from + 1 }, (_, i) => entry(from + i, term, tag));

/** The snapshot of a log's first entries, folded with the shared apply. */
function snapshotOf(log: readonly LogEntry<IndexedEvent>[], lastIndex: number): Snapshot<State> {
  let state = emptyState();
  for (const e of log) if (e.index <= lastIndex) state = apply(state, e.payload);
  const last = log.find((e) => e.index === lastIndex);
  return { lastIndex, lastTerm: last?.term ?? 0, state };
}
const EMPTY: Snapshot<State> = { lastIndex: -1, lastTerm: 0, state: emptyState() };

function hard(term: number, votedFor: string | null, snapshot: Snapshot<State>, log: readonly LogEntry<IndexedEvent>[]): SkeinHardState {
  return { term, votedFor: votedFor as NodeId | null, snapshot, log: log.filter((e) => e.index > snapshot.lastIndex) };
}

/** Reopens without closing `store` (as after kill -9: the writes are in the page cache, nothing more). */
function reopen(dir: string) {
  return RaftStore.open(dir);
}

function assertSameHard(actual: SkeinHardState | null, expected: SkeinHardState, label: string): void {
  assert.ok(actual !== null, `${label}: nothing read back`);
  assert.equal(actual.term, expected.term, `${label}: term`);
  assert.equal(actual.votedFor, expected.votedFor, `${label}: votedFor`);
  assert.equal(actual.snapshot.lastIndex, expected.snapshot.lastIndex, `${label}: snapshot index`);
  assert.equal(actual.snapshot.lastTerm, expected.snapshot.lastTerm, `${label}: snapshot term`);
  assert.deepEqual(actual.snapshot.state, expected.snapshot.state, `${label}: snapshot state`);
  assert.deepEqual(actual.log, expected.log, `${label}: log`);
}

test("a fresh directory holds nothing; persisted states come back after close and after an abandoned store", async () => {
  const dir = freshDir();
  const opened = RaftStore.open(dir);
  assert.equal(opened.hard, null);
  assert.equal(opened.warning, null);
  const { store } = opened;
  const log = entries(0, 9, 1);
  store.persist(hard(1, "n1", EMPTY, log.slice(0, 3)));
  store.persist(hard(1, "n1", EMPTY, log));
  assertSameHard(reopen(dir).hard, hard(1, "n1", EMPTY, log), "kill-style reopen");
  store.persist(hard(2, null, EMPTY, log));
  await store.close();
  const again = RaftStore.open(dir);
  assert.equal(again.warning, null);
  assertSameHard(again.hard, hard(2, null, EMPTY, log), "after close");
  assert.equal(store.stats.termVoteWrites, 2, "term and vote written only when they changed");
  await again.store.close();
});

test("a conflicting suffix is truncated in place; the log that replaces it comes back", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const old = entries(0, 9, 1);
  store.persist(hard(1, null, EMPTY, old));
  const sizeBefore = store.entriesFileBytes;
  const replaced = [...old.slice(0, 6), ...entries(6, 7, 2, "x")];
  store.persist(hard(2, null, EMPTY, replaced));
  assert.equal(store.stats.truncations, 1);
  assert.equal(store.stats.rewrites, 0, "a truncation does not rewrite the file");
  assert.ok(store.entriesFileBytes < sizeBefore, "the file lost the conflicting records");
  assertSameHard(reopen(dir).hard, hard(2, null, EMPTY, replaced), "after truncation");
  // Log shorter than the file with no new entries (a truncation alone) also comes back.
  store.persist(hard(2, null, EMPTY, old.slice(0, 4)));
  assertSameHard(reopen(dir).hard, hard(2, null, EMPTY, old.slice(0, 4)), "after a bare truncation");
  await store.close();
});

test("compaction: once the snapshot passes half the file, the file is rewritten smaller", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const log = entries(0, 199, 1);
  store.persist(hard(1, null, EMPTY, log));
  const fullBytes = statSync(join(dir, RAFT_ENTRIES_FILE)).size;
  const snapshotWritesBefore = store.stats.snapshotWrites;
  // The snapshot passes a quarter: not yet worth a rewrite.
  store.persist(hard(1, null, snapshotOf(log, 49), log));
  assert.equal(store.stats.rewrites, 0);
  assertSameHard(reopen(dir).hard, hard(1, null, snapshotOf(log, 49), log), "snapshot ahead of the file's start");
  const snapshot = snapshotOf(log, 149);
  store.persist(hard(1, null, snapshot, log));
  assert.equal(store.stats.rewrites, 1);
  const compactBytes = statSync(join(dir, RAFT_ENTRIES_FILE)).size;
  assert.ok(compactBytes < fullBytes / 3, `file ${compactBytes} bytes after compaction, was ${fullBytes}`);
  assertSameHard(reopen(dir).hard, hard(1, null, snapshot, log), "after compaction");
  // Appends continue behind the rewritten file.
  const longer = [...log, ...entries(200, 209, 1)];
  store.persist(hard(1, null, snapshot, longer));
  assertSameHard(reopen(dir).hard, hard(1, null, snapshot, longer), "appended after compaction");
  assert.equal(store.stats.snapshotWrites - snapshotWritesBefore, 2, "one write per new snapshot, none for appends");
  await store.close();
});

test("a snapshot installed past the whole file (tail discarded) replaces the file", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  store.persist(hard(1, null, EMPTY, entries(0, 9, 1)));
  const leaderLog = [...entries(0, 5, 1), ...entries(6, 40, 3, "L")];
  const snapshot = snapshotOf(leaderLog, 30);
  const installed = hard(3, null, snapshot, leaderLog.slice(31, 35));
  store.persist(installed);
  assertSameHard(reopen(dir).hard, installed, "after install");
  // A crash between the snapshot write and the rewrite: the old file does not continue the new
  // snapshot and is dropped rather than spliced onto it.
  const dir2 = freshDir();
  const second = RaftStore.open(dir2).store;
  second.persist(hard(1, null, EMPTY, entries(0, 40, 1)));
  writeFileSync(join(dir2, RAFT_SNAPSHOT_FILE), readFileSync(join(dir, RAFT_SNAPSHOT_FILE)));
  const torn = reopen(dir2);
  assert.ok(torn.hard !== null);
  assert.equal(torn.hard.snapshot.lastIndex, 30);
  assert.deepEqual(torn.hard.log, [], "entries of term 1 after a term-3 snapshot are not kept");
  assert.match(torn.warning ?? "", /do not continue the snapshot/);
  await store.close();
  await second.close();
  await torn.store.close();
});

test("a torn tail and a corrupt record are cut off with a warning; the prefix survives", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const log = entries(0, 19, 1);
  store.persist(hard(1, "n0", EMPTY, log));
  await store.close();
  const path = join(dir, RAFT_ENTRIES_FILE);
  const whole = readFileSync(path);
  // Half of a record appended (a write cut short by a crash).
  appendFileSync(path, whole.subarray(whole.length - 30, whole.length - 10));
  const torn = RaftStore.open(dir);
  assert.match(torn.warning ?? "", /dropped 20 bytes/);
  assertSameHard(torn.hard, hard(1, "n0", EMPTY, log), "torn tail");
  await torn.store.close();
  assert.equal(statSync(path).size, whole.length, "the torn bytes were cut off the file");

  // One flipped byte inside record 12's payload: entries 0..10 stay (record 0 is the header).
  const damaged = Buffer.from(whole);
  let offset = 0;
  for (let record = 0; record < 12; record++) offset += 8 + damaged.readUInt32LE(offset);
  damaged.writeUInt8(damaged.readUInt8(offset + 8 + 5) ^ 0x55, offset + 8 + 5);
  writeFileSync(path, damaged);
  const corrupt = RaftStore.open(dir);
  assert.match(corrupt.warning ?? "", /CRC mismatch/);
  assertSameHard(corrupt.hard, hard(1, "n0", EMPTY, log.slice(0, 11)), "corrupt record");
  // The store goes on from the prefix.
  corrupt.store.persist(hard(1, "n0", EMPTY, log));
  assertSameHard(reopen(dir).hard, hard(1, "n0", EMPTY, log), "rewritten after the damage");
  await corrupt.store.close();
});

test("garbage in every file never crashes open(); the store works afterwards", async () => {
  const prng = new Prng(99);
  const garbage = (n: number) => Buffer.from(Array.from({ length: n }, () => prng.int(256)));
  for (const variant of ["entries", "term-vote", "snapshot", "all", "empty files"] as const) {
    const dir = freshDir();
    const { store } = RaftStore.open(dir);
    const log = entries(0, 9, 2);
    store.persist(hard(2, "n1", snapshotOf(log, 3), log));
    await store.close();
    if (variant === "entries" || variant === "all") writeFileSync(join(dir, RAFT_ENTRIES_FILE), garbage(5_000));
    if (variant === "term-vote" || variant === "all") writeFileSync(join(dir, RAFT_TERM_VOTE_FILE), garbage(40));
    if (variant === "snapshot" || variant === "all") writeFileSync(join(dir, RAFT_SNAPSHOT_FILE), garbage(700));
    if (variant === "empty files") for (const f of [RAFT_ENTRIES_FILE, RAFT_TERM_VOTE_FILE, RAFT_SNAPSHOT_FILE]) writeFileSync(join(dir, f), "");
    const opened = RaftStore.open(dir);
    assert.notEqual(opened.warning, null, `${variant}: a warning`);
    if (variant === "term-vote") {
      assert.equal(opened.hard?.term, 2, "the term is recovered from the log");
      assert.equal(opened.hard?.votedFor, null);
      assert.deepEqual(opened.hard?.log, log.slice(4));
    }
    if (variant === "entries") assert.deepEqual(opened.hard?.log, [], "entries: nothing kept");
    const next = hard(3, null, EMPTY, entries(0, 4, 3, "new"));
    opened.store.persist(next);
    assertSameHard(reopen(dir).hard, next, `${variant}: persisted after garbage`);
    await opened.store.close();
  }
});

test("restart equivalence over random histories: appends, elections, conflicts, snapshots, installs", async () => {
  const seed = Number(process.env.SKEIN_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`raft-store random histories: seed ${seed} (replay: SKEIN_SEED=${seed})`);
  const prng = new Prng(seed);
  for (let round = 0; round < 6; round++) {
    const dir = freshDir();
    let { store } = RaftStore.open(dir);
    let term = 1;
    let votedFor: string | null = null;
    let full: LogEntry<IndexedEvent>[] = []; // every entry from index 0, snapshot part included
    let snapshot = EMPTY;
    let committed = -1;
    store.persist(hard(term, votedFor, snapshot, full));
    for (let stepNo = 0; stepNo < 150; stepNo++) {
      const choice = prng.int(100);
      const last = full.length - 1;
      if (choice < 55) {
        full = [...full, ...entries(last + 1, last + 1 + prng.int(20), term, `r${round}t${term}`)];
      } else if (choice < 65) {
        term++;
        votedFor = prng.chance(0.5) ? `n${prng.int(3)}` : null;
      } else if (choice < 75 && last > committed) {
        // A new leader's log wins over this node's uncommitted suffix.
        term++;
        const keep = committed + 1 + prng.int(last - committed);
        full = [...full.slice(0, keep), ...entries(keep, keep + prng.int(5), term, `c${round}t${term}`)];
      } else if (choice < 88 && last > snapshot.lastIndex) {
        committed = Math.max(committed, snapshot.lastIndex + 1 + prng.int(last - snapshot.lastIndex));
        snapshot = snapshotOf(full, snapshot.lastIndex + 1 + prng.int(committed - snapshot.lastIndex));
      } else if (choice < 93) {
        // InstallSnapshot beyond the whole log, tail discarded.
        term++;
        const leaderLog = [...full.slice(0, committed + 1), ...entries(committed + 1, committed + 30, term, `i${round}t${term}`)];
        snapshot = snapshotOf(leaderLog, committed + 20);
        committed = committed + 20;
        full = leaderLog.slice(0, committed + 1 + prng.int(10));
      } else {
        // A restart: the abandoned store (never closed) stands for kill -9.
        const opened = reopen(dir);
        assertSameHard(opened.hard, hard(term, votedFor, snapshot, full), `round ${round} step ${stepNo} restart`);
        store = opened.store;
        continue;
      }
      committed = Math.min(committed, full.length - 1);
      store.persist(hard(term, votedFor, snapshot, full));
    }
    assertSameHard(reopen(dir).hard, hard(term, votedFor, snapshot, full), `round ${round} end`);
    await store.close();
    assertSameHard(RaftStore.open(dir).hard, hard(term, votedFor, snapshot, full), `round ${round} after close`);
  }
});

test("persist cost per entry, one ChunkGenerated per persist (printed; bounded loosely)", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const ENTRY_COUNT = 20_000;
  // Entries after the snapshot. Grown in place: the store only reads the arrays it is given.
  let log: LogEntry<IndexedEvent>[] = [];
  let snapshot = EMPTY;
  const text = " token";
  let persistNs = 0n;
  for (let i = 0; i < ENTRY_COUNT; i++) {
    const payload: IndexedEvent = {
      idx: i,
      atMs: 1_700_000_000_000 + i,
      event: { type: "ChunkGenerated", taskId: "task-0123456789abcdef" as TaskId, chunk: { index: i, text, tokensGenerated: i + 1, logprobs: null } },
    };
    log.push({ index: i, term: 1, payload });
    // Compaction as the core does it (logTailKeep 4096, compactionBatch 4096): at 8192 held, the
    // oldest 4096 are folded into the snapshot.
    if (log.length === 8_192) {
      snapshot = { lastIndex: log[4_095]!.index, lastTerm: 1, state: { ...emptyState(), lastIdx: log[4_095]!.index } };
      log = log.slice(4_096);
    }
    const started = process.hrtime.bigint();
    store.persist({ term: 1, votedFor: null, snapshot, log });
    persistNs += process.hrtime.bigint() - started;
  }
  const elapsedMs = Number(persistNs) / 1e6;
  const perEntryUs = (elapsedMs * 1000) / ENTRY_COUNT;
  console.log(
    `raft-store: ${ENTRY_COUNT} persists of one ChunkGenerated each in ${elapsedMs.toFixed(0)} ms = ${perEntryUs.toFixed(1)} µs per entry ` +
      `(${store.stats.rewrites} compactions, ${store.stats.snapshotWrites} snapshot writes, ${store.stats.fdatasyncs} fdatasyncs so far)`,
  );
  assert.ok(perEntryUs < 1_000, `${perEntryUs} µs per entry: not thousands per second`);
  await store.close();
  const openStarted = process.hrtime.bigint();
  const back = RaftStore.open(dir).hard;
  const openMs = Number(process.hrtime.bigint() - openStarted) / 1e6;
  console.log(`raft-store: open() read back ${back?.log.length} entries (+ snapshot) in ${openMs.toFixed(0)} ms`);
  assert.equal(back?.log.at(-1)?.index, ENTRY_COUNT - 1);

  // The strict mode for comparison: an fdatasync inside every persist.
  const strict = RaftStore.open(freshDir(), { fsyncIntervalMs: 0 }).store;
  const STRICT_COUNT = 200;
  const strictLog = entries(0, STRICT_COUNT - 1, 1);
  const strictStarted = process.hrtime.bigint();
  for (let i = 1; i <= STRICT_COUNT; i++) strict.persist({ term: 1, votedFor: null, snapshot: EMPTY, log: strictLog.slice(0, i) });
  const strictUs = Number(process.hrtime.bigint() - strictStarted) / 1e3 / STRICT_COUNT;
  console.log(`raft-store: with fsyncIntervalMs 0, ${strictUs.toFixed(0)} µs per persist of one entry (${strict.stats.fdatasyncs} fdatasyncs)`);
  assert.equal(strict.stats.fdatasyncs, STRICT_COUNT);
  await strict.close();
});

test("kill -9 of a persisting process: a restart reads back the state of a step at or after the last one it reported", async () => {
  const dir = freshDir();
  const fixture = join(import.meta.dirname, "fixtures", "persist-until-killed.ts");
  const child = spawn(process.execPath, ["--import", "tsx", fixture, dir], { stdio: ["ignore", "pipe", "inherit"] });
  let reportedStep = -1;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the writer reported no progress within 30 s")), 30_000);
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (text: string) => {
        reportedStep = Number(text.trim().split("\n").at(-1));
        // Past two term changes and several compactions.
        if (reportedStep >= 1_600) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => reject(new Error(`the writer exited early (${code})`)));
    });
  } finally {
    child.kill("SIGKILL");
  }
  await new Promise((resolve) => child.once("close", resolve));
  const opened = RaftStore.open(dir);
  assert.equal(opened.warning, null, "persist() returns only after whole records are written: nothing torn");
  const lastIndex = opened.hard?.log.at(-1)?.index ?? -1;
  assert.ok(lastIndex >= reportedStep, `log ends at ${lastIndex}, the writer had reported step ${reportedStep}`);
  assertSameHard(opened.hard, hardAtStep(lastIndex), `state of step ${lastIndex}`);
  await opened.store.close();
});

test("temporary files left by a crash in the middle of an atomic write are ignored and replaced", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const log = entries(0, 9, 1);
  store.persist(hard(1, "n2", snapshotOf(log, 4), log));
  await store.close();
  for (const name of [RAFT_ENTRIES_FILE, RAFT_SNAPSHOT_FILE, RAFT_TERM_VOTE_FILE]) writeFileSync(join(dir, `${name}.tmp`), "half-written garbage");
  const opened = RaftStore.open(dir);
  assert.equal(opened.warning, null);
  assertSameHard(opened.hard, hard(1, "n2", snapshotOf(log, 4), log), "tmp files ignored");
  const next = hard(2, null, snapshotOf(log, 8), log);
  opened.store.persist(next);
  assertSameHard(reopen(dir).hard, next, "atomic writes went through the stale tmp files");
  await opened.store.close();
});

test("a new snapshot object is written even at the same index and term (an owner's rebuilt State)", async () => {
  const dir = freshDir();
  const { store } = RaftStore.open(dir);
  const log = entries(0, 9, 1);
  const first = snapshotOf(log, 9);
  store.persist(hard(1, null, first, log));
  // Same index and term, another State (e.g. members cleared by a node founding its own cluster).
  const rebuilt: Snapshot<State> = { ...first, state: { ...first.state, members: [], clusterId: null, masterNodeId: "n-other" as NodeId } };
  store.persist(hard(2, null, rebuilt, []));
  assert.equal(store.stats.snapshotWrites, 2);
  assertSameHard(reopen(dir).hard, hard(2, null, rebuilt, []), "the rebuilt snapshot");
  // The same object again is not rewritten.
  store.persist(hard(3, null, rebuilt, []));
  assert.equal(store.stats.snapshotWrites, 2);
  await store.close();
});
