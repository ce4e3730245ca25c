// Where a pipeline stage listens and how stages are named in logs and failure reasons.
import { z } from "zod";
import { NodeIdSchema, RunnerIdSchema } from "../shared/ids.ts";
import type { NodeId } from "../shared/ids.ts";

export const HOST_CHARS_MAX = 255;

export const StageEndpointSchema = z.object({
  host: z.string().min(1).max(HOST_CHARS_MAX),
  port: z.number().int().min(1).max(65535),
  /** The runner expected at the other end: its link hello must carry this id. */
  runnerId: RunnerIdSchema,
  nodeId: NodeIdSchema,
  stageIndex: z.number().int().min(0),
  stageCount: z.number().int().min(2),
});
export type StageEndpoint = z.infer<typeof StageEndpointSchema>;

/** What a runner must know to take part in a pipeline (from the worker's load message). */
export const StageRoleSchema = z
  .object({
    stageIndex: z.number().int().min(0),
    stageCount: z.number().int().min(2),
    nodeId: NodeIdSchema,
    /** This runner: its stage links say hello with this id, so the previous stage can check who answered. */
    runnerId: RunnerIdSchema,
    /** Stage links authenticate like node links: same cluster name, and a MAC when there is a secret. */
    clusterName: z.string().max(64),
    /** Hex; null: no secret. */
    secretHex: z.string().regex(/^[0-9a-f]*$/).max(1024).nullable(),
    /** Address later stages listen on (0.0.0.0 for other nodes; tests use 127.0.0.1). */
    listenHost: z.string().min(1).max(HOST_CHARS_MAX),
    /** A stage link silent this long is dead; absent: PIPELINE_LINK_SILENCE_MS (tests shorten it). */
    linkSilenceMs: z.number().int().min(100).max(600_000).optional(),
  })
  .refine((r) => r.stageIndex < r.stageCount, "stageIndex must be below stageCount");
export type StageRole = z.infer<typeof StageRoleSchema>;

export function describeStage(stageIndex: number, stageCount: number, nodeId: NodeId | string): string {
  return `pipeline stage ${stageIndex + 1}/${stageCount} on node ${nodeId}`;
}

export function sameEndpoint(a: StageEndpoint, b: StageEndpoint): boolean {
  return a.host === b.host && a.port === b.port && a.runnerId === b.runnerId && a.stageIndex === b.stageIndex && a.stageCount === b.stageCount;
}

