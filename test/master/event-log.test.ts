import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { EventLog, encodeRecord, EVENT_RECORD_HEADER_BYTES, FSYNC_INTERVAL_MS } from "../../src/master/event-log.ts";
import { AssertionError } from "../../src/shared/assert.ts";
import { crc32 } from "../../src/shared/crc32.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import { EVENT_LOG_PAGE_MAX } from "../../src/shared/limits.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";

const root = mkdtempSync(path.join(tmpdir(), "skein-event-log-"));
after(() => rmSync(root, { recursive: true, force: true }));
let fileCount = 0;
const freshPath = (): string => path.join(root, `log-${fileCount++}`, "events.log");

function makeEvent(idx: number): IndexedEvent {
  return { idx, atMs: 1_700_000_000_000 + idx, event: { type: "MasterChanged", nodeId: `node-${idx}` as NodeId, term: idx } };
}
const makeEvents = (fromIdx: number, count: number): IndexedEvent[] => Array.from({ length: count }, (_, i) => makeEvent(fromIdx + i));

/** A log on disk with `count` events, closed. Returns the path and each record's byte length. */
async function writeLog(count: number): Promise<{ file: string; recordBytes: number[] }> {
  const file = freshPath();
  const log = EventLog.open(file);
  const events = makeEvents(0, count);
  log.append(events);
  await log.close();
  return { file, recordBytes: events.map((e) => encodeRecord(e).length) };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test("crc32 matches the standard check value", () => {
  assert.equal(crc32(Buffer.from("123456789")), 0xcbf43926);
  assert.equal(crc32(Buffer.alloc(0)), 0);
  // Continuing a CRC over a split input gives the CRC of the whole.
  assert.equal(crc32(Buffer.from("6789"), crc32(Buffer.from("12345"))), 0xcbf43926);
});

test("a new log in a missing directory starts empty", async () => {
  const file = freshPath();
  assert.equal(existsSync(path.dirname(file)), false);
  const log = EventLog.open(file);
  assert.equal(log.count, 0);
  assert.equal(log.lastIdx, -1);
  assert.equal(log.warning, null);
  assert.deepEqual(log.readSince(0), []);
  assert.equal(existsSync(file), true);
  await log.close();
});

test("round trip: appended events read back in order, from any idx, bounded by limit", async () => {
  const log = EventLog.open(freshPath());
  log.append(makeEvents(0, 3));
  log.append(makeEvents(3, 2));
  assert.equal(log.count, 5);
  assert.equal(log.lastIdx, 4);
  assert.deepEqual(log.readSince(0), makeEvents(0, 5));
  assert.deepEqual(log.readSince(3), makeEvents(3, 2));
  assert.deepEqual(log.readSince(1, 2), makeEvents(1, 2));
  assert.deepEqual(log.readSince(5), []);
  assert.deepEqual(log.readSince(2, 0), []);
  await log.close();
});

test("readSince returns at most EVENT_LOG_PAGE_MAX events", async () => {
  const log = EventLog.open(freshPath());
  log.append(makeEvents(0, EVENT_LOG_PAGE_MAX + 10));
  const page = log.readSince(0, EVENT_LOG_PAGE_MAX * 2);
  assert.equal(page.length, EVENT_LOG_PAGE_MAX);
  assert.equal(page.at(-1)?.idx, EVENT_LOG_PAGE_MAX - 1);
  assert.equal(log.readSince(EVENT_LOG_PAGE_MAX).length, 10);
  await log.close();
});

test("a restart reads every event back and appends continue after them", async () => {
  const { file } = await writeLog(5);
  const reopened = EventLog.open(file);
  assert.equal(reopened.warning, null);
  assert.deepEqual(reopened.readSince(0), makeEvents(0, 5));
  reopened.append([makeEvent(5)]);
  await reopened.close();
  const again = EventLog.open(file);
  assert.deepEqual(again.readSince(0), makeEvents(0, 6));
  await again.close();
});

test("events survive without close(): append has written them before it returns", async () => {
  const file = freshPath();
  const log = EventLog.open(file);
  log.append(makeEvents(0, 4));
  // A second reader sees what a restarted process would see after a crash of this one.
  const reader = EventLog.open(file);
  assert.equal(reader.warning, null);
  assert.deepEqual(reader.readSince(0), makeEvents(0, 4));
  await reader.close();
  await log.close();
});

test("group commit: appends within one interval share one fdatasync, run by the timer", async () => {
  const log = EventLog.open(freshPath());
  const startedMs = Date.now();
  log.append(makeEvents(0, 2));
  log.append(makeEvents(2, 1));
  log.append(makeEvents(3, 1));
  assert.equal(log.fdatasyncCount, 0);
  await waitFor(() => log.fdatasyncCount >= 1, 2_000);
  assert.ok(Date.now() - startedMs >= FSYNC_INTERVAL_MS - 5, "the timer waited for the interval");
  assert.equal(log.fdatasyncCount, 1);
  await log.sync(); // nothing unsynced: no second fdatasync
  assert.equal(log.fdatasyncCount, 1);
  log.append(makeEvents(4, 1));
  await log.sync();
  assert.equal(log.fdatasyncCount, 2);
  await log.close();
  await log.close(); // idempotent
});

test("a torn tail (file cut mid-record) is dropped, reported, and appends continue", async () => {
  const { file, recordBytes } = await writeLog(3);
  const fullBytes = statSync(file).size;
  truncateSync(file, fullBytes - 5);
  const log = EventLog.open(file);
  assert.notEqual(log.warning, null);
  assert.equal(log.warning?.droppedBytes, recordBytes[2]! - 5);
  assert.equal(log.warning?.validEventCount, 2);
  assert.match(log.warning?.reason ?? "", /torn payload/);
  assert.equal(statSync(file).size, fullBytes - recordBytes[2]!);
  assert.deepEqual(log.readSince(0), makeEvents(0, 2));
  log.append([makeEvent(2)]);
  await log.close();
  const again = EventLog.open(file);
  assert.equal(again.warning, null);
  assert.deepEqual(again.readSince(0), makeEvents(0, 3));
  await again.close();
});

test("a torn header (fewer than 8 bytes after the last record) is dropped", async () => {
  const { file } = await writeLog(2);
  const validBytes = statSync(file).size;
  appendFileSync(file, Buffer.from([1, 2, 3]));
  const log = EventLog.open(file);
  assert.equal(log.warning?.droppedBytes, 3);
  assert.match(log.warning?.reason ?? "", /torn header/);
  assert.equal(log.count, 2);
  assert.equal(statSync(file).size, validBytes);
  await log.close();
});

test("a corrupt CRC in the last record drops that record only", async () => {
  const { file, recordBytes } = await writeLog(3);
  const bytes = readFileSync(file);
  const lastStart = bytes.length - recordBytes[2]!;
  const flipAt = lastStart + EVENT_RECORD_HEADER_BYTES + 3;
  bytes[flipAt] = bytes[flipAt]! ^ 0x01;
  writeFileSync(file, bytes);
  const log = EventLog.open(file);
  assert.match(log.warning?.reason ?? "", /CRC mismatch/);
  assert.equal(log.warning?.droppedBytes, recordBytes[2]);
  assert.deepEqual(log.readSince(0), makeEvents(0, 2));
  await log.close();
});

test("a garbage file is dropped whole and the log starts empty", async () => {
  const file = freshPath();
  const log0 = EventLog.open(file);
  await log0.close();
  const garbage = Buffer.alloc(1000);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
  writeFileSync(file, garbage);
  const log = EventLog.open(file);
  assert.equal(log.warning?.droppedBytes, 1000);
  assert.equal(log.warning?.validBytes, 0);
  assert.equal(log.count, 0);
  assert.equal(statSync(file).size, 0);
  log.append([makeEvent(0)]);
  assert.deepEqual(log.readSince(0), [makeEvent(0)]);
  await log.close();
});

test("a record with a valid CRC that is not an IndexedEvent ends the valid prefix", async () => {
  const { file } = await writeLog(1);
  const payload = Buffer.from(JSON.stringify({ idx: 1, atMs: 0, event: { type: "NoSuchEvent" } }));
  const header = Buffer.alloc(EVENT_RECORD_HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  appendFileSync(file, Buffer.concat([header, payload]));
  const log = EventLog.open(file);
  assert.match(log.warning?.reason ?? "", /not an IndexedEvent/);
  assert.equal(log.count, 1);
  await log.close();
});

test("an idx gap on disk ends the valid prefix at the gap", async () => {
  const { file } = await writeLog(2);
  appendFileSync(file, Buffer.concat([encodeRecord(makeEvent(5)), encodeRecord(makeEvent(6))]));
  const log = EventLog.open(file);
  assert.match(log.warning?.reason ?? "", /idx 5 where 2 was expected/);
  assert.deepEqual(log.readSince(0), makeEvents(0, 2));
  await log.close();
});

test("append refuses an idx gap and writes nothing of the batch", async () => {
  const file = freshPath();
  const log = EventLog.open(file);
  assert.throws(() => log.append([makeEvent(1)]), AssertionError);
  assert.throws(() => log.append([makeEvent(0), makeEvent(2)]), AssertionError);
  assert.equal(log.count, 0);
  assert.equal(statSync(file).size, 0);
  log.append([makeEvent(0)]);
  assert.throws(() => log.append([makeEvent(0)]), AssertionError);
  assert.equal(log.count, 1);
  await log.close();
});

test("append and readSince after close are refused", async () => {
  const log = EventLog.open(freshPath());
  await log.close();
  assert.throws(() => log.append([makeEvent(0)]), AssertionError);
  assert.throws(() => log.readSince(0), AssertionError);
});

test("payloads with non-ASCII text round-trip (length counts bytes, not characters)", async () => {
  const { file } = await writeLog(0);
  const log = EventLog.open(file);
  const event: IndexedEvent = {
    idx: 0,
    atMs: 1,
    event: { type: "InstanceDeleted", instanceId: "inst-1" as never, reason: "ünïcødé — 模型 🧶" },
  };
  log.append([event]);
  await log.close();
  const again = EventLog.open(file);
  assert.equal(again.warning, null);
  assert.deepEqual(again.readSince(0), [event]);
  await again.close();
});

test("kill -9 of a writing process: a restart reads every event it had appended", async () => {
  const file = freshPath();
  const fixture = path.join(import.meta.dirname, "fixtures", "append-until-killed.ts");
  const child = spawn(process.execPath, ["--import", "tsx", fixture, file], { stdio: ["ignore", "pipe", "inherit"] });
  let reportedIdx = -1;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the writer reported no progress within 20 s")), 20_000);
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (text: string) => {
        const lines = text.trim().split("\n");
        reportedIdx = Number(lines.at(-1));
        if (reportedIdx >= 500) {
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
  const log = EventLog.open(file);
  // Everything the writer reported is there; a record cut by the kill may follow and is dropped.
  assert.ok(log.lastIdx >= reportedIdx, `lastIdx ${log.lastIdx} < reported ${reportedIdx}`);
  assert.deepEqual(log.readSince(reportedIdx - 1, 2).map((e) => e.idx), [reportedIdx - 1, reportedIdx]);
  log.append([makeEvent(log.count)]);
  await log.close();
});
