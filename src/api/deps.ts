// What every router of the API is built from; createApp assembles it once.
import type { ModelRegistry } from "../models/model-card.ts";
import type { ClusterPort } from "../node/cluster-port.ts";
import type { Clock } from "../shared/clock.ts";
import type { AutoPlacer } from "./instances.ts";
import type { ApiLogger } from "./logger.ts";
import type { TaskStreams } from "./task-stream.ts";

export interface ApiDeps {
  readonly cluster: ClusterPort;
  readonly models: ModelRegistry;
  readonly logger: ApiLogger;
  readonly clock: Clock;
  readonly streams: TaskStreams;
  readonly placer: AutoPlacer;
  /** SSE comment interval while nothing else is being written. */
  readonly keepAliveMs: number;
  readonly placementTimeoutMs: number;
  /** Aborted by cancelAll: long-lived streams that are not tasks (GET /events) end with it. */
  readonly shutdownSignal: AbortSignal;
  /** The node's --ctx-size; null or absent: each model's own context. */
  readonly contextSize?: number | null;
}
