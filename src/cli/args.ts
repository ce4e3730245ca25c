// Command-line flags → typed options. Pure: takes argv and env, returns options or a usage error.
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { StaticPeer } from "../net/transport.ts";
import { parsePeer } from "../net/transport.ts";
import { CLUSTER_NAME_CHARS_MAX } from "../net/handshake.ts";
import type { LogLevel } from "../shared/logger.ts";
import { LOG_LEVELS } from "../shared/logger.ts";

export const DEFAULT_API_PORT = 52415;
export const DEFAULT_CLUSTER_PORT = 52416;
/** Generous: a long prompt on a slow CPU takes minutes, a long answer tens of minutes. */
export const DEFAULT_PREFILL_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_DECODE_TIMEOUT_MS = 30 * 60_000;
/** A day: the flags accept up to this, beyond it a "timeout" is no limit at all. */
const TASK_TIMEOUT_MS_MAX = 24 * 60 * 60_000;

export const HELP = `skein — turn the computers you own into one AI cluster

Usage:
  skein [options]            start a node (API + dashboard on http://127.0.0.1:52415)
  skein models list | pull ID | rm ID | path ID
                             the local model store (skein models --help)
  skein --help | --version

Options:
  --host HOST          address the API binds to (default 127.0.0.1); any other than
                       loopback needs --api-key or --no-auth
  --api-key KEY        require this key on every API route (env SKEIN_API_KEY), sent as
                       "Authorization: Bearer KEY" or "x-api-key: KEY"
  --no-auth            serve a non-loopback --host without a key (anyone who can reach it may use it)
  --cors-origin ORIGIN let browser pages from ORIGIN (e.g. http://my.host:8080) call the API;
                       repeatable, "*" for any (default: only the dashboard's own origin)
  --port PORT          API port (default 52415, env SKEIN_PORT)
  --cluster-port PORT  node-to-node port (default 52416)
  --home DIR           data directory (default ~/.skein, env SKEIN_HOME)
  --log-level LEVEL    ${LOG_LEVELS.join(" | ")} (default info)
  --threads N          compute threads per runner (default: one per core)
  --ctx-size N         KV cache size in tokens (default: the model's, capped by memory)
  --prefill-timeout-ms N  fail a task whose prompt takes longer to process (default ${DEFAULT_PREFILL_TIMEOUT_MS})
  --decode-timeout-ms N   fail a task whose answer takes longer to generate (default ${DEFAULT_DECODE_TIMEOUT_MS})
  --model-card FILE    add a model card (JSON) to the catalogue; repeatable
  --no-discovery       do not look for other nodes by multicast
  --peer HOST:PORT     a peer's cluster port, for networks without multicast; repeatable
  --cluster-name NAME  only nodes with the same name form a cluster (default "skein")
  --cluster-secret S   shared secret: nodes that do not know it cannot join (env
                       SKEIN_CLUSTER_SECRET; at least 8 characters)
  --cluster-host HOST  address node links are accepted on (default 0.0.0.0: every interface)

Send SIGINT or SIGTERM to stop: in-flight requests are cancelled and runners shut down.
`;

export interface CliOptions {
  readonly host: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly home: string;
  readonly logLevel: LogLevel;
  readonly threads: number | null;
  readonly contextSize: number | null;
  readonly modelCardFiles: readonly string[];
  readonly discovery: boolean;
  readonly peers: readonly StaticPeer[];
  readonly clusterName: string;
  readonly clusterSecret: string | null;
  readonly clusterHost: string;
  /** null: no key, the API is open (only allowed on loopback or with --no-auth). */
  readonly apiKey: string | null;
  readonly corsOrigins: readonly string[];
  readonly prefillTimeoutMs: number;
  readonly decodeTimeoutMs: number;
}

export type ParsedCli =
  | { readonly kind: "run"; readonly options: CliOptions }
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  | { readonly kind: "error"; readonly message: string };

export function parseCli(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedCli {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
        host: { type: "string" },
        port: { type: "string" },
        "cluster-port": { type: "string" },
        home: { type: "string" },
        "log-level": { type: "string" },
        threads: { type: "string" },
        "ctx-size": { type: "string" },
        "model-card": { type: "string", multiple: true },
        "no-discovery": { type: "boolean" },
        peer: { type: "string", multiple: true },
        "cluster-name": { type: "string" },
        "cluster-secret": { type: "string" },
        "cluster-host": { type: "string" },
        "api-key": { type: "string" },
        "no-auth": { type: "boolean" },
        "cors-origin": { type: "string", multiple: true },
        "prefill-timeout-ms": { type: "string" },
        "decode-timeout-ms": { type: "string" },
      },
    }));
  } catch (error) {
    return { kind: "error", message: (error as Error).message };
  }
  if (values.help === true) return { kind: "help" };
  if (values.version === true) return { kind: "version" };
  try {
    const logLevel = values["log-level"] ?? "info";
    if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new Error(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
    const peers = (values.peer ?? []).map((text) => {
      const peer = parsePeer(text);
      if (peer === null) throw new Error(`--peer expects HOST:PORT (a peer's cluster port, 1-65535), got "${text}"`);
      return peer;
    });
    const clusterName = values["cluster-name"] ?? "skein";
    if (!/^[\x21-\x7e]+$/.test(clusterName) || clusterName.length > CLUSTER_NAME_CHARS_MAX) {
      throw new Error(`--cluster-name must be 1 to ${CLUSTER_NAME_CHARS_MAX} printable ASCII characters without spaces`);
    }
    const rawSecret = values["cluster-secret"] ?? env.SKEIN_CLUSTER_SECRET;
    const clusterSecret = rawSecret === undefined || rawSecret === "" ? null : rawSecret;
    if (clusterSecret !== null && (clusterSecret.length < 8 || clusterSecret.length > 512)) {
      throw new Error("--cluster-secret must be 8 to 512 characters");
    }
    const host = values.host ?? "127.0.0.1";
    const apiKey = parseApiKey(values["api-key"] ?? env.SKEIN_API_KEY);
    if (apiKey !== null && values["no-auth"] === true) throw new Error("--api-key and --no-auth contradict each other; pass one");
    if (!isLoopbackHost(host) && apiKey === null && values["no-auth"] !== true) {
      throw new Error(
        `--host ${host} exposes the API beyond this machine: pass --api-key KEY (or set SKEIN_API_KEY) so only clients with the key can use it, or --no-auth to serve it open`,
      );
    }
    const corsOrigins = values["cors-origin"] ?? [];
    for (const origin of corsOrigins) {
      if (origin !== "*" && !/^https?:\/\/[^\s/]+$/.test(origin)) throw new Error(`--cors-origin expects an origin such as http://host:8080 (or "*"), got "${origin}"`);
    }
    return {
      kind: "run",
      options: {
        host,
        port: parsePort("--port", values.port ?? env.SKEIN_PORT, DEFAULT_API_PORT),
        clusterPort: parsePort("--cluster-port", values["cluster-port"], DEFAULT_CLUSTER_PORT),
        home: path.resolve(values.home ?? env.SKEIN_HOME ?? path.join(os.homedir(), ".skein")),
        logLevel: logLevel as LogLevel,
        threads: parseOptionalPositive("--threads", values.threads, 1024),
        contextSize: parseOptionalPositive("--ctx-size", values["ctx-size"], 1 << 24),
        modelCardFiles: (values["model-card"] ?? []).map((f) => path.resolve(f)),
        discovery: values["no-discovery"] !== true,
        peers,
        clusterName,
        clusterSecret,
        clusterHost: values["cluster-host"] ?? "0.0.0.0",
        apiKey,
        corsOrigins,
        prefillTimeoutMs: parseOptionalPositive("--prefill-timeout-ms", values["prefill-timeout-ms"], TASK_TIMEOUT_MS_MAX) ?? DEFAULT_PREFILL_TIMEOUT_MS,
        decodeTimeoutMs: parseOptionalPositive("--decode-timeout-ms", values["decode-timeout-ms"], TASK_TIMEOUT_MS_MAX) ?? DEFAULT_DECODE_TIMEOUT_MS,
      },
    };
  } catch (error) {
    return { kind: "error", message: (error as Error).message };
  }
}

function parsePort(flag: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag} must be a port number (0-65535), got "${raw}"`);
  return port;
}

function parseOptionalPositive(flag: string, raw: string | undefined, max: number): number | null {
  if (raw === undefined) return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${flag} must be an integer from 1 to ${max}, got "${raw}"`);
  return n;
}

/** 127.0.0.0/8, ::1 and localhost: only this machine can connect. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare === "localhost" || bare === "::1" || bare === "0:0:0:0:0:0:0:1") return true;
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/i.test(bare)) return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}

/** Keys are sent in headers: printable ASCII without spaces, long enough not to be guessed. */
const API_KEY_PATTERN = /^[\x21-\x7e]{8,512}$/;

function parseApiKey(raw: string | undefined): string | null {
  if (raw === undefined || raw === "") return null;
  if (!API_KEY_PATTERN.test(raw)) throw new Error("--api-key must be 8 to 512 printable ASCII characters without spaces");
  return raw;
}
