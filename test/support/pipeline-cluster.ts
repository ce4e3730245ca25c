// A cluster in one test process: ONE real Master (on a MemoryMasterLog test double) and N real
// Workers with distinct node ids, each with its own Replica fed by the master's publish, each
// spawning real runner child processes that load GGUF shards. Commands go straight to the master
// (no HTTP), so tests and the cluster benchmark can drive pipelines and watch State and events.
import { statSync } from "node:fs";
import { Master } from "../../src/master/master.ts";
import type { ModelCard } from "../../src/models/model-card.ts";
import { placementInfoOfCard, staticModelRegistry } from "../../src/models/model-card.ts";
import { readGgufCardInfo } from "../../src/models/store.ts";
import { Replica } from "../../src/node/replica.ts";
import type { RunnerReport, SpawnRunner } from "../../src/runner/runner-handle.ts";
import type { SupervisedRunner } from "../../src/runner/supervisor.ts";
import { spawnSupervisedRunner } from "../../src/runner/supervisor.ts";
import { systemClock } from "../../src/shared/clock.ts";
import type { CommandId, InstanceId, ModelId, NodeId, RunnerId } from "../../src/shared/ids.ts";
import { newCommandId } from "../../src/shared/ids.ts";
import { silentLogger } from "../../src/shared/logger.ts";
import type { Logger } from "../../src/shared/logger.ts";
import { MemoryMasterLog } from "./memory-master-log.ts";
import type { State } from "../../src/shared/state.ts";
import { findTaskByCommandId } from "../../src/shared/state.ts";
import type { Chunk, GenerationParams, IndexedEvent, Instance, Task } from "../../src/shared/types.ts";
import { isTaskTerminal } from "../../src/shared/types.ts";
import type { StageLinkOptions } from "../../src/worker/worker.ts";
import { Worker } from "../../src/worker/worker.ts";

export const GGUF_ENGINE_MODULE = new URL("../../src/engine/gguf-engine.ts", import.meta.url).href;

/** A card for a GGUF file, with its size and head as the node's model registry would read them. */
export function ggufCard(modelId: string, modelPath: string, layerCount: number): ModelCard {
  return {
    modelId: modelId as ModelId,
    name: `GGUF fixture (${modelId})`,
    layerCount,
    sizeBytes: statSync(modelPath).size,
    headBytes: readGgufCardInfo(modelPath).headBytes,
    contextLength: 512,
    path: modelPath,
    engineModule: null,
    engineOptions: {},
  };
}

export interface PipelineClusterOptions {
  readonly nodeCount: number;
  readonly cards: readonly ModelCard[];
  readonly threads?: number;
  readonly contextSize?: number | null;
  readonly stageLink?: StageLinkOptions;
  readonly logger?: Logger;
}

/** One report a runner sent its worker, with when it arrived (performance.now()). */
export interface TimedReport {
  readonly atMs: number;
  readonly report: RunnerReport;
}

export interface GenerationResult {
  readonly task: Task;
  readonly chunks: readonly Chunk[];
  readonly text: string;
}

export class PipelineCluster {
  readonly nodeIds: NodeId[];
  readonly workers: Worker[] = [];
  readonly replicas: Replica[] = [];
  /** Every event the master published, in order. */
  readonly events: IndexedEvent[] = [];
  /** The live process of each runner (replaced when a runner restarts). */
  readonly runners = new Map<RunnerId, SupervisedRunner>();
  readonly reports: TimedReport[] = [];
  private readonly log = new MemoryMasterLog();
  readonly master: Master;
  private readonly listeners = new Set<() => void>();
  private stopped = false;
  private stopping: Promise<void> | null = null;

  constructor(private readonly options: PipelineClusterOptions) {
    this.nodeIds = Array.from({ length: options.nodeCount }, (_, i) => `node-${i + 1}` as NodeId);
    this.master = new Master({
      nodeId: this.nodeIds[0]!,
      log: this.log,
      clock: systemClock,
      logger: silentLogger(),
      term: 1,
      publish: (event) =>
        queueMicrotask(() => {
          this.events.push(event);
          for (const replica of this.replicas) replica.receive(event);
          for (const listener of [...this.listeners]) listener();
        }),
    });
  }

  start(): void {
    this.master.start();
    const models = staticModelRegistry(this.options.cards);
    for (const nodeId of this.nodeIds) {
      const replica = new Replica({ requestEventLog: () => {} });
      replica.reset(this.master.state);
      this.replicas.push(replica);
      const sendWorkerEvent = (event: Parameters<Master["handleWorkerEvent"]>[0]) =>
        queueMicrotask(() => {
          if (!this.stopped) this.master.handleWorkerEvent(event, nodeId);
        });
      const worker = new Worker({
        nodeId,
        stateView: replica,
        sink: { sendWorkerEvent },
        spawnRunner: this.spawnRunner(),
        models,
        clock: systemClock,
        logger: this.options.logger ?? silentLogger(),
        defaultEngineModule: GGUF_ENGINE_MODULE,
        threads: this.options.threads ?? 1,
        contextSize: this.options.contextSize ?? 256,
        nodeHost: () => "127.0.0.1",
        stageLink: this.options.stageLink ?? { clusterName: "skein-test", secret: Buffer.from("test secret"), listenHost: "127.0.0.1" },
      });
      this.workers.push(worker);
      worker.start();
      sendWorkerEvent({
        type: "NodeGatheredInfo",
        info: {
          nodeId,
          hostname: nodeId,
          memoryTotalBytes: 64 * 2 ** 30,
          memoryAvailableBytes: 32 * 2 ** 30,
          cores: 2,
          addresses: ["127.0.0.1"],
          apiPort: 0,
          clusterPort: 0,
        },
      });
    }
  }

  get state(): State {
    return this.master.state;
  }

  /** Resolves once `predicate` holds on the master's State (checked after every event). */
  waitFor(predicate: (state: State) => boolean, what: string, timeoutMs = 30_000): Promise<State> {
    return this.waitForCondition(() => predicate(this.state), what, timeoutMs).then(() => this.state);
  }

  /** Also re-checked on every runner report, for conditions on what workers know (KV slots). */
  waitForCondition(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for: ${what}\nrunners: ${JSON.stringify(this.state.runners)}`));
      }, timeoutMs);
      const check = () => {
        if (!condition()) return;
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve();
      };
      this.listeners.add(check);
    });
  }

  /** Places `modelId` on at least `minNodes` nodes and waits until every stage is Ready. */
  async place(modelId: string, minNodes: number): Promise<Instance> {
    await this.waitFor((s) => Object.keys(s.nodes).length === this.nodeIds.length, "every node reported");
    const card = this.options.cards.find((c) => c.modelId === modelId);
    if (card === undefined) throw new Error(`no card ${modelId}`);
    const commandId = newCommandId();
    this.master.handleCommand({
      type: "PlaceInstance",
      commandId,
      model: placementInfoOfCard(card),
      minNodes,
      sharding: "pipeline",
    });
    const state = await this.waitFor((s) => this.instanceOf(s, commandId) !== undefined, `instance of ${modelId} placed`);
    const instance = this.instanceOf(state, commandId)!;
    await this.waitForReady(instance.instanceId);
    return instance;
  }

  waitForReady(instanceId: InstanceId, timeoutMs = 60_000): Promise<State> {
    return this.waitFor(
      (s) => s.instances[instanceId]?.shards.every((shard) => s.runners[shard.runnerId]?.status.kind === "Ready") ?? false,
      `every stage of ${instanceId} Ready`,
      timeoutMs,
    );
  }

  /** Submits a request; the result resolves when the task ends (the client is then finished with it). */
  submit(modelId: string, params: GenerationParams): { readonly commandId: CommandId; readonly result: Promise<GenerationResult> } {
    const commandId = newCommandId();
    this.master.handleCommand({ type: "TextGeneration", commandId, modelId: modelId as ModelId, originNodeId: this.nodeIds[0]!, params });
    const result = this.waitFor((s) => {
      const task = findTaskByCommandId(s, commandId);
      return task !== undefined && isTaskTerminal(task.status);
    }, `task ${commandId} ended`, 120_000).then((s) => {
      const task = findTaskByCommandId(s, commandId)!;
      const chunks = this.events.flatMap((e) => (e.event.type === "ChunkGenerated" && e.event.taskId === task.taskId ? [e.event.chunk] : []));
      this.master.handleCommand({ type: "TaskFinished", finishedCommandId: commandId });
      return { task, chunks, text: chunks.map((c) => c.text).join("") };
    });
    return { commandId, result };
  }

  cancel(commandId: CommandId): void {
    this.master.handleCommand({ type: "TaskCancelled", cancelledCommandId: commandId });
  }

  /** KV slots each runner last reported (pipeline stages only). */
  stageSlotsOpen(runnerId: RunnerId): number {
    for (const worker of this.workers) {
      const runner = worker.localView().runners[runnerId];
      if (runner !== undefined) return runner.stageSlotsOpen ?? 0;
    }
    return 0;
  }

  /** Shuts every runner down; safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all(this.workers.map((w) => w.stop()));
      this.stopped = true;
    })();
    return this.stopping;
  }

  private instanceOf(state: State, commandId: CommandId): Instance | undefined {
    return Object.values(state.instances).find((i) => i.placedByCommandId === commandId);
  }

  private spawnRunner(): SpawnRunner {
    return (options) => {
      const runner = spawnSupervisedRunner(
        {
          runnerId: options.runnerId,
          onReport: (report) => {
            this.reports.push({ atMs: performance.now(), report });
            options.onReport(report);
            for (const listener of [...this.listeners]) listener();
          },
        },
        { logger: quietRunnerLogger },
      );
      this.runners.set(options.runnerId, runner);
      return runner;
    };
  }
}

/** Runner warnings go to stderr only when SKEIN_TEST_VERBOSE is set (a killed stage logs expected noise). */
const quietRunnerLogger = {
  debug: () => {},
  info: (fields: Record<string, unknown>, message: string) => {
    if (process.env.SKEIN_TEST_VERBOSE === "2") process.stderr.write(`INFO ${message} ${JSON.stringify(fields)}\n`);
  },
  warn: (fields: Record<string, unknown>, message: string) => {
    if (process.env.SKEIN_TEST_VERBOSE) process.stderr.write(`WARN ${message} ${JSON.stringify(fields)}\n`);
  },
  error: (fields: Record<string, unknown>, message: string) => {
    if (process.env.SKEIN_TEST_VERBOSE) process.stderr.write(`ERROR ${message} ${JSON.stringify(fields)}\n`);
  },
};
