// Waiting on things a real child process reports, with a bounded timeout instead of sleeps.
import type { RunnerLogger } from "../../src/runner/supervisor.ts";

const WAIT_TIMEOUT_MS_DEFAULT = 15_000;

export class ObservedList<T> {
  readonly items: T[] = [];
  private cursor = 0;
  private readonly listeners = new Set<() => void>();

  readonly push = (item: T): void => {
    this.items.push(item);
    for (const listener of [...this.listeners]) listener();
  };

  /** The first item after the previous `next` match that satisfies `predicate`. */
  async next(predicate: (item: T) => boolean, description: string, timeoutMs = WAIT_TIMEOUT_MS_DEFAULT): Promise<T> {
    const index = await this.waitForIndex(this.cursor, predicate, description, timeoutMs);
    this.cursor = index + 1;
    return this.items[index] as T;
  }

  /** Any item, from the start, without moving the cursor. */
  async find(predicate: (item: T) => boolean, description: string, timeoutMs = WAIT_TIMEOUT_MS_DEFAULT): Promise<T> {
    const index = await this.waitForIndex(0, predicate, description, timeoutMs);
    return this.items[index] as T;
  }

  private waitForIndex(from: number, predicate: (item: T) => boolean, description: string, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const offset = this.items.slice(from).findIndex(predicate);
        if (offset === -1) return false;
        cleanup();
        resolve(from + offset);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${description}; seen:\n${this.describe()}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
      };
      const listener = (): void => void check();
      this.listeners.add(listener);
      check();
    });
  }

  private describe(): string {
    return this.items.slice(-30).map((item) => JSON.stringify(item)).join("\n");
  }
}

export interface LogEntry {
  readonly level: "debug" | "info" | "warn" | "error";
  readonly fields: Record<string, unknown>;
  readonly message: string;
}

/** Test double for the supervisor's logger: records every entry. */
export class CapturingLogger implements RunnerLogger {
  readonly entries = new ObservedList<LogEntry>();
  debug(fields: Record<string, unknown>, message: string): void {
    this.entries.push({ level: "debug", fields, message });
  }
  info(fields: Record<string, unknown>, message: string): void {
    this.entries.push({ level: "info", fields, message });
  }
  warn(fields: Record<string, unknown>, message: string): void {
    this.entries.push({ level: "warn", fields, message });
  }
  error(fields: Record<string, unknown>, message: string): void {
    this.entries.push({ level: "error", fields, message });
  }
}
