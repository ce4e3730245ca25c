// One debug line per request, with its id, so a client's report can be found in the logs. Streams
// are logged when their headers go out; their end is logged by the adapter.
import type { MiddlewareHandler } from "hono";
import type { ApiEnv } from "../env.ts";
import type { ApiLogger } from "../logger.ts";

export function accessLog(logger: ApiLogger): MiddlewareHandler<ApiEnv> {
  return async function accessLogMiddleware(c, next) {
    const startedAtMs = performance.now();
    await next();
    logger.debug(
      { requestId: c.var.requestId, method: c.req.method, path: c.req.path, status: c.res.status, durationMs: Math.round(performance.now() - startedAtMs) },
      "request",
    );
  };
}
