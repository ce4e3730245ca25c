import assert from "node:assert/strict";
import { test } from "node:test";
import type { NodeId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { Beacon, DiscoveredPeer } from "../../src/net/discovery.ts";
import { Discovery, encodeBeacon, judgeBeacon, suitableInterfaces } from "../../src/net/discovery.ts";
import type { LinkIdentity } from "../../src/net/handshake.ts";

const SECRET = Buffer.from("s3cret");
const me: LinkIdentity = { nodeId: "node-me" as NodeId, clusterName: "home", clusterPort: 52416, secret: SECRET };
const beacon: Beacon = { v: 1, cluster: "home", nodeId: "node-other" as NodeId, clusterPort: 6000, addresses: ["10.0.0.2"] };

test("beacons: signed ones pass; unsigned, wrongly signed, foreign, own and garbage ones are ignored", () => {
  assert.deepEqual(judgeBeacon(encodeBeacon(beacon, SECRET), me), { ok: true, beacon });
  const cases: [Buffer, RegExp][] = [
    [encodeBeacon(beacon, null), /signature/],
    [encodeBeacon(beacon, Buffer.from("other")), /signature/],
    [encodeBeacon({ ...beacon, cluster: "neighbours" }, SECRET), /cluster "neighbours"/],
    [encodeBeacon({ ...beacon, nodeId: me.nodeId }, SECRET), /our own/],
    [encodeBeacon({ ...beacon, v: 99 }, SECRET), /version 99/],
    [Buffer.from("hello, multicast"), /msgpack|body/],
    [Buffer.alloc(2_000), /bytes/],
  ];
  for (const [bytes, reason] of cases) {
    const judged = judgeBeacon(bytes, me);
    assert.equal(judged.ok, false);
    assert.match((judged as { reason: string }).reason, reason);
  }
  // Without a secret, unsigned beacons are fine.
  assert.equal(judgeBeacon(encodeBeacon(beacon, null), { ...me, secret: null }).ok, true);
});

test("interface selection: IPv4 only, loopback only by name", () => {
  const fake = {
    lo: [{ address: "127.0.0.1", family: "IPv4", internal: true }],
    eth0: [
      { address: "192.168.1.5", family: "IPv4", internal: false },
      { address: "fe80::1", family: "IPv6", internal: false },
    ],
  } as unknown as ReturnType<typeof import("node:os").networkInterfaces>;
  assert.deepEqual(suitableInterfaces(null, fake), [{ name: "eth0", address: "192.168.1.5" }]);
  assert.deepEqual(suitableInterfaces(["lo"], fake), [{ name: "lo", address: "127.0.0.1" }]);
});

test("two nodes on loopback find each other by multicast beacons", async (t) => {
  const found: DiscoveredPeer[][] = [[], []];
  const port = 40_000 + Math.floor(Math.random() * 20_000);
  const nodes = [0, 1].map(
    (i) =>
      new Discovery({
        identity: { ...me, nodeId: `node-${i}` as NodeId, clusterPort: 7000 + i },
        logger: silentLogger(),
        port,
        interfaces: ["lo"],
        intervalMs: 50,
        onPeer: (peer) => found[i]!.push(peer),
      }),
  );
  try {
    for (const n of nodes) await n.start();
    if (nodes[0]!.stats.interfaces === 0) return t.skip("no loopback interface");
    const deadline = Date.now() + 3_000;
    while ((found[0]!.length === 0 || found[1]!.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (found[0]!.length === 0 && nodes[0]!.stats.beaconsReceived === 0 && nodes[0]!.stats.sendErrors > 0) {
      return t.skip("multicast on loopback is not available here (the namespace test covers real interfaces)");
    }
    assert.equal(found[0]![0]?.nodeId, "node-1");
    assert.equal(found[0]![0]?.clusterPort, 7001);
    assert.equal(found[1]![0]?.nodeId, "node-0");
    assert.equal(found[0]!.length, 1, "a peer is reported once, not once per beacon");
  } finally {
    for (const n of nodes) n.stop();
  }
});
