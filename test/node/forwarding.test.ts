// The ordered outbox and the leader's inbox: in order, acknowledged, re-sent after a timeout and to
// a new leader, duplicates recognised, bounded.
import assert from "node:assert/strict";
import { test } from "node:test";
import { FORWARD_OUTBOX_MAX, FORWARD_RESEND_MS, Inbox, Outbox } from "../../src/node/forwarding.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { Command } from "../../src/shared/types.ts";

const L1 = "leader-1" as NodeId;
const L2 = "leader-2" as NodeId;
const S = "sender" as NodeId;

function harness() {
  let nowMs = 0;
  let dropped = 0;
  const sent: { to: NodeId; seq: number }[] = [];
  let linkUp = true;
  const outbox = new Outbox({
    send: (to, message) => {
      if (!linkUp) return false;
      sent.push({ to, seq: (message as { seq: number }).seq });
      return true;
    },
    nowMs: () => nowMs,
    onDropped: (n) => (dropped += n),
  });
  return {
    outbox,
    sent,
    advance: (ms: number) => (nowMs += ms),
    setLink: (up: boolean) => (linkUp = up),
    dropped: () => dropped,
  };
}

const cancel = (i: number): { kind: "command"; command: Command } => ({ kind: "command", command: { type: "TaskCancelled", cancelledCommandId: `cmd-${i}` as never } });

test("items go out in order once, again only after the resend timeout, and all of them to a new leader", () => {
  const h = harness();
  for (let i = 0; i < 3; i++) h.outbox.push(cancel(i));
  h.outbox.flush(L1);
  h.outbox.flush(L1);
  assert.deepEqual(h.sent.map((x) => x.seq), [0, 1, 2]);
  h.outbox.acknowledge(h.outbox.epoch, 0);
  h.advance(FORWARD_RESEND_MS);
  h.outbox.flush(L1);
  assert.deepEqual(h.sent.slice(3).map((x) => x.seq), [1, 2], "unacknowledged items re-sent after the timeout");
  h.outbox.flush(L2);
  assert.deepEqual(h.sent.slice(5).map((x) => [x.to, x.seq]), [[L2, 1], [L2, 2]], "a new leader gets everything unacknowledged at once");
  h.outbox.acknowledge("another-epoch", 99);
  assert.equal(h.outbox.size, 2, "an acknowledgement for another process is ignored");
  h.outbox.acknowledge(h.outbox.epoch, 2);
  assert.equal(h.outbox.size, 0);
});

test("a broken link stops the flush without marking anything sent", () => {
  const h = harness();
  h.outbox.push(cancel(0));
  h.setLink(false);
  h.outbox.flush(L1);
  h.setLink(true);
  h.outbox.flush(L1);
  assert.deepEqual(h.sent.map((x) => x.seq), [0]);
});

test("the outbox is bounded: the oldest items are dropped and counted", () => {
  const h = harness();
  for (let i = 0; i < FORWARD_OUTBOX_MAX + 5; i++) h.outbox.push(cancel(i));
  assert.equal(h.outbox.size, FORWARD_OUTBOX_MAX);
  assert.equal(h.dropped(), 5);
  const drained = h.outbox.drain();
  assert.equal((drained[0] as ReturnType<typeof cancel>).command.type, "TaskCancelled");
  assert.equal(h.outbox.size, 0);
});

test("inbox: in sequence handled once, repeats are duplicates, gaps wait, a new process or leader starts afresh", () => {
  const inbox = new Inbox();
  assert.equal(inbox.judge(S, "e1", 5), "handle", "the first item seen starts the sequence (a new leader)");
  assert.equal(inbox.judge(S, "e1", 6), "handle");
  assert.equal(inbox.judge(S, "e1", 6), "duplicate");
  assert.equal(inbox.judge(S, "e1", 4), "duplicate");
  assert.equal(inbox.judge(S, "e1", 8), "early");
  assert.equal(inbox.judge(S, "e1", 7), "handle");
  assert.equal(inbox.judge(S, "e2", 0), "handle", "a restarted sender");
  inbox.reset();
  assert.equal(inbox.judge(S, "e2", 0), "handle");
});
