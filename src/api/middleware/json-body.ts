// JSON endpoints refuse other content types and unparsable bodies with a 400 that says exactly
// what was wrong, instead of a zod error about a missing field.
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";
import type { ApiEnv } from "../env.ts";

const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
/**
 * Arrays and objects nested deeper than this are refused before JSON.parse runs: no API body needs
 * more (tool schemas are the deepest, a handful of levels), and a 4 MiB "[[[[…" must not reach
 * recursive code (the parser, zod, a chat template) that would overflow the stack.
 */
export const JSON_NESTING_DEPTH_MAX = 64;

const BYTE_QUOTE = 0x22;
const BYTE_BACKSLASH = 0x5c;
const BYTE_OPEN_BRACKET = 0x5b;
const BYTE_OPEN_BRACE = 0x7b;
const BYTE_CLOSE_BRACKET = 0x5d;
const BYTE_CLOSE_BRACE = 0x7d;

/**
 * The deepest nesting of arrays/objects in a JSON text, counted over its bytes (outside strings) in
 * one pass; stops counting once past `limit`. Malformed text gets a number too, JSON.parse judges it.
 */
export function jsonNestingDepth(bytes: Uint8Array, limit: number = Number.POSITIVE_INFINITY): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (inString) {
      if (byte === BYTE_BACKSLASH) i++;
      else if (byte === BYTE_QUOTE) inString = false;
    } else if (byte === BYTE_QUOTE) {
      inString = true;
    } else if (byte === BYTE_OPEN_BRACKET || byte === BYTE_OPEN_BRACE) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (byte === BYTE_CLOSE_BRACKET || byte === BYTE_CLOSE_BRACE) {
      depth--;
    }
  }
  return deepest;
}

export function jsonBody(): MiddlewareHandler<ApiEnv> {
  return async function jsonBodyMiddleware(c, next) {
    const contentType = c.req.header("content-type") ?? "";
    if (!JSON_MEDIA_TYPE.test(contentType)) {
      throw new ApiError(400, {
        message: `expected Content-Type: application/json, got ${contentType === "" ? "none" : JSON.stringify(contentType.slice(0, 100))}`,
        code: "invalid_content_type",
      });
    }
    const bytes = c.var.bodyBytes;
    if (bytes === null || bytes.byteLength === 0) {
      throw new ApiError(400, { message: "request body is empty; expected a JSON object", code: "invalid_json" });
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new ApiError(400, { message: "request body is not valid UTF-8", code: "invalid_encoding" });
    }
    if (jsonNestingDepth(bytes, JSON_NESTING_DEPTH_MAX) > JSON_NESTING_DEPTH_MAX) {
      throw new ApiError(400, { message: `request body nests arrays/objects deeper than ${JSON_NESTING_DEPTH_MAX} levels`, code: "invalid_json" });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new ApiError(400, { message: `request body is not valid JSON: ${detail}`, code: "invalid_json" });
    }
    c.set("jsonBody", parsed);
    await next();
  };
}
