// UDP multicast discovery. Every node sends a small beacon (node id, cluster name, cluster port,
// addresses) once a second on every suitable IPv4 interface, and listens for other nodes' beacons
// on the same group. With a cluster secret, beacons carry an HMAC, and unsigned or wrongly signed
// ones are ignored. A beacon only says "try to link to me here": the link handshake is what
// authenticates, so a replayed beacon costs at most a refused connection.
//
// Discovery must never fail silently (an exo complaint): no suitable interface, a failed group
// join and rejected beacons are logged and counted in `stats`.
import dgram from "node:dgram";
import { createHmac } from "node:crypto";
import os from "node:os";
import { z } from "zod";
import type { NodeId } from "../shared/ids.ts";
import { NodeIdSchema } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import { decodeBody, encodeBody } from "./frame.ts";
import type { LinkIdentity } from "./handshake.ts";
import { CLUSTER_NAME_CHARS_MAX, PROTOCOL_VERSION, verifyMac } from "./handshake.ts";

/** Administratively scoped (239/8): stays inside the site, never routed to the internet. */
export const DISCOVERY_GROUP = "239.255.77.77";
export const DISCOVERY_PORT = 52417;
export const BEACON_INTERVAL_MS = 1_000;
/** A discovered peer not heard from for this long is forgotten (its link, if any, has its own heartbeat). */
export const DISCOVERED_PEER_EXPIRY_MS = 5_000;
export const BEACON_BYTES_MAX = 1_024;
/** Peers remembered from beacons; more are ignored (and logged) rather than grow the table. */
export const DISCOVERED_PEERS_MAX = 256;
const ADDRESSES_PER_BEACON_MAX = 16;
const MAC_LABEL = Buffer.from("skein-beacon-v1\0");

const BeaconSchema = z.object({
  v: z.number().int(),
  cluster: z.string().max(CLUSTER_NAME_CHARS_MAX),
  nodeId: NodeIdSchema,
  clusterPort: z.number().int().min(1).max(65535),
  addresses: z.array(z.string().max(64)).max(ADDRESSES_PER_BEACON_MAX),
});
export type Beacon = z.infer<typeof BeaconSchema>;

export interface DiscoveredPeer {
  readonly nodeId: NodeId;
  /** The source address of its latest beacon: an address that reached us. */
  readonly host: string;
  readonly clusterPort: number;
  readonly addresses: readonly string[];
  readonly lastSeenMs: number;
}

// ── pure: encode / judge ────────────────────────────────────────────────────────────────────────

function beaconMac(secret: Buffer, body: Uint8Array): Buffer {
  return createHmac("sha256", secret).update(MAC_LABEL).update(body).digest();
}

export function encodeBeacon(beacon: Beacon, secret: Buffer | null): Buffer {
  const body = encodeBody(beacon);
  return encodeBody({ body, mac: secret === null ? null : beaconMac(secret, body) });
}

export type BeaconJudgement = { ok: true; beacon: Beacon } | { ok: false; reason: string; quiet?: boolean };

/** The beacon, or why it is ignored. `quiet`: an expected case (our own echo) not worth a log line. */
export function judgeBeacon(bytes: Buffer, identity: LinkIdentity): BeaconJudgement {
  if (bytes.length > BEACON_BYTES_MAX) return { ok: false, reason: `beacon of ${bytes.length} bytes` };
  let outer: unknown;
  try {
    outer = decodeBody(bytes);
  } catch {
    return { ok: false, reason: "beacon is not msgpack" };
  }
  const { body, mac } = (outer ?? {}) as { body?: unknown; mac?: unknown };
  if (!(body instanceof Uint8Array)) return { ok: false, reason: "beacon without a body" };
  if (identity.secret !== null) {
    if (!verifyMac(beaconMac(identity.secret, body), mac)) return { ok: false, reason: "beacon signature missing or wrong" };
  }
  let parsed: ReturnType<typeof BeaconSchema.safeParse>;
  try {
    parsed = BeaconSchema.safeParse(decodeBody(body));
  } catch {
    return { ok: false, reason: "beacon body is not msgpack" };
  }
  if (!parsed.success) return { ok: false, reason: `malformed beacon: ${parsed.error.issues[0]?.message ?? "?"}` };
  const beacon = parsed.data;
  if (beacon.nodeId === identity.nodeId) return { ok: false, reason: "our own beacon", quiet: true };
  if (beacon.v !== (identity.protocolVersion ?? PROTOCOL_VERSION)) return { ok: false, reason: `beacon of protocol version ${beacon.v}` };
  if (beacon.cluster !== identity.clusterName) return { ok: false, reason: `beacon of cluster "${beacon.cluster}"`, quiet: true };
  return { ok: true, beacon };
}

export interface InterfaceAddress {
  readonly name: string;
  readonly address: string;
}

/** Non-internal IPv4 addresses (optionally only the named interfaces); loopback only when asked for by name. */
export function suitableInterfaces(names: readonly string[] | null, interfaces = os.networkInterfaces()): InterfaceAddress[] {
  const found: InterfaceAddress[] = [];
  for (const [name, addresses] of Object.entries(interfaces)) {
    if (names !== null && !names.includes(name)) continue;
    for (const a of addresses ?? []) {
      if (a.family !== "IPv4") continue;
      if (a.internal && names === null) continue;
      found.push({ name, address: a.address });
    }
  }
  return found;
}

// ── I/O ─────────────────────────────────────────────────────────────────────────────────────────

export interface DiscoveryOptions {
  readonly identity: LinkIdentity;
  readonly logger: Logger;
  readonly group?: string;
  readonly port?: number;
  /** Interface names to use; null: every suitable one. */
  readonly interfaces?: readonly string[] | null;
  readonly intervalMs?: number;
  readonly expiryMs?: number;
  /** A new peer, or a known one whose address or port changed. */
  readonly onPeer: (peer: DiscoveredPeer) => void;
  readonly onPeerExpired?: (peer: DiscoveredPeer) => void;
}

export class Discovery {
  private receiver: dgram.Socket | null = null;
  private senders: { iface: InterfaceAddress; socket: dgram.Socket }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly known = new Map<NodeId, DiscoveredPeer>();
  readonly stats = { beaconsSent: 0, beaconsReceived: 0, beaconsRejected: 0, sendErrors: 0, interfaces: 0 };

  constructor(private readonly options: DiscoveryOptions) {}

  get peers(): DiscoveredPeer[] {
    return [...this.known.values()];
  }

  async start(): Promise<void> {
    const { logger } = this.options;
    const group = this.options.group ?? DISCOVERY_GROUP;
    const port = this.options.port ?? DISCOVERY_PORT;
    const interfaces = suitableInterfaces(this.options.interfaces ?? null);
    this.stats.interfaces = interfaces.length;
    if (interfaces.length === 0) {
      logger.warn({ requested: this.options.interfaces ?? "all" }, "discovery: no suitable IPv4 interface; use --peer host:port to join a cluster");
      return;
    }
    const receiver = dgram.createSocket({ type: "udp4", reuseAddr: true });
    this.receiver = receiver;
    receiver.on("message", (bytes, rinfo) => this.onBeacon(bytes, rinfo.address));
    receiver.on("error", (error) => logger.error({ error: error.message }, "discovery: receive socket failed"));
    await new Promise<void>((resolve, reject) => {
      receiver.once("error", reject);
      receiver.bind(port, () => {
        receiver.off("error", reject);
        resolve();
      });
    });
    let joined = 0;
    for (const iface of interfaces) {
      try {
        receiver.addMembership(group, iface.address);
        joined++;
      } catch (error) {
        // Typically: the interface has no multicast route (e.g. a namespace without 224.0.0.0/4).
        logger.error({ iface: iface.name, address: iface.address, error: (error as Error).message }, "discovery: cannot join the multicast group");
        continue;
      }
      this.senders.push({ iface, socket: await this.openSender(iface) });
    }
    if (joined === 0) logger.warn({ group }, "discovery: joined the group on no interface; use --peer host:port");
    logger.info({ group, port, interfaces: this.senders.map((s) => `${s.iface.name}/${s.iface.address}`) }, "discovery started");
    this.beacon();
    this.timer = setInterval(() => this.beacon(), this.options.intervalMs ?? BEACON_INTERVAL_MS);
    this.timer.unref();
  }

  private async openSender(iface: InterfaceAddress): Promise<dgram.Socket> {
    const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
    socket.on("error", (error) => {
      this.stats.sendErrors++;
      this.options.logger.warn({ iface: iface.name, error: error.message }, "discovery: send socket error");
    });
    await new Promise<void>((resolve) => socket.bind({ address: iface.address, port: 0 }, () => resolve()));
    // Pin the outgoing interface: the default route would send every beacon out of one interface.
    socket.setMulticastInterface(iface.address);
    socket.setMulticastTTL(1);
    socket.setMulticastLoopback(true);
    return socket;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.receiver?.close();
    this.receiver = null;
    for (const { socket } of this.senders) socket.close();
    this.senders = [];
  }

  private beacon(): void {
    const { identity } = this.options;
    const beacon: Beacon = {
      v: identity.protocolVersion ?? PROTOCOL_VERSION,
      cluster: identity.clusterName,
      nodeId: identity.nodeId,
      clusterPort: identity.clusterPort,
      addresses: this.senders.map((s) => s.iface.address).slice(0, ADDRESSES_PER_BEACON_MAX),
    };
    const bytes = encodeBeacon(beacon, identity.secret);
    const group = this.options.group ?? DISCOVERY_GROUP;
    const port = this.options.port ?? DISCOVERY_PORT;
    for (const { socket } of this.senders) {
      socket.send(bytes, port, group, (error) => {
        if (error) this.stats.sendErrors++;
        else this.stats.beaconsSent++;
      });
    }
    this.expire();
  }

  private onBeacon(bytes: Buffer, sourceAddress: string): void {
    const judged = judgeBeacon(bytes, this.options.identity);
    if (!judged.ok) {
      if (!judged.quiet) {
        this.stats.beaconsRejected++;
        this.options.logger.debug({ from: sourceAddress, reason: judged.reason }, "discovery: beacon ignored");
      }
      return;
    }
    this.stats.beaconsReceived++;
    const { beacon } = judged;
    const previous = this.known.get(beacon.nodeId);
    if (previous === undefined && this.known.size >= DISCOVERED_PEERS_MAX) {
      this.options.logger.warn({ nodeId: beacon.nodeId, limit: DISCOVERED_PEERS_MAX }, "discovery: peer table full; beacon ignored");
      return;
    }
    const peer: DiscoveredPeer = { nodeId: beacon.nodeId, host: sourceAddress, clusterPort: beacon.clusterPort, addresses: beacon.addresses, lastSeenMs: Date.now() };
    this.known.set(beacon.nodeId, peer);
    if (previous === undefined || previous.host !== peer.host || previous.clusterPort !== peer.clusterPort) {
      this.options.logger.info({ nodeId: peer.nodeId, host: peer.host, clusterPort: peer.clusterPort }, "discovery: found a peer");
      this.options.onPeer(peer);
    }
  }

  private expire(): void {
    const expiryMs = this.options.expiryMs ?? DISCOVERED_PEER_EXPIRY_MS;
    const nowMs = Date.now();
    for (const [id, peer] of this.known) {
      if (nowMs - peer.lastSeenMs <= expiryMs) continue;
      this.known.delete(id);
      this.options.logger.info({ nodeId: id }, "discovery: peer's beacons stopped");
      this.options.onPeerExpired?.(peer);
    }
  }
}
