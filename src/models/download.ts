// Downloads one file from the Hugging Face hub (or anything that answers like its file endpoint):
// redirects followed by hand so the hub's X-Linked-Size / X-Linked-Etag are seen, ranged GETs that
// resume a `.partial` file, parallel chunks for large files, bounded retries with exponential
// backoff, sha256 verified before the atomic rename into place. Progress of the ranges done so far
// lives in `<file>.partial.json`, so a later call (another process, after a crash) resumes too.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { mkdir, open, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleepMs } from "node:timers/promises";

export const HF_ENDPOINT_DEFAULT = "https://huggingface.co";
/** Redirects followed before giving up (the hub uses one or two). */
export const DOWNLOAD_REDIRECTS_MAX = 8;
/** Consecutive failed attempts (without any byte of progress in between) before a download fails. */
export const DOWNLOAD_RETRIES_MAX = 5;
export const DOWNLOAD_RETRY_BASE_DELAY_MS = 500;
export const DOWNLOAD_RETRY_DELAY_MAX_MS = 30_000;
/** Files at least this large are fetched as several ranges at once. */
export const DOWNLOAD_PARALLEL_THRESHOLD_BYTES = 64 * 1024 * 1024;
export const DOWNLOAD_PARALLEL_CHUNKS = 4;
export const DOWNLOAD_PARALLEL_CHUNKS_MAX = 16;
/** Free space kept on top of the bytes still to download. */
export const DOWNLOAD_DISK_MARGIN_BYTES = 32 * 1024 * 1024;
/** How often the `.partial.json` progress record is rewritten while bytes arrive. */
export const DOWNLOAD_STATE_SAVE_INTERVAL_MS = 1_000;
export const DOWNLOAD_PROGRESS_INTERVAL_MS = 100;
/** Window of the transfer rate shown with progress. */
const RATE_WINDOW_MS = 5_000;
const RATE_SAMPLES_MAX = 256;

export type DownloadErrorCode =
  | "unauthorized"
  | "not_found"
  | "network"
  | "http"
  | "checksum"
  | "size_mismatch"
  | "disk_space"
  | "aborted"
  | "busy";

export class DownloadError extends Error {
  override name = "DownloadError";
  constructor(
    readonly code: DownloadErrorCode,
    message: string,
    readonly status: number | null = null,
  ) {
    super(message);
  }
}

/** A failure worth another attempt (429, 5xx, a cut connection); never leaves this module. */
class RetryableError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
    readonly networkCode: string | null = null,
  ) {
    super(message);
  }
}

export interface HubFile {
  readonly repo: string;
  readonly file: string;
  readonly revision: string;
}

export function hubEndpoint(env: Readonly<Record<string, string | undefined>>): string {
  const raw = env.HF_ENDPOINT?.trim();
  return (raw === undefined || raw === "" ? HF_ENDPOINT_DEFAULT : raw).replace(/\/+$/, "");
}

export function hubFileUrl(endpoint: string, source: HubFile): string {
  const file = source.file.split("/").map(encodeURIComponent).join("/");
  return `${endpoint.replace(/\/+$/, "")}/${source.repo}/resolve/${encodeURIComponent(source.revision)}/${file}`;
}

export interface DownloadProgressInfo {
  readonly downloadedBytes: number;
  readonly totalBytes: number;
  readonly bytesPerSecond: number;
  /** null until a rate is known. */
  readonly etaSeconds: number | null;
  /** "verifying": every byte is here and the sha256 is being checked (seconds for large files). */
  readonly phase: "downloading" | "verifying";
}

export interface DownloadFileOptions {
  readonly url: string;
  readonly destinationPath: string;
  readonly expectedSha256: string | null;
  readonly expectedSizeBytes: number | null;
  /** Sent as a Bearer token, only to the origin of `url` (never to the CDN it redirects to). */
  readonly token?: string | null;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: DownloadProgressInfo) => void;
  readonly progressIntervalMs?: number;
  readonly parallelChunks?: number;
  readonly parallelThresholdBytes?: number;
  readonly retriesMax?: number;
  readonly retryBaseDelayMs?: number;
  readonly retryDelayMaxMs?: number;
  /** Free bytes on the file system holding `dir` (tests inject it). */
  readonly freeBytes?: (dir: string) => Promise<number>;
  readonly nowMs?: () => number;
  readonly fetch?: typeof fetch;
}

export interface DownloadResult {
  readonly path: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly etag: string | null;
  /** Bytes that were already on disk from an earlier, interrupted download. */
  readonly resumedBytes: number;
}

interface Probe {
  readonly dataUrl: string;
  readonly totalBytes: number;
  readonly etag: string | null;
  /** The hub's hash of an LFS file, from X-Linked-Etag, when it looks like a sha256. */
  readonly linkedSha256: string | null;
  readonly acceptsRanges: boolean;
}

interface ChunkState {
  readonly start: number;
  /** Exclusive. */
  readonly end: number;
  next: number;
}

interface PartialState {
  readonly url: string;
  readonly etag: string | null;
  readonly totalBytes: number;
  readonly chunks: ChunkState[];
}

export async function freeBytesOf(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

export function partialPathOf(destinationPath: string): string {
  return `${destinationPath}.partial`;
}
export function partialStatePathOf(destinationPath: string): string {
  return `${destinationPath}.partial.json`;
}

/** Bytes of an interrupted download of `destinationPath` already on disk (0 when none). */
export async function partialBytesOf(destinationPath: string): Promise<number> {
  const state = await readPartialState(destinationPath);
  if (state === null) return 0;
  return state.chunks.reduce((sum, c) => sum + (c.next - c.start), 0);
}

export async function downloadFile(options: DownloadFileOptions): Promise<DownloadResult> {
  const job = new DownloadJob(options);
  return job.run();
}

class DownloadJob {
  private readonly fetchImpl: typeof fetch;
  private readonly nowMs: () => number;
  private readonly origin: string;
  private readonly partialPath: string;
  private readonly internal = new AbortController();
  private readonly signal: AbortSignal;
  private probe: Probe | null = null;
  private probing: Promise<Probe> | null = null;
  private state: PartialState | null = null;
  private downloadedBytes = 0;
  private lastProgressAtMs = -Infinity;
  private lastSaveAtMs = 0;
  private readonly samples: { atMs: number; bytes: number }[] = [];

  constructor(private readonly options: DownloadFileOptions) {
    this.fetchImpl = options.fetch ?? fetch;
    this.nowMs = options.nowMs ?? Date.now;
    this.origin = new URL(options.url).origin;
    this.partialPath = partialPathOf(options.destinationPath);
    this.signal = options.signal === undefined ? this.internal.signal : AbortSignal.any([options.signal, this.internal.signal]);
  }

  async run(): Promise<DownloadResult> {
    const dir = path.dirname(this.options.destinationPath);
    await mkdir(dir, { recursive: true });
    try {
      const probe = await this.withRetries(() => this.refreshProbe(), () => 0, () => false);
      this.checkExpectations(probe);
      const saved = await this.reusableState(probe);
      const resumedBytes = saved === null ? 0 : chunkBytesDone(saved);
      // Before anything is written: a refused download leaves no partial file behind.
      await this.checkDiskSpace(dir, probe.totalBytes - resumedBytes);
      const state = saved ?? (await this.createState(probe));
      this.state = state;
      this.downloadedBytes = resumedBytes;
      await this.fetchChunks(state);
      this.emitProgress(true, "verifying");
      const sha256 = await this.verify(probe);
      await rename(this.partialPath, this.options.destinationPath);
      await rm(partialStatePathOf(this.options.destinationPath), { force: true });
      return { path: this.options.destinationPath, sizeBytes: probe.totalBytes, sha256, etag: probe.etag, resumedBytes };
    } catch (error) {
      if (this.options.signal?.aborted === true && !(error instanceof DownloadError && error.code !== "aborted")) {
        throw new DownloadError("aborted", `download of ${this.options.url} was cancelled; run it again to resume`);
      }
      throw error;
    }
  }

  private checkExpectations(probe: Probe): void {
    const { expectedSizeBytes, expectedSha256 } = this.options;
    if (expectedSizeBytes !== null && expectedSizeBytes !== probe.totalBytes) {
      throw new DownloadError(
        "size_mismatch",
        `${this.options.url} is ${probe.totalBytes} bytes on the server but the model card says ${expectedSizeBytes}: the file changed upstream; update the card`,
      );
    }
    if (expectedSha256 !== null && probe.linkedSha256 !== null && expectedSha256 !== probe.linkedSha256) {
      throw new DownloadError(
        "checksum",
        `${this.options.url} has sha256 ${probe.linkedSha256} on the server but the model card expects ${expectedSha256}: the file changed upstream; update the card`,
      );
    }
  }

  /** The saved progress when it belongs to this very file version and the server can resume. */
  private async reusableState(probe: Probe): Promise<PartialState | null> {
    const saved = await readPartialState(this.options.destinationPath);
    const partialExists = await stat(this.partialPath).then(
      () => true,
      () => false,
    );
    const reusable = saved !== null && partialExists && saved.totalBytes === probe.totalBytes && saved.etag === probe.etag && probe.acceptsRanges;
    return reusable ? saved : null;
  }

  private async createState(probe: Probe): Promise<PartialState> {
    // Nothing reusable: a different version of the file, or a server that cannot resume.
    await rm(this.partialPath, { force: true });
    await rm(partialStatePathOf(this.options.destinationPath), { force: true });
    const state: PartialState = {
      url: this.options.url,
      etag: probe.etag,
      totalBytes: probe.totalBytes,
      chunks: planChunks(probe.totalBytes, probe.acceptsRanges, this.options.parallelChunks ?? DOWNLOAD_PARALLEL_CHUNKS, this.options.parallelThresholdBytes ?? DOWNLOAD_PARALLEL_THRESHOLD_BYTES),
    };
    const handle = await open(this.partialPath, "w");
    await handle.close();
    await this.saveState(state);
    return state;
  }

  private async checkDiskSpace(dir: string, remainingBytes: number): Promise<void> {
    const freeBytes = await (this.options.freeBytes ?? freeBytesOf)(dir);
    const neededBytes = remainingBytes + DOWNLOAD_DISK_MARGIN_BYTES;
    if (freeBytes < neededBytes) {
      throw new DownloadError(
        "disk_space",
        `not enough disk space in ${dir}: ${formatBytes(remainingBytes)} still to download (+${formatBytes(DOWNLOAD_DISK_MARGIN_BYTES)} margin), ${formatBytes(freeBytes)} free`,
      );
    }
  }

  private async fetchChunks(state: PartialState): Promise<void> {
    const handle = await open(this.partialPath, "r+");
    try {
      const results = await Promise.allSettled(
        state.chunks.map((chunk) =>
          this.withRetries(
            () => this.fetchChunk(handle, chunk),
            () => chunk.next,
            () => chunk.next >= chunk.end,
          ).catch((error: unknown) => {
            // One chunk's fatal error stops the others; their progress is still saved.
            this.internal.abort();
            throw error;
          }),
        ),
      );
      const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failure !== undefined) {
        const fatal = results.find(
          (r): r is PromiseRejectedResult => r.status === "rejected" && !(isAbortError(r.reason) && this.options.signal?.aborted !== true),
        );
        throw (fatal ?? failure).reason;
      }
    } finally {
      await handle.close();
      await this.saveState(state).catch(() => undefined);
    }
  }

  private async fetchChunk(handle: FileHandle, chunk: ChunkState): Promise<void> {
    if (chunk.next >= chunk.end) return;
    const probe = this.probe ?? (await this.refreshProbe());
    const headers: Record<string, string> = { Range: `bytes=${chunk.next}-${chunk.end - 1}` };
    this.addAuth(headers, probe.dataUrl);
    const response = await this.request(probe.dataUrl, "GET", headers);
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel();
      if (new URL(probe.dataUrl).origin !== this.origin) {
        // A signed CDN link expired: ask the hub for a fresh one and try again.
        this.probe = null;
        throw new RetryableError(`the download link expired (HTTP ${response.status})`);
      }
      throw this.httpError(response.status);
    }
    if (response.status !== 206 && response.status !== 200) {
      await response.body?.cancel();
      throw this.httpError(response.status, retryAfterMs(response));
    }
    if (response.status === 200) {
      // The server ignored the range: only usable when this chunk is the whole file from byte 0.
      if (chunk.start !== 0 || chunk.end !== this.state?.totalBytes) {
        await response.body?.cancel();
        throw new DownloadError("http", `${this.options.url}: the server ignored a range request; cannot download in parts`);
      }
      this.downloadedBytes -= chunk.next - chunk.start;
      chunk.next = 0;
    } else {
      const range = parseContentRange(response.headers.get("content-range"));
      if (range === null || range.start !== chunk.next || (range.totalBytes !== null && range.totalBytes !== this.state?.totalBytes)) {
        await response.body?.cancel();
        this.probe = null;
        throw new RetryableError(`unexpected Content-Range ${response.headers.get("content-range") ?? "(none)"} for bytes ${chunk.next}-`);
      }
    }
    if (response.body === null) throw new RetryableError("empty response body");
    try {
      for await (const piece of bodyPieces(response.body, this.signal)) {
        const writable = Math.min(piece.byteLength, chunk.end - chunk.next);
        if (writable <= 0) break;
        await handle.write(piece, 0, writable, chunk.next);
        chunk.next += writable;
        this.downloadedBytes += writable;
        this.emitProgress(false, "downloading");
        await this.maybeSaveState();
      }
    } catch (error) {
      if (isAbortError(error) || this.signal.aborted) throw error;
      throw new RetryableError(`connection lost after byte ${chunk.next}: ${(error as Error).message}`, null, networkCodeOf(error));
    }
    if (chunk.next < chunk.end) throw new RetryableError(`connection ended early at byte ${chunk.next} of ${chunk.end}`);
  }

  /** HEAD with redirects followed by hand, so the hub's own headers on the 302 are kept. */
  private refreshProbe(): Promise<Probe> {
    this.probing ??= this.probeOnce().finally(() => {
      this.probing = null;
    });
    return this.probing;
  }

  private async probeOnce(): Promise<Probe> {
    let url = this.options.url;
    let linkedSizeBytes: number | null = null;
    let linkedEtag: string | null = null;
    for (let hop = 0; hop <= DOWNLOAD_REDIRECTS_MAX; hop++) {
      const headers: Record<string, string> = {};
      this.addAuth(headers, url);
      const response = await this.request(url, "HEAD", headers);
      await response.body?.cancel();
      linkedSizeBytes ??= numberHeader(response, "x-linked-size");
      linkedEtag ??= response.headers.get("x-linked-etag");
      if (response.status >= 300 && response.status < 400) {
        const location = response.headers.get("location");
        if (location === null) throw new DownloadError("http", `${url}: redirect without a Location header`, response.status);
        url = new URL(location, url).href;
        continue;
      }
      const linked = normalizeEtag(linkedEtag);
      const linkedSha256 = linked !== null && /^[0-9a-f]{64}$/.test(linked) ? linked : null;
      const crossOrigin = new URL(url).origin !== this.origin;
      let probe: Probe;
      if (response.status !== 200 && crossOrigin && linkedSizeBytes !== null) {
        // Signed CDN links may be valid for GET only; the hub already said what we need, and the
        // first ranged GET proves that ranges work.
        probe = { dataUrl: url, totalBytes: linkedSizeBytes, etag: linked, linkedSha256, acceptsRanges: true };
      } else {
        if (response.status !== 200) throw this.httpError(response.status, retryAfterMs(response));
        const totalBytes = numberHeader(response, "content-length") ?? linkedSizeBytes;
        if (totalBytes === null) throw new DownloadError("http", `${url}: the server did not say how large the file is`);
        probe = {
          dataUrl: url,
          totalBytes,
          // The hub's hash names the file version; a CDN's own ETag may differ between edges.
          etag: linked ?? normalizeEtag(response.headers.get("etag")),
          linkedSha256,
          acceptsRanges: (response.headers.get("accept-ranges") ?? "").toLowerCase().includes("bytes"),
        };
      }
      this.probe = probe;
      return probe;
    }
    throw new DownloadError("http", `${this.options.url}: more than ${DOWNLOAD_REDIRECTS_MAX} redirects`);
  }

  private async request(url: string, method: "GET" | "HEAD", headers: Record<string, string>): Promise<Response> {
    try {
      return await this.fetchImpl(url, { method, headers, redirect: "manual", signal: this.signal });
    } catch (error) {
      if (isAbortError(error) || this.signal.aborted) throw error;
      throw new RetryableError(`cannot reach ${new URL(url).origin}: ${describeNetworkError(error)}`, null, networkCodeOf(error) ?? "fetch_failed");
    }
  }

  private addAuth(headers: Record<string, string>, url: string): void {
    const token = this.options.token;
    if (token !== undefined && token !== null && token !== "" && new URL(url).origin === this.origin) {
      headers.Authorization = `Bearer ${token}`;
    }
  }

  private httpError(status: number, retryAfter: number | null = null): Error {
    const what = this.options.url;
    if (status === 401 || status === 403) {
      const hasToken = this.options.token !== undefined && this.options.token !== null && this.options.token !== "";
      const hint = hasToken
        ? "the token in HF_TOKEN was refused or has no access to this repository (gated models need their terms accepted on huggingface.co first)"
        : "the repository is gated or private: accept its terms on huggingface.co, create a token at https://huggingface.co/settings/tokens and set HF_TOKEN=<token>";
      return new DownloadError("unauthorized", `${what}: access refused (HTTP ${status}): ${hint}`, status);
    }
    if (status === 404) return new DownloadError("not_found", `${what}: not found (HTTP 404): check the repository and file name of the model card`, status);
    if (status === 429 || status >= 500) return new RetryableError(`HTTP ${status} from ${new URL(what).origin}`, retryAfter);
    return new DownloadError("http", `${what}: unexpected HTTP ${status}`, status);
  }

  /** Runs `attempt` until it succeeds; a failure that made progress does not count against the limit. */
  private async withRetries<T>(attempt: () => Promise<T>, progressOf: () => number, done: () => boolean): Promise<T> {
    const retriesMax = this.options.retriesMax ?? DOWNLOAD_RETRIES_MAX;
    const baseMs = this.options.retryBaseDelayMs ?? DOWNLOAD_RETRY_BASE_DELAY_MS;
    const capMs = this.options.retryDelayMaxMs ?? DOWNLOAD_RETRY_DELAY_MAX_MS;
    let failures = 0;
    for (;;) {
      const before = progressOf();
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof RetryableError)) throw error;
        if (done()) return undefined as T;
        failures = progressOf() > before ? 1 : failures + 1;
        if (failures > retriesMax) throw this.exhausted(error, retriesMax);
        const backoffMs = Math.min(capMs, baseMs * 2 ** (failures - 1));
        const delayMs = Math.min(capMs, Math.max(backoffMs, error.retryAfterMs ?? 0));
        await sleepMs(delayMs, undefined, { signal: this.signal });
      }
    }
  }

  private exhausted(error: RetryableError, retriesMax: number): DownloadError {
    const attempts = `${retriesMax + 1} attempts`;
    if (error.networkCode !== null && this.downloadedBytes === 0) {
      return new DownloadError(
        "network",
        `${error.message} (${attempts}): is this machine offline? Check the network, or set HF_ENDPOINT to a reachable mirror`,
      );
    }
    if (error.networkCode !== null) return new DownloadError("network", `${error.message} (${attempts}); run the download again to resume`);
    return new DownloadError("http", `${error.message} (gave up after ${attempts}); run the download again to resume`);
  }

  private async verify(probe: Probe): Promise<string> {
    const size = (await stat(this.partialPath)).size;
    if (size !== probe.totalBytes) {
      await this.discardPartial();
      throw new DownloadError("size_mismatch", `${this.options.url}: downloaded ${size} bytes, expected ${probe.totalBytes}`);
    }
    const sha256 = await sha256OfFile(this.partialPath, this.signal);
    const expected = this.options.expectedSha256 ?? probe.linkedSha256;
    if (expected !== null && sha256 !== expected) {
      await this.discardPartial();
      throw new DownloadError("checksum", `${this.options.url}: sha256 is ${sha256}, expected ${expected}; the corrupt download was deleted`);
    }
    return sha256;
  }

  private async discardPartial(): Promise<void> {
    await rm(this.partialPath, { force: true });
    await rm(partialStatePathOf(this.options.destinationPath), { force: true });
  }

  private async maybeSaveState(): Promise<void> {
    const now = this.nowMs();
    if (this.state === null || now - this.lastSaveAtMs < DOWNLOAD_STATE_SAVE_INTERVAL_MS) return;
    this.lastSaveAtMs = now;
    await this.saveState(this.state);
  }

  private async saveState(state: PartialState): Promise<void> {
    await writeFileAtomic(partialStatePathOf(this.options.destinationPath), JSON.stringify(state));
  }

  private emitProgress(final: boolean, phase: DownloadProgressInfo["phase"]): void {
    const onProgress = this.options.onProgress;
    const total = this.state?.totalBytes ?? 0;
    const now = this.nowMs();
    this.samples.push({ atMs: now, bytes: this.downloadedBytes });
    while (this.samples.length > RATE_SAMPLES_MAX || (this.samples.length > 2 && now - this.samples[0]!.atMs > RATE_WINDOW_MS)) this.samples.shift();
    if (onProgress === undefined) return;
    if (!final && now - this.lastProgressAtMs < (this.options.progressIntervalMs ?? DOWNLOAD_PROGRESS_INTERVAL_MS)) return;
    this.lastProgressAtMs = now;
    const first = this.samples[0]!;
    const elapsedMs = now - first.atMs;
    const bytesPerSecond = elapsedMs > 0 ? ((this.downloadedBytes - first.bytes) * 1000) / elapsedMs : 0;
    const etaSeconds = bytesPerSecond > 0 ? (total - this.downloadedBytes) / bytesPerSecond : null;
    onProgress({ downloadedBytes: this.downloadedBytes, totalBytes: total, bytesPerSecond, etaSeconds, phase });
  }
}

/** One range per chunk, contiguous; a single chunk when the file is small or ranges are unsupported. */
export function planChunks(totalBytes: number, acceptsRanges: boolean, parallelChunks: number, parallelThresholdBytes: number): ChunkState[] {
  const count = acceptsRanges && totalBytes >= parallelThresholdBytes ? Math.max(1, Math.min(parallelChunks, DOWNLOAD_PARALLEL_CHUNKS_MAX, totalBytes)) : 1;
  const chunks: ChunkState[] = [];
  const size = Math.ceil(totalBytes / count);
  for (let start = 0; start < totalBytes; start += size) chunks.push({ start, end: Math.min(totalBytes, start + size), next: start });
  if (chunks.length === 0) chunks.push({ start: 0, end: 0, next: 0 });
  return chunks;
}

function chunkBytesDone(state: PartialState): number {
  return state.chunks.reduce((sum, c) => sum + (c.next - c.start), 0);
}

async function readPartialState(destinationPath: string): Promise<PartialState | null> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(partialStatePathOf(destinationPath), "utf8"));
  } catch {
    return null;
  }
  if (typeof raw !== "object" || raw === null) return null;
  const s = raw as Partial<PartialState>;
  if (typeof s.totalBytes !== "number" || !Array.isArray(s.chunks) || typeof s.url !== "string") return null;
  for (const c of s.chunks) {
    if (typeof c?.start !== "number" || typeof c.end !== "number" || typeof c.next !== "number" || c.next < c.start || c.next > c.end) return null;
  }
  return { url: s.url, etag: typeof s.etag === "string" ? s.etag : null, totalBytes: s.totalBytes, chunks: s.chunks };
}

let temporaryFileCounter = 0;

export async function writeFileAtomic(file: string, contents: string): Promise<void> {
  // Unique per call: two writers of one file never share a temporary.
  temporaryFileCounter += 1;
  const temporary = `${file}.tmp-${process.pid}-${temporaryFileCounter}`;
  await writeFile(temporary, contents);
  await rename(temporary, file);
}

export async function sha256OfFile(file: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  for await (const piece of createReadStream(file, signal === undefined ? {} : { signal })) hash.update(piece as Buffer);
  return hash.digest("hex");
}

function parseContentRange(raw: string | null): { start: number; end: number; totalBytes: number | null } | null {
  const match = raw === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(raw.trim());
  if (match === null) return null;
  return { start: Number(match[1]), end: Number(match[2]), totalBytes: match[3] === "*" ? null : Number(match[3]) };
}

function numberHeader(response: Response, name: string): number | null {
  const raw = response.headers.get(name);
  if (raw === null || !/^\d+$/.test(raw.trim())) return null;
  return Number(raw);
}

function normalizeEtag(raw: string | null): string | null {
  if (raw === null) return null;
  return raw.replace(/^W\//, "").replace(/^"|"$/g, "");
}

function retryAfterMs(response: Response): number | null {
  const raw = response.headers.get("retry-after");
  if (raw === null) return null;
  const seconds = Number(raw);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : null;
}

/**
 * A response body, piece by piece, until the signal aborts. fetch's body stream can leave a read
 * pending forever when the request is aborted mid-body; the download would then never finish (and
 * its file handle would only be closed by the garbage collector), so the wait races the abort.
 */
async function* bodyPieces(body: ReadableStream<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  let onAbort = (): void => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(abortReason(signal));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => undefined); // observed through the race below; never unhandled
  try {
    for (;;) {
      const read = await Promise.race([reader.read(), aborted]);
      if (read.done) return;
      yield read.value;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    // Not awaited: after an abort the cancel may never settle either.
    reader.cancel().catch(() => undefined);
  }
}

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const error = new Error("the download was aborted");
  error.name = "AbortError";
  return error;
}

function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || (error as NodeJS.ErrnoException).code === "ABORT_ERR");
}

function networkCodeOf(error: unknown): string | null {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === "string") return code;
    current = (current as Error & { cause?: unknown }).cause;
  }
  return null;
}

function describeNetworkError(error: unknown): string {
  const code = networkCodeOf(error);
  const message = error instanceof Error ? error.message : String(error);
  return code === null ? message : `${message} (${code})`;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value.toFixed(0) : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}
