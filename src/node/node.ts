// One skein node: master (this release: every node is its own master until the cluster issue
// adds election), replica, worker and API, wired through the ports in cluster-port.ts. Messages
// between them are delivered on the microtask queue, in order, so no component re-enters another.
import path from "node:path";
import type { ApiServer } from "../api/server.ts";
import { startApiServer } from "../api/server.ts";
import { EventLog } from "../master/event-log.ts";
import { Master } from "../master/master.ts";
import type { ModelRegistry } from "../models/model-card.ts";
import { NodeModelDownloads } from "../models/node-downloads.ts";
import { LocalModelRegistry } from "../models/store.ts";
import type { RunnerSupervisorOptions } from "../runner/supervisor.ts";
import { createSpawnRunner } from "../runner/supervisor.ts";
import type { SpawnRunner } from "../runner/runner-handle.ts";
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import type { NodeId } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import { isTaskTerminal } from "../shared/types.ts";
import type { NodeInfo } from "../shared/types.ts";
import type { TaskTimeouts } from "../worker/plan.ts";
import { Worker } from "../worker/worker.ts";
import type { ClusterPort, WorkerEventSink } from "./cluster-port.ts";
import { loadOrCreateNodeId } from "./node-id.ts";
import { gatherNodeInfo, nodeInfoChangedMaterially } from "./node-info.ts";
import { Replica } from "./replica.ts";

/** How often a node re-reads its memory and reports it if it changed materially. */
const NODE_INFO_INTERVAL_MS = 10_000;
/** On shutdown, how long cancelled tasks get to reach a terminal status before runners are stopped. */
const SHUTDOWN_TASK_DRAIN_MS = 2_000;

export interface NodeOptions {
  readonly home: string;
  readonly host: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly models: ModelRegistry;
  readonly logger: Logger;
  readonly threads: number | null;
  readonly contextSize: number | null;
  readonly clock?: Clock;
  /** Replaces the runner child process (simulations); the product always spawns processes. */
  readonly spawnRunner?: SpawnRunner;
  /** Watchdog and grace periods of runner processes (tests shorten them). */
  readonly runnerSupervisor?: RunnerSupervisorOptions;
  /** Engine for model cards that name none. */
  readonly defaultEngineModule?: string;
  /** API key every API route requires; null/absent: the API is open (the CLI allows that only on loopback or with --no-auth). */
  readonly apiKey?: string | null;
  /** Browser origins allowed to call the API besides the node's own. */
  readonly corsOrigins?: readonly string[];
  /** Prefill and decode limits per task; absent: none. */
  readonly taskTimeouts?: TaskTimeouts;
  /** Built dashboard files served at `/` (default: dist/dashboard under the package root). */
  readonly dashboardDir?: string;
}

export interface RunningNode {
  readonly nodeId: NodeId;
  readonly url: string;
  readonly cluster: ClusterPort;
  readonly worker: Worker;
  readonly api: ApiServer;
  stop(): Promise<void>;
}

export function defaultEngineModulePath(): string {
  const extension = import.meta.url.endsWith(".ts") ? "ts" : "js";
  return new URL(`../engine/gguf-engine.${extension}`, import.meta.url).href;
}

export async function startNode(options: NodeOptions): Promise<RunningNode> {
  const logger = options.logger;
  const clock = options.clock ?? systemClock;
  const nodeId = loadOrCreateNodeId(options.home, (reason) => logger.warn({ home: options.home }, `${reason}; this node starts with a new id`));
  const log = EventLog.open(path.join(options.home, "events.log"));
  if (log.warning !== null) logger.warn({ warning: log.warning }, "event log had a damaged tail; it was dropped");

  const replica = new Replica({
    // A single node's replica is fed in order by its own master, so a gap is a bug.
    requestEventLog: (sinceIdx) => logger.error({ sinceIdx }, "replica saw a gap in its own master's events"),
  });
  const master = new Master({
    nodeId,
    log,
    clock,
    logger: logger.child({ component: "master" }),
    publish: (event) => queueMicrotask(() => replica.receive(event)),
    term: 1,
  });
  master.start();
  replica.reset(master.state);

  const cluster: ClusterPort = {
    nodeId,
    sendCommand: (command) => queueMicrotask(() => master.handleCommand(command)),
    get state() {
      return replica.state;
    },
    subscribe: (listener) => replica.subscribe(listener),
    eventsSince: (sinceIdx) => replica.eventsSince(sinceIdx),
  };
  const sendWorkerEvent: WorkerEventSink["sendWorkerEvent"] = (event) =>
    queueMicrotask(() => master.handleWorkerEvent(event, nodeId));

  const worker = new Worker({
    nodeId,
    stateView: replica,
    sink: { sendWorkerEvent },
    spawnRunner:
      options.spawnRunner ??
      createSpawnRunner({ ...options.runnerSupervisor, logger: logger.child({ component: "runner" }) }),
    models: options.models,
    clock,
    logger: logger.child({ component: "worker" }),
    defaultEngineModule: options.defaultEngineModule ?? defaultEngineModulePath(),
    threads: options.threads,
    contextSize: options.contextSize,
    ...(options.taskTimeouts === undefined ? {} : { taskTimeouts: options.taskTimeouts }),
  });
  worker.start();

  // A store-backed registry gets downloads (POST /models/{id}/download) and announces the copies it
  // holds; a plain registry (tests, embedders) serves its fixed list.
  const modelService =
    options.models instanceof LocalModelRegistry
      ? new NodeModelDownloads({
          registry: options.models,
          nodeId,
          sink: { sendWorkerEvent },
          onError: (modelId, error) => logger.warn({ modelId, err: error }, "model download failed"),
        })
      : null;

  const api = await startApiServer({
    host: options.host,
    port: options.port,
    cluster,
    models: options.models,
    logger: logger.child({ component: "api" }),
    apiKey: options.apiKey ?? null,
    corsOrigins: options.corsOrigins ?? [],
    contextSize: options.contextSize,
    ...(options.dashboardDir === undefined ? {} : { dashboardDir: options.dashboardDir }),
    ...(modelService === null ? {} : { modelService }),
  });
  const ports = { apiPort: api.port, clusterPort: options.clusterPort };
  let lastInfo: NodeInfo = gatherNodeInfo(nodeId, ports);
  sendWorkerEvent({ type: "NodeGatheredInfo", info: lastInfo });
  modelService?.announce();
  const infoTimer = setInterval(() => {
    const info = gatherNodeInfo(nodeId, ports);
    if (!nodeInfoChangedMaterially(lastInfo, info)) return;
    lastInfo = info;
    sendWorkerEvent({ type: "NodeGatheredInfo", info });
  }, NODE_INFO_INTERVAL_MS);
  infoTimer.unref();

  logger.info({ nodeId, url: api.url }, "skein node started");

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      clearInterval(infoTimer);
      // Closing the API cancels every in-flight request (TaskCancelled, then TaskFinished).
      await api.close();
      await waitForTasksToSettle(replica, SHUTDOWN_TASK_DRAIN_MS);
      await modelService?.stop();
      await worker.stop();
      await log.close();
      logger.info({ nodeId }, "skein node stopped");
    })();
    return stopping;
  };
  return { nodeId, url: api.url, cluster, worker, api, stop };
}

function waitForTasksToSettle(replica: Replica, timeoutMs: number): Promise<void> {
  const settled = () => Object.values(replica.state.tasks).every((t) => isTaskTerminal(t.status));
  if (settled()) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    const unsubscribe = replica.subscribe(() => {
      if (settled()) done();
    });
    function done() {
      clearTimeout(timer);
      unsubscribe();
      resolve();
    }
  });
}
