// Commands and worker reports travel from any node to the master (the elected leader) through an
// ordered outbox: each item has a sequence number per sender process (`epoch`), the leader handles
// them strictly in sequence and acknowledges, and the sender re-sends what is unacknowledged — after
// a timeout, and all of it when the leader changes. Master handlers are idempotent (ids, the chunk
// index), so the duplicates a failover can cause are harmless; what the old leader never committed
// is sent again to the new one instead of being lost.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import type { NodeId } from "../shared/ids.ts";
import type { Command, Event } from "../shared/types.ts";

/** Unacknowledged items kept; past it the oldest are dropped (a leader that never answers). */
export const FORWARD_OUTBOX_MAX = 16_384;
/** An item unacknowledged this long is sent again. */
export const FORWARD_RESEND_MS = 1_000;
/** Items per flush, so a long outbox does not stall the event loop after a failover. */
const FORWARD_BATCH_MAX = 1_024;

export const FORWARD_TOPIC = "forward";
export const FORWARD_ACK_TOPIC = "forwardAck";

export type ForwardItem = { readonly kind: "command"; readonly command: Command } | { readonly kind: "workerEvent"; readonly event: Event };

// The payloads are checked again by the master (CommandSchema / EventSchema); here only the envelope.
export const ForwardMessageSchema = z.object({
  topic: z.literal(FORWARD_TOPIC),
  epoch: z.string().min(1).max(64),
  seq: z.number().int().min(0),
  item: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("command"), command: z.object({ type: z.string() }).passthrough() }),
    z.object({ kind: z.literal("workerEvent"), event: z.object({ type: z.string() }).passthrough() }),
  ]),
});
export const ForwardAckSchema = z.object({ topic: z.literal(FORWARD_ACK_TOPIC), epoch: z.string().min(1).max(64), seq: z.number().int().min(0) });

interface Pending {
  readonly seq: number;
  readonly item: ForwardItem;
  sentTo: NodeId | null;
  sentAtMs: number;
}

export interface OutboxIo {
  send(to: NodeId, message: unknown): boolean;
  nowMs(): number;
  onDropped(count: number): void;
}

/** The sending side. Not thread-safe, not re-entrant: one owner calls it from the event loop. */
export class Outbox {
  readonly epoch = randomUUID();
  private nextSeq = 0;
  private pending: Pending[] = [];

  constructor(private readonly io: OutboxIo) {}

  get size(): number {
    return this.pending.length;
  }

  push(item: ForwardItem): void {
    this.pending.push({ seq: this.nextSeq++, item, sentTo: null, sentAtMs: 0 });
    if (this.pending.length > FORWARD_OUTBOX_MAX) {
      const dropped = this.pending.length - FORWARD_OUTBOX_MAX;
      this.pending = this.pending.slice(dropped);
      this.io.onDropped(dropped);
    }
  }

  /** Takes every item, in order, for the local master (this node leads). */
  drain(): ForwardItem[] {
    const items = this.pending.map((p) => p.item);
    this.pending = [];
    return items;
  }

  /** Sends what `leaderId` has not seen or has not acknowledged in time, oldest first. */
  flush(leaderId: NodeId): void {
    const nowMs = this.io.nowMs();
    let sent = 0;
    for (const p of this.pending) {
      if (sent >= FORWARD_BATCH_MAX) return;
      if (p.sentTo === leaderId && nowMs - p.sentAtMs < FORWARD_RESEND_MS) continue;
      if (!this.io.send(leaderId, { topic: FORWARD_TOPIC, epoch: this.epoch, seq: p.seq, item: p.item })) return;
      p.sentTo = leaderId;
      p.sentAtMs = nowMs;
      sent++;
    }
  }

  acknowledge(epoch: string, seq: number): void {
    if (epoch !== this.epoch) return;
    let i = 0;
    while (i < this.pending.length && this.pending[i]!.seq <= seq) i++;
    if (i > 0) this.pending = this.pending.slice(i);
  }
}

/**
 * The receiving side, on the leader: accepts each sender's items in sequence. The first item seen
 * from a sender process starts its sequence (a new leader does not know what the old one handled).
 */
export class Inbox {
  private readonly expected = new Map<NodeId, { epoch: string; nextSeq: number }>();

  /** "handle": new, in order; "duplicate": already handled (acknowledge again); "early": a gap, wait for the re-send. */
  judge(from: NodeId, epoch: string, seq: number): "handle" | "duplicate" | "early" {
    const known = this.expected.get(from);
    if (known === undefined || known.epoch !== epoch) {
      this.expected.set(from, { epoch, nextSeq: seq + 1 });
      return "handle";
    }
    if (seq < known.nextSeq) return "duplicate";
    if (seq > known.nextSeq) return "early";
    known.nextSeq++;
    return "handle";
  }

  /** A new term's leader starts afresh (its predecessor's progress is unknown to it). */
  reset(): void {
    this.expected.clear();
  }
}
