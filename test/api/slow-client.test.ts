// Slow-loris clients over a raw socket: a request whose headers or body trickle in is answered 408
// and its socket closed once the request timeout passes, and the server keeps serving others.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import type { ApiServer } from "../../src/api/server.ts";
import { startApiServer } from "../../src/api/server.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import { card, chatBody, MODEL_ID } from "../support/api-fixture.ts";
import { FakeCluster } from "../support/fake-cluster.ts";

const REQUEST_TIMEOUT_MS = 1_000;
const HEADERS_TIMEOUT_MS = 600;
/** Far above the timeouts; the test fails (instead of hanging) if the server never answers. */
const WAIT_MS_MAX = 10_000;

async function startServer(cluster: FakeCluster = new FakeCluster(), connectionsMax?: number): Promise<ApiServer> {
  cluster.addNode();
  cluster.addInstance(MODEL_ID);
  return startApiServer({
    host: "127.0.0.1",
    port: 0,
    cluster,
    models: staticModelRegistry([card(MODEL_ID)]),
    keepAliveMs: 50,
    closeGraceMs: 200,
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
    requestHeadersTimeoutMs: HEADERS_TIMEOUT_MS,
    ...(connectionsMax === undefined ? {} : { connectionsMax }),
  });
}

interface Trickle {
  readonly received: string;
  readonly closed: boolean;
  readonly elapsedMs: number;
}

/** Sends `head` at once, then `drip` one byte per intervalMs until the server closes the socket. */
function trickle(port: number, head: string, drip: string, intervalMs: number): Promise<Trickle> {
  return new Promise((resolve, reject) => {
    const startedAtMs = performance.now();
    const socket = net.connect(port, "127.0.0.1");
    let received = "";
    let index = 0;
    let timer: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server neither answered nor closed within ${WAIT_MS_MAX} ms; got ${JSON.stringify(received)}`));
    }, WAIT_MS_MAX);
    socket.on("connect", () => {
      socket.write(head);
      timer = setInterval(() => {
        if (index < drip.length && socket.writable) socket.write(drip[index++]!);
      }, intervalMs);
    });
    socket.on("data", (data) => (received += data.toString("latin1")));
    socket.on("error", () => {}); // a reset after the 408 is a close too
    socket.on("close", () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ received, closed: true, elapsedMs: performance.now() - startedAtMs });
    });
  });
}

test("a body that trickles in gets 408 and a closed socket after the request timeout", async () => {
  const server = await startServer();
  try {
    const body = JSON.stringify(chatBody());
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    const result = await trickle(server.port, head, body, 100);
    assert.match(result.received, /^HTTP\/1\.1 408/);
    assert.match(result.received, /"code":"request_timeout"/, "in the API's error shape");
    assert.match(result.received, /did not arrive within \d+ ms/);
    assert.ok(result.closed);
    assert.ok(result.elapsedMs >= REQUEST_TIMEOUT_MS * 0.7, `not before the timeout (${result.elapsedMs} ms)`);

    const ok = await fetch(`${server.url}/v1/models`);
    assert.equal(ok.status, 200, "the server keeps serving");
    assert.equal(server.liveTaskCount(), 0, "no task was opened for the unfinished body");
  } finally {
    await server.close();
  }
});

test("headers that trickle in get 408 and a closed socket after the headers timeout", async () => {
  const server = await startServer();
  try {
    const head = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    const result = await trickle(server.port, head, "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 100);
    assert.match(result.received, /^HTTP\/1\.1 408/);
    assert.ok(result.closed);
    assert.ok(result.elapsedMs < WAIT_MS_MAX);
    const ok = await fetch(`${server.url}/v1/models`);
    assert.equal(ok.status, 200);
  } finally {
    await server.close();
  }
});

test("many slow clients at once are all cut off, and their sockets are released", async () => {
  const server = await startServer();
  try {
    const head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    const results = await Promise.all(Array.from({ length: 20 }, () => trickle(server.port, head, "x".repeat(1000), 150)));
    for (const r of results) assert.match(r.received, /^HTTP\/1\.1 408/);
    // The fetch below opens one socket of its own; the slow ones must be gone.
    const response = await fetch(`${server.url}/v1/models`, { headers: { connection: "close" } });
    assert.equal(response.status, 200);
    await response.text();
    const deadline = performance.now() + 2_000;
    while ((await server.connectionCount()) > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await server.connectionCount(), 0);
  } finally {
    await server.close();
  }
});

test("the request timeout limits receiving the request, never a long answer", async () => {
  const cluster = new FakeCluster();
  const server = await startServer(cluster);
  try {
    // The answer takes 2.5× the request timeout: the stream must still end with [DONE].
    cluster.onTaskCreated = (task) => setTimeout(() => cluster.generate(task.taskId, ["slow", " answer"]), REQUEST_TIMEOUT_MS * 2.5);
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(chatBody({ stream: true })),
    });
    assert.equal(response.status, 200);
    const text = await response.text();
    assert.match(text, /slow/);
    assert.match(text, /data: \[DONE\]/);
  } finally {
    await server.close();
  }
});

test("connections beyond the limit are closed at once; once others go, new ones are served", async () => {
  const server = await startServer(undefined, 3);
  const idle: net.Socket[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const socket = net.connect(server.port, "127.0.0.1");
      socket.on("error", () => {});
      await new Promise((resolve) => socket.once("connect", resolve));
      idle.push(socket);
    }
    const deadline = performance.now() + 2_000;
    while ((await server.connectionCount()) < 3 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await server.connectionCount(), 3);
    const refused = await fetch(`${server.url}/v1/models`).then(
      (r) => r.status,
      () => "closed",
    );
    assert.equal(refused, "closed", "the fourth connection is dropped");
    for (const socket of idle) socket.destroy();
    while ((await server.connectionCount()) > 0 && performance.now() < deadline + 2_000) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await fetch(`${server.url}/v1/models`)).status, 200);
  } finally {
    for (const socket of idle) socket.destroy();
    await server.close();
  }
});
