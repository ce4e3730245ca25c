// Cross-origin policy. Browsers are the only clients that send Origin; a page on another site must
// not drive this node (use its models, read its State, cancel its tasks) unless the operator named
// that site with --cors-origin. Same-origin requests (the dashboard served by this node) always pass.
// A foreign origin is refused outright — not merely left without CORS headers — because a "simple"
// cross-site request is sent by the browser before any CORS check and would still have effects.
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";
import type { ApiEnv } from "../env.ts";

const ALLOWED_METHODS = "GET, HEAD, POST, DELETE, OPTIONS";
const ALLOWED_HEADERS = "authorization, x-api-key, content-type, x-request-id";
/** Header names a preflight may ask for; SDKs send many of their own (x-stainless-*, anthropic-version). */
const REQUESTED_HEADERS_PATTERN = /^[A-Za-z0-9_\-, ]{1,1024}$/;
const EXPOSED_HEADERS = "X-Request-Id, Retry-After";
/** How long a browser may cache a preflight answer. */
const PREFLIGHT_MAX_AGE_SECONDS = 600;
/** Longer Origin values are malformed, not foreign sites. */
const ORIGIN_LENGTH_MAX = 512;

/** "scheme://host[:port]" lower-cased, or null when `raw` is not an http(s) origin. */
export function normalizeOrigin(raw: string): string | null {
  if (raw.length > ORIGIN_LENGTH_MAX) return null;
  try {
    const url = new URL(raw);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.origin.toLowerCase();
  } catch {
    return null;
  }
}

export interface CorsPolicy {
  /** Origins allowed besides the node's own; "*" allows every origin. */
  readonly allowedOrigins: readonly string[];
}

/** Same origin: the Origin's host:port is the Host the request was sent to. */
export function isSameOrigin(origin: string, hostHeader: string | undefined): boolean {
  if (hostHeader === undefined) return false;
  const normalized = normalizeOrigin(origin);
  if (normalized === null) return false;
  return new URL(normalized).host === hostHeader.toLowerCase();
}

export function isOriginAllowed(origin: string, hostHeader: string | undefined, policy: CorsPolicy): boolean {
  if (isSameOrigin(origin, hostHeader)) return true;
  if (policy.allowedOrigins.includes("*")) return true;
  const normalized = normalizeOrigin(origin);
  return normalized !== null && policy.allowedOrigins.some((o) => normalizeOrigin(o) === normalized);
}

function foreignOrigin(origin: string): ApiError {
  const shown = JSON.stringify(origin.slice(0, 200));
  return new ApiError(403, {
    message: `cross-origin requests from ${shown} are not allowed; start skein with --cors-origin ${shown} to allow them`,
    type: "invalid_request_error",
    code: "origin_not_allowed",
  });
}

export function cors(policy: CorsPolicy): MiddlewareHandler<ApiEnv> {
  return async function corsMiddleware(c, next) {
    const origin = c.req.header("origin");
    if (origin === undefined) {
      await next();
      return;
    }
    if (!isOriginAllowed(origin, c.req.header("host"), policy)) throw foreignOrigin(origin);
    c.header("Access-Control-Allow-Origin", origin);
    c.header("Vary", "Origin", { append: true });
    c.header("Access-Control-Expose-Headers", EXPOSED_HEADERS);
    if (c.req.method === "OPTIONS" && c.req.header("access-control-request-method") !== undefined) {
      c.header("Access-Control-Allow-Methods", ALLOWED_METHODS);
      // An allowed origin may send any header: echo what the preflight asks for when it is well formed.
      const requested = c.req.header("access-control-request-headers");
      c.header("Access-Control-Allow-Headers", requested !== undefined && REQUESTED_HEADERS_PATTERN.test(requested) ? requested : ALLOWED_HEADERS);
      c.header("Access-Control-Max-Age", String(PREFLIGHT_MAX_AGE_SECONDS));
      return c.body(null, 204);
    }
    await next();
  };
}
