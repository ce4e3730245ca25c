// What a worker sees of one runner child process. The implementation (supervisor.ts) owns the
// process, its IPC channel and its watchdog; the worker only sends intents and receives reports.
import type { EngineShardSpec } from "../engine/engine.ts";
import type { StageEndpoint, StageRole } from "../pipeline/stage-endpoint.ts";
import type { RunnerId, TaskId } from "../shared/ids.ts";
import type { Chunk, FailureCode, FinishReason, GenerationParams, RunnerStatus } from "../shared/types.ts";

export type RunnerReport =
  | { readonly type: "status"; readonly runnerId: RunnerId; readonly status: RunnerStatus }
  | {
      readonly type: "prefillProgress";
      readonly runnerId: RunnerId;
      readonly taskId: TaskId;
      readonly processedTokens: number;
      readonly totalTokens: number;
    }
  | { readonly type: "chunk"; readonly runnerId: RunnerId; readonly taskId: TaskId; readonly chunk: Chunk }
  | {
      readonly type: "taskEnded";
      readonly runnerId: RunnerId;
      readonly taskId: TaskId;
      readonly status: "Complete" | "Cancelled" | "Failed";
      readonly finishReason: FinishReason;
      readonly failureReason: string | null;
      /** Set with status Failed: "bad_request" when the engine refused the input, else "runner_failed". */
      readonly failureCode?: FailureCode | null;
      readonly promptTokens: number;
      readonly tokensGenerated: number;
    }
  /** A later pipeline stage listens for its previous stage on this port (after each load). */
  | { readonly type: "stageListening"; readonly runnerId: RunnerId; readonly port: number }
  /** Pipeline sequences (KV slots) the runner holds now. */
  | { readonly type: "stageSlots"; readonly runnerId: RunnerId; readonly openSlotCount: number }
  /** The process is gone (exit, crash, or killed by the watchdog). No further reports follow. */
  | { readonly type: "exited"; readonly runnerId: RunnerId; readonly reason: string };

export interface RunnerTask {
  readonly taskId: TaskId;
  readonly params: GenerationParams;
}

export interface RunnerHandle {
  readonly runnerId: RunnerId;
  /**
   * Load the shard; reports Loading{…} per layer, then Loaded (or Failed). With `stage` the shard is
   * one stage of a pipeline: a later stage reports stageListening before Loaded.
   */
  load(spec: EngineShardSpec, engineModule: string, stage?: StageRole): void;
  /** Pipeline stages before the last: where the next stage listens (null: unknown). */
  setDownstream(endpoint: StageEndpoint | null): void;
  /** Reports WarmingUp, then Ready. */
  warmup(): void;
  /** Reports Running{taskId}, chunks, taskEnded, then Ready. One task at a time. */
  startTask(task: RunnerTask): void;
  /** Stops the task before its next decode step or prefill chunk. Unknown/finished ids are ignored. */
  cancel(taskId: TaskId): void;
  /** Cancels whatever runs, then ends the process: ShuttingDown, Shutdown, exited. */
  shutdown(): Promise<void>;
  /** SIGKILL, for a process that does not answer. */
  kill(): void;
}

export interface RunnerSpawnOptions {
  readonly runnerId: RunnerId;
  readonly onReport: (report: RunnerReport) => void;
}

export type SpawnRunner = (options: RunnerSpawnOptions) => RunnerHandle;
