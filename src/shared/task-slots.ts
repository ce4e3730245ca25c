// How many tasks one runner works on at once. A single-node runner decodes one sequence at a time:
// a second would only take turns with the first. A pipeline's first stage interleaves one task per
// stage, so that while stage k computes task A's step, stage 0 computes task B's: with S stages and
// S tasks in flight every stage is busy, and more tasks would only add KV slots and latency.
import { PIPELINE_TASKS_IN_FLIGHT_MAX } from "./limits.ts";

export function runnerTaskSlots(stageCount: number): number {
  if (stageCount <= 1) return 1;
  return Math.min(stageCount, PIPELINE_TASKS_IN_FLIGHT_MAX);
}
