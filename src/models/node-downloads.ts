// A node's model downloads as the cluster sees them: starts pulls into the local store and reports
// each one as NodeDownloadProgress events through the node's WorkerEventSink, at most one
// "downloading" event per interval (the event log must not fill with progress ticks). At start the
// node announces the models it already holds, so every node knows where copies are.
// In a cluster each node downloads the whole file for now, not only its shard's tensors.
import type { WorkerEventSink } from "../node/cluster-port.ts";
import type { ModelId, NodeId } from "../shared/ids.ts";
import type { DownloadProgress } from "../shared/types.ts";
import type { DownloadProgressInfo } from "./download.ts";
import { DownloadError } from "./download.ts";
import type { CatalogueItem, LocalModelRegistry } from "./store.ts";
import { ModelNotDownloadableError, UnknownModelError } from "./store.ts";

/** At most 4 progress events per second per download. */
export const DOWNLOAD_PROGRESS_EVENT_INTERVAL_MS = 250;

export type StartDownloadResult = "started" | "running" | "complete";

/** What the API needs to manage this node's models. */
export interface ModelService {
  catalogue(): readonly CatalogueItem[];
  /** Throws UnknownModelError / ModelNotDownloadableError. */
  startDownload(modelId: string): StartDownloadResult;
  /** Throws UnknownModelError / ModelNotDownloadableError. Returns whether a local copy was deleted. */
  remove(modelId: string): Promise<boolean>;
}

export interface NodeModelDownloadsOptions {
  readonly registry: LocalModelRegistry;
  readonly nodeId: NodeId;
  readonly sink: WorkerEventSink;
  readonly nowMs?: () => number;
  readonly progressIntervalMs?: number;
  readonly onError?: (modelId: string, error: unknown) => void;
}

export class NodeModelDownloads implements ModelService {
  private readonly running = new Map<string, { readonly controller: AbortController; done: Promise<void> }>();

  constructor(private readonly options: NodeModelDownloadsOptions) {}

  catalogue(): readonly CatalogueItem[] {
    return this.options.registry.catalogue();
  }

  /** Reports every model this node holds (downloaded or from a local card) as complete. */
  announce(): void {
    for (const item of this.options.registry.catalogue()) {
      if (item.state !== "complete") continue;
      const sizeBytes = item.sizeBytes ?? 0;
      this.report(item.id, { status: "complete", downloadedBytes: sizeBytes, totalBytes: sizeBytes, error: null });
    }
  }

  startDownload(modelId: string): StartDownloadResult {
    const item = this.options.registry.item(modelId);
    if (item === undefined) throw new UnknownModelError(`unknown model ${JSON.stringify(modelId)}`);
    if (item.state === "complete") return "complete";
    if (this.running.has(modelId)) return "running";
    if (item.repo === null) throw new ModelNotDownloadableError(`${modelId} has no hub repo to download from`);
    const controller = new AbortController();
    const entry = { controller, done: Promise.resolve() };
    this.running.set(modelId, entry);
    const totalGuess = item.sizeBytes ?? item.approximateSizeBytes ?? 0;
    this.report(item.id, { status: "pending", downloadedBytes: item.downloadedBytes, totalBytes: totalGuess, error: null });
    const throttle = this.throttled(item.id);
    entry.done = this.options.registry
      .pull(modelId, { signal: controller.signal, onProgress: throttle })
      .then(
        (card) => this.report(item.id, { status: "complete", downloadedBytes: card.sizeBytes, totalBytes: card.sizeBytes, error: null }),
        (error: unknown) => {
          this.options.onError?.(modelId, error);
          const progress = this.options.registry.item(modelId);
          this.report(item.id, {
            status: "failed",
            downloadedBytes: progress?.downloadedBytes ?? 0,
            totalBytes: progress?.sizeBytes ?? totalGuess,
            error: error instanceof Error ? error.message : String(error),
          });
        },
      )
      .finally(() => {
        this.running.delete(modelId);
      });
    return "started";
  }

  async remove(modelId: string): Promise<boolean> {
    const running = this.running.get(modelId);
    if (running !== undefined) {
      // Its "failed: cancelled" report goes out first, so "removed" is the last word.
      running.controller.abort();
      await running.done;
    }
    const removed = await this.options.registry.remove(modelId);
    this.report(modelId as ModelId, { status: "removed", downloadedBytes: 0, totalBytes: 0, error: null });
    return removed;
  }

  /** Node shutdown: cancels running downloads (their partial files stay for a later resume). */
  async stop(): Promise<void> {
    const running = [...this.running.values()];
    for (const entry of running) entry.controller.abort();
    await Promise.all(running.map((entry) => entry.done));
  }

  private throttled(modelId: ModelId): (progress: DownloadProgressInfo) => void {
    const nowMs = this.options.nowMs ?? Date.now;
    const intervalMs = this.options.progressIntervalMs ?? DOWNLOAD_PROGRESS_EVENT_INTERVAL_MS;
    let lastAtMs = -Infinity;
    return (progress) => {
      const now = nowMs();
      if (now - lastAtMs < intervalMs) return;
      lastAtMs = now;
      this.report(modelId, { status: "downloading", downloadedBytes: progress.downloadedBytes, totalBytes: progress.totalBytes, error: null });
    };
  }

  private report(modelId: ModelId, progress: Omit<DownloadProgress, "modelId">): void {
    this.options.sink.sendWorkerEvent({ type: "NodeDownloadProgress", nodeId: this.options.nodeId, progress: { modelId, ...progress } });
  }
}

export function isModelRequestError(error: unknown): error is UnknownModelError | ModelNotDownloadableError | DownloadError {
  return error instanceof UnknownModelError || error instanceof ModelNotDownloadableError || error instanceof DownloadError;
}
