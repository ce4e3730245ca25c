// Three network namespaces joined by a bridge (which lives in a fourth namespace, so the host's own
// network is never touched) discover each other by multicast, with no --peer, and link up with the
// authenticated handshake. Needs root and iproute2 (CI runs as root); skips loudly otherwise.
// The namespaces are always deleted, whatever happens.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { makeNamespaceHosts, namespacesUnavailableReason, NETNS_SUBNET_PREFIX } from "../support/netns.ts";

const NODE_COUNT = 3;
const PROBE = fileURLToPath(new URL("./fixtures/discovery-probe.ts", import.meta.url));

function runProbe(namespace: string, nodeId: string): Promise<{ nodeId: string; found: { nodeId: string; host: string }[]; linked: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", namespace, process.execPath, "--import", "tsx", PROBE, nodeId, String(NODE_COUNT - 1), "10000"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      const line = stdout.trim().split("\n").at(-1) ?? "";
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`probe in ${namespace} exited ${code} without a result: ${stdout} ${stderr}`));
      }
    });
  });
}

test("three namespaces on a bridge discover each other by multicast and link up", async (t) => {
  const why = namespacesUnavailableReason();
  if (why !== null) {
    console.log(`SKIPPED network-namespace discovery test: ${why}`);
    return t.skip(`network namespaces unavailable: ${why}`);
  }
  let hosts;
  try {
    hosts = makeNamespaceHosts(NODE_COUNT);
  } catch (error) {
    console.log(`SKIPPED network-namespace discovery test: cannot create a namespace (${(error as Error).message.split("\n")[0]})`);
    return t.skip("cannot create network namespaces here");
  }
  const nodeNs = hosts.namespaces;
  try {
    const results = await Promise.all(nodeNs.map((ns, i) => runProbe(ns, `node-${i}`)));
    for (const [i, r] of results.entries()) {
      const others = results.filter((_, j) => j !== i).map((x) => x.nodeId).sort();
      assert.deepEqual([...new Set(r.found.map((f) => f.nodeId))].sort(), others, `node-${i} found ${JSON.stringify(r.found)}`);
      for (const f of r.found) assert.equal(f.host, `${NETNS_SUBNET_PREFIX}${Number(f.nodeId.slice(5)) + 1}`);
      assert.deepEqual(r.linked, others, `node-${i} linked to ${r.linked.join(",")}`);
    }
  } finally {
    hosts.cleanUp();
  }
});
