// Command-line arguments the supervisor passes to the runner child. Kept apart from main.ts, which
// starts the process as soon as it is imported.
import { RUNNER_HEARTBEAT_INTERVAL_MS } from "../shared/limits.ts";

/** The supervisor passes a shorter interval in tests; production uses the shared default. */
export const HEARTBEAT_INTERVAL_ARG = "--heartbeat-interval-ms=";

export function heartbeatIntervalMsFromArgv(argv: readonly string[]): number {
  const arg = argv.find((a) => a.startsWith(HEARTBEAT_INTERVAL_ARG));
  const value = arg === undefined ? Number.NaN : Number(arg.slice(HEARTBEAT_INTERVAL_ARG.length));
  return Number.isFinite(value) && value > 0 ? value : RUNNER_HEARTBEAT_INTERVAL_MS;
}
