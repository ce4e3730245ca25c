// Three `skein` processes, one per network namespace on a bridge, started exactly as a user would on
// three machines — no --peer, only multicast discovery and a shared cluster secret — form one
// cluster; a fourth with the wrong secret stays out. Needs root and iproute2 (CI runs as root);
// skips loudly otherwise.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { makeNamespaceHosts, namespacesUnavailableReason } from "../support/netns.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
const SECRET = "netns-cluster-secret";

/** GET /state from inside a namespace (the API listens on that namespace's loopback). */
function stateIn(namespace: string): Promise<{ members: string[]; master_node_id: string | null; cluster_id: string | null; nodes: Record<string, unknown> } | null> {
  const script = 'fetch("http://127.0.0.1:52415/state").then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))';
  return new Promise((resolve) => {
    execFile("ip", ["netns", "exec", namespace, process.execPath, "-e", script], { timeout: 5_000 }, (error, stdout) => {
      if (error !== null) return resolve(null);
      try {
        resolve(JSON.parse(stdout));
      } catch {
        resolve(null);
      }
    });
  });
}

test("three skein processes in three namespaces form one cluster by multicast; a wrong secret stays out", async (t) => {
  const why = namespacesUnavailableReason();
  if (why !== null) {
    console.log(`SKIPPED network-namespace cluster test: ${why}`);
    return t.skip(`network namespaces unavailable: ${why}`);
  }
  let hosts;
  try {
    hosts = makeNamespaceHosts(4);
  } catch (error) {
    console.log(`SKIPPED network-namespace cluster test: cannot create a namespace (${(error as Error).message.split("\n")[0]})`);
    return t.skip("cannot create network namespaces here");
  }
  const root = mkdtempSync(path.join(os.tmpdir(), "skein-netns-"));
  const children: ChildProcess[] = [];
  const logs: string[] = [];
  try {
    hosts.namespaces.forEach((ns, i) => {
      const secret = i === 3 ? "a-different-secret" : SECRET;
      const args = ["netns", "exec", ns, process.execPath, "--import", "tsx", CLI, "--home", path.join(root, `n${i}`), "--cluster-secret", secret, "--log-level", "warn"];
      const child = spawn("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
      logs[i] = "";
      child.stderr!.on("data", (d: Buffer) => (logs[i] += d.toString()));
      children.push(child);
    });
    const members = hosts.namespaces.slice(0, 3);
    const deadline = Date.now() + 40_000;
    let states: Awaited<ReturnType<typeof stateIn>>[] = [];
    for (;;) {
      states = await Promise.all(members.map(stateIn));
      const formed = states.every((s) => s !== null && s.members.length === 3 && Object.keys(s.nodes).length === 3 && s.master_node_id === states[0]!.master_node_id);
      if (formed) break;
      if (Date.now() > deadline) assert.fail(`no cluster of three: ${JSON.stringify(states)}\n${logs.join("\n---\n").slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(new Set(states.map((s) => s!.cluster_id)).size, 1, "one cluster id");
    const outsider = await stateIn(hosts.namespaces[3]!);
    assert.ok(outsider !== null, "the outsider serves on its own");
    assert.notEqual(outsider.cluster_id, states[0]!.cluster_id, "the node with the wrong secret is not in the cluster");
    assert.equal(outsider.members.length, 1);
  } finally {
    for (const child of children) child.kill("SIGKILL");
    // `ip netns exec` forwards no signal to node when killed itself: kill what runs in the namespaces.
    for (const ns of hosts.namespaces) {
      try {
        await new Promise((r) => execFile("ip", ["netns", "pids", ns], (_e, out) => {
          for (const pid of String(out).split(/\s+/).filter(Boolean)) {
            try {
              process.kill(Number(pid), "SIGKILL");
            } catch {
              // gone
            }
          }
          r(null);
        }));
      } catch {
        // namespace gone
      }
    }
    hosts.cleanUp();
    rmSync(root, { recursive: true, force: true });
  }
});
