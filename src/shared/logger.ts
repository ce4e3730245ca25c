// Structured logs (pino, JSON lines on stderr). Components take a Logger, so tests can pass a silent one.
import { pino } from "pino";

export type Logger = pino.Logger;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: bindings }, pino.destination({ dest: 2, sync: true }));
}

export const silentLogger = (): Logger => pino({ level: "silent" });
