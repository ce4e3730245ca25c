// A runner's part in a pipeline, created when the runner loads a shard of a multi-stage instance.
// Stage 0 gets a FirstStage (tasks run through generate.ts); later stages listen for their previous
// stage (the port is reported, and reaches State as RunnerStageListening); every stage but the last
// keeps a Downstream link to the next one, which the worker points with setDownstream.
import { pino } from "pino";
import type { Engine } from "../engine/engine.ts";
import type { LinkIdentity } from "../net/handshake.ts";
import type { NodeId, TaskId } from "../shared/ids.ts";
import type { Logger } from "../shared/logger.ts";
import { Downstream } from "./downstream.ts";
import { FirstStage } from "./first-stage.ts";
import { parseUpstreamMessage } from "./messages.ts";
import type { StageEndpoint, StageRole } from "./stage-endpoint.ts";
import { describeStage } from "./stage-endpoint.ts";
import { StageServer } from "./stage-server.ts";

export interface RunnerPipelineReports {
  listening(port: number): void;
  slots(openSlotCount: number): void;
  engineBroken(reason: string): void;
}

export class RunnerPipeline {
  private readonly downstream: Downstream | null;
  private readonly first: FirstStage | null;
  private readonly server: StageServer | null;

  constructor(
    readonly role: StageRole,
    engine: Engine,
    private readonly logger: Logger,
    private readonly reports: RunnerPipelineReports,
  ) {
    const identity = stageLinkIdentity(role);
    const isFirst = role.stageIndex === 0;
    const isLast = role.stageIndex === role.stageCount - 1;
    let server: StageServer | null = null;
    let first: FirstStage | null = null;
    this.downstream = isLast
      ? null
      : new Downstream({
          identity,
          logger,
          ...(role.linkSilenceMs === undefined ? {} : { silenceMs: role.linkSilenceMs }),
          onMessage: (body) => {
            if (server !== null) return server.onDownstreamMessage(body);
            const parsed = parseUpstreamMessage(body);
            if (!parsed.ok) return logger.warn({ error: parsed.error }, "dropped an invalid message from the next stage");
            first?.onUpstream(parsed.message);
          },
          onGone: (stage, reason) => {
            logger.warn({ stage, reason }, "next pipeline stage gone");
            server?.onDownstreamGone(stage, reason);
            first?.onDownstreamGone(stage, reason);
          },
        });
    if (isFirst) {
      first = new FirstStage({ downstream: this.downstream!, onSlotCountChanged: (count) => reports.slots(count) });
    } else {
      server = new StageServer({
        engine,
        stageName: describeStage(role.stageIndex, role.stageCount, role.nodeId),
        identity,
        listenHost: role.listenHost,
        logger,
        downstream: this.downstream,
        onSlotCountChanged: (count) => reports.slots(count),
        onEngineBroken: (reason) => reports.engineBroken(reason),
        ...(role.linkSilenceMs === undefined ? {} : { silenceMs: role.linkSilenceMs }),
      });
    }
    this.first = first;
    this.server = server;
  }

  get isFirstStage(): boolean {
    return this.first !== null;
  }

  /** Later stages start listening and report the port. */
  async start(): Promise<void> {
    if (this.server === null) return;
    const port = await this.server.listen();
    this.logger.info({ port, stage: this.role.stageIndex }, "pipeline stage listening");
    this.reports.listening(port);
  }

  setDownstream(endpoint: StageEndpoint | null): void {
    this.downstream?.setEndpoint(endpoint);
  }

  /** Stage 0: the engine generate.ts drives for one task. */
  engineForTask(engine: Engine, taskId: TaskId, isCancelled: () => boolean): Engine {
    if (this.first === null) throw new Error(`stage ${this.role.stageIndex + 1}/${this.role.stageCount} does not start tasks`);
    return this.first.engineForTask(engine, taskId, isCancelled);
  }

  /** Stage 0: a cancel ends any wait on the other stages at once. */
  onCancel(taskId: TaskId): void {
    this.first?.onCancel(taskId);
  }

  async close(): Promise<void> {
    this.downstream?.close();
    await this.server?.close();
  }
}

/** Stage links say hello with the runner's id, so both ends can tell stages (and strangers) apart. */
export function stageLinkIdentity(role: StageRole): LinkIdentity {
  return {
    nodeId: role.runnerId as string as NodeId,
    clusterName: role.clusterName,
    clusterPort: 0,
    secret: role.secretHex === null ? null : Buffer.from(role.secretHex, "hex"),
  };
}

type LevelName = "debug" | "info" | "warn" | "error";

/** A pino logger whose lines go to `sink` (the runner's IPC log message) instead of a file. */
export function forwardingLogger(sink: (level: LevelName, message: string, fields: Record<string, unknown>) => void): Logger {
  return pino(
    { level: "info" },
    {
      write(line: string) {
        try {
          const { level, msg, time: _time, pid: _pid, hostname: _hostname, ...fields } = JSON.parse(line) as Record<string, unknown>;
          sink(levelName(Number(level)), String(msg ?? ""), fields);
        } catch {
          sink("warn", line, {});
        }
      },
    },
  );
}

function levelName(level: number): LevelName {
  if (level >= 50) return "error";
  if (level >= 40) return "warn";
  if (level >= 30) return "info";
  return "debug";
}
