// Link bandwidth, measured by a probe: the sender writes a small "start" frame followed at once by
// PROBE_PAYLOAD_BYTES of filler in a few frames; the receiver notes when the start frame and the
// last frame arrive and answers with the payload bytes and the time between them. The sender turns
// that into bytes per second. The receiver's clock times both ends, so no clock sync is needed and a
// late answer is still a valid measurement.
//
// Limits of the method: it measures one TCP stream's goodput for ~1 MiB, which on a fresh
// connection may still be in slow start (it reads low on long fat links); on loopback it measures
// memory copies and the event loop, not a network; a busy receiver event loop reads several chunks
// at once and reads high. It is a rough figure for placement and the dashboard, not a benchmark.
// The sender sends it only when its send queue is empty, so it delays other frames by at most the
// time 1 MiB takes on the wire (~8 ms at 1 Gbit/s).
//
// Peers announce PROBE_VERSION in their hello; a peer that does not is never probed, and a probe of
// another version is ignored (no answer). A probe of our version that is malformed, oversize or out
// of order is a protocol error the link closes over.
import { z } from "zod";

export const PROBE_VERSION = 1;
/** Filler bytes per probe: enough to span many socket reads, small enough not to hold up other frames. */
export const PROBE_PAYLOAD_BYTES = 1024 * 1024;
export const PROBE_FRAME_PAYLOAD_BYTES = 256 * 1024;
/** What a receiver accepts: a larger frame, or more frames per probe, closes the link. */
export const PROBE_FRAME_PAYLOAD_BYTES_MAX = 1024 * 1024;
export const PROBE_FRAMES_MAX = 64;
/** First probe this long after the link opens (heartbeats and the election's first messages go first). */
export const PROBE_FIRST_DELAY_MS = 500;
/** Then again every few minutes: link speeds change rarely, and every probe costs the link 1 MiB. */
export const PROBE_INTERVAL_MS = 5 * 60_000;
/** The send queue was not empty: try again this much later. */
export const PROBE_RETRY_DELAY_MS = 1_000;

const ProbeIdSchema = z.number().int().min(0).max(2 ** 31 - 1);

export const ProbeFrameSchema = z
  .object({
    type: z.literal("probe"),
    v: z.literal(PROBE_VERSION),
    id: ProbeIdSchema,
    seq: z.number().int().min(0),
    count: z.number().int().min(2).max(PROBE_FRAMES_MAX),
    data: z.custom<Uint8Array>(
      (b) => b instanceof Uint8Array && b.length <= PROBE_FRAME_PAYLOAD_BYTES_MAX,
      `probe data must be bytes, at most ${PROBE_FRAME_PAYLOAD_BYTES_MAX}`,
    ),
  })
  .refine((f) => f.seq < f.count, "probe seq must be below count");
export type ProbeFrame = z.infer<typeof ProbeFrameSchema>;

export const ProbeResultSchema = z.object({
  type: z.literal("probeResult"),
  v: z.literal(PROBE_VERSION),
  id: ProbeIdSchema,
  bytes: z.number().int().min(0).max(PROBE_FRAMES_MAX * PROBE_FRAME_PAYLOAD_BYTES_MAX),
  spanMs: z.number().min(0).max(3_600_000),
});
export type ProbeResult = z.infer<typeof ProbeResultSchema>;

const FILLER = new Uint8Array(PROBE_FRAME_PAYLOAD_BYTES);

/** The frames of probe `id`: an empty start frame, then the payload. */
export function probeFrames(id: number, payloadBytes: number = PROBE_PAYLOAD_BYTES): ProbeFrame[] {
  const payloadFrames = Math.max(1, Math.ceil(payloadBytes / PROBE_FRAME_PAYLOAD_BYTES));
  const count = payloadFrames + 1;
  const frames: ProbeFrame[] = [{ type: "probe", v: PROBE_VERSION, id, seq: 0, count, data: new Uint8Array(0) }];
  for (let seq = 1; seq < count; seq++) {
    const bytes = Math.min(PROBE_FRAME_PAYLOAD_BYTES, payloadBytes - (seq - 1) * PROBE_FRAME_PAYLOAD_BYTES);
    frames.push({ type: "probe", v: PROBE_VERSION, id, seq, count, data: FILLER.subarray(0, bytes) });
  }
  return frames;
}

/** Bytes per second from an answer, or null when it cannot say (no time passed, nothing counted). */
export function bandwidthOf(result: ProbeResult): number | null {
  if (result.bytes === 0 || result.spanMs <= 0) return null;
  return Math.round((result.bytes * 1000) / result.spanMs);
}

/** The version of a probe or probe answer: another version is ignored, a missing one is malformed. */
export function probeVersionOf(raw: unknown): number | null {
  const v = (raw as { v?: unknown } | null)?.v;
  return typeof v === "number" ? v : null;
}

export type ProbeVerdict =
  | { readonly kind: "ignored"; readonly reason: string }
  | { readonly kind: "malformed"; readonly reason: string }
  | { readonly kind: "partial" }
  | { readonly kind: "done"; readonly result: ProbeResult };

/** The receiving end: one probe at a time per link; a new start frame abandons an unfinished probe. */
export class ProbeReceiver {
  private current: { id: number; count: number; nextSeq: number; firstAtMs: number; bytes: number } | null = null;

  receive(raw: unknown, nowMs: number): ProbeVerdict {
    const v = probeVersionOf(raw);
    if (v === null) return { kind: "malformed", reason: "malformed probe: no version" };
    if (v !== PROBE_VERSION) return { kind: "ignored", reason: `probe version ${v} is not ours (${PROBE_VERSION})` };
    const parsed = ProbeFrameSchema.safeParse(raw);
    if (!parsed.success) return { kind: "malformed", reason: `malformed probe: ${parsed.error.issues[0]?.message ?? "?"}` };
    const frame = parsed.data;
    if (frame.seq === 0) {
      this.current = { id: frame.id, count: frame.count, nextSeq: 1, firstAtMs: nowMs, bytes: 0 };
      return { kind: "partial" };
    }
    const probe = this.current;
    if (probe === null || probe.id !== frame.id || probe.count !== frame.count || probe.nextSeq !== frame.seq) {
      return { kind: "malformed", reason: `probe frame ${frame.id}/${frame.seq} out of order` };
    }
    probe.bytes += frame.data.length;
    probe.nextSeq++;
    if (probe.nextSeq < probe.count) return { kind: "partial" };
    this.current = null;
    return { kind: "done", result: { type: "probeResult", v: PROBE_VERSION, id: probe.id, bytes: probe.bytes, spanMs: nowMs - probe.firstAtMs } };
  }
}
