// Network namespaces for tests that need several hosts on one machine: N node namespaces, each with
// eth0 = 10.213.0.(i+1)/24, joined by a bridge that lives in its own namespace (the host's network
// is never touched). Needs root and iproute2 (CI runs as root); `unavailableReason` says why not.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";

export const NETNS_SUBNET_PREFIX = "10.213.0.";

function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** null when namespaces can be made here, else why not. */
export function namespacesUnavailableReason(): string | null {
  if (process.getuid?.() !== 0) return "not root";
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
  } catch {
    return "iproute2 (`ip`) is not installed";
  }
  return null;
}

export interface NamespaceHosts {
  /** Namespace names, one per host; host i has address `${NETNS_SUBNET_PREFIX}${i + 1}`. */
  readonly namespaces: readonly string[];
  /** Deletes every namespace made (idempotent; also runs at process exit). */
  cleanUp(): void;
}

/** Makes `count` hosts on one bridge; throws (after cleaning up) when a namespace cannot be made. */
export function makeNamespaceHosts(count: number): NamespaceHosts {
  const tag = `sk${randomBytes(3).toString("hex")}`;
  const bridgeNs = `${tag}-br`;
  const namespaces = Array.from({ length: count }, (_, i) => `${tag}-n${i}`);
  const created: string[] = [];
  const cleanUp = () => {
    for (const ns of created.splice(0)) {
      try {
        ip("netns", "del", ns);
      } catch {
        // already gone
      }
    }
    process.off("exit", cleanUp);
  };
  process.once("exit", cleanUp);
  try {
    ip("netns", "add", bridgeNs);
    created.push(bridgeNs);
    // Snooping off: a bridge that learns group members from IGMP may hold back the first beacons.
    ip("-n", bridgeNs, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0");
    ip("-n", bridgeNs, "link", "set", "br0", "up");
    namespaces.forEach((ns, i) => {
      ip("netns", "add", ns);
      created.push(ns);
      // veth pair: eth0 inside the node's namespace, vN on the bridge.
      ip("-n", bridgeNs, "link", "add", `v${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
      ip("-n", bridgeNs, "link", "set", `v${i}`, "master", "br0", "up");
      ip("-n", ns, "addr", "add", `${NETNS_SUBNET_PREFIX}${i + 1}/24`, "dev", "eth0");
      ip("-n", ns, "link", "set", "eth0", "up");
      ip("-n", ns, "link", "set", "lo", "up");
      // Discovery pins the interface (setMulticastInterface + addMembership(group, ifaceAddr)) and
      // works without this route; it stays to mirror a typical host.
      ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0");
    });
  } catch (error) {
    cleanUp();
    throw error;
  }
  return { namespaces, cleanUp };
}
