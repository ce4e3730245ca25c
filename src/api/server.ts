// The API on a real socket. close() is the shutdown path: in-flight requests cancel their tasks
// first, then keep-alive sockets are closed so the server really stops.
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import type { AppOptions } from "./app.ts";
import { createApp } from "./app.ts";

/** After close(), how long responses still being written get before their sockets are cut. */
export const SERVER_CLOSE_GRACE_MS = 2_000;
/** How often idle keep-alive sockets are swept while the server drains. */
const IDLE_SWEEP_MS = 20;
/**
 * A client gets this long to send its request headers. Slow-loris clients that trickle headers (or
 * a body, below) would otherwise hold a socket each forever.
 */
export const REQUEST_HEADERS_TIMEOUT_MS = 10_000;
/**
 * A client gets this long to send its whole request, body included (the body limit is 4 MiB, so
 * even a slow link has time); then Node answers 408 and closes the socket. Responses are not
 * limited: a stream may run for as long as it generates.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
/**
 * Client sockets open at once; Node closes further ones as they arrive. Far above what a household
 * or team sends, it bounds the file handles a flood of idle or slow connections can take.
 */
export const SERVER_CONNECTIONS_MAX = 1024;
/** How often Node checks connections against those two timeouts. */
const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;

export interface ApiServerOptions extends AppOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly closeGraceMs?: number;
  /** Tests shorten these; see REQUEST_HEADERS_TIMEOUT_MS and REQUEST_TIMEOUT_MS. */
  readonly requestHeadersTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  readonly connectionsMax?: number;
}

export interface ApiServer {
  readonly url: string;
  readonly port: number;
  /** Requests of this server that still follow a task. */
  liveTaskCount(): number;
  /** Open client sockets (tests check that aborted requests leave none behind). */
  connectionCount(): Promise<number>;
  close(): Promise<void>;
}

function urlOf(host: string, port: number): string {
  const shown = host.includes(":") ? `[${host}]` : host;
  return `http://${shown}:${port}`;
}

/**
 * The app's own limit on reading a body, inside Node's request timeout, so a trickling upload gets a
 * 408 in the API's error shape before Node's bare 408 would cut it.
 */
const BODY_READ_SHARE_OF_REQUEST_TIMEOUT = 0.8;

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const bodyReadTimeoutMs = options.bodyReadTimeoutMs ?? Math.floor(requestTimeoutMs * BODY_READ_SHARE_OF_REQUEST_TIMEOUT);
  const { app, cancelAll, liveTaskCount } = createApp({ ...options, bodyReadTimeoutMs });
  const server = await new Promise<Server>((resolve, reject) => {
    const serverOptions = {
      requestTimeout: requestTimeoutMs,
      // Node requires headersTimeout ≤ requestTimeout.
      headersTimeout: Math.min(options.requestHeadersTimeoutMs ?? REQUEST_HEADERS_TIMEOUT_MS, requestTimeoutMs),
      connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_INTERVAL_MS, Math.max(50, Math.floor(requestTimeoutMs / 4))),
    };
    const s = serve({ fetch: app.fetch, hostname: options.host, port: options.port, serverOptions }) as Server;
    s.maxConnections = options.connectionsMax ?? SERVER_CONNECTIONS_MAX;
    s.once("listening", () => resolve(s));
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const graceMs = options.closeGraceMs ?? SERVER_CLOSE_GRACE_MS;

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      cancelAll("server shutting down");
      const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
      const cut = setTimeout(() => server.closeAllConnections(), graceMs);
      server.close(() => {
        clearInterval(sweep);
        clearTimeout(cut);
        resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };
  const connectionCount = () =>
    new Promise<number>((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
  return { url: urlOf(options.host, port), port, liveTaskCount, connectionCount, close };
}
