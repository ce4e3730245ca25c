// Errors are mapped once: handlers and middleware throw ApiError, and the single onError / notFound
// pair below renders it in the shape of the API the path belongs to — OpenAI's
// `{"error":{"message","type","param","code"}}`, Anthropic's `{"type":"error","error":{"type","message"}}`
// or Ollama's `{"error":"…"}` — so every failure path, middleware included, answers with the right
// status in the format its client parses.
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { FailureCode } from "../shared/types.ts";
import type { ApiLogger } from "./logger.ts";

export type ApiErrorType =
  | "invalid_request_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error"
  | "service_unavailable_error";

export interface ApiErrorBody {
  readonly message: string;
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;
}

/** How long a client should wait before retrying a 429/503 (the queue drains at decode speed). */
export const RETRY_AFTER_SECONDS = 1;

export class ApiError extends Error {
  override name = "ApiError";
  readonly body: ApiErrorBody;
  constructor(
    readonly status: ContentfulStatusCode,
    body: { message: string; type?: ApiErrorType; param?: string | null; code?: string | null },
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(body.message);
    this.body = {
      message: body.message,
      type: body.type ?? defaultTypeOf(status),
      param: body.param ?? null,
      code: body.code ?? null,
    };
  }
}

function defaultTypeOf(status: number): ApiErrorType {
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status === 503) return "service_unavailable_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** The HTTP status a task failure maps to; the pure core of failureToApiError. */
export function statusOfFailure(code: FailureCode): ContentfulStatusCode {
  switch (code) {
    case "no_instance":
    case "instance_deleted":
      return 503;
    case "queue_full":
    case "too_many_tasks":
      return 429;
    case "bad_request":
      return 400;
    case "runner_failed":
    case "node_restarted":
    case "internal":
      return 500;
    case "timeout":
      return 504;
  }
}

export function failureToApiError(code: FailureCode | null, reason: string | null): ApiError {
  const effective: FailureCode = code ?? "internal";
  const status = statusOfFailure(effective);
  const headers: Record<string, string> = status === 429 || status === 503 ? { "Retry-After": String(RETRY_AFTER_SECONDS) } : {};
  return new ApiError(status, { message: reason ?? `task failed (${effective})`, code: effective }, headers);
}

/** Which API's error shape a path answers in: each adapter's clients parse only their own. */
export type ErrorFlavor = "openai" | "anthropic" | "ollama";

export function errorFlavorOf(path: string): ErrorFlavor {
  if (path === "/v1/messages" || path.startsWith("/v1/messages/")) return "anthropic";
  if (path.startsWith("/api/") || path.startsWith("/ollama/")) return "ollama";
  return "openai";
}

/** Anthropic's error `type` for a status (https://docs.anthropic.com/en/api/errors). */
export function anthropicErrorType(status: number): string {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    default:
      return status < 500 ? "invalid_request_error" : "api_error";
  }
}

/** The JSON body of an error in a flavor's shape (also what a stream sends as its error event). */
export function errorBodyFor(flavor: ErrorFlavor, error: ApiError): Record<string, unknown> {
  switch (flavor) {
    case "openai":
      return { error: error.body };
    case "anthropic":
      return { type: "error", error: { type: anthropicErrorType(error.status), message: error.body.message } };
    case "ollama":
      return { error: error.body.message };
  }
}

export function renderApiError(c: Context, error: ApiError): Response {
  for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
  return c.json(errorBodyFor(errorFlavorOf(c.req.path), error), error.status);
}

export function createErrorHandler(logger: ApiLogger): ErrorHandler {
  return (err, c) => {
    if (err instanceof ApiError) return renderApiError(c, err);
    if (err instanceof HTTPException) {
      return renderApiError(c, new ApiError(err.status, { message: err.message || "request refused" }));
    }
    logger.error({ err, path: c.req.path }, "unhandled error in API handler");
    return renderApiError(c, new ApiError(500, { message: "internal server error", code: "internal" }));
  };
}

export const notFoundHandler: NotFoundHandler = (c) =>
  renderApiError(c, new ApiError(404, { message: `no route for ${c.req.method} ${c.req.path}`, code: "not_found" }));
