// JSON endpoints refuse other content types and unparsable bodies with a 400 that says exactly
// what was wrong, instead of a zod error about a missing field.
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";
import type { ApiEnv } from "../env.ts";

const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

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
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      throw new ApiError(400, { message: `request body is not valid JSON: ${detail}`, code: "invalid_json" });
    }
    c.set("jsonBody", parsed);
    await next();
  };
}
