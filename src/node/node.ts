// One skein node: the replicated cluster (election, master when elected, replica), worker and API,
// wired through the ports in cluster-port.ts. Messages between them are delivered on the microtask
// queue, in order, so no component re-enters another. A node alone is a cluster of one: the same
// path serves one machine and many.
import path from "node:path";
import type { ApiServer } from "../api/server.ts";
import { startApiServer } from "../api/server.ts";
import type { RaftConfig } from "../election/raft.ts";
import { RaftStore } from "../election/raft-store.ts";
import type { StaticPeer } from "../net/transport.ts";
import { NetTransport } from "../net/transport.ts";
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
import type { IndexedEvent, NodeInfo } from "../shared/types.ts";
import type { State } from "../shared/state.ts";
import type { TaskTimeouts } from "../worker/plan.ts";
import { Worker } from "../worker/worker.ts";
import type { ClusterPort, WorkerEventSink } from "./cluster-port.ts";
import { loadOrCreateNodeId } from "./node-id.ts";
import { gatherNodeInfo, nodeInfoChangedMaterially } from "./node-info.ts";
import type { Replica } from "./replica.ts";
import { ReplicatedCluster } from "./replicated-cluster.ts";

/** How often a node re-reads its memory and reports it if it changed materially. */
const NODE_INFO_INTERVAL_MS = 10_000;
/** How often a node checks that the cluster's State knows it (after joining a cluster it must say who it is again). */
const MEMBERSHIP_CHECK_INTERVAL_MS = 1_000;

/** How this node meets others. Defaults: cluster "skein", no secret, no peers, no discovery, links on loopback. */
export interface NodeClusterOptions {
  readonly name?: string;
  /** Shared secret: links (and beacons) of nodes that do not know it are refused. */
  readonly secret?: string | null;
  readonly peers?: readonly StaticPeer[];
  /** Multicast discovery (the CLI turns it on unless --no-discovery). */
  readonly discovery?: boolean;
  /** Address node links are accepted on (the CLI: every interface). */
  readonly listenHost?: string;
  /** Election timing overrides (tests). */
  readonly raft?: Partial<RaftConfig<IndexedEvent, State>>;
  readonly nodeTimeoutMs?: number;
  readonly aloneTimeoutMs?: number;
  /** Link heartbeat overrides (tests). */
  readonly linkHeartbeatMs?: number;
  readonly linkTimeoutMs?: number;
}
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
  readonly cluster?: NodeClusterOptions;
}

export interface RunningNode {
  readonly nodeId: NodeId;
  readonly url: string;
  readonly cluster: ClusterPort;
  /** The election and forwarding behind `cluster` (role, leader, voters; tests and the dashboard). */
  readonly replicated: ReplicatedCluster;
  /** The port node links are accepted on. */
  readonly clusterPort: number;
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
  const clusterOptions = options.cluster ?? {};
  const opened = RaftStore.open(path.join(options.home, "raft"));
  if (opened.warning !== null) logger.warn({ warning: opened.warning }, "replicated log had a damaged part; it was dropped");
  const store = opened.store;
  const secret = clusterOptions.secret ?? null;
  const secretBytes = secret === null ? null : Buffer.from(secret, "utf8");
  const transport = await NetTransport.start({
    identity: { nodeId, clusterName: clusterOptions.name ?? "skein", clusterPort: options.clusterPort, secret: secretBytes },
    logger: logger.child({ component: "net" }),
    listenHost: clusterOptions.listenHost ?? "127.0.0.1",
    staticPeers: clusterOptions.peers ?? [],
    discovery: clusterOptions.discovery === true ? {} : null,
    ...(clusterOptions.linkHeartbeatMs === undefined && clusterOptions.linkTimeoutMs === undefined
      ? {}
      : {
          link: {
            ...(clusterOptions.linkHeartbeatMs === undefined ? {} : { heartbeatIntervalMs: clusterOptions.linkHeartbeatMs }),
            ...(clusterOptions.linkTimeoutMs === undefined ? {} : { deadAfterMs: clusterOptions.linkTimeoutMs }),
          },
        }),
  }).catch(async (error: unknown) => {
    await store.close();
    throw error;
  });
  const replicated = new ReplicatedCluster({
    nodeId,
    transport,
    clock,
    logger,
    hard: opened.hard,
    store,
    ...(clusterOptions.raft === undefined ? {} : { raft: clusterOptions.raft }),
    ...(clusterOptions.nodeTimeoutMs === undefined ? {} : { nodeTimeoutMs: clusterOptions.nodeTimeoutMs }),
    ...(clusterOptions.aloneTimeoutMs === undefined ? {} : { aloneTimeoutMs: clusterOptions.aloneTimeoutMs }),
  });
  replicated.start();
  const replica: Replica = replicated.replica;
  const cluster: ClusterPort = replicated;
  const sendWorkerEvent: WorkerEventSink["sendWorkerEvent"] = (event) => replicated.sendWorkerEvent(event);

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
    // Pipeline stages link runner to runner, authenticated like node links, at the address this
    // node's link to that node comes from (known to reach it), else the first one it reported.
    stageLink: { clusterName: clusterOptions.name ?? "skein", secret: secretBytes, listenHost: clusterOptions.listenHost ?? "127.0.0.1" },
    nodeHost: (peerId, state) => {
      if (peerId === nodeId) return "127.0.0.1";
      const linked = transport.peerLinks().find((l) => l.nodeId === peerId)?.remoteAddress;
      if (linked !== undefined) return linked.replace(/^::ffff:/, "");
      return state.nodes[peerId]?.addresses[0] ?? null;
    },
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
  }).catch(async (error: unknown) => {
    // The API port was taken (or the like): undo what started, so an embedder's process is left clean.
    await modelService?.stop();
    await worker.stop();
    replicated.stop();
    await transport.stop();
    await store.close();
    throw error;
  });
  const ports = { apiPort: api.port, clusterPort: transport.port };
  let lastInfo: NodeInfo = gatherNodeInfo(nodeId, ports);
  sendWorkerEvent({ type: "NodeGatheredInfo", info: lastInfo });
  modelService?.announce();
  let lastInfoSentMs = clock.nowMs();
  const infoTimer = setInterval(() => {
    const nowMs = clock.nowMs();
    const state = replica.state;
    // A node that joined a cluster (or whose record was removed while it was away) introduces itself again.
    const unknownToCluster = state.nodes[nodeId] === undefined && state.masterNodeId !== null;
    const info = gatherNodeInfo(nodeId, ports);
    if (unknownToCluster && nowMs - lastInfoSentMs >= MEMBERSHIP_CHECK_INTERVAL_MS) {
      lastInfo = info;
      lastInfoSentMs = nowMs;
      sendWorkerEvent({ type: "NodeGatheredInfo", info });
      modelService?.announce();
      return;
    }
    if (nowMs - lastInfoSentMs < NODE_INFO_INTERVAL_MS || !nodeInfoChangedMaterially(lastInfo, info)) return;
    lastInfo = info;
    lastInfoSentMs = nowMs;
    sendWorkerEvent({ type: "NodeGatheredInfo", info });
  }, MEMBERSHIP_CHECK_INTERVAL_MS);
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
      replicated.stop();
      await transport.stop();
      await store.close();
      logger.info({ nodeId }, "skein node stopped");
    })();
    return stopping;
  };
  return { nodeId, url: api.url, cluster, replicated, clusterPort: transport.port, worker, api, stop };
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
