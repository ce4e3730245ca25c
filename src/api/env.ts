// The Hono environment every API router shares: what the middleware leaves for the handlers.
import type { HttpBindings } from "@hono/node-server";

export interface ApiVariables {
  /** Bounded, client-supplied or minted; echoed as X-Request-Id and put in every log line. */
  requestId: string;
  /** The request body as counted bytes (null when the request has none). */
  bodyBytes: Uint8Array | null;
  /** The parsed JSON body, set by the jsonBody middleware. */
  jsonBody: unknown;
}

/** Bindings are the Node request/response under @hono/node-server, absent under app.request(). */
export interface ApiEnv {
  Variables: ApiVariables;
  Bindings: Partial<HttpBindings>;
}
