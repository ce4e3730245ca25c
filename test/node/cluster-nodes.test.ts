// Three real nodes in this process (real HTTP, real TCP links on loopback, real election, real runner
// processes serving the FakeEngine test double), joined with --peer addresses: they form one
// cluster, any node's API serves, a cancel from a follower's client stops the runner, and when the
// master stops another takes over with the instance still there.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Socket } from "node:net";
import { connect } from "node:net";
import { test } from "node:test";
import { encodeFrame } from "../../src/net/frame.ts";
import { Link } from "../../src/net/link.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { NodeClusterOptions } from "../../src/node/node.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import type { State } from "../../src/shared/state.ts";
import type { TestNode } from "../support/test-node.ts";
import { chatBody, FAKE_MODEL_ID, postChat, sseData, startTestNode, waitForState } from "../support/test-node.ts";

/** Fast timings so the test takes seconds, not minutes. */
const FAST: NodeClusterOptions = {
  raft: { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatIntervalMs: 50 },
  nodeTimeoutMs: 2_000,
  aloneTimeoutMs: 30_000,
  linkHeartbeatMs: 200,
  linkTimeoutMs: 1_000,
};

async function startCluster(count: number): Promise<TestNode[]> {
  const nodes: TestNode[] = [];
  for (let i = 0; i < count; i++) {
    const peers = nodes.map((n) => ({ host: "127.0.0.1", port: n.node.clusterPort }));
    nodes.push(await startTestNode({ engineOptions: { tokenDelayMs: 20 }, node: { cluster: { ...FAST, peers } } }));
  }
  return nodes;
}

function formed(count: number): (s: State) => boolean {
  return (s) => s.members.length === count && Object.keys(s.nodes).length === count && s.masterNodeId !== null;
}

async function stopAll(nodes: readonly TestNode[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
}

test("three nodes joined by --peer form one cluster with one master and the same State", async () => {
  const nodes = await startCluster(3);
  try {
    for (const n of nodes) await n.waitFor(formed(3), "three members and three nodes", 15_000);
    const masters = new Set(nodes.map((n) => n.state().masterNodeId));
    assert.equal(masters.size, 1, "every node names the same master");
    const clusterIds = new Set(nodes.map((n) => n.state().clusterId));
    assert.equal(clusterIds.size, 1, "one cluster");
    const leaders = nodes.filter((n) => n.node.replicated.role === "leader");
    assert.equal(leaders.length, 1);
    assert.equal(leaders[0]!.node.nodeId, [...masters][0]);
  } finally {
    await stopAll(nodes);
  }
});

test("a follower's API serves a request, and its client's cancel stops the runner on another node", async () => {
  const nodes = await startCluster(3);
  try {
    for (const n of nodes) await n.waitFor(formed(3), "cluster formed", 15_000);
    const follower = nodes.find((n) => n.node.replicated.role !== "leader")!;
    const complete = await postChat(follower.url, chatBody({ max_tokens: 5 }));
    assert.equal(complete.status, 200);
    const body = (await complete.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    assert.equal(body.usage.completion_tokens, 5);

    const abort = new AbortController();
    const streaming = await postChat(follower.url, chatBody({ stream: true, max_tokens: 2_000 }), abort.signal);
    let chunks = 0;
    for await (const data of sseData(streaming)) {
      if (data !== "[DONE]") chunks++;
      if (chunks === 3) break;
    }
    abort.abort();
    for (const n of nodes) {
      await n.waitFor(
        (s) => Object.keys(s.tasks).length === 0 && Object.values(s.runners).every((r) => r.status.kind === "Ready"),
        "task cancelled and deleted, runner Ready again, on every node",
        10_000,
      );
    }
    const cancelled = follower.events.find((e) => e.event.type === "TaskStatusUpdated" && e.event.status === "Cancelled");
    assert.ok(cancelled, "the follower saw the task Cancelled");
  } finally {
    await stopAll(nodes);
  }
});

test("when the master stops, a new master takes over within seconds, the instance is still there and serves", async () => {
  const nodes = await startCluster(3);
  try {
    for (const n of nodes) await n.waitFor(formed(3), "cluster formed", 15_000);
    const first = nodes.find((n) => n.node.replicated.role !== "leader")!;
    const warm = await postChat(first.url, chatBody({ max_tokens: 2 }));
    assert.equal(warm.status, 200);
    await warm.json();
    const instanceNode = Object.values(first.state().instances)[0]!.shards[0]!.nodeId;
    const master = nodes.find((n) => n.node.replicated.role === "leader")!;
    const survivors = nodes.filter((n) => n !== master);
    const oldMaster: NodeId = master.node.nodeId;
    const stoppedAt = Date.now();
    await master.stop();
    for (const n of survivors) {
      await waitForState(n.node, (s) => s.masterNodeId !== null && s.masterNodeId !== oldMaster, "a new master", 10_000);
    }
    const failoverMs = Date.now() - stoppedAt;
    assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
    const survivor = survivors.find((n) => n.node.nodeId !== instanceNode) ?? survivors[0]!;
    // The instance survives if its node did; otherwise it is placed again once the old master times out.
    await survivor.waitFor((s) => Object.values(s.instances).some((i) => i.modelId === FAKE_MODEL_ID && i.shards.every((x) => x.nodeId !== oldMaster)), "an instance on a live node", 15_000);
    const after = await postChat(survivor.url, chatBody({ max_tokens: 3 }));
    assert.equal(after.status, 200);
    const body = (await after.json()) as { usage: { completion_tokens: number } };
    assert.equal(body.usage.completion_tokens, 3);
    await survivor.waitFor((s) => s.members.length === 2 && s.nodes[oldMaster] === undefined, "the stopped master removed", 15_000);
  } finally {
    await stopAll(nodes);
  }
});

test("a node's cluster port shrugs off garbage, oversize frames, forged hellos and half-open sockets; the cluster still forms", async () => {
  const nodes = await startCluster(1);
  const sockets: Socket[] = [];
  try {
    const port = nodes[0]!.node.clusterPort;
    const open = () =>
      new Promise<Socket>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1", () => resolve(socket));
        socket.on("error", () => {});
        socket.once("error", reject);
        sockets.push(socket);
      });
    (await open()).write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const oversize = Buffer.alloc(8);
    oversize.writeUInt32BE(0xffff_fff0, 0);
    (await open()).write(oversize);
    (await open()).write(encodeFrame({ type: "hello", protocolVersion: 999, clusterName: "skein", nodeId: "node-forged", clusterPort: 1, auth: false, nonce: Buffer.alloc(32) }));
    (await open()).write(encodeFrame({ type: "hello", nodeId: { __proto__: { polluted: true } }, nonce: "x" }));
    await open(); // says nothing at all
    // A real node joins all the same, and both serve.
    const peers = [{ host: "127.0.0.1", port }];
    nodes.push(await startTestNode({ engineOptions: { tokenDelayMs: 20 }, node: { cluster: { ...FAST, peers } } }));
    for (const n of nodes) await n.waitFor(formed(2), "a cluster of two despite the garbage", 15_000);
    assert.equal(({} as { polluted?: boolean }).polluted, undefined, "no prototype was polluted");
    const response = await postChat(nodes[0]!.url, chatBody({ max_tokens: 2 }));
    assert.equal(response.status, 200);
    await response.json();
  } finally {
    for (const s of sockets) s.destroy();
    await stopAll(nodes);
  }
});

test("two nodes, one stops: the survivor has no majority, founds a cluster of one with its State and serves", async () => {
  const nodes: TestNode[] = [];
  const options = { ...FAST, aloneTimeoutMs: 2_000 };
  nodes.push(await startTestNode({ engineOptions: { tokenDelayMs: 5 }, node: { cluster: options } }));
  nodes.push(await startTestNode({ engineOptions: { tokenDelayMs: 5 }, node: { cluster: { ...options, peers: [{ host: "127.0.0.1", port: nodes[0]!.node.clusterPort }] } } }));
  try {
    for (const n of nodes) await n.waitFor(formed(2), "a cluster of two", 15_000);
    const [stays, goes] = [...nodes].sort((x) => (x.node.replicated.role === "leader" ? 1 : -1)) as [TestNode, TestNode];
    // Serve once so an instance exists, then stop the leader: the follower cannot commit alone.
    const first = await postChat(stays.url, chatBody({ max_tokens: 2 }));
    assert.equal(first.status, 200);
    await first.json();
    const clusterBefore = stays.state().clusterId;
    await goes.stop();
    await stays.waitFor((s) => s.clusterId !== clusterBefore && s.members.length === 1 && s.masterNodeId === stays.node.nodeId, "a cluster of one, led by the survivor", 15_000);
    // The model is there: kept if it ran on the survivor, else placed again once the other timed out.
    await stays.waitFor(
      (s) => s.nodes[goes.node.nodeId] === undefined && Object.values(s.instances).some((i) => i.shards.every((x) => x.nodeId === stays.node.nodeId)),
      "the stopped node gone and an instance on the survivor",
      15_000,
    );
    const again = await postChat(stays.url, chatBody({ max_tokens: 3 }));
    assert.equal(again.status, 200, await again.clone().text());
    const body = (await again.json()) as { usage: { completion_tokens: number } };
    assert.equal(body.usage.completion_tokens, 3);
  } finally {
    await stopAll(nodes);
  }
});

test("an authenticated peer that sends malformed forwards, election messages and hellos is ignored; the master serves on", async () => {
  const nodes = await startCluster(1);
  const node = nodes[0]!;
  await node.waitFor(formed(1), "a cluster of one", 10_000);
  const link = new Link(connect(node.node.clusterPort, "127.0.0.1"), "outbound", {
    identity: { nodeId: "node-mischief" as NodeId, clusterName: "skein", clusterPort: 1, secret: null },
    logger: silentLogger(),
  });
  try {
    const deadline = Date.now() + 5_000;
    while (!link.isOpen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(link.isOpen, true, link.reason ?? "link did not open");
    const junk: unknown[] = [
      { topic: "forward", epoch: "e", seq: -1, item: { kind: "command", command: { type: "TextGeneration" } } },
      { topic: "forward", epoch: "e", seq: 0, item: { kind: "command", command: { type: "PlaceInstance", commandId: 5 } } },
      { topic: "forward", epoch: "e", seq: 1, item: { kind: "workerEvent", event: { type: "RunnerStatusUpdated", runnerId: "runner-x", status: { kind: "Ready" } } } },
      { topic: "forward", epoch: "e", seq: 2, item: { kind: "workerEvent", event: { type: "NodeGatheredInfo", info: { nodeId: node.node.nodeId } } } },
      { topic: "raft", message: { type: "AppendEntries", term: "x" } },
      { topic: "raft", message: { type: "RequestVote", term: 1e9, lastLogIndex: 1e9, lastLogTerm: 1e9 } },
      { topic: "cluster", clusterId: 42, memberCount: -1 },
      { topic: "forwardAck", epoch: 7 },
      { topic: "nonsense" },
      null,
    ];
    for (const body of junk) link.send(body);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(node.node.replicated.role, "leader", "no forged message deposed the master");
    assert.equal(node.state().masterNodeId, node.node.nodeId);
    assert.equal(node.state().nodes["node-mischief" as NodeId], undefined, "nothing was indexed for the stranger");
    const response = await postChat(node.url, chatBody({ max_tokens: 2 }));
    assert.equal(response.status, 200);
    await response.json();
  } finally {
    link.close("test done");
    await stopAll(nodes);
  }
});

test("a node whose API port is taken fails to start and leaves nothing running: no listener, no timer, its home reusable", async () => {
  const nodes = await startCluster(1);
  const home = mkdtempSync(path.join(os.tmpdir(), "skein-port-taken-"));
  try {
    const port = Number(new URL(nodes[0]!.url).port);
    const servers = () => process.getActiveResourcesInfo().filter((r) => r === "TCPServerWrap").length;
    const before = servers();
    await assert.rejects(startTestNode({ home, node: { port, cluster: FAST } }), (error: NodeJS.ErrnoException) => error.code === "EADDRINUSE");
    await new Promise((r) => setTimeout(r, 200));
    // ≤: a listener of an earlier test may still be closing; a leaked one would make it before + 1.
    assert.ok(servers() <= before, `the failed node's listeners were closed: ${process.getActiveResourcesInfo().join(",")}`);
    const again = await startTestNode({ home, node: { cluster: FAST } });
    await again.waitFor(formed(1), "the same home serves once the port is free", 10_000);
    await again.stop();
  } finally {
    await stopAll(nodes);
    rmSync(home, { recursive: true, force: true });
  }
});
