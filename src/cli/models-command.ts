// `skein models list | pull ID | rm ID | path ID`: the local model store from the command line.
// pull draws a progress bar on a terminal and prints plain lines otherwise (logs, pipes, CI).
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { readUserModelCardFile } from "../models/card-file.ts";
import type { DownloadProgressInfo } from "../models/download.ts";
import { DownloadError, formatBytes } from "../models/download.ts";
import type { CatalogueItem, LocalModelRegistryOptions } from "../models/store.ts";
import { LocalModelRegistry, ModelNotDownloadableError, UnknownModelError } from "../models/store.ts";

export const MODELS_HELP = `skein models — the local model store

Usage:
  skein models list [--json]   every known model: bundled, catalogue, your cards; size and state
  skein models pull ID         download a model (resumes an interrupted download)
  skein models rm ID           delete a downloaded model
  skein models path ID         print the local GGUF path of a model

Options:
  --home DIR           data directory (default ~/.skein, env SKEIN_HOME); models live in DIR/models
  --model-card FILE    also consider this model card (JSON); repeatable
Environment:
  HF_TOKEN             Hugging Face token, for gated models
  HF_ENDPOINT          hub mirror (default https://huggingface.co)
`;

/** Plain-line progress (not a terminal): one line per this many percent. */
const PLAIN_PROGRESS_STEP_PERCENT = 10;
const BAR_WIDTH = 24;

export interface ModelsCommandIo {
  readonly stdout: { write(text: string): unknown; readonly isTTY?: boolean };
  readonly stderr: { write(text: string): unknown };
  /** Cancels a pull (the CLI wires SIGINT to it). */
  readonly signal?: AbortSignal;
}

/** Runs one models subcommand; returns the process exit code. */
export async function runModelsCommand(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  io: ModelsCommandIo,
  registryOptions: Partial<LocalModelRegistryOptions> = {},
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h" },
        home: { type: "string" },
        json: { type: "boolean" },
        "model-card": { type: "string", multiple: true },
      },
    });
  } catch (error) {
    io.stderr.write(`skein models: ${(error as Error).message}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, id, ...extra] = positionals;
  if (values.help === true || command === undefined || command === "help") {
    io.stdout.write(MODELS_HELP);
    return command === undefined && values.help !== true ? 2 : 0;
  }
  const needsId = command === "pull" || command === "rm" || command === "path";
  if (!["list", "pull", "rm", "path"].includes(command)) return usage(io, `unknown command "${command}"`);
  if (needsId && id === undefined) return usage(io, `${command} needs a model id (see "skein models list")`);
  if ((needsId && extra.length > 0) || (!needsId && id !== undefined)) return usage(io, `too many arguments`);

  let registry: LocalModelRegistry;
  try {
    const home = path.resolve(values.home ?? env.SKEIN_HOME ?? path.join(os.homedir(), ".skein"));
    const userCards = (values["model-card"] ?? []).map((f) => readUserModelCardFile(path.resolve(f)));
    registry = new LocalModelRegistry({ home, userCards, env, ...registryOptions });
  } catch (error) {
    io.stderr.write(`skein models: ${(error as Error).message}\n`);
    return 1;
  }
  try {
    switch (command) {
      case "list":
        return list(registry, io, values.json === true);
      case "pull":
        return await pull(registry, id!, io);
      case "rm":
        return await remove(registry, id!, io);
      default:
        return printPath(registry, id!, io);
    }
  } catch (error) {
    if (error instanceof DownloadError || error instanceof UnknownModelError || error instanceof ModelNotDownloadableError) {
      io.stderr.write(`skein models: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

function usage(io: ModelsCommandIo, message: string): number {
  io.stderr.write(`skein models: ${message}\nRun "skein models --help" for usage.\n`);
  return 2;
}

function list(registry: LocalModelRegistry, io: ModelsCommandIo, json: boolean): number {
  const items = registry.catalogue();
  if (json) {
    io.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
    return 0;
  }
  const rows = [["ID", "STATE", "SIZE", "MEMORY", "NAME"], ...items.map(listRow)];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((r) => r[column]!.length)));
  for (const row of rows) io.stdout.write(`${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")}\n`);
  if (registry.bundledError !== null) io.stderr.write(`skein models: ${registry.bundledError}\n`);
  return 0;
}

export function listRow(item: CatalogueItem): string[] {
  const size = item.sizeBytes ?? item.approximateSizeBytes;
  const sizeText = size === null ? "?" : `${item.sizeBytes === null ? "~" : ""}${formatBytes(size)}`;
  let state: string = item.source === "bundled" ? "bundled" : item.state;
  if (item.state === "partial" && size !== null && size > 0) state = `partial ${Math.floor((item.downloadedBytes / size) * 100)}%`;
  if (item.gated && item.state !== "complete") state += " (gated)";
  return [item.id, state, sizeText, item.memoryBytes === null ? "?" : formatBytes(item.memoryBytes), item.name];
}

async function pull(registry: LocalModelRegistry, id: string, io: ModelsCommandIo): Promise<number> {
  if (registry.get(id) !== undefined) {
    io.stdout.write(`${id} is already here: ${registry.pathOf(id) ?? "(served by its engine module)"}\n`);
    return 0;
  }
  const item = registry.item(id);
  if (item?.repo !== null && item?.repo !== undefined) io.stdout.write(`pulling ${id} from ${item.repo}/${item.file ?? ""}\n`);
  const render = io.stdout.isTTY === true ? terminalRenderer(io) : plainRenderer(io);
  try {
    const card = await registry.pull(id, { ...(io.signal === undefined ? {} : { signal: io.signal }), onProgress: render.progress });
    render.done();
    io.stdout.write(`${id} is ready: ${card.path ?? ""}\n`);
    return 0;
  } catch (error) {
    render.done();
    if (error instanceof DownloadError && error.code === "aborted") {
      io.stderr.write(`skein models: download of ${id} cancelled; run "skein models pull ${id}" again to resume\n`);
      return 130;
    }
    throw error;
  }
}

async function remove(registry: LocalModelRegistry, id: string, io: ModelsCommandIo): Promise<number> {
  const removed = await registry.remove(id);
  io.stdout.write(removed ? `removed ${id}\n` : `${id} was not downloaded\n`);
  return 0;
}

function printPath(registry: LocalModelRegistry, id: string, io: ModelsCommandIo): number {
  const found = registry.pathOf(id);
  if (found !== null) {
    io.stdout.write(`${found}\n`);
    return 0;
  }
  if (registry.item(id) === undefined) throw new UnknownModelError(`unknown model ${JSON.stringify(id)}; see "skein models list"`);
  io.stderr.write(`skein models: ${id} is not downloaded; run "skein models pull ${id}"\n`);
  return 1;
}

/** One line: bar, percent, bytes, rate, ETA. Pure, for the terminal and for tests. */
export function renderProgressLine(progress: DownloadProgressInfo, barWidth: number = BAR_WIDTH): string {
  const fraction = progress.totalBytes > 0 ? Math.min(1, progress.downloadedBytes / progress.totalBytes) : 0;
  const filled = Math.round(fraction * barWidth);
  const bar = `[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}]`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const bytes = `${formatBytes(progress.downloadedBytes)} / ${formatBytes(progress.totalBytes)}`;
  const rate = `${formatBytes(progress.bytesPerSecond)}/s`;
  return `${bar} ${percent}  ${bytes}  ${rate}  ETA ${formatEta(progress.etaSeconds)}`;
}

export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "--:--";
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mmss = `${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
  return h > 0 ? `${h}:${mmss}` : mmss;
}

interface Renderer {
  progress(progress: DownloadProgressInfo): void;
  done(): void;
}

function terminalRenderer(io: ModelsCommandIo): Renderer {
  let drawn = false;
  return {
    progress(progress) {
      const suffix = progress.phase === "verifying" ? "  verifying sha256…" : "";
      io.stdout.write(`\r${renderProgressLine(progress)}${suffix}\x1b[K`);
      drawn = true;
    },
    done() {
      if (drawn) io.stdout.write("\n");
      drawn = false;
    },
  };
}

function plainRenderer(io: ModelsCommandIo): Renderer {
  let lastStep = -1;
  return {
    progress(progress) {
      if (progress.phase === "verifying") {
        const finalStep = 100 / PLAIN_PROGRESS_STEP_PERCENT;
        if (lastStep < finalStep) io.stdout.write(`${renderProgressLine(progress)}\n`);
        lastStep = finalStep;
        io.stdout.write("verifying sha256…\n");
        return;
      }
      if (progress.totalBytes <= 0) return;
      const step = Math.floor((progress.downloadedBytes / progress.totalBytes) * (100 / PLAIN_PROGRESS_STEP_PERCENT));
      if (step <= lastStep) return;
      lastStep = step;
      io.stdout.write(`${renderProgressLine(progress)}\n`);
    },
    done() {},
  };
}
