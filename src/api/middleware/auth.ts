// API keys: with one configured, every API route needs it; the dashboard's static files stay public
// so a browser can load the page that then asks for the key. The key is accepted as
// `Authorization: Bearer KEY` (OpenAI clients), `x-api-key: KEY` (Anthropic clients) or `?key=KEY`
// (EventSource cannot set headers, so the dashboard's /events stream sends it in the URL).
import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";
import type { ApiEnv } from "../env.ts";

/** A key longer than this is refused unread: hashing it is cheap, but nothing legitimate is that long. */
export const API_KEY_LENGTH_MAX = 512;

/**
 * Paths a browser loads to show the dashboard before it knows the key. Everything else — every
 * route that answers JSON or a stream — needs the key.
 */
const PUBLIC_ASSET_PATTERN = /^\/(?:index\.html|favicon\.[a-z]+|assets\/[A-Za-z0-9._\/-]+|[A-Za-z0-9._-]+\.(?:js|css|svg|png|ico|webmanifest|woff2?))$/;

export function isPublicPath(method: string, path: string): boolean {
  if (method !== "GET" && method !== "HEAD") return false;
  return path === "/" || (PUBLIC_ASSET_PATTERN.test(path) && !path.includes(".."));
}

/** The key a request carries, or null. Header first; the query parameter is the EventSource fallback. */
export function presentedKey(authorization: string | undefined, xApiKey: string | undefined, queryKey: string | undefined): string | null {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match?.[1] !== undefined) return match[1];
  }
  if (xApiKey !== undefined && xApiKey !== "") return xApiKey.trim();
  if (queryKey !== undefined && queryKey !== "") return queryKey;
  return null;
}

const digest = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();

/** Compares digests of equal length, so neither the content nor the length of the key leaks through timing. */
export function keysMatch(presented: string, expectedDigest: Buffer): boolean {
  if (presented.length > API_KEY_LENGTH_MAX) return false;
  return timingSafeEqual(digest(presented), expectedDigest);
}

function unauthorized(message: string): ApiError {
  return new ApiError(401, { message, type: "invalid_request_error", code: "invalid_api_key" }, { "WWW-Authenticate": 'Bearer realm="skein"' });
}

/** null: no key configured, every request passes (the CLI only allows that on loopback or with --no-auth). */
export function apiKeyAuth(apiKey: string | null): MiddlewareHandler<ApiEnv> {
  const expectedDigest = apiKey === null ? null : digest(apiKey);
  return async function apiKeyAuthMiddleware(c, next) {
    if (expectedDigest === null || c.req.method === "OPTIONS" || isPublicPath(c.req.method, c.req.path)) {
      await next();
      return;
    }
    const presented = presentedKey(c.req.header("authorization"), c.req.header("x-api-key"), c.req.query("key"));
    if (presented === null) {
      throw unauthorized("this skein node requires an API key: send Authorization: Bearer KEY or x-api-key: KEY");
    }
    if (!keysMatch(presented, expectedDigest)) throw unauthorized("invalid API key");
    await next();
  };
}
