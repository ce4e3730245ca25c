// `skein`: parse flags, start one node, stop it cleanly on SIGINT/SIGTERM.
import { readFileSync } from "node:fs";
import { readUserModelCardFile } from "../models/card-file.ts";
import { LocalModelRegistry } from "../models/store.ts";
import { startNode } from "../node/node.ts";
import { ModelCardError } from "../models/card-file.ts";
import { createLogger } from "../shared/logger.ts";
import { HELP, isLoopbackHost, parseCli } from "./args.ts";
import { runModelsCommand } from "./models-command.ts";

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

export async function main(argv: readonly string[]): Promise<void> {
  if (argv[0] === "models") {
    // Ctrl-C stops a pull cleanly; its partial file stays for the next pull to resume.
    const interrupt = new AbortController();
    const onInterrupt = () => interrupt.abort();
    process.once("SIGINT", onInterrupt);
    try {
      process.exitCode = await runModelsCommand(argv.slice(1), process.env, { stdout: process.stdout, stderr: process.stderr, signal: interrupt.signal });
    } finally {
      process.off("SIGINT", onInterrupt);
    }
    return;
  }
  const parsed = parseCli(argv, process.env);
  switch (parsed.kind) {
    case "help":
      process.stdout.write(HELP);
      return;
    case "version":
      process.stdout.write(`skein ${version()}\n`);
      return;
    case "error":
      process.stderr.write(`skein: ${parsed.message}\nRun "skein --help" for usage.\n`);
      process.exitCode = 2;
      return;
    case "run":
      break;
  }
  const options = parsed.options;
  const logger = createLogger(options.logLevel);
  if (options.apiKey === null && !isLoopbackHost(options.host)) {
    logger.warn({ host: options.host }, "--no-auth: the API is open to anyone who can reach this address");
  }
  // The bundled default first, then downloaded models, then the user's cards.
  const models = new LocalModelRegistry({ home: options.home, userCards: options.modelCardFiles.map(readUserModelCardFile) });
  if (models.bundledError !== null) logger.warn(models.bundledError);
  const node = await startNode({
    home: options.home,
    host: options.host,
    port: options.port,
    clusterPort: options.clusterPort,
    models,
    logger,
    threads: options.threads,
    contextSize: options.contextSize,
    apiKey: options.apiKey,
    corsOrigins: options.corsOrigins,
    taskTimeouts: { prefillTimeoutMs: options.prefillTimeoutMs, decodeTimeoutMs: options.decodeTimeoutMs },
    cluster: {
      name: options.clusterName,
      secret: options.clusterSecret,
      peers: options.peers,
      discovery: options.discovery,
      listenHost: options.clusterHost,
    },
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "EADDRINUSE") {
      throw new Error(`port ${(error as { port?: number }).port ?? options.port} is already in use (another skein?); choose free ones with --port / --cluster-port`);
    }
    throw error;
  });
  process.stdout.write(`skein is serving on ${node.url} (node ${node.nodeId}, cluster port ${node.clusterPort})\n`);

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    logger.info({ signal }, "stopping: cancelling in-flight requests and shutting runners down");
    node.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

// Run directly (node --import tsx src/cli/main.ts), as the tests do.
if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`skein: ${error instanceof Error ? error.message : String(error)}\n`);
    // A bad --model-card is a usage error like a bad flag: exit 2, the message only, no stack.
    process.exit(error instanceof ModelCardError ? 2 : 1);
  });
}
