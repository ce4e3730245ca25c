// Length-prefixed msgpack frames: a u32 big-endian byte count, then that many bytes of msgpack.
// The decoder is fed raw socket chunks and yields whole messages. Bytes from the network are
// untrusted: a length over the limit or a body that does not decode is an operating error the
// caller turns into "close the link with this reason", never an exception that escapes.
import { Packr } from "msgpackr";

/** Largest frame body accepted on an open link (a State snapshot must fit: see the report on chunking). */
export const FRAME_BYTES_MAX = 64 * 1024 * 1024;
/** Largest frame accepted before the peer has authenticated: a stranger cannot make us buffer more. */
export const HANDSHAKE_FRAME_BYTES_MAX = 4 * 1024;
export const FRAME_HEADER_BYTES = 4;

// Records (msgpackr's shared-structure extension) are off: both ends must decode every frame alone.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encodeFrame(message: unknown): Buffer {
  const body = packr.pack(message);
  if (body.length > FRAME_BYTES_MAX) throw new FrameError(`frame of ${body.length} bytes is over FRAME_BYTES_MAX (${FRAME_BYTES_MAX})`);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

export function encodeBody(message: unknown): Buffer {
  return packr.pack(message);
}

export function decodeBody(body: Uint8Array): unknown {
  return packr.unpack(body);
}

export class FrameError extends Error {
  override name = "FrameError";
}

/**
 * Accumulates chunks and returns the messages they complete. Keeps at most one partial frame;
 * `frameBytesMax` can be lowered (before authentication) and raised later.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;

  constructor(public frameBytesMax: number = FRAME_BYTES_MAX) {}

  /** Every message the buffered bytes complete. Throws FrameError on an oversize length or a body that is not msgpack. */
  push(chunk: Buffer): unknown[] {
    this.append(chunk);
    const messages: unknown[] = [];
    for (let next = this.next(); next !== null; next = this.next()) messages.push(next.message);
    return messages;
  }

  append(chunk: Buffer): void {
    if (chunk.length > 0) this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  /**
   * The next complete message, or null. One at a time, so a reader can change `frameBytesMax`
   * between two frames of one read (the handshake's small limit must not apply to the first frame
   * after it, when both arrive together). Throws FrameError like push.
   */
  next(): { readonly message: unknown } | null {
    if (this.bufferedBytes < FRAME_HEADER_BYTES) return null;
    const head = this.peek(FRAME_HEADER_BYTES);
    const bodyBytes = head.readUInt32BE(0);
    if (bodyBytes > this.frameBytesMax) {
      throw new FrameError(`peer announced a frame of ${bodyBytes} bytes; the limit here is ${this.frameBytesMax}`);
    }
    if (this.bufferedBytes < FRAME_HEADER_BYTES + bodyBytes) return null;
    const frame = this.take(FRAME_HEADER_BYTES + bodyBytes);
    return { message: decodeStrict(frame.subarray(FRAME_HEADER_BYTES)) };
  }

  private peek(byteCount: number): Buffer {
    if (this.chunks[0]!.length < byteCount) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, byteCount);
  }

  private take(byteCount: number): Buffer {
    if (this.chunks[0]!.length < byteCount) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0]!;
    const taken = first.subarray(0, byteCount);
    if (first.length === byteCount) this.chunks.shift();
    else this.chunks[0] = first.subarray(byteCount);
    this.bufferedBytes -= byteCount;
    return taken;
  }
}

function decodeStrict(body: Buffer): unknown {
  if (body.length === 0) throw new FrameError("empty frame");
  try {
    // unpack ignores trailing bytes after the first value; a frame must hold exactly one.
    const values = packr.unpackMultiple(body) as unknown[];
    if (values.length !== 1) throw new FrameError(`frame holds ${values.length} msgpack values, expected 1`);
    return values[0];
  } catch (error) {
    if (error instanceof FrameError) throw error;
    throw new FrameError(`frame is not valid msgpack: ${(error as Error).message}`);
  }
}
