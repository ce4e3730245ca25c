// GET /models (the whole catalogue: sizes, this node's download state, which nodes hold a copy),
// POST /models/{id}/download (start a download on this node; progress arrives as
// NodeDownloadProgress events, visible in /state and /events), DELETE /models/{id}.
import { Hono } from "hono";
import type { CatalogueItem } from "../models/store.ts";
import { ModelNotDownloadableError, UnknownModelError } from "../models/store.ts";
import type { ModelService } from "../models/node-downloads.ts";
import { ID_LENGTH_MAX, ModelIdSchema } from "../shared/ids.ts";
import type { State } from "../shared/state.ts";
import type { ApiDeps } from "./deps.ts";
import type { ApiEnv } from "./env.ts";
import { ApiError } from "./errors.ts";

function parseModelParam(raw: string): string {
  const parsed = ModelIdSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ApiError(400, { message: `malformed model id ${JSON.stringify(raw.slice(0, ID_LENGTH_MAX))}`, param: "id", code: "invalid_model_id" });
  }
  return parsed.data;
}

function unavailable(): ApiError {
  return new ApiError(503, { message: "this node has no model store (it was started with a fixed model list)", code: "models_unavailable" });
}

function toApiError(error: unknown): unknown {
  if (error instanceof UnknownModelError) return new ApiError(404, { message: error.message, param: "id", code: "model_not_found" });
  if (error instanceof ModelNotDownloadableError) return new ApiError(409, { message: error.message, param: "id", code: "model_not_downloadable" });
  return error;
}

/** Nodes whose latest report for the model is "complete" (the bundled model: every node). */
export function nodesHolding(state: State, item: CatalogueItem, localNodeId: string): string[] {
  if (item.source === "bundled") return [...new Set([localNodeId, ...Object.keys(state.nodes)])].sort();
  const holders = new Set<string>();
  for (const [nodeId, downloads] of Object.entries(state.downloads)) {
    if (downloads[item.id]?.status === "complete") holders.add(nodeId);
  }
  if (item.state === "complete") holders.add(localNodeId);
  else holders.delete(localNodeId);
  return [...holders].sort();
}

function nodeProgress(state: State, modelId: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [nodeId, downloads] of Object.entries(state.downloads)) {
    const progress = downloads[modelId];
    if (progress === undefined) continue;
    out[nodeId] = { status: progress.status, downloaded_bytes: progress.downloadedBytes, total_bytes: progress.totalBytes, error: progress.error };
  }
  return out;
}

export function catalogueItemJson(item: CatalogueItem, state: State, localNodeId: string): Record<string, unknown> {
  return {
    id: item.id,
    object: "model",
    name: item.name,
    source: item.source,
    repo: item.repo,
    file: item.file,
    quantization: item.quantization,
    architecture: item.architecture,
    layer_count: item.layerCount,
    context_length: item.contextLength,
    size_bytes: item.sizeBytes,
    approximate_size_bytes: item.approximateSizeBytes,
    memory_bytes: item.memoryBytes,
    sha256: item.sha256,
    gated: item.gated,
    download: { state: item.state, downloaded_bytes: item.downloadedBytes },
    held_by: nodesHolding(state, item, localNodeId),
    nodes: nodeProgress(state, item.id),
  };
}

export function modelsRouter(deps: ApiDeps, service: ModelService | null): Hono<ApiEnv> {
  const router = new Hono<ApiEnv>();
  const { cluster } = deps;

  router.get("/models", (c) => {
    const state = cluster.state;
    if (service === null) {
      // A fixed registry (tests, embedders): what it serves is all there is.
      const data = deps.models.list().map((card) =>
        catalogueItemJson(
          {
            id: card.modelId, name: card.name, source: "user", repo: null, file: null, quantization: null, architecture: null,
            layerCount: card.layerCount, contextLength: card.contextLength, sizeBytes: card.sizeBytes, approximateSizeBytes: card.sizeBytes,
            memoryBytes: null, sha256: null, gated: false, state: "complete", downloadedBytes: card.sizeBytes, path: card.path,
          },
          state,
          cluster.nodeId,
        ),
      );
      return c.json({ object: "list", data });
    }
    return c.json({ object: "list", data: service.catalogue().map((item) => catalogueItemJson(item, state, cluster.nodeId)) });
  });

  router.post("/models/:id/download", (c) => {
    const modelId = parseModelParam(c.req.param("id"));
    if (service === null) throw unavailable();
    let result;
    try {
      result = service.startDownload(modelId);
    } catch (error) {
      throw toApiError(error);
    }
    return c.json({ id: modelId, node_id: cluster.nodeId, status: result === "complete" ? "complete" : "downloading" }, result === "complete" ? 200 : 202);
  });

  router.delete("/models/:id", async (c) => {
    const modelId = parseModelParam(c.req.param("id"));
    if (service === null) throw unavailable();
    let removed: boolean;
    try {
      removed = await service.remove(modelId);
    } catch (error) {
      throw toApiError(error);
    }
    return c.json({ id: modelId, node_id: cluster.nodeId, deleted: removed });
  });

  return router;
}
