// The API's Hono app: shared middleware, one router per adapter, errors rendered once.
import { Hono } from "hono";
import type { ModelRegistry } from "../models/model-card.ts";
import type { ModelService } from "../models/node-downloads.ts";
import type { ClusterPort } from "../node/cluster-port.ts";
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import { REQUEST_BODY_BYTES_MAX, SSE_KEEPALIVE_MS } from "../shared/limits.ts";
import { clusterRouter } from "./cluster.ts";
import { dashboardRouter } from "./dashboard.ts";
import { modelsRouter } from "./models.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import { createErrorHandler, notFoundHandler } from "./errors.ts";
import { AutoPlacer, PLACEMENT_TIMEOUT_MS } from "./instances.ts";
import type { ApiLogger } from "./logger.ts";
import { silentLogger } from "./logger.ts";
import { accessLog } from "./middleware/access-log.ts";
import { apiKeyAuth } from "./middleware/auth.ts";
import { cors } from "./middleware/cors.ts";
import { bodyLimit } from "./middleware/body-limit.ts";
import { requestId } from "./middleware/request-id.ts";
import { openAiRouter } from "./openai.ts";
import { responsesRouter } from "./responses.ts";
import { ollamaRouter } from "./ollama.ts";
import { claudeRouter } from "./claude.ts";
import { TaskStreams } from "./task-stream.ts";

export interface AppOptions {
  readonly cluster: ClusterPort;
  readonly models: ModelRegistry;
  readonly logger?: ApiLogger;
  readonly clock?: Clock;
  /** Tests shorten these; the defaults are the product's. */
  readonly keepAliveMs?: number;
  readonly placementTimeoutMs?: number;
  readonly taskCreatedTimeoutMs?: number;
  readonly bodyBytesMax?: number;
  /** With a key, every API route needs it (Authorization: Bearer, x-api-key or ?key=); null/absent: open. */
  readonly apiKey?: string | null;
  /** Browser origins allowed besides the node's own ("*": any). */
  readonly corsOrigins?: readonly string[];
  /** The node's --ctx-size (null: each model's own), so a max_tokens that cannot fit is refused up front. */
  readonly contextSize?: number | null;
  /** A request body must have arrived within this (slow-loris uploads get 408); absent: no limit here. */
  readonly bodyReadTimeoutMs?: number;
  /** The node's model store (GET /models with download state, downloads, deletes); absent: GET /models lists `models`. */
  readonly modelService?: ModelService;
  /** Built dashboard files; default dist/dashboard under the package root. */
  readonly dashboardDir?: string;
}

export interface ApiApp {
  readonly app: Hono<ApiEnv>;
  /** Server shutdown: every in-flight request cancels its task (TaskCancelled, TaskFinished) and every stream ends. */
  cancelAll(reason: string): void;
  /** Requests of this API that still follow a task. */
  liveTaskCount(): number;
}

export function createApp(options: AppOptions): ApiApp {
  const logger = options.logger ?? silentLogger;
  const shutdown = new AbortController();
  const placementTimeoutMs = options.placementTimeoutMs ?? PLACEMENT_TIMEOUT_MS;
  const streamOptions = options.taskCreatedTimeoutMs === undefined ? { logger } : { logger, createdTimeoutMs: options.taskCreatedTimeoutMs };
  const deps: ApiDeps = {
    cluster: options.cluster,
    models: options.models,
    logger,
    clock: options.clock ?? systemClock,
    streams: new TaskStreams(options.cluster, streamOptions),
    placer: new AutoPlacer(options.cluster, placementTimeoutMs),
    keepAliveMs: options.keepAliveMs ?? SSE_KEEPALIVE_MS,
    placementTimeoutMs,
    shutdownSignal: shutdown.signal,
    contextSize: options.contextSize ?? null,
  };

  const app = new Hono<ApiEnv>();
  app.use("*", requestId());
  app.use("*", accessLog(logger));
  // Before the body is read: a stranger must not make the node buffer 4 MiB, nor get a 413 instead of a 401.
  app.use("*", cors({ allowedOrigins: options.corsOrigins ?? [] }));
  app.use("*", apiKeyAuth(options.apiKey ?? null));
  app.use("*", bodyLimit({ maxBytes: options.bodyBytesMax ?? REQUEST_BODY_BYTES_MAX, ...(options.bodyReadTimeoutMs === undefined ? {} : { timeoutMs: options.bodyReadTimeoutMs }) }));
  app.route("/v1", openAiRouter(deps));
  app.route("/v1", responsesRouter(deps));
  // Ollama clients take a base URL and append /api/…: both /ollama and the bare host work.
  app.route("/ollama/api", ollamaRouter(deps));
  app.route("/api", ollamaRouter(deps));
  app.route("/v1", claudeRouter(deps));
  app.route("/", clusterRouter(deps));
  app.route("/", modelsRouter(deps, options.modelService ?? null));
  app.route("/", dashboardRouter(options.dashboardDir === undefined ? {} : { dir: options.dashboardDir }));
  app.onError(createErrorHandler(logger));
  app.notFound(notFoundHandler);

  return {
    app,
    cancelAll(reason) {
      shutdown.abort(reason);
      deps.streams.cancelAll(reason);
    },
    liveTaskCount: () => deps.streams.liveCount,
  };
}
