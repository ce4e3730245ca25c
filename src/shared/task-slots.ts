// How many tasks one runner works on at once. A single-node runner decodes one sequence at a time:
// a second would only take turns with the first. A pipeline's first stage interleaves one task per
// stage plus one: while stage k computes task A's step, stage 0 computes task B's, so every stage is
// busy; the extra task is ready to go while a token travels back from the last stage, so no stage
// waits for that round trip. More would only add KV slots and latency.
import { PIPELINE_TASKS_IN_FLIGHT_MAX } from "./limits.ts";

export function runnerTaskSlots(stageCount: number): number {
  if (stageCount <= 1) return 1;
  return Math.min(stageCount + 1, PIPELINE_TASKS_IN_FLIGHT_MAX);
}
