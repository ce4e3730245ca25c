// The runner child process entry: binds a RunnerProcess to the fork IPC channel
// (`serialization: "advanced"`), sends heartbeats, and exits when the parent goes away, so a dead
// worker never leaves an orphan holding gigabytes of weights.
import { errorMessage } from "./generate.ts";
import { heartbeatIntervalMsFromArgv } from "./main-args.ts";
import { RunnerProcess } from "./runner-process.ts";
import type { RunnerChannel } from "./runner-process.ts";

/** How long exit waits for the last IPC messages to be written before giving up on them. */
const EXIT_FLUSH_TIMEOUT_MS = 1_000;

/** Sends over the fork channel; a closed channel means the parent is gone, and so should we be. */
function processChannel(): RunnerChannel {
  let lastWrite: Promise<void> = Promise.resolve();
  let exiting = false;
  return {
    send(message) {
      if (!process.connected || process.send === undefined) return;
      lastWrite = new Promise((resolve) => {
        try {
          process.send?.(message, undefined, undefined, () => resolve());
        } catch {
          resolve();
        }
      });
    },
    async exit(code) {
      if (exiting) return;
      exiting = true;
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, EXIT_FLUSH_TIMEOUT_MS).unref());
      await Promise.race([lastWrite, timeout]);
      process.exit(code);
    },
  };
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write("skein runner: must be started by its supervisor (fork with an IPC channel)\n");
    process.exit(1);
  }
  const channel = processChannel();
  const runner = new RunnerProcess(channel);
  process.on("message", (raw: unknown) => runner.handleRaw(raw));
  process.on("disconnect", () => process.exit(0));
  process.on("uncaughtException", (error) => runner.fail(`uncaught exception: ${errorMessage(error)}`));
  process.on("unhandledRejection", (error) => runner.fail(`unhandled rejection: ${errorMessage(error)}`));
  setInterval(() => channel.send({ type: "heartbeat" }), heartbeatIntervalMsFromArgv(process.argv)).unref();
  runner.start();
}

main();
