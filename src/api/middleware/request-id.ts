// A request id ties log lines to a client's request. A client may supply one, but it is untrusted
// input: bounded in length and charset, otherwise replaced.
import { randomUUID } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { ApiEnv } from "../env.ts";

export const REQUEST_ID_LENGTH_MAX = 128;
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]+$/;
export const REQUEST_ID_HEADER = "X-Request-Id";

export function isAcceptableRequestId(raw: string): boolean {
  return raw.length > 0 && raw.length <= REQUEST_ID_LENGTH_MAX && REQUEST_ID_PATTERN.test(raw);
}

export function requestId(): MiddlewareHandler<ApiEnv> {
  return async function requestIdMiddleware(c, next) {
    const supplied = c.req.header(REQUEST_ID_HEADER);
    const id = supplied !== undefined && isAcceptableRequestId(supplied) ? supplied : `req-${randomUUID()}`;
    c.set("requestId", id);
    c.header(REQUEST_ID_HEADER, id);
    await next();
  };
}
