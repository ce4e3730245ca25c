// Which runner status may follow which. The master checks a worker's report against this before
// indexing it; `apply` asserts it again (a pair of checks on either side of the wire).
import type { RunnerStatusKind } from "./types.ts";

const NEXT: Readonly<Record<RunnerStatusKind, readonly RunnerStatusKind[]>> = {
  Idle: ["Loading"],
  Loading: ["Loading", "Loaded"],
  Loaded: ["WarmingUp"],
  WarmingUp: ["Ready"],
  Ready: ["Running"],
  Running: ["Ready", "Running"],
  ShuttingDown: ["Shutdown"],
  Shutdown: [],
  Failed: [],
};

/**
 * Failed and ShuttingDown may be entered from anywhere; Idle marks a fresh runner process (first
 * start, restart after a crash, or a node restart), so it too may follow anything.
 */
export function isRunnerTransitionAllowed(from: RunnerStatusKind, to: RunnerStatusKind): boolean {
  if (to === "Failed" || to === "Idle") return true;
  if (to === "ShuttingDown") return from !== "Shutdown";
  return NEXT[from].includes(to);
}
