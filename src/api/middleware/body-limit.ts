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

/**
 * A body that trickles in (slow-loris) is cut off with a 408 in the API's error shape; the socket is
 * closed after it, since the rest of the upload will never be read.
 */
function tooSlow(timeoutMs: number): ApiError {
  return new ApiError(
    408,
    { message: `the request body did not arrive within ${timeoutMs} ms`, type: "invalid_request_error", code: "request_timeout" },
    { Connection: "close" },
  );
}

/**
 * Reads a whole body, stopping (and cancelling the upload) as soon as it passes maxBytes, or when it
 * has not fully arrived within timeoutMs.
 */
export async function readBodyLimited(body: ReadableStream<Uint8Array>, maxBytes: number, timeoutMs: number = Number.POSITIVE_INFINITY): Promise<Uint8Array> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let sizeBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    if (Number.isFinite(timeoutMs)) timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    for (;;) {
      const result = await Promise.race([reader.read(), timedOut]);
      if (result === "timeout") {
        await reader.cancel().catch(() => {});
        throw tooSlow(timeoutMs);
      }
      if (result.done) break;
      sizeBytes += result.value.byteLength;
      if (sizeBytes > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(maxBytes);
      }
      parts.push(result.value);
    }
  } finally {
    clearTimeout(timer);
  }
  const bytes = new Uint8Array(sizeBytes);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

export function bodyLimit(options: { maxBytes: number; timeoutMs?: number }): MiddlewareHandler<ApiEnv> {
  return async function bodyLimitMiddleware(c, next) {
    const declared = c.req.header("content-length");
    if (declared !== undefined && Number(declared) > options.maxBytes) throw tooLarge(options.maxBytes);
    const body = c.req.raw.body;
    c.set("bodyBytes", body === null ? null : await readBodyLimited(body, options.maxBytes, options.timeoutMs));
    await next();
  };
}
