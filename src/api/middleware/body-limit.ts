// Bodies are capped by counted bytes, not by the Content-Length header alone: a chunked upload or
// a lying header must not make the server buffer more than the limit.
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";
import type { ApiEnv } from "../env.ts";

function tooLarge(maxBytes: number): ApiError {
  return new ApiError(413, {
    message: `request body is larger than ${maxBytes} bytes`,
    type: "invalid_request_error",
    code: "request_too_large",
  });
}

/** Reads a whole body, stopping (and cancelling the upload) as soon as it passes maxBytes. */
export async function readBodyLimited(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let sizeBytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    sizeBytes += value.byteLength;
    if (sizeBytes > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(maxBytes);
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(sizeBytes);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

export function bodyLimit(options: { maxBytes: number }): MiddlewareHandler<ApiEnv> {
  return async function bodyLimitMiddleware(c, next) {
    const declared = c.req.header("content-length");
    if (declared !== undefined && Number(declared) > options.maxBytes) throw tooLarge(options.maxBytes);
    const body = c.req.raw.body;
    c.set("bodyBytes", body === null ? null : await readBodyLimited(body, options.maxBytes));
    await next();
  };
}
