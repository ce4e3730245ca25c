// The link handshake's messages and the pure checks on them. Both ends send a hello at once; each
// checks the other's version and cluster name, then (with a cluster secret) proves it knows the
// secret by a MAC over the peer's fresh nonce, and finally says "welcome". A link is open only when
// this side has verified the peer AND the peer has welcomed this side.
//
// MAC = HMAC-SHA256(secret, LABEL ‖ receiverNonce ‖ senderNonce ‖ senderNodeId). The receiver's own
// nonce makes a recorded MAC useless on a later link; the order of nonces and the sender's id make a
// MAC useless when reflected back at its sender.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import type { NodeId } from "../shared/ids.ts";
import { NodeIdSchema } from "../shared/ids.ts";
import { PROBE_VERSION } from "./bandwidth-probe.ts";

/** Bumped on any incompatible change to link or cluster messages; a mismatch is refused with both numbers. */
export const PROTOCOL_VERSION = 1;
export const NONCE_BYTES = 32;
export const CLUSTER_NAME_CHARS_MAX = 64;
const MAC_LABEL = Buffer.from("skein-link-auth-v1\0");

export const HelloSchema = z.object({
  type: z.literal("hello"),
  protocolVersion: z.number().int(),
  clusterName: z.string().max(CLUSTER_NAME_CHARS_MAX),
  nodeId: NodeIdSchema,
  clusterPort: z.number().int().min(0).max(65535),
  /** Whether the sender has a cluster secret: both must agree, or nobody could ever authenticate. */
  auth: z.boolean(),
  nonce: z.custom<Uint8Array>((b) => b instanceof Uint8Array && b.length === NONCE_BYTES, `nonce must be ${NONCE_BYTES} bytes`),
  /** The bandwidth probe version the sender answers (bandwidth-probe.ts); absent: never probe it. */
  probeVersion: z.number().int().optional(),
});
export type Hello = z.infer<typeof HelloSchema>;

export interface LinkIdentity {
  readonly nodeId: NodeId;
  readonly clusterName: string;
  readonly clusterPort: number;
  /** null: no authentication (anyone who speaks the protocol with the same cluster name may join). */
  readonly secret: Buffer | null;
  /** Tests override it to play an old or future peer. */
  readonly protocolVersion?: number;
  /** Tests set null to play a peer that predates bandwidth probes. */
  readonly probeVersion?: number | null;
}

/** What this side learned about the peer from its hello. */
export interface PeerHello {
  readonly nodeId: NodeId;
  readonly clusterName: string;
  readonly clusterPort: number;
  /** null: the peer does not answer bandwidth probes. */
  readonly probeVersion: number | null;
}

export const newNonce = (): Buffer => randomBytes(NONCE_BYTES);

export function helloOf(identity: LinkIdentity, nonce: Buffer): Hello {
  return {
    type: "hello",
    protocolVersion: identity.protocolVersion ?? PROTOCOL_VERSION,
    clusterName: identity.clusterName,
    nodeId: identity.nodeId,
    clusterPort: identity.clusterPort,
    auth: identity.secret !== null,
    nonce,
    ...(identity.probeVersion === null ? {} : { probeVersion: identity.probeVersion ?? PROBE_VERSION }),
  };
}

/** The peer's hello, or why it is refused. The version is checked first: a newer hello may have another shape. */
export function judgeHello(identity: LinkIdentity, raw: unknown): { ok: true; hello: Hello } | { ok: false; reason: string } {
  const ours = identity.protocolVersion ?? PROTOCOL_VERSION;
  const version = (raw as { protocolVersion?: unknown } | null)?.protocolVersion;
  if (version !== ours) return { ok: false, reason: `protocol version ${String(version)} is not ours (${ours})` };
  const parsed = HelloSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, reason: `malformed hello: ${parsed.error.issues[0]?.message ?? "?"}` };
  const hello = parsed.data;
  if (hello.clusterName !== identity.clusterName) {
    return { ok: false, reason: `cluster name "${hello.clusterName}" is not ours ("${identity.clusterName}")` };
  }
  if (hello.nodeId === identity.nodeId) return { ok: false, reason: "peer has our own node id (a link to ourselves)" };
  if (hello.auth !== (identity.secret !== null)) {
    return { ok: false, reason: hello.auth ? "peer requires a cluster secret and we have none" : "we require a cluster secret and the peer has none" };
  }
  return { ok: true, hello };
}

export function macOf(secret: Buffer, receiverNonce: Uint8Array, senderNonce: Uint8Array, senderNodeId: string): Buffer {
  return createHmac("sha256", secret).update(MAC_LABEL).update(receiverNonce).update(senderNonce).update(senderNodeId).digest();
}

/** Timing-safe: a wrong MAC takes as long to refuse as a nearly right one. */
export function verifyMac(expected: Buffer, got: unknown): boolean {
  if (!(got instanceof Uint8Array) || got.length !== expected.length) return false;
  return timingSafeEqual(expected, got);
}
