// `skein` processes as users start them on one machine (distinct ports and homes, --peer, no
// multicast). Three form one cluster; kill -9 of the master gives a new master within seconds with
// the instance still there; kill -9 of the node running a request ends that request with an error —
// nothing hangs — and the cluster serves the next one. Two split a GGUF model into a pipeline that
// answers exactly as one node does, and a cancel stops both stages.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { writeModelFixture } from "../support/gguf-model-fixture.ts";
import { chatBody, FAKE_ENGINE_MODULE, FAKE_MODEL_ID, postChat, sseData } from "../support/test-node.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

interface CliNode {
  readonly child: ChildProcess;
  readonly url: string;
  readonly nodeId: string;
  readonly clusterPort: number;
  readonly home: string;
  stderr(): string;
}

async function startNode(root: string, name: string, peers: readonly CliNode[], cards: readonly string[] = [path.join(root, "fake-card.json")]): Promise<CliNode> {
  const home = path.join(root, name);
  const args = ["--port", "0", "--cluster-port", "0", "--no-discovery", "--home", home, "--log-level", "warn"];
  for (const card of cards) args.push("--model-card", card);
  for (const p of peers) args.push("--peer", `127.0.0.1:${p.clusterPort}`);
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const started = await new Promise<{ url: string; nodeId: string; clusterPort: number }>((resolve, reject) => {
    let stdout = "";
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      const match = /serving on (http:\/\/\S+) \(node (\S+), cluster port (\d+)\)/.exec(stdout);
      if (match !== null) resolve({ url: match[1]!, nodeId: match[2]!, clusterPort: Number(match[3]) });
    });
    child.once("exit", (code) => reject(new Error(`skein ${name} exited early (${code}): ${stderr}`)));
  });
  return { child, home, ...started, stderr: () => stderr };
}

interface StateJson {
  master_node_id: string | null;
  cluster_id: string | null;
  members: string[];
  nodes: Record<string, unknown>;
  instances: Record<string, { instanceId: string; modelId: string; shards: { nodeId: string; runnerId: string }[] }>;
  runners: Record<string, { status: { kind: string } }>;
  tasks: Record<string, { status: string }>;
}

async function stateOf(node: CliNode): Promise<StateJson | null> {
  try {
    const response = await fetch(`${node.url}/state`, { signal: AbortSignal.timeout(2_000) });
    return (await response.json()) as StateJson;
  } catch {
    return null;
  }
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<number> {
  const startedAt = Date.now();
  while (Date.now() - startedAt < timeoutMs) {
    if (await check()) return Date.now() - startedAt;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function formed(nodes: readonly CliNode[], count: number): Promise<boolean> {
  const states = await Promise.all(nodes.map(stateOf));
  return states.every((s) => s !== null && s.members.length === count && Object.keys(s.nodes).length === count && s.master_node_id !== null && s.master_node_id === states[0]!.master_node_id);
}

test("three skein processes with --peer form a cluster; kill -9 of the master and of a serving node are survived", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "skein-cluster-"));
  writeFileSync(
    path.join(root, "fake-card.json"),
    JSON.stringify({ id: FAKE_MODEL_ID, layerCount: 4, engineModule: fileURLToPath(FAKE_ENGINE_MODULE), engineOptions: { tokenDelayMs: 20 } }),
  );
  const nodes: CliNode[] = [];
  try {
    for (const name of ["a", "b", "c"]) nodes.push(await startNode(root, name, nodes));
    await waitUntil("one cluster of three", 20_000, () => formed(nodes, 3));

    // Kill -9 the master: the other two elect a new one and keep the cluster's State.
    const before = (await stateOf(nodes[0]!))!;
    const master = nodes.find((n) => n.nodeId === before.master_node_id)!;
    const survivors = nodes.filter((n) => n !== master);
    const warm = await postChat(survivors[0]!.url, chatBody({ max_tokens: 2 }));
    assert.equal(warm.status, 200, await warm.clone().text());
    await warm.json();
    const placed = (await stateOf(survivors[0]!))!;
    const instance = Object.values(placed.instances)[0]!;
    master.child.kill("SIGKILL");
    const failoverMs = await waitUntil("a new master", 15_000, async () => {
      const states = await Promise.all(survivors.map(stateOf));
      return states.every((s) => s !== null && s.master_node_id !== null && s.master_node_id !== master.nodeId && s.master_node_id === states[0]!.master_node_id);
    });
    assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
    const afterFailover = (await stateOf(survivors[0]!))!;
    if (instance.shards.every((s) => s.nodeId !== master.nodeId)) {
      assert.ok(afterFailover.instances[instance.instanceId], "the instance placed before the failover is still there");
    }
    // The next request works (on the old instance, or on one placed again once the dead node timed out).
    await waitUntil("a request served after the failover", 20_000, async () => {
      const response = await postChat(survivors[1]!.url, chatBody({ max_tokens: 3 }));
      if (response.status !== 200) {
        await response.text();
        return false;
      }
      const body = (await response.json()) as { usage: { completion_tokens: number } };
      return body.usage.completion_tokens === 3;
    });

    // The killed node comes back with its home: it rejoins the same cluster (three members again).
    const restarted = await startNode(root, path.basename(master.home), survivors);
    assert.equal(restarted.nodeId, master.nodeId, "a node keeps its id across restarts");
    nodes.push(restarted);
    const three = [...survivors, restarted];
    await waitUntil("the restarted node back in the cluster", 30_000, () => formed(three, 3));

    // Kill -9 the node that runs the next request, mid-stream, asked through another node.
    const now = (await stateOf(survivors[0]!))!;
    const serving = Object.values(now.instances)[0]!.shards[0]!.nodeId;
    const victim = three.find((n) => n.nodeId === serving)!;
    const asker = three.find((n) => n !== victim)!;
    {
      const response = await postChat(asker.url, chatBody({ stream: true, max_tokens: 5_000 }));
      const stream = sseData(response);
      await stream.next();
      victim.child.kill("SIGKILL");
      const endedAt = Date.now();
      const rest: unknown[] = [];
      try {
        for await (const item of stream) rest.push(item);
      } catch {
        // a cut connection is an answer too; a hang is not
      }
      const error = rest.find((x) => typeof x === "object" && x !== null && "error" in x);
      assert.ok(error !== undefined || rest.length === 0, `the stream ended with an error (${Date.now() - endedAt} ms after the kill)`);
      const others = three.filter((n) => n !== victim);
      await waitUntil("the task gone and the next request served", 30_000, async () => {
        const response = await postChat(others[0]!.url, chatBody({ max_tokens: 2 }));
        const ok = response.status === 200;
        await response.text();
        return ok;
      });
    }
  } finally {
    for (const n of nodes) n.child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
});

test("skein processes split a GGUF model into a pipeline: same greedy answer as one node; cancel stops both stages; kill -9 of a stage fails the request at once", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "skein-pipeline-cli-"));
  const modelPath = path.join(root, "model.gguf");
  const layerCount = 6;
  writeModelFixture(modelPath, {
    arch: "qwen2",
    vocab: "tiny",
    nLayer: layerCount,
    nEmbd: 128,
    nHead: 4,
    nHeadKv: 2,
    nFf: 256,
    contextLength: 1024,
    tensorType: GgmlType.Q8_0,
    tiedOutput: true,
    seed: 11,
  });
  const cards = ["whole", "split"].map((id) => {
    const file = path.join(root, `${id}.json`);
    writeFileSync(file, JSON.stringify({ id, layerCount, sizeBytes: 1024 * 1024, contextLength: 1024, path: modelPath }));
    return file;
  });
  const nodes: CliNode[] = [];
  try {
    // Three nodes so that the cluster keeps a majority when a stage's node is killed below.
    for (const name of ["a", "b", "c"]) nodes.push(await startNode(root, name, nodes, cards));
    await waitUntil("one cluster of three", 20_000, () => formed(nodes, 3));
    const [a, b] = nodes as [CliNode, CliNode, CliNode];
    for (const [model, minNodes] of [["whole", 1], ["split", 2]] as const) {
      const placed = await fetch(`${a.url}/instance`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model, min_nodes: minNodes, sharding: "pipeline" }) });
      assert.equal(placed.status, 200, await placed.clone().text());
      await placed.json();
    }
    const state = (await stateOf(a))!;
    const split = Object.values(state.instances).find((i) => i.modelId === "split")!;
    assert.equal(new Set(split.shards.map((s) => s.nodeId)).size, 2, "the split instance spans both nodes");

    const ask = async (node: CliNode, model: string) => {
      const response = await postChat(node.url, JSON.stringify({ model, messages: [{ role: "user", content: "Tell me about foxes." }], max_tokens: 16, temperature: 0 }));
      assert.equal(response.status, 200, await response.clone().text());
      return ((await response.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    };
    const one = await ask(a, "whole");
    assert.equal(await ask(b, "split"), one, "the pipeline over two processes answers exactly as one node");

    const abort = new AbortController();
    const streaming = await postChat(b.url, JSON.stringify({ model: "split", messages: [{ role: "user", content: "Go on forever." }], max_tokens: 900, stream: true }), abort.signal);
    let chunks = 0;
    for await (const data of sseData(streaming)) {
      if (data !== "[DONE]") chunks++;
      if (chunks === 3) break;
    }
    abort.abort();
    await waitUntil("the task gone and both stages Ready", 10_000, async () => {
      const s = await stateOf(a);
      return s !== null && Object.keys(s.tasks).length === 0 && split.shards.every((shard) => s.runners[shard.runnerId]?.status.kind === "Ready");
    });
    assert.equal(await ask(a, "split"), one, "the pipeline serves again at once");

    // kill -9 the last stage's node mid-stream, asking through the first stage's node.
    const first = nodes.find((n) => n.nodeId === split.shards[0]!.nodeId)!;
    const last = nodes.find((n) => n.nodeId === split.shards.at(-1)!.nodeId)!;
    const doomed = await postChat(first.url, JSON.stringify({ model: "split", messages: [{ role: "user", content: "Go on." }], max_tokens: 900, stream: true }));
    const stream = sseData(doomed);
    await stream.next();
    last.child.kill("SIGKILL");
    const killedAt = Date.now();
    const rest: unknown[] = [];
    try {
      for await (const item of stream) rest.push(item);
    } catch {
      // a cut connection is an answer too
    }
    const endedMs = Date.now() - killedAt;
    const error = rest.find((x) => typeof x === "object" && x !== null && "error" in x) as { error: { message: string } } | undefined;
    assert.ok(error !== undefined, `an error event ends the stream: ${JSON.stringify(rest.slice(-2))}`);
    assert.match(error.error.message, /stage|gone|failed/i);
    assert.ok(endedMs < 10_000, `the request failed ${endedMs} ms after the kill`);
  } finally {
    for (const n of nodes) n.child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
});
