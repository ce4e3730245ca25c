// NetTransport over real sockets on 127.0.0.1, and the election driver on top of it: three nodes
// in one process elect a leader, replicate events, and elect a new leader when the old one dies.
import assert from "node:assert/strict";
import { test } from "node:test";
import { RaftDriver, raftMessageSchema } from "../../src/election/driver.ts";
import type { RaftConfig } from "../../src/election/raft.ts";
import { initialRaftState } from "../../src/election/raft.ts";
import { apply } from "../../src/shared/apply.ts";
import { systemClock } from "../../src/shared/clock.ts";
import type { NodeId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { State } from "../../src/shared/state.ts";
import { emptyState } from "../../src/shared/state.ts";
import type { IndexedEvent } from "../../src/shared/types.ts";
import { IndexedEventSchema } from "../../src/shared/types.ts";
import type { StaticPeer } from "../../src/net/transport.ts";
import { NetTransport, parsePeer } from "../../src/net/transport.ts";
import { z } from "zod";

async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function startTransport(nodeId: string, staticPeers: StaticPeer[]): Promise<NetTransport> {
  return NetTransport.start({
    identity: { nodeId: nodeId as NodeId, clusterName: "t", clusterPort: 0, secret: Buffer.from("k") },
    logger: silentLogger(),
    listenHost: "127.0.0.1",
    staticPeers,
    discovery: null,
    link: { heartbeatIntervalMs: 50, deadAfterMs: 300 },
    reconnectDelayMinMs: 20,
    reconnectDelayMaxMs: 200,
  });
}

test("--peer values: host:port, [v6]:port; anything else is refused", () => {
  assert.deepEqual(parsePeer("10.0.0.2:52416"), { host: "10.0.0.2", port: 52416 });
  assert.deepEqual(parsePeer("box.local:1"), { host: "box.local", port: 1 });
  assert.deepEqual(parsePeer("[fe80::1]:52416"), { host: "fe80::1", port: 52416 });
  for (const bad of ["10.0.0.2", "10.0.0.2:0", "10.0.0.2:70000", ":52416", "a:b", "fe80::1:52416"]) assert.equal(parsePeer(bad), null, bad);
});

test("two nodes that both dial each other end up with exactly one link", async () => {
  const a = await startTransport("node-a", []);
  const b = await startTransport("node-b", [{ host: "127.0.0.1", port: a.port }]);
  // Each has the other as a --peer: two links race, both ends must keep the same one.
  a.addPeer({ host: "127.0.0.1", port: b.port });
  const received: unknown[] = [];
  b.onMessage((from, m) => received.push([from, m]));
  try {
    await waitFor(() => b.connectedPeers().length === 1 && a.connectedPeers().length === 1, 3_000, "links");
    // a's own dial must have been tried and refused as a duplicate, or have won: either way one link.
    await waitFor(() => a.peerLinks()[0]?.rttMs !== null && b.peerLinks()[0]?.rttMs !== null, 3_000, "heartbeats on the kept link");
    assert.equal(a.peerLinks()[0]!.direction === "outbound", b.peerLinks()[0]!.direction === "inbound", "both ends kept the same link");
    assert.equal(a.send("node-b" as NodeId, { hi: 1 }), true);
    await waitFor(() => received.length === 1, 2_000, "message over the kept link");
    assert.deepEqual(received[0], ["node-a", { hi: 1 }]);
    assert.equal(a.send("node-nobody" as NodeId, {}), false);
    await waitFor(() => (a.peerLinks()[0]?.bandwidthBytesPerSecond ?? 0) > 0, 3_000, "a probed bandwidth on the kept link");
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

test("three nodes over TCP elect one leader, replicate, and fail over when the leader dies", async () => {
  const transports: NetTransport[] = [];
  for (const id of ["node-0", "node-1", "node-2"]) {
    transports.push(await startTransport(id, transports.map((t) => ({ host: "127.0.0.1", port: t.port }))));
  }
  const ids = transports.map((t) => t.nodeId);
  const states = new Map<NodeId, State>(ids.map((id) => [id, emptyState()]));
  const snapshotState = z.custom<State>((v) => typeof v === "object" && v !== null);
  const drivers = transports.map((transport, i) => {
    const config: RaftConfig<IndexedEvent, State> = {
      nodeId: transport.nodeId,
      voterIds: ids,
      electionTimeoutMinMs: 300,
      electionTimeoutMaxMs: 600,
      heartbeatIntervalMs: 50,
      entriesPerMessageMax: 256,
      logTailKeep: 64,
      compactionBatch: 64,
      logEntriesInMemoryMax: 4096,
      uncommittedEntriesMax: 1024,
      applyToSnapshot: (s, e) => apply(s, e.payload),
      leaderNoop: (idx, term, nodeId, nowMs) => ({ idx, atMs: nowMs, event: { type: "MasterChanged", nodeId, term } }),
    };
    const schema = raftMessageSchema(IndexedEventSchema, snapshotState, config.entriesPerMessageMax);
    return new RaftDriver<IndexedEvent, State>({
      config,
      transport,
      clock: systemClock,
      initial: initialRaftState(config, { lastIndex: -1, lastTerm: 0, state: emptyState() }, 1000 + i, Date.now()),
      parseMessage: (raw) => {
        const parsed = schema.safeParse(raw);
        return parsed.success ? parsed.data : null;
      },
      onApply: (entries) => {
        let s = states.get(transport.nodeId)!;
        for (const e of entries) s = apply(s, e.payload);
        states.set(transport.nodeId, s);
      },
      onRestore: (snapshot) => states.set(transport.nodeId, snapshot.state),
    });
  });
  const timers = drivers.map((d) => setInterval(() => d.tick(), 10));
  const alive = new Set([0, 1, 2]);
  const agreedLeader = (): number | undefined => {
    const leaders = [...alive].filter((i) => drivers[i]!.state.role === "leader");
    if (leaders.length !== 1) return undefined;
    const l = leaders[0]!;
    return [...alive].every((j) => drivers[j]!.state.leaderId === ids[l] && drivers[j]!.state.term === drivers[l]!.state.term) ? l : undefined;
  };
  const proposeEvents = (leader: number, count: number) => {
    for (let k = 0; k < count; k++) {
      const idx = (drivers[leader]!.state.log.at(-1)?.index ?? drivers[leader]!.state.snapshot.lastIndex) + 1;
      const r = drivers[leader]!.propose([{ idx, atMs: Date.now(), event: { type: "TopologyEdgeCreated", fromNodeId: ids[leader]!, toNodeId: ids[(leader + 1) % 3]!, latencyMs: k } }]);
      assert.equal(r.ok, true);
    }
  };
  try {
    await waitFor(() => agreedLeader() !== undefined, 5_000, "a leader all agree on");
    const first = agreedLeader()!;
    proposeEvents(first, 100);
    await waitFor(() => [...alive].every((i) => states.get(ids[i]!)!.lastIdx >= 100), 5_000, "replication");
    const lastIdx = states.get(ids[first]!)!.lastIdx;
    await waitFor(() => [...alive].every((i) => states.get(ids[i]!)!.lastIdx === lastIdx), 5_000, "same idx everywhere");
    for (const i of alive) assert.deepEqual(states.get(ids[i]!), states.get(ids[first]!));

    // The leader dies: its timer stops and its sockets close.
    const oldTerm = drivers[first]!.state.term;
    clearInterval(timers[first]!);
    alive.delete(first);
    await transports[first]!.stop();
    const diedAt = Date.now();
    await waitFor(() => agreedLeader() !== undefined, 5_000, "a new leader after the old one died");
    const second = agreedLeader()!;
    assert.notEqual(second, first);
    assert.ok(drivers[second]!.state.term > oldTerm);
    const failoverMs = Date.now() - diedAt;
    proposeEvents(second, 10);
    const expected = drivers[second]!.state.log.at(-1)!.index;
    await waitFor(() => [...alive].every((i) => states.get(ids[i]!)!.lastIdx === expected), 5_000, "replication after failover");
    const [x, y] = [...alive];
    assert.deepEqual(states.get(ids[x!]!), states.get(ids[y!]!));
    assert.equal(states.get(ids[x!]!)!.masterNodeId, ids[second], "the new leader's no-op names it master");
    console.log(`failover over TCP: new leader ${ids[second]} in ${failoverMs} ms (link dead-after 300 ms, election timeout 300–600 ms)`);
  } finally {
    timers.forEach((t) => clearInterval(t));
    await Promise.all(transports.map((t) => t.stop()));
  }
});
