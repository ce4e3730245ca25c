// The local model store and the registry a node serves from.
//
// Layout under `$SKEIN_HOME/models/`: one folder per model id holding the GGUF file, a
// `manifest.json` written (atomically) only after the file was verified and renamed into place, and
// while a download is unfinished `<file>.partial` + `<file>.partial.json` (see download.ts) and a
// `.download.lock` naming the process that downloads. A model is "complete" when its manifest and
// file agree; anything else on disk is "partial" or "absent".
//
// The registry merges, in this order: the bundled default model (shipped in the package, no network
// needed), the curated catalogue, and user cards (`--model-card`). `list()` is what can be served now;
// `catalogue()` is everything with its download state.
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getInteger, getString, hasKey, readGguf } from "../engine/gguf/reader.ts";
import { headBytesOf } from "../engine/model.ts";
import type { ModelId } from "../shared/ids.ts";
import type { UserModelCard } from "./card-file.ts";
import type { CatalogEntry } from "./catalog.ts";
import { CATALOG, MEMORY_OVERHEAD_BYTES } from "./catalog.ts";
import type { DownloadFileOptions, DownloadProgressInfo } from "./download.ts";
import { DownloadError, downloadFile, hubEndpoint, hubFileUrl, partialPathOf, partialStatePathOf, writeFileAtomic } from "./download.ts";
import type { ModelCard, ModelRegistry } from "./model-card.ts";

export const BUNDLED_MODEL_ID = "skein-default" as ModelId;
/** Relative to the package root. */
export const BUNDLED_MODEL_FILE = path.join("models", "skein-default", "skein-default.gguf");
export const BUNDLED_MODEL_CARD_FILE = path.join("models", "skein-default", "MODEL_CARD.md");
const MANIFEST_FILE = "manifest.json";
const LOCK_FILE = ".download.lock";

export type DownloadState = "absent" | "partial" | "downloading" | "complete";
export type ModelSource = "bundled" | "catalog" | "user";

export interface CatalogueItem {
  readonly id: ModelId;
  readonly name: string;
  readonly source: ModelSource;
  readonly repo: string | null;
  readonly file: string | null;
  readonly quantization: string | null;
  readonly architecture: string | null;
  readonly layerCount: number;
  readonly contextLength: number;
  /** Exact size when known (from the card, the manifest or the file on disk). */
  readonly sizeBytes: number | null;
  readonly approximateSizeBytes: number | null;
  readonly memoryBytes: number | null;
  readonly sha256: string | null;
  readonly gated: boolean;
  readonly state: DownloadState;
  readonly downloadedBytes: number;
  /** The GGUF on this node when complete. */
  readonly path: string | null;
}

export interface ModelManifest {
  readonly modelId: string;
  readonly repo: string;
  readonly file: string;
  readonly revision: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly etag: string | null;
  readonly completedAtMs: number;
}

export class UnknownModelError extends Error {
  override name = "UnknownModelError";
}
/** The request makes no sense for this model (deleting the bundled one, pulling a local file). */
export class ModelNotDownloadableError extends Error {
  override name = "ModelNotDownloadableError";
}

/** The folder of this package (where package.json is), for files shipped with it. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export interface GgufCardInfo {
  readonly architecture: string;
  readonly layerCount: number;
  readonly contextLength: number;
  readonly name: string | null;
  /** See ModelCard.headBytes. */
  readonly headBytes: number;
}

/** Layer count, context length and architecture from a local GGUF's metadata (header only). */
export function readGgufCardInfo(file: string): GgufCardInfo {
  const gguf = readGguf(file);
  const architecture = getString(gguf, "general.architecture");
  return {
    architecture,
    layerCount: getInteger(gguf, `${architecture}.block_count`),
    contextLength: getInteger(gguf, `${architecture}.context_length`, 2048),
    name: hasKey(gguf, "general.name") ? getString(gguf, "general.name") : null,
    headBytes: headBytesOf(gguf),
  };
}

/** The model shipped in the package; null when its file is missing (a trimmed install). */
export function bundledModelCard(root: string = packageRoot()): ModelCard | null {
  const file = path.join(root, BUNDLED_MODEL_FILE);
  if (!existsSync(file)) return null;
  const info = readGgufCardInfo(file);
  return {
    modelId: BUNDLED_MODEL_ID,
    name: info.name ?? "skein default (bundled)",
    layerCount: info.layerCount,
    sizeBytes: statSync(file).size,
    headBytes: info.headBytes,
    contextLength: info.contextLength,
    path: file,
    engineModule: null,
    engineOptions: {},
  };
}

/** A file to download into the store: a catalogue entry or a user card with repo + file. */
interface Downloadable {
  readonly id: ModelId;
  readonly name: string;
  readonly repo: string;
  readonly file: string;
  readonly revision: string;
  readonly sha256: string | null;
  readonly sizeBytes: number | null;
  readonly layerCount: number;
  readonly contextLength: number;
  readonly engineModule: string | null;
  readonly engineOptions: Readonly<Record<string, unknown>>;
}

export class ModelStore {
  readonly modelsDir: string;

  constructor(readonly home: string) {
    this.modelsDir = path.join(home, "models");
  }

  /** Ids may hold '/' or ':'; folder names never do. */
  dirOf(modelId: string): string {
    return path.join(this.modelsDir, modelId.replace(/[^A-Za-z0-9._-]/g, "_"));
  }

  filePathOf(modelId: string, file: string): string {
    return path.join(this.dirOf(modelId), file);
  }

  readManifest(modelId: string): ModelManifest | null {
    try {
      const raw = JSON.parse(readFileSync(path.join(this.dirOf(modelId), MANIFEST_FILE), "utf8")) as Partial<ModelManifest>;
      if (typeof raw.file !== "string" || typeof raw.sizeBytes !== "number" || typeof raw.sha256 !== "string") return null;
      return raw as ModelManifest;
    } catch {
      return null;
    }
  }

  async writeManifest(manifest: ModelManifest): Promise<void> {
    await writeFileAtomic(path.join(this.dirOf(manifest.modelId), MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  }

  /** Sync and cheap (a stat and two small reads): list() calls it on every request. */
  stateOf(modelId: string, file: string): { state: Exclude<DownloadState, "downloading">; downloadedBytes: number; sizeBytes: number | null } {
    const manifest = this.readManifest(modelId);
    const filePath = this.filePathOf(modelId, file);
    if (manifest !== null && manifest.file === file) {
      const size = fileSize(filePath);
      if (size === manifest.sizeBytes) return { state: "complete", downloadedBytes: size, sizeBytes: size };
    }
    const partial = readPartialProgress(filePath);
    if (partial !== null) return { state: "partial", downloadedBytes: partial.doneBytes, sizeBytes: partial.totalBytes };
    return { state: "absent", downloadedBytes: 0, sizeBytes: null };
  }

  /** Deletes everything of the model, finished or not. Returns whether there was anything. */
  async remove(modelId: string): Promise<boolean> {
    const dir = this.dirOf(modelId);
    if (!existsSync(dir)) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  }

  /**
   * One downloader per model across processes (a node and `skein models pull` may race). A lock
   * left by a process that died is taken over.
   */
  async lock(modelId: string): Promise<() => Promise<void>> {
    const dir = this.dirOf(modelId);
    await mkdir(dir, { recursive: true });
    const lockPath = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await open(lockPath, "wx");
        await handle.writeFile(String(process.pid));
        await handle.close();
        return async () => {
          await rm(lockPath, { force: true });
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const holder = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
        if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isProcessAlive(holder)) {
          throw new DownloadError("busy", `${modelId} is already being downloaded by process ${holder}`);
        }
        await rm(lockPath, { force: true });
      }
    }
    throw new DownloadError("busy", `cannot lock ${lockPath}`);
  }
}

export interface PullOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: DownloadProgressInfo) => void;
}

export interface LocalModelRegistryOptions {
  readonly home: string;
  readonly userCards?: readonly UserModelCard[];
  readonly catalog?: readonly CatalogEntry[];
  /** Default: the package's bundled model; null: none (tests). */
  readonly bundled?: ModelCard | null;
  /** HF_ENDPOINT and HF_TOKEN come from here (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Overrides of the downloader's knobs (tests shorten retries, inject free space). */
  readonly download?: Partial<Omit<DownloadFileOptions, "url" | "destinationPath" | "expectedSha256" | "expectedSizeBytes" | "signal" | "onProgress">>;
  readonly nowMs?: () => number;
}

interface InFlight {
  promise: Promise<ModelCard>;
  /** Callers waiting for this download. */
  holders: number;
  readonly controller: AbortController;
  readonly listeners: Set<(progress: DownloadProgressInfo) => void>;
  last: DownloadProgressInfo | null;
}

/** The registry a node serves from, backed by the store. Also the model manager of CLI and API. */
export class LocalModelRegistry implements ModelRegistry {
  readonly store: ModelStore;
  private readonly catalog: readonly CatalogEntry[];
  private readonly bundled: ModelCard | null;
  /** Why the bundled model could not be read (a damaged install); null when fine or absent. */
  readonly bundledError: string | null = null;
  private readonly userCards: readonly UserModelCard[];
  private readonly env: Readonly<Record<string, string | undefined>>;
  private readonly inFlight = new Map<string, InFlight>();
  /** GGUF header facts of downloaded files, keyed by path; re-read when the file changes. */
  private readonly ggufInfo = new Map<string, { readonly mtimeMs: number; readonly sizeBytes: number; readonly info: GgufCardInfo | null }>();

  constructor(private readonly options: LocalModelRegistryOptions) {
    this.store = new ModelStore(options.home);
    this.catalog = options.catalog ?? CATALOG;
    let bundled: ModelCard | null = null;
    try {
      bundled = options.bundled === undefined ? bundledModelCard() : options.bundled;
    } catch (error) {
      this.bundledError = `the bundled model cannot be read: ${(error as Error).message}`;
    }
    this.bundled = bundled;
    this.userCards = options.userCards ?? [];
    this.env = options.env ?? process.env;
  }

  list(): readonly ModelCard[] {
    const cards: ModelCard[] = [];
    const seen = new Set<string>();
    const add = (card: ModelCard | null) => {
      if (card === null || seen.has(card.modelId)) return;
      seen.add(card.modelId);
      cards.push(card);
    };
    add(this.bundled);
    for (const entry of this.catalog) add(this.downloadedCard(downloadableOfEntry(entry)));
    for (const user of this.userCards) add(this.servableUserCard(user));
    return cards;
  }

  get(modelId: string): ModelCard | undefined {
    return this.list().find((c) => c.modelId === modelId);
  }

  /** Every model this node knows, servable or not, with its download state here. */
  catalogue(): readonly CatalogueItem[] {
    const items: CatalogueItem[] = [];
    const seen = new Set<string>();
    const add = (item: CatalogueItem) => {
      if (seen.has(item.id)) return;
      seen.add(item.id);
      items.push(item);
    };
    if (this.bundled !== null) add(localItem(this.bundled, "bundled"));
    for (const entry of this.catalog) add(this.catalogItem(entry));
    for (const user of this.userCards) add(this.userItem(user));
    return items;
  }

  item(modelId: string): CatalogueItem | undefined {
    return this.catalogue().find((i) => i.id === modelId);
  }

  /** The local GGUF of a servable model, or null. */
  pathOf(modelId: string): string | null {
    return this.get(modelId)?.path ?? null;
  }

  isDownloading(modelId: string): boolean {
    return this.inFlight.has(modelId);
  }

  /**
   * Downloads the model into the store (or returns at once when it is there). Concurrent pulls of
   * one model in this process share a single download.
   */
  async pull(modelId: string, options: PullOptions = {}): Promise<ModelCard> {
    const local = this.get(modelId);
    if (local !== undefined) return local;
    const job = this.inFlight.get(modelId) ?? this.startPull(this.downloadableOf(modelId));
    job.holders += 1;
    let held = true;
    const letGo = () => {
      if (!held) return;
      held = false;
      job.holders -= 1;
      // The shared download stops only when every caller that asked for it has cancelled.
      if (job.holders === 0) job.controller.abort();
    };
    const listener = options.onProgress;
    if (listener !== undefined) {
      job.listeners.add(listener);
      if (job.last !== null) listener(job.last);
    }
    options.signal?.addEventListener("abort", letGo, { once: true });
    if (options.signal?.aborted === true) letGo();
    try {
      return await job.promise;
    } finally {
      if (listener !== undefined) job.listeners.delete(listener);
      options.signal?.removeEventListener("abort", letGo);
      if (held) {
        held = false;
        job.holders -= 1;
      }
    }
  }

  /** Deletes the local copy (cancelling a download in progress). Returns whether anything was there. */
  async remove(modelId: string): Promise<boolean> {
    if (this.bundled !== null && modelId === this.bundled.modelId) {
      throw new ModelNotDownloadableError(`${modelId} is the bundled model; it ships with skein and cannot be removed`);
    }
    const known = this.catalog.some((e) => e.id === modelId) || this.userCards.some((u) => u.card.modelId === modelId);
    if (!known) throw new UnknownModelError(`unknown model ${JSON.stringify(modelId)}; see "skein models list"`);
    const running = this.inFlight.get(modelId);
    if (running !== undefined) {
      running.controller.abort();
      await running.promise.catch(() => undefined);
    }
    return this.store.remove(modelId);
  }

  private startPull(source: Downloadable): InFlight {
    const job: InFlight = { promise: Promise.resolve(null as unknown as ModelCard), holders: 0, controller: new AbortController(), listeners: new Set(), last: null };
    job.promise = this.runPull(source, job).finally(() => this.inFlight.delete(source.id));
    this.inFlight.set(source.id, job);
    return job;
  }

  private async runPull(source: Downloadable, job: InFlight): Promise<ModelCard> {
    const release = await this.store.lock(source.id);
    try {
      const token = this.env.HF_TOKEN?.trim();
      const result = await downloadFile({
        ...this.options.download,
        url: hubFileUrl(hubEndpoint(this.env), source),
        destinationPath: this.store.filePathOf(source.id, source.file),
        expectedSha256: source.sha256,
        expectedSizeBytes: source.sizeBytes,
        token: token === undefined || token === "" ? null : token,
        signal: job.controller.signal,
        onProgress: (progress) => {
          job.last = progress;
          for (const listener of job.listeners) listener(progress);
        },
      });
      await this.store.writeManifest({
        modelId: source.id,
        repo: source.repo,
        file: source.file,
        revision: source.revision,
        sizeBytes: result.sizeBytes,
        sha256: result.sha256,
        etag: result.etag,
        completedAtMs: (this.options.nowMs ?? Date.now)(),
      });
      const card = this.downloadedCard(source);
      if (card === null) throw new Error(`${source.id}: downloaded, but the store does not see it complete`);
      return card;
    } finally {
      await release();
    }
  }

  private downloadableOf(modelId: string): Downloadable {
    const entry = this.catalog.find((e) => e.id === modelId);
    if (entry !== undefined) return downloadableOfEntry(entry);
    const user = this.userCards.find((u) => u.card.modelId === modelId);
    if (user !== undefined) {
      const source = downloadableOfUser(user);
      if (source === null) {
        throw new ModelNotDownloadableError(`${modelId} is a local model card without a hub repo; its file ${user.card.path ?? "(none)"} is not on this machine`);
      }
      return source;
    }
    throw new UnknownModelError(`unknown model ${JSON.stringify(modelId)}; see "skein models list"`);
  }

  private downloadedCard(source: Downloadable): ModelCard | null {
    const state = this.store.stateOf(source.id, source.file);
    if (state.state !== "complete") return null;
    const filePath = this.store.filePathOf(source.id, source.file);
    // The file's own header is the truth for placement; the card is the fallback.
    const info = this.ggufInfoOf(filePath);
    return {
      modelId: source.id,
      name: source.name,
      layerCount: info?.layerCount ?? source.layerCount,
      sizeBytes: state.sizeBytes ?? 0,
      ...(info === null ? {} : { headBytes: info.headBytes }),
      contextLength: info?.contextLength ?? source.contextLength,
      path: filePath,
      engineModule: source.engineModule,
      engineOptions: source.engineOptions,
    };
  }

  private ggufInfoOf(filePath: string): GgufCardInfo | null {
    let stats;
    try {
      stats = statSync(filePath);
    } catch {
      return null;
    }
    const cached = this.ggufInfo.get(filePath);
    if (cached !== undefined && cached.mtimeMs === stats.mtimeMs && cached.sizeBytes === stats.size) return cached.info;
    let info: GgufCardInfo | null = null;
    try {
      info = readGgufCardInfo(filePath);
    } catch {
      // Not readable as GGUF here: the engine reports the defect when it loads the file.
    }
    this.ggufInfo.set(filePath, { mtimeMs: stats.mtimeMs, sizeBytes: stats.size, info });
    return info;
  }

  private servableUserCard(user: UserModelCard): ModelCard | null {
    const { card } = user;
    if (card.engineModule !== null) return card;
    if (card.path !== null && existsSync(card.path)) {
      const info = this.ggufInfoOf(card.path);
      return info === null ? card : { ...card, headBytes: info.headBytes };
    }
    const source = downloadableOfUser(user);
    return source === null ? null : this.downloadedCard(source);
  }

  private catalogItem(entry: CatalogEntry): CatalogueItem {
    const state = this.store.stateOf(entry.id, entry.file);
    const downloading = this.inFlight.get(entry.id);
    return {
      id: entry.id,
      name: entry.name,
      source: "catalog",
      repo: entry.repo,
      file: entry.file,
      quantization: entry.quantization,
      architecture: entry.architecture,
      layerCount: entry.layerCount,
      contextLength: entry.contextLength,
      sizeBytes: entry.sizeBytes ?? state.sizeBytes,
      approximateSizeBytes: entry.approximateSizeBytes,
      memoryBytes: entry.memoryBytes,
      sha256: entry.sha256 ?? this.store.readManifest(entry.id)?.sha256 ?? null,
      gated: entry.gated,
      state: downloading !== undefined ? "downloading" : state.state,
      downloadedBytes: downloading?.last?.downloadedBytes ?? state.downloadedBytes,
      path: state.state === "complete" ? this.store.filePathOf(entry.id, entry.file) : null,
    };
  }

  private userItem(user: UserModelCard): CatalogueItem {
    const servable = this.servableUserCard(user);
    const source = downloadableOfUser(user);
    if (servable !== null || source === null) {
      return { ...localItem(servable ?? user.card, "user"), state: servable !== null ? "complete" : "absent", repo: source?.repo ?? null, file: source?.file ?? null };
    }
    const state = this.store.stateOf(source.id, source.file);
    const downloading = this.inFlight.get(source.id);
    return {
      ...localItem(user.card, "user"),
      repo: source.repo,
      file: source.file,
      sha256: source.sha256,
      sizeBytes: state.sizeBytes,
      state: downloading !== undefined ? "downloading" : state.state,
      downloadedBytes: downloading?.last?.downloadedBytes ?? state.downloadedBytes,
      path: null,
    };
  }
}

function downloadableOfEntry(entry: CatalogEntry): Downloadable {
  return {
    id: entry.id,
    name: entry.name,
    repo: entry.repo,
    file: entry.file,
    revision: entry.revision,
    sha256: entry.sha256,
    sizeBytes: entry.sizeBytes,
    layerCount: entry.layerCount,
    contextLength: entry.contextLength,
    engineModule: null,
    engineOptions: {},
  };
}

function downloadableOfUser(user: UserModelCard): Downloadable | null {
  if (user.hub === null) return null;
  const { card, hub } = user;
  return {
    id: card.modelId,
    name: card.name,
    repo: hub.repo,
    file: hub.file,
    revision: hub.revision,
    sha256: hub.sha256,
    sizeBytes: card.sizeBytes > 0 ? card.sizeBytes : null,
    layerCount: card.layerCount,
    contextLength: card.contextLength,
    engineModule: card.engineModule,
    engineOptions: card.engineOptions,
  };
}

function localItem(card: ModelCard, source: ModelSource): CatalogueItem {
  const sizeBytes = card.path !== null ? (fileSize(card.path) ?? card.sizeBytes) : card.sizeBytes;
  return {
    id: card.modelId,
    name: card.name,
    source,
    repo: null,
    file: card.path === null ? null : path.basename(card.path),
    quantization: null,
    architecture: null,
    layerCount: card.layerCount,
    contextLength: card.contextLength,
    sizeBytes,
    approximateSizeBytes: sizeBytes,
    memoryBytes: sizeBytes + MEMORY_OVERHEAD_BYTES,
    sha256: null,
    gated: false,
    state: "complete",
    downloadedBytes: sizeBytes,
    path: card.path,
  };
}

function fileSize(file: string): number | null {
  try {
    return statSync(file).size;
  } catch {
    return null;
  }
}

function readPartialProgress(filePath: string): { doneBytes: number; totalBytes: number } | null {
  if (!existsSync(partialPathOf(filePath))) return null;
  try {
    const raw = JSON.parse(readFileSync(partialStatePathOf(filePath), "utf8")) as { totalBytes?: unknown; chunks?: unknown };
    if (typeof raw.totalBytes !== "number" || !Array.isArray(raw.chunks)) return { doneBytes: 0, totalBytes: 0 };
    const doneBytes = (raw.chunks as { start?: unknown; next?: unknown }[]).reduce(
      (sum, c) => sum + (typeof c.next === "number" && typeof c.start === "number" ? c.next - c.start : 0),
      0,
    );
    return { doneBytes, totalBytes: raw.totalBytes };
  } catch {
    return { doneBytes: 0, totalBytes: 0 };
  }
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
