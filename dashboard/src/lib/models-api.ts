// Model catalogue for the Models page. GET /models (catalogue with download state) is preferred;
// a node without it falls back to GET /v1/models (servable models only). Field names are read
// loosely (snake_case or camelCase) so a small API change does not blank the page.

import { apiFetch } from "./api.svelte.ts";

export interface ModelEntry {
  readonly id: string;
  readonly name: string;
  readonly sizeBytes: number | null;
  readonly memoryBytes: number | null;
  readonly layerCount: number | null;
  readonly quantization: string | null;
  /** "downloaded" = on this node; "bundled" = ships with skein; null = unknown (fallback list). */
  readonly availability: "downloaded" | "bundled" | "remote" | null;
  readonly canDownload: boolean;
  /** The hub asks users to accept terms: downloading needs HF_TOKEN on the node. */
  readonly gated: boolean;
}

type Loose = Record<string, unknown>;

function pick(record: Loose, ...names: string[]): unknown {
  for (const name of names) if (record[name] !== undefined && record[name] !== null) return record[name];
  return undefined;
}
const numberOrNull = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const stringOrNull = (v: unknown): string | null => (typeof v === "string" && v !== "" ? v : null);

export function normalizeModel(raw: Loose, fromCatalogue: boolean): ModelEntry | null {
  const id = stringOrNull(pick(raw, "id", "model_id", "modelId"));
  if (id === null) return null;
  const download = (typeof raw["download"] === "object" && raw["download"] !== null ? raw["download"] : {}) as Loose;
  // GET /models: download.state is absent | partial | downloading | complete; source is bundled | catalog | user.
  const downloadState = stringOrNull(pick(download, "state", "status")) ?? stringOrNull(pick(raw, "status", "download_status"));
  const source = stringOrNull(raw["source"]);
  let availability: ModelEntry["availability"] = null;
  if (fromCatalogue) {
    if (source === "bundled" || raw["bundled"] === true) availability = "bundled";
    else if (downloadState === "complete" || raw["downloaded"] === true) availability = "downloaded";
    else availability = "remote";
  }
  return {
    id,
    name: stringOrNull(pick(raw, "name", "display_name")) ?? id,
    sizeBytes: numberOrNull(pick(raw, "size_bytes", "sizeBytes", "approximate_size_bytes", "approximateSizeBytes")),
    memoryBytes: numberOrNull(pick(raw, "memory_bytes", "memoryBytes", "memory_required_bytes")),
    layerCount: numberOrNull(pick(raw, "layer_count", "layerCount", "n_layers")),
    quantization: stringOrNull(pick(raw, "quantization", "quant")),
    availability,
    // A model added by hand ("user") has no source to download from.
    canDownload: fromCatalogue && availability === "remote" && source !== "user",
    gated: raw["gated"] === true,
  };
}

export async function fetchModels(): Promise<{ models: ModelEntry[]; catalogue: boolean }> {
  const catalogue = await apiFetch("/models", { headers: { accept: "application/json" } });
  if (catalogue.ok && (catalogue.headers.get("content-type") ?? "").includes("json")) {
    return { models: listOf(await catalogue.json()).flatMap((m) => normalizeModel(m, true) ?? []), catalogue: true };
  }
  const servable = await apiFetch("/v1/models");
  if (!servable.ok) throw new Error(`GET /v1/models answered ${servable.status}`);
  return { models: listOf(await servable.json()).flatMap((m) => normalizeModel(m, false) ?? []), catalogue: false };
}

function listOf(body: unknown): Loose[] {
  if (Array.isArray(body)) return body as Loose[];
  if (typeof body === "object" && body !== null) {
    const data = (body as Loose)["data"] ?? (body as Loose)["models"];
    if (Array.isArray(data)) return data as Loose[];
  }
  return [];
}

export async function apiError(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: { message?: string } };
    if (body.error?.message) return body.error.message;
  } catch {
    // not JSON
  }
  return `${response.status} ${response.statusText}`;
}

export async function startDownload(modelId: string): Promise<void> {
  const response = await apiFetch(`/models/${encodeURIComponent(modelId)}/download`, { method: "POST" });
  if (!response.ok) throw new Error(await apiError(response));
}

export interface PreviewShard {
  nodeId: string;
  layerStart: number;
  layerEnd: number;
  sizeBytes: number;
}
export type Preview = { nodeCount: number; ok: true; shards: PreviewShard[] } | { nodeCount: number; ok: false; reason: string };

export async function fetchPreviews(modelId: string): Promise<Preview[]> {
  const response = await apiFetch(`/instance/previews?model=${encodeURIComponent(modelId)}`);
  if (!response.ok) throw new Error(await apiError(response));
  return ((await response.json()) as { previews: Preview[] }).previews;
}

export async function launchInstance(modelId: string, minNodes: number): Promise<string> {
  const response = await apiFetch("/instance", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: modelId, min_nodes: minNodes, sharding: "pipeline" }),
  });
  if (!response.ok) throw new Error(await apiError(response));
  return ((await response.json()) as { instance_id: string }).instance_id;
}

export async function deleteInstance(instanceId: string): Promise<void> {
  const response = await apiFetch(`/instance/${encodeURIComponent(instanceId)}`, { method: "DELETE" });
  if (!response.ok) throw new Error(await apiError(response));
}
