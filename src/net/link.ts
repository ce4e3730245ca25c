// A Link is one authenticated TCP connection to another node: framing, the handshake, heartbeats
// with round-trip time, and bounded sending. A link that misbehaves (garbage, oversize frames, a
// wrong secret or version, silence, a peer that does not read) is closed with a logged reason; the
// node keeps running. Reconnecting is the Dialer's job, accepting the LinkServer's. Bandwidth
// probes (bandwidth-probe.ts) run beside the heartbeats.
import net from "node:net";
import { performance } from "node:perf_hooks";
import type { Logger } from "../shared/logger.ts";
import { bandwidthOf, PROBE_FIRST_DELAY_MS, PROBE_INTERVAL_MS, PROBE_RETRY_DELAY_MS, PROBE_VERSION, ProbeReceiver, ProbeResultSchema, probeFrames, probeVersionOf } from "./bandwidth-probe.ts";
import { encodeFrame, FRAME_BYTES_MAX, FrameDecoder, FrameError, HANDSHAKE_FRAME_BYTES_MAX } from "./frame.ts";
import type { LinkIdentity, PeerHello } from "./handshake.ts";
import { helloOf, judgeHello, macOf, newNonce, verifyMac } from "./handshake.ts";

export const LINK_HEARTBEAT_INTERVAL_MS = 1_000;
/** No frame at all for this long (heartbeats included) and the link is dead: noticed within ~3.5 s. */
export const LINK_DEAD_AFTER_MS = 3_500;
export const LINK_HANDSHAKE_TIMEOUT_MS = 5_000;
/** Bytes waiting to be written (ours plus the socket's); over it the peer is not reading and the link closes. */
export const LINK_SEND_QUEUE_BYTES_MAX = 2 * FRAME_BYTES_MAX;

export interface LinkOptions {
  readonly identity: LinkIdentity;
  readonly logger: Logger;
  readonly heartbeatIntervalMs?: number;
  readonly deadAfterMs?: number;
  readonly handshakeTimeoutMs?: number;
  readonly sendQueueBytesMax?: number;
  /**
   * Send bandwidth probes to peers that answer them (every link answers). The transport's node links
   * do; pipeline stage links do not, so 1 MiB never sits in front of an activation.
   */
  readonly probeBandwidth?: boolean;
  readonly probeFirstDelayMs?: number;
  readonly probeIntervalMs?: number;
}

export type LinkDirection = "inbound" | "outbound";
type Phase = "handshake" | "open" | "closed";

export interface LinkHandlers {
  onOpen?(link: Link): void;
  onMessage?(body: unknown, link: Link): void;
  onClose?(reason: string, link: Link): void;
  /** The send queue drained below the socket's high-water mark: senders may continue. */
  onDrain?(link: Link): void;
}

export class Link {
  private phase: Phase = "handshake";
  private readonly decoder = new FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX);
  private readonly nonce = newNonce();
  private peerHello: PeerHello | null = null;
  private peerNonce: Uint8Array | null = null;
  private peerVerified = false;
  private welcomed = false;
  private helloSent = false;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private lastReceivedMs = performance.now();
  private pingSeq = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null;
  private closeReason: string | null = null;
  /** Whether the link was ever open (the Dialer resets its backoff only after a link that worked). */
  everOpened = false;
  private readonly closedPromise: Promise<string>;
  private resolveClosed!: (reason: string) => void;
  /** Last and smoothed round-trip time from heartbeats (ms), null until the first pong. */
  rttMs: number | null = null;
  rttSmoothedMs: number | null = null;
  bytesSent = 0;
  bytesReceived = 0;
  /** Throughput over the last heartbeat interval (bytes/s), both directions; the dashboard's bandwidth. */
  sendBytesPerSecond = 0;
  receiveBytesPerSecond = 0;
  private rateSample = { atMs: performance.now(), sent: 0, received: 0 };
  /** Bytes per second this side can send to the peer, from the last probe; null until one is answered. */
  bandwidthBytesPerSecond: number | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private probeIdSent: number | null = null;
  private probeIdNext = 0;
  private readonly probeReceiver = new ProbeReceiver();
  /** Last time a probe was sent, received or answered: a heartbeat overlapping it measured the probe, not the link. */
  private probeActivityMs = -Infinity;
  readonly handlers: LinkHandlers = {};

  constructor(
    private readonly socket: net.Socket,
    readonly direction: LinkDirection,
    private readonly options: LinkOptions,
  ) {
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => this.flush());
    socket.on("error", (error) => this.close(`socket error: ${error.message}`));
    socket.on("close", () => this.close("socket closed by peer"));
    this.handshakeTimer = setTimeout(
      () => this.close(`handshake not finished within ${this.options.handshakeTimeoutMs ?? LINK_HANDSHAKE_TIMEOUT_MS} ms`),
      options.handshakeTimeoutMs ?? LINK_HANDSHAKE_TIMEOUT_MS,
    );
    // An outbound socket may still be connecting; write() queues until it is.
    this.sendHello();
  }

  get peer(): PeerHello | null {
    return this.peerHello;
  }
  get isOpen(): boolean {
    return this.phase === "open";
  }
  get isClosed(): boolean {
    return this.phase === "closed";
  }
  /** Resolves with the reason once the link is closed. */
  get closed(): Promise<string> {
    return this.closedPromise;
  }
  get queuedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  /** Queues a message for the peer. False when the link is not open (the message is dropped). */
  send(body: unknown): boolean {
    if (this.phase !== "open") return false;
    return this.write({ type: "msg", body });
  }

  close(reason: string): void {
    this.closeWith(reason, null);
  }

  /** `lastFrame`: written before the socket is ended, so the peer learns why (best effort). */
  private closeWith(reason: string, lastFrame: Buffer | null): void {
    if (this.phase === "closed") return;
    this.everOpened ||= this.phase === "open";
    this.phase = "closed";
    this.closeReason = reason;
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.pending.length = 0;
    this.pendingBytes = 0;
    if (lastFrame !== null && this.socket.writable) {
      this.socket.end(lastFrame);
      // A peer that never reads must not keep the socket: destroy it shortly whatever happens.
      setTimeout(() => this.socket.destroy(), 1_000).unref();
    } else {
      this.socket.destroy();
    }
    const level = this.peerHello === null ? "warn" : "info";
    this.options.logger[level]({ peer: this.peerHello?.nodeId, remote: this.socket.remoteAddress, direction: this.direction, reason }, "link closed");
    this.resolveClosed(reason);
    this.handlers.onClose?.(reason, this);
  }

  get reason(): string | null {
    return this.closeReason;
  }

  // ── receiving ─────────────────────────────────────────────────────────────────────────────────

  private onData(chunk: Buffer): void {
    if (this.phase === "closed") return;
    this.bytesReceived += chunk.length;
    this.lastReceivedMs = performance.now();
    this.decoder.append(chunk);
    // One frame at a time: the frame that completes the handshake raises the frame limit, and the
    // next frame of the same read (a large one sent right after `welcome`) must meet the new limit.
    for (;;) {
      // A frame handler may have closed the link.
      if (this.isClosed) return;
      let next: { readonly message: unknown } | null;
      try {
        next = this.decoder.next();
      } catch (error) {
        if (!(error instanceof FrameError)) throw error;
        this.close(`bad frame: ${error.message}`);
        return;
      }
      if (next === null) return;
      this.onFrame(next.message);
    }
  }

  private onFrame(message: unknown): void {
    const type = (message as { type?: unknown } | null)?.type;
    if (this.phase === "handshake") return this.onHandshakeFrame(type, message);
    switch (type) {
      case "msg":
        this.handlers.onMessage?.((message as { body: unknown }).body, this);
        return;
      case "ping":
        this.write({ type: "pong", sentAtMs: (message as { sentAtMs: unknown }).sentAtMs });
        return;
      case "pong":
        return this.onPong(message as { sentAtMs: unknown });
      case "probe":
        return this.onProbe(message);
      case "probeResult":
        return this.onProbeResult(message);
      case "refuse":
        return this.close(`peer refused: ${String((message as { reason?: unknown }).reason)}`);
      default:
        return this.close(`unknown frame type ${JSON.stringify(type)}`);
    }
  }

  private onHandshakeFrame(type: unknown, message: unknown): void {
    switch (type) {
      case "hello":
        return this.onHello(message);
      case "auth":
        return this.onAuth((message as { mac?: unknown }).mac);
      case "welcome":
        if (!this.peerVerified && this.peerNonce === null) return this.refuse("welcome before hello");
        this.welcomed = true;
        return this.openIfReady();
      case "refuse":
        return this.close(`peer refused: ${String((message as { reason?: unknown }).reason)}`);
      default:
        return this.refuse(`unexpected ${JSON.stringify(type)} frame during the handshake`);
    }
  }

  private onHello(raw: unknown): void {
    if (this.peerNonce !== null) return this.refuse("second hello");
    const judged = judgeHello(this.options.identity, raw);
    if (!judged.ok) return this.refuse(judged.reason);
    const { hello } = judged;
    this.peerHello = { nodeId: hello.nodeId, clusterName: hello.clusterName, clusterPort: hello.clusterPort, probeVersion: hello.probeVersion ?? null };
    this.peerNonce = hello.nonce;
    const { secret, nodeId } = this.options.identity;
    if (secret === null) {
      this.peerVerified = true;
      this.write({ type: "welcome" });
      return this.openIfReady();
    }
    this.write({ type: "auth", mac: macOf(secret, hello.nonce, this.nonce, nodeId) });
  }

  private onAuth(mac: unknown): void {
    const { secret } = this.options.identity;
    if (secret === null || this.peerNonce === null || this.peerHello === null) return this.refuse("auth frame out of order");
    if (this.peerVerified) return this.refuse("second auth frame");
    const expected = macOf(secret, this.nonce, this.peerNonce, this.peerHello.nodeId);
    if (!verifyMac(expected, mac)) return this.refuse("authentication failed: the peer does not know the cluster secret");
    this.peerVerified = true;
    this.write({ type: "welcome" });
    this.openIfReady();
  }

  private openIfReady(): void {
    if (!this.peerVerified || !this.welcomed || this.phase !== "handshake") return;
    this.phase = "open";
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.decoder.frameBytesMax = FRAME_BYTES_MAX;
    const intervalMs = this.options.heartbeatIntervalMs ?? LINK_HEARTBEAT_INTERVAL_MS;
    this.heartbeatTimer = setInterval(() => this.heartbeat(), intervalMs);
    this.heartbeatTimer.unref();
    this.options.logger.info({ peer: this.peerHello?.nodeId, remote: this.socket.remoteAddress, direction: this.direction }, "link open");
    this.heartbeat();
    if (this.options.probeBandwidth === true && this.peerHello?.probeVersion === PROBE_VERSION) this.scheduleProbe(this.options.probeFirstDelayMs ?? PROBE_FIRST_DELAY_MS);
    this.handlers.onOpen?.(this);
  }

  private refuse(reason: string): void {
    this.options.logger.warn({ peer: this.peerHello?.nodeId, remote: this.socket.remoteAddress, reason }, "refusing link");
    this.closeWith(`refused: ${reason}`, encodeFrame({ type: "refuse", reason }));
  }

  // ── heartbeats ────────────────────────────────────────────────────────────────────────────────

  private heartbeat(): void {
    const nowMs = performance.now();
    const deadAfterMs = this.options.deadAfterMs ?? LINK_DEAD_AFTER_MS;
    const silentMs = nowMs - this.lastReceivedMs;
    if (silentMs > deadAfterMs) return this.close(`no frame from the peer for ${Math.round(silentMs)} ms (limit ${deadAfterMs} ms)`);
    const elapsedMs = nowMs - this.rateSample.atMs;
    if (elapsedMs > 0) {
      this.sendBytesPerSecond = ((this.bytesSent - this.rateSample.sent) * 1000) / elapsedMs;
      this.receiveBytesPerSecond = ((this.bytesReceived - this.rateSample.received) * 1000) / elapsedMs;
      this.rateSample = { atMs: nowMs, sent: this.bytesSent, received: this.bytesReceived };
    }
    this.write({ type: "ping", seq: this.pingSeq++, sentAtMs: nowMs });
  }

  private onPong(message: { sentAtMs: unknown }): void {
    if (typeof message.sentAtMs !== "number") return this.close("pong without a time");
    const rttMs = performance.now() - message.sentAtMs;
    if (rttMs < 0 || this.probeActivityMs >= message.sentAtMs) return;
    this.rttMs = rttMs;
    this.rttSmoothedMs = this.rttSmoothedMs === null ? rttMs : this.rttSmoothedMs * 0.8 + rttMs * 0.2;
  }

  // ── bandwidth probes ──────────────────────────────────────────────────────────────────────────

  private scheduleProbe(delayMs: number): void {
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => this.probe(), delayMs);
    this.probeTimer.unref();
  }

  /** Sends a probe when nothing else waits to be sent, so it neither measures nor delays a backlog. */
  private probe(): void {
    this.probeTimer = null;
    if (this.phase !== "open") return;
    if (this.queuedBytes > 0) return this.scheduleProbe(PROBE_RETRY_DELAY_MS);
    // An unanswered earlier probe is abandoned: only the answer to the latest counts.
    const id = this.probeIdNext;
    this.probeIdNext = (this.probeIdNext + 1) % 2 ** 31;
    this.probeIdSent = id;
    this.probeActivityMs = performance.now();
    for (const frame of probeFrames(id)) if (!this.write(frame)) return;
    this.scheduleProbe(this.options.probeIntervalMs ?? PROBE_INTERVAL_MS);
  }

  private onProbe(message: unknown): void {
    this.probeActivityMs = performance.now();
    const verdict = this.probeReceiver.receive(message, this.probeActivityMs);
    switch (verdict.kind) {
      case "malformed":
        return this.close(verdict.reason);
      case "ignored":
        this.options.logger.debug({ peer: this.peerHello?.nodeId, reason: verdict.reason }, "bandwidth probe ignored");
        return;
      case "partial":
        return;
      case "done":
        this.write(verdict.result);
        return;
    }
  }

  private onProbeResult(message: unknown): void {
    this.probeActivityMs = performance.now();
    const v = probeVersionOf(message);
    if (v !== null && v !== PROBE_VERSION) return; // we never sent that version: nothing to learn
    const parsed = ProbeResultSchema.safeParse(message);
    if (!parsed.success) return this.close(`malformed probe result: ${parsed.error.issues[0]?.message ?? "?"}`);
    if (parsed.data.id !== this.probeIdSent) return; // an abandoned probe's late answer
    this.probeIdSent = null;
    this.bandwidthBytesPerSecond = bandwidthOf(parsed.data) ?? this.bandwidthBytesPerSecond;
  }

  // ── sending ───────────────────────────────────────────────────────────────────────────────────

  private sendHello(): void {
    if (this.helloSent) return;
    this.helloSent = true;
    this.write(helloOf(this.options.identity, this.nonce));
  }

  /** Writes through the socket until it reports back-pressure, then holds frames in a bounded queue. */
  private write(message: unknown): boolean {
    if (this.phase === "closed") return false;
    let frame: Buffer;
    try {
      frame = encodeFrame(message);
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      this.options.logger.error({ peer: this.peerHello?.nodeId, reason: error.message }, "message not sent");
      return false;
    }
    const limit = this.options.sendQueueBytesMax ?? LINK_SEND_QUEUE_BYTES_MAX;
    if (this.queuedBytes + frame.length > limit) {
      this.close(`send queue would exceed ${limit} bytes: the peer is not reading`);
      return false;
    }
    this.bytesSent += frame.length;
    if (this.pending.length > 0 || this.socket.writableNeedDrain) {
      this.pending.push(frame);
      this.pendingBytes += frame.length;
      return true;
    }
    this.socket.write(frame);
    return true;
  }

  private flush(): void {
    while (this.pending.length > 0 && !this.socket.writableNeedDrain && this.phase !== "closed") {
      const frame = this.pending.shift()!;
      this.pendingBytes -= frame.length;
      this.socket.write(frame);
    }
    if (this.pending.length === 0 && this.phase === "open") this.handlers.onDrain?.(this);
  }

  /** True when a sender should wait for onDrain before sending more. */
  get backPressured(): boolean {
    return this.pending.length > 0 || this.socket.writableNeedDrain;
  }
}

// ── accepting and dialing ───────────────────────────────────────────────────────────────────────

export interface LinkServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Inbound links at once (handshaking or open); strangers cannot open sockets without bound. */
export const LINKS_INBOUND_MAX = 256;

/** Accepts links on host:port; `onLink` gets each new (still handshaking) link. */
export function listenLinks(
  host: string,
  port: number,
  options: LinkOptions,
  onLink: (link: Link) => void,
  linksInboundMax: number = LINKS_INBOUND_MAX,
): Promise<LinkServer> {
  const links = new Set<Link>();
  const server = net.createServer((socket) => {
    if (links.size >= linksInboundMax) {
      options.logger.warn({ remote: socket.remoteAddress, limit: linksInboundMax }, "refusing a connection: too many inbound links");
      socket.destroy();
      return;
    }
    const link = new Link(socket, "inbound", options);
    links.add(link);
    void link.closed.then(() => links.delete(link));
    onLink(link);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const address = server.address() as net.AddressInfo;
      resolve({
        port: address.port,
        close: () =>
          new Promise<void>((done) => {
            for (const link of links) link.close("server closing");
            server.close(() => done());
          }),
      });
    });
  });
}

export const RECONNECT_DELAY_MIN_MS = 100;
export const RECONNECT_DELAY_MAX_MS = 10_000;

/**
 * Exponential backoff with jitter: attempt 0 waits ~min, each failure doubles, capped at max; the
 * delay is drawn from [half, full] so peers that lost each other at once do not redial in lockstep.
 */
export function reconnectDelayMs(attempt: number, random: () => number, minMs = RECONNECT_DELAY_MIN_MS, maxMs = RECONNECT_DELAY_MAX_MS): number {
  const fullMs = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return fullMs / 2 + (fullMs / 2) * random();
}

export interface DialerOptions {
  readonly host: string;
  readonly port: number;
  readonly link: LinkOptions;
  readonly onLink: (link: Link) => void;
  readonly random?: () => number;
  readonly delayMinMs?: number;
  readonly delayMaxMs?: number;
  /** Asked before each attempt; false postpones it (e.g. a link to that node already exists). */
  readonly shouldDial?: () => boolean;
}

/** Keeps one outbound link to host:port alive, redialing with backoff whenever it closes. */
export class Dialer {
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private current: Link | null = null;
  private stopped = false;

  constructor(private readonly options: DialerOptions) {}

  get link(): Link | null {
    return this.current;
  }
  /** Failed attempts since the last open link. */
  get failedAttempts(): number {
    return this.attempt;
  }

  start(): void {
    this.dial();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.current?.close("dialer stopped");
  }

  private dial(): void {
    this.timer = null;
    if (this.stopped) return;
    if (this.options.shouldDial !== undefined && !this.options.shouldDial()) return this.scheduleRedial();
    const socket = net.connect({ host: this.options.host, port: this.options.port });
    const link = new Link(socket, "outbound", this.options.link);
    this.current = link;
    void link.closed.then(() => {
      if (this.current === link) this.current = null;
      if (link.everOpened) this.attempt = 0;
      this.scheduleRedial();
    });
    this.options.onLink(link);
  }

  private scheduleRedial(): void {
    if (this.stopped || this.timer !== null) return;
    const delayMs = reconnectDelayMs(this.attempt, this.options.random ?? Math.random, this.options.delayMinMs, this.options.delayMaxMs);
    this.attempt++;
    this.timer = setTimeout(() => this.dial(), delayMs);
    this.timer.unref();
  }
}
