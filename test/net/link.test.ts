// Real sockets on 127.0.0.1: handshake, refusals, garbage, dead peers, reconnect, back-pressure,
// bandwidth probes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { test } from "node:test";
import type { NodeId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import { PROBE_VERSION, probeFrames } from "../../src/net/bandwidth-probe.ts";
import { encodeFrame, FrameDecoder } from "../../src/net/frame.ts";
import type { LinkIdentity } from "../../src/net/handshake.ts";
import { helloOf, newNonce } from "../../src/net/handshake.ts";
import type { Link, LinkOptions, LinkServer } from "../../src/net/link.ts";
import { Dialer, Link as LinkClass, listenLinks, reconnectDelayMs } from "../../src/net/link.ts";

const SECRET = Buffer.from("correct horse battery staple");

function identity(nodeId: string, overrides: Partial<LinkIdentity> = {}): LinkIdentity {
  return { nodeId: nodeId as NodeId, clusterName: "test", clusterPort: 0, secret: SECRET, ...overrides };
}

function options(nodeId: string, overrides: Partial<LinkIdentity> = {}, extra: Partial<LinkOptions> = {}): LinkOptions {
  return { identity: identity(nodeId, overrides), logger: silentLogger(), heartbeatIntervalMs: 50, deadAfterMs: 400, handshakeTimeoutMs: 2_000, probeBandwidth: true, ...extra };
}

/** Resolves when `predicate` holds, checked every 10 ms; rejects after `timeoutMs`. */
async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function server(nodeId: string, overrides: Partial<LinkIdentity> = {}, extra: Partial<LinkOptions> = {}) {
  const links: Link[] = [];
  const s: LinkServer = await listenLinks("127.0.0.1", 0, options(nodeId, overrides, extra), (link) => links.push(link));
  return { server: s, links };
}

function dialOnce(port: number, nodeId: string, overrides: Partial<LinkIdentity> = {}, extra: Partial<LinkOptions> = {}): Link {
  return new LinkClass(net.connect({ host: "127.0.0.1", port }), "outbound", options(nodeId, overrides, extra));
}

test("two links handshake with a secret, exchange messages and measure RTT", async () => {
  const { server: s, links } = await server("node-a");
  const client = dialOnce(s.port, "node-b");
  const received: unknown[] = [];
  client.handlers.onMessage = (body) => received.push(body);
  try {
    await waitFor(() => client.isOpen && links[0]?.isOpen === true, 2_000, "both ends open");
    assert.equal(client.peer?.nodeId, "node-a");
    assert.equal(links[0]!.peer?.nodeId, "node-b");
    links[0]!.send({ hello: "world", n: 42, bytes: Buffer.from([1, 2, 3]) });
    await waitFor(() => received.length === 1, 2_000, "message");
    assert.deepEqual(received[0], { hello: "world", n: 42, bytes: Buffer.from([1, 2, 3]) });
    await waitFor(() => client.rttMs !== null, 2_000, "an RTT sample");
    assert.ok(client.rttMs! >= 0 && client.rttMs! < 1_000, `rtt ${client.rttMs}`);
    // Throughput: push 4 MiB through and wait for the next heartbeat to measure it.
    const received0 = client.bytesReceived;
    for (let i = 0; i < 4; i++) links[0]!.send({ chunk: Buffer.alloc(1024 * 1024) });
    await waitFor(() => client.bytesReceived - received0 >= 4 * 1024 * 1024 && client.receiveBytesPerSecond > 1024 * 1024, 3_000, "a throughput sample");
  } finally {
    client.close("test over");
    await s.close();
  }
});

test("a wrong secret is refused on both sides and the server keeps accepting", async () => {
  const { server: s, links } = await server("node-a");
  const stranger = dialOnce(s.port, "node-x", { secret: Buffer.from("wrong") });
  try {
    const reason = await stranger.closed;
    assert.equal(stranger.everOpened, false);
    await waitFor(() => links[0]?.isClosed === true, 2_000, "server side closed");
    assert.match(links[0]!.reason!, /authentication failed/);
    assert.match(reason, /refused|closed/);
    const friend = dialOnce(s.port, "node-b");
    await waitFor(() => friend.isOpen, 2_000, "a good link after the refusal");
    friend.close("test over");
  } finally {
    await s.close();
  }
});

test("a peer without a secret is refused by a node that has one", async () => {
  const { server: s, links } = await server("node-a");
  const stranger = dialOnce(s.port, "node-x", { secret: null });
  try {
    await stranger.closed;
    await waitFor(() => links[0]?.isClosed === true, 2_000, "server side closed");
    assert.match(links[0]!.reason!, /peer has none/);
  } finally {
    await s.close();
  }
});

test("a wrong protocol version is refused with both numbers", async () => {
  const { server: s, links } = await server("node-a");
  const old = dialOnce(s.port, "node-old", { protocolVersion: 0 });
  try {
    const reason = await old.closed;
    assert.equal(old.everOpened, false);
    assert.match(reason, /protocol version/);
    await waitFor(() => links[0]?.isClosed === true, 2_000, "server side closed");
    assert.match(links[0]!.reason!, /protocol version 0 is not ours \(1\)/);
  } finally {
    await s.close();
  }
});

test("another cluster's name is refused", async () => {
  const { server: s, links } = await server("node-a");
  const other = dialOnce(s.port, "node-o", { clusterName: "elsewhere" });
  try {
    await other.closed;
    await waitFor(() => links[0]?.isClosed === true, 2_000, "server side closed");
    assert.match(links[0]!.reason!, /cluster name "elsewhere"/);
  } finally {
    await s.close();
  }
});

test("garbage bytes and oversize frames close the link; the server keeps working", async () => {
  const { server: s, links } = await server("node-a");
  try {
    for (const [bytes, expected] of [
      [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), /bad frame/],
      [Buffer.from([0, 0, 0, 2, 0xd9, 0x05]), /bad frame: frame is not valid msgpack/],
      [Buffer.from([0, 0, 0, 1, 0x01]), /unexpected/],
    ] as const) {
      const before = links.length;
      const raw = net.connect({ host: "127.0.0.1", port: s.port });
      raw.on("error", () => {});
      raw.write(bytes);
      await waitFor(() => links.length === before + 1 && links[before]!.isClosed, 2_000, "the garbage link closed");
      assert.match(links[before]!.reason!, expected);
      raw.destroy();
    }
    const friend = dialOnce(s.port, "node-b");
    await waitFor(() => friend.isOpen, 2_000, "a good link after the garbage");
    friend.close("test over");
  } finally {
    await s.close();
  }
});

/**
 * A hand-driven peer: completes the handshake (no secret) and then answers nothing; `received`
 * collects the frame types that arrive. `probeVersion: null` plays a peer older than bandwidth probes.
 */
async function silentPeer(port: number, overrides: Partial<LinkIdentity> = {}, received: string[] = []): Promise<net.Socket> {
  const socket = net.connect({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  const decoder = new FrameDecoder();
  socket.on("data", (chunk) => {
    for (const m of decoder.push(chunk)) {
      const type = (m as { type: string }).type;
      received.push(type);
      if (type === "hello") socket.write(encodeFrame({ type: "welcome" }));
    }
  });
  socket.write(encodeFrame(helloOf(identity("node-silent", { secret: null, ...overrides }), newNonce())));
  return socket;
}

test("a silent peer is noticed as dead within deadAfterMs", async () => {
  const { server: s, links } = await server("node-a", { secret: null });
  const peer = await silentPeer(s.port);
  try {
    await waitFor(() => links[0]?.isOpen === true, 2_000, "open");
    const openedAt = Date.now();
    await waitFor(() => links[0]!.isClosed, 3_000, "dead link noticed");
    assert.match(links[0]!.reason!, /no frame from the peer/);
    assert.ok(Date.now() - openedAt < 1_500, "noticed within a few heartbeats");
  } finally {
    peer.destroy();
    await s.close();
  }
});

test("a link to a killed process is noticed", async () => {
  const { server: s, links } = await server("node-a", { secret: null });
  // A separate process holds the other end, so kill -9 is a real crash, not a polite close.
  const script = `
    const net = require("node:net");
    const s = net.connect(${s.port}, "127.0.0.1");
    s.on("error", () => {});
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
  try {
    await waitFor(() => links.length === 1, 5_000, "the child's connection");
    child.kill("SIGKILL");
    await waitFor(() => links[0]!.isClosed, 5_000, "link closed after kill -9");
  } finally {
    child.kill("SIGKILL");
    await s.close();
  }
});

test("a dialer reconnects with backoff after the server goes away and comes back", async () => {
  const first = await server("node-a");
  const port = first.server.port;
  const opened: Link[] = [];
  const dialer = new Dialer({
    host: "127.0.0.1",
    port,
    link: options("node-b"),
    onLink: (link) => (link.handlers.onOpen = (l) => opened.push(l)),
    delayMinMs: 20,
    delayMaxMs: 200,
  });
  dialer.start();
  let second: Awaited<ReturnType<typeof server>> | null = null;
  try {
    await waitFor(() => opened.length === 1, 2_000, "first link");
    await first.server.close();
    await waitFor(() => opened[0]!.isClosed, 2_000, "link closed with the server");
    await waitFor(() => dialer.failedAttempts >= 2, 3_000, "failed redials while the server is down");
    second = { links: [], server: await listenLinks("127.0.0.1", port, options("node-a"), () => {}) };
    await waitFor(() => opened.length === 2 && opened[1]!.isOpen, 3_000, "reconnected");
  } finally {
    dialer.stop();
    await second?.server.close();
  }
});

test("reconnect delays grow exponentially, are capped, and are jittered", () => {
  assert.equal(reconnectDelayMs(0, () => 1, 100, 10_000), 100);
  assert.equal(reconnectDelayMs(3, () => 1, 100, 10_000), 800);
  assert.equal(reconnectDelayMs(40, () => 1, 100, 10_000), 10_000);
  assert.equal(reconnectDelayMs(3, () => 0, 100, 10_000), 400);
});

test("a peer that does not read gets its link closed instead of an unbounded queue", async () => {
  const { server: s, links } = await server("node-a", { secret: null }, { sendQueueBytesMax: 8 * 1024 * 1024, deadAfterMs: 60_000 });
  const peer = await silentPeer(s.port);
  try {
    await waitFor(() => links[0]?.isOpen === true, 2_000, "open");
    peer.pause(); // stop reading: the kernel buffers fill, then ours
    const chunk = new Uint8Array(1024 * 1024);
    let sentCount = 0;
    for (let i = 0; i < 200 && links[0]!.send({ chunk }); i++) sentCount++;
    assert.ok(links[0]!.isClosed, `link still open after ${sentCount} MiB`);
    assert.match(links[0]!.reason!, /send queue would exceed/);
  } finally {
    peer.destroy();
    await s.close();
  }
});

test("inbound connections over the limit are refused at once; the ones within keep working", async () => {
  const links: Link[] = [];
  const s = await listenLinks("127.0.0.1", 0, options("node-a"), (link) => links.push(link), 2);
  const raws = [0, 1].map(() => net.connect({ host: "127.0.0.1", port: s.port }).on("error", () => {}));
  try {
    await waitFor(() => links.length === 2, 2_000, "two handshaking links");
    const third = net.connect({ host: "127.0.0.1", port: s.port });
    third.on("error", () => {});
    await new Promise<void>((resolve) => third.on("close", () => resolve()));
    assert.equal(links.length, 2);
    raws[0]!.destroy();
    await waitFor(() => links[0]!.isClosed, 2_000, "a slot freed");
    const friend = dialOnce(s.port, "node-b");
    await waitFor(() => friend.isOpen, 2_000, "a link in the freed slot");
    friend.close("test over");
  } finally {
    raws.forEach((r) => r.destroy());
    await s.close();
  }
});

test("a bandwidth probe measures the link within a couple of seconds of opening", async () => {
  const { server: s, links } = await server("node-a");
  const client = dialOnce(s.port, "node-b");
  try {
    const openedAt = Date.now();
    await waitFor(() => client.isOpen && links[0]?.isOpen === true, 2_000, "both ends open");
    await waitFor(() => client.bandwidthBytesPerSecond !== null && links[0]!.bandwidthBytesPerSecond !== null, 3_000, "a probe answered both ways");
    const measuredMs = Date.now() - openedAt;
    for (const bps of [client.bandwidthBytesPerSecond!, links[0]!.bandwidthBytesPerSecond!]) assert.ok(bps > 0 && Number.isFinite(bps), `bandwidth ${bps}`);
    console.log(JSON.stringify({ measure: "loopback probe bandwidth", clientToServerBytesPerSecond: client.bandwidthBytesPerSecond, serverToClientBytesPerSecond: links[0]!.bandwidthBytesPerSecond, measuredMs }));
    assert.ok(client.isOpen, "the probe left the link open");
  } finally {
    client.close("test over");
    await s.close();
  }
});

test("a link without probeBandwidth never probes but answers its peer's probes", async () => {
  const { server: s, links } = await server("node-a", { secret: null }, { probeBandwidth: false, probeFirstDelayMs: 0, deadAfterMs: 5_000 });
  const received: string[] = [];
  const peer = await silentPeer(s.port, {}, received);
  try {
    await waitFor(() => links[0]?.isOpen === true, 2_000, "open");
    for (const frame of probeFrames(7)) peer.write(encodeFrame(frame));
    await waitFor(() => received.includes("probeResult"), 2_000, "the answer to the peer's probe");
    await waitFor(() => received.filter((t) => t === "ping").length >= 5, 2_000, "five heartbeats");
    assert.deepEqual(received.filter((t) => t === "probe"), []);
    assert.ok(links[0]!.isOpen);
  } finally {
    peer.destroy();
    await s.close();
  }
});

test("a malformed or out-of-order probe closes the link; the server keeps working", async () => {
  const { server: s, links } = await server("node-a", { secret: null });
  const probe = (fields: Record<string, unknown>) => encodeFrame({ type: "probe", v: PROBE_VERSION, id: 1, seq: 0, count: 2, data: new Uint8Array(0), ...fields });
  try {
    for (const [frames, expected] of [
      [[probe({ count: 1_000 })], /malformed probe/],
      [[probe({ data: "not bytes" })], /malformed probe/],
      [[probe({ seq: 0 }), probe({ seq: 1, data: new Uint8Array(2 * 1024 * 1024) })], /malformed probe/],
      [[probe({ seq: 1 })], /out of order/],
      [[probe({ v: undefined })], /malformed probe: no version/],
      [[encodeFrame({ type: "probeResult", v: PROBE_VERSION, id: -1, bytes: 1, spanMs: 1 })], /malformed probe result/],
    ] as const) {
      const before = links.length;
      const peer = await silentPeer(s.port);
      await waitFor(() => links.length === before + 1 && links[before]!.isOpen, 2_000, "the peer's link open");
      for (const frame of frames) peer.write(frame);
      await waitFor(() => links[before]!.isClosed, 2_000, "the link closed over the probe");
      assert.match(links[before]!.reason!, expected);
      peer.destroy();
    }
    const friend = dialOnce(s.port, "node-b", { secret: null });
    await waitFor(() => friend.bandwidthBytesPerSecond !== null, 3_000, "a measured link after the bad probes");
    friend.close("test over");
  } finally {
    await s.close();
  }
});

test("a peer without probes is never probed, and a probe of another version is ignored", async () => {
  const { server: s, links } = await server("node-a", { secret: null }, { probeFirstDelayMs: 0, deadAfterMs: 5_000 });
  const received: string[] = [];
  const peer = await silentPeer(s.port, { probeVersion: null }, received);
  try {
    await waitFor(() => links[0]?.isOpen === true, 2_000, "open");
    const messages: unknown[] = [];
    links[0]!.handlers.onMessage = (body) => messages.push(body);
    peer.write(encodeFrame({ type: "probe", v: PROBE_VERSION + 1, id: 1, seq: 0, count: 2, future: "shape" }));
    peer.write(encodeFrame({ type: "msg", body: "after the probe" }));
    await waitFor(() => messages.length === 1, 2_000, "the message after the ignored probe");
    assert.ok(links[0]!.isOpen);
    // Heartbeats every 50 ms and a probe due at once: several pings without a probe between them.
    await waitFor(() => received.filter((t) => t === "ping").length >= 5, 2_000, "five heartbeats");
    assert.deepEqual(received.filter((t) => t.startsWith("probe")), []);
    assert.equal(links[0]!.bandwidthBytesPerSecond, null);
  } finally {
    peer.destroy();
    await s.close();
  }
});

test("a large frame in the same read as the handshake's last frame is accepted under the open link's limit", async () => {
  const { server: s, links } = await server("node-a", { secret: null });
  const received: unknown[] = [];
  const raw = net.connect({ host: "127.0.0.1", port: s.port });
  try {
    await new Promise<void>((resolve) => raw.once("connect", () => resolve()));
    raw.write(encodeFrame(helloOf(identity("node-raw", { secret: null }), newNonce())));
    await waitFor(() => links.length === 1, 2_000, "the server's link");
    links[0]!.handlers.onMessage = (body) => received.push(body);
    // Our welcome and a 64 KiB message leave in one write, so they arrive in one read.
    const big = { blob: Buffer.alloc(64 * 1024, 7) };
    raw.write(Buffer.concat([encodeFrame({ type: "welcome" }), encodeFrame({ type: "msg", body: big })]));
    await waitFor(() => received.length === 1, 2_000, "the large message");
    assert.equal(links[0]!.isOpen, true, links[0]!.reason ?? "");
    assert.equal((received[0] as typeof big).blob.length, 64 * 1024);
  } finally {
    raw.destroy();
    await s.close();
  }
});
