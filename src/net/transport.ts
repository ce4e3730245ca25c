// Transport: "send this to node X, tell me what arrives and who is reachable". The election driver
// and (later) the cluster wiring see the network only through this interface, so the simulation
// can replace it with a fake network. NetTransport is the real one: it accepts links, dials static
// --peer addresses and peers found by multicast discovery, and keeps at most one open link per node.
import type { NodeId } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import type { DiscoveredPeer } from "./discovery.ts";
import { Discovery } from "./discovery.ts";
import type { LinkIdentity } from "./handshake.ts";
import type { Link, LinkOptions, LinkServer } from "./link.ts";
import { Dialer, listenLinks } from "./link.ts";

export interface PeerLinkInfo {
  readonly nodeId: NodeId;
  readonly remoteAddress: string | undefined;
  readonly direction: "inbound" | "outbound";
  readonly rttMs: number | null;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly sendBytesPerSecond: number;
  readonly receiveBytesPerSecond: number;
  /** What this side can send to the peer, from the link's bandwidth probe; null until measured. */
  readonly bandwidthBytesPerSecond: number | null;
}

export type MessageHandler = (from: NodeId, message: unknown) => void;
export type PeerHandler = (nodeId: NodeId, up: boolean) => void;

export interface Transport {
  readonly nodeId: NodeId;
  /** Best effort: false when there is no open link to `to` (the message is dropped). */
  send(to: NodeId, message: unknown): boolean;
  /** Messages are untrusted data: the receiver validates them. */
  onMessage(handler: MessageHandler): void;
  onPeer(handler: PeerHandler): void;
  connectedPeers(): NodeId[];
}

export interface StaticPeer {
  readonly host: string;
  readonly port: number;
}

/** Parses "host:port" (a --peer value); null when malformed. IPv6 hosts go in brackets. */
export function parsePeer(text: string): StaticPeer | null {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  if (match === null) return null;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (match[1] ?? match[2])!, port };
}

export interface NetTransportOptions {
  readonly identity: LinkIdentity;
  readonly logger: Logger;
  /** Address to accept links on (the port is identity.clusterPort; 0 picks one, see `port`). */
  readonly listenHost: string;
  readonly staticPeers: readonly StaticPeer[];
  /** null: no multicast discovery (--no-discovery). */
  readonly discovery: { readonly port?: number; readonly group?: string; readonly interfaces?: readonly string[] | null; readonly intervalMs?: number } | null;
  /** Heartbeat and timeout overrides (tests). */
  readonly link?: Partial<Omit<LinkOptions, "identity" | "logger">>;
  readonly reconnectDelayMinMs?: number;
  readonly reconnectDelayMaxMs?: number;
}

export class NetTransport implements Transport {
  private readonly links = new Map<NodeId, Link>();
  private readonly dialers: Dialer[] = [];
  private readonly discoveredDialers = new Map<NodeId, Dialer>();
  private readonly messageHandlers: MessageHandler[] = [];
  private readonly peerHandlers: PeerHandler[] = [];
  private server: LinkServer | null = null;
  private discovery: Discovery | null = null;
  private identity: LinkIdentity;
  private stopped = false;

  private constructor(private readonly options: NetTransportOptions) {
    this.identity = options.identity;
  }

  static async start(options: NetTransportOptions): Promise<NetTransport> {
    const transport = new NetTransport(options);
    await transport.startIo();
    return transport;
  }

  get nodeId(): NodeId {
    return this.identity.nodeId;
  }
  /** The port links are accepted on (useful when identity.clusterPort was 0). */
  get port(): number {
    return this.server?.port ?? this.identity.clusterPort;
  }
  get discoveryStats(): Discovery["stats"] | null {
    return this.discovery?.stats ?? null;
  }

  send(to: NodeId, message: unknown): boolean {
    return this.links.get(to)?.send(message) ?? false;
  }
  onMessage(handler: MessageHandler): void {
    this.messageHandlers.push(handler);
  }
  onPeer(handler: PeerHandler): void {
    this.peerHandlers.push(handler);
  }
  connectedPeers(): NodeId[] {
    return [...this.links.keys()];
  }
  /** Per-peer link facts, for topology edges (latency, bandwidth) and the dashboard. */
  peerLinks(): PeerLinkInfo[] {
    return [...this.links.entries()].map(([nodeId, link]) => ({
      nodeId,
      remoteAddress: link.remoteAddress,
      direction: link.direction,
      rttMs: link.rttSmoothedMs,
      bytesSent: link.bytesSent,
      bytesReceived: link.bytesReceived,
      sendBytesPerSecond: link.sendBytesPerSecond,
      receiveBytesPerSecond: link.receiveBytesPerSecond,
      bandwidthBytesPerSecond: link.bandwidthBytesPerSecond,
    }));
  }

  /** Dials another static peer (kept for life, like --peer). */
  addPeer(peer: StaticPeer): void {
    if (!this.stopped) this.dial(peer.host, peer.port, this.dialers);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.discovery?.stop();
    for (const dialer of [...this.dialers, ...this.discoveredDialers.values()]) dialer.stop();
    for (const link of this.links.values()) link.close("transport stopping");
    await this.server?.close();
  }

  private linkOptions(): LinkOptions {
    return { identity: this.identity, logger: this.options.logger, probeBandwidth: true, ...this.options.link };
  }

  private async startIo(): Promise<void> {
    this.server = await listenLinks(this.options.listenHost, this.identity.clusterPort, this.linkOptions(), (link) => this.adopt(link));
    // With port 0 the real port is known only now, and peers must be told the real one.
    this.identity = { ...this.identity, clusterPort: this.server.port };
    for (const peer of this.options.staticPeers) this.dial(peer.host, peer.port, this.dialers);
    if (this.options.discovery !== null) {
      this.discovery = new Discovery({
        identity: this.identity,
        logger: this.options.logger,
        ...this.options.discovery,
        onPeer: (peer) => this.onDiscovered(peer),
        onPeerExpired: (peer) => this.onDiscoveryExpired(peer),
      });
      await this.discovery.start();
    }
  }

  private dial(host: string, port: number, into: Dialer[] | null): Dialer {
    let learnedId: NodeId | null = null;
    const dialer = new Dialer({
      host,
      port,
      link: this.linkOptions(),
      delayMinMs: this.options.reconnectDelayMinMs,
      delayMaxMs: this.options.reconnectDelayMaxMs,
      // Once we know who is there, do not dial while another link to that node is open.
      shouldDial: () => learnedId === null || !this.links.has(learnedId),
      onLink: (link) => {
        this.adopt(link);
        const onOpen = link.handlers.onOpen;
        link.handlers.onOpen = (l) => {
          learnedId = l.peer?.nodeId ?? null;
          onOpen?.(l);
        };
      },
    });
    into?.push(dialer);
    dialer.start();
    return dialer;
  }

  private onDiscovered(peer: DiscoveredPeer): void {
    if (this.stopped) return;
    // One side dials, so two nodes that find each other at once do not race two links.
    if (this.identity.nodeId > peer.nodeId) return;
    this.discoveredDialers.get(peer.nodeId)?.stop();
    this.discoveredDialers.set(peer.nodeId, this.dial(peer.host, peer.clusterPort, null));
  }

  private onDiscoveryExpired(peer: DiscoveredPeer): void {
    if (this.links.has(peer.nodeId)) return; // the link's own heartbeat decides
    this.discoveredDialers.get(peer.nodeId)?.stop();
    this.discoveredDialers.delete(peer.nodeId);
  }

  /** Every link, inbound or dialed, comes here; it counts once it is open and kept. */
  private adopt(link: Link): void {
    link.handlers.onOpen = () => this.onLinkOpen(link);
    link.handlers.onClose = () => this.onLinkClose(link);
    link.handlers.onMessage = (body) => {
      const peerId = link.peer?.nodeId;
      if (peerId === undefined || this.links.get(peerId) !== link) return; // a duplicate being closed
      for (const handler of this.messageHandlers) handler(peerId, body);
    };
  }

  private onLinkOpen(link: Link): void {
    const peerId = link.peer!.nodeId;
    const existing = this.links.get(peerId);
    if (existing !== undefined && existing !== link && existing.isOpen) {
      // Two links to one node (both dialed, or a reconnect raced the old link's death). Both ends
      // keep the one dialed by the smaller node id; between two dialed from the same side, the newer.
      const dialerOf = (l: Link) => (l.direction === "outbound" ? this.identity.nodeId : peerId);
      const preferred = this.identity.nodeId < peerId ? this.identity.nodeId : peerId;
      const keepNew = dialerOf(link) === preferred || dialerOf(existing) !== preferred;
      const [keep, drop] = keepNew ? [link, existing] : [existing, link];
      this.links.set(peerId, keep);
      drop.close("duplicate link to the same node");
      return;
    }
    this.links.set(peerId, link);
    for (const handler of this.peerHandlers) handler(peerId, true);
  }

  private onLinkClose(link: Link): void {
    const peerId = link.peer?.nodeId;
    if (peerId === undefined || this.links.get(peerId) !== link) return;
    this.links.delete(peerId);
    for (const handler of this.peerHandlers) handler(peerId, false);
  }
}
