// Model cards written by users (or tests) as JSON files: `skein --model-card my-model.json`.
// Paths inside a card are relative to the card file.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { ModelIdSchema } from "../shared/ids.ts";
import type { ModelCard } from "./model-card.ts";

const CardFileSchema = z.object({
  id: ModelIdSchema,
  name: z.string().min(1).optional(),
  layerCount: z.number().int().min(1),
  sizeBytes: z.number().int().min(0).default(0),
  contextLength: z.number().int().min(1).default(4096),
  path: z.string().min(1).nullable().default(null),
  /** A module exporting createEngine(); for development and tests (the default is the GGUF engine). */
  engineModule: z.string().min(1).nullable().default(null),
  engineOptions: z.record(z.string(), z.unknown()).default({}),
});

export class ModelCardError extends Error {
  override name = "ModelCardError";
}

export function readModelCardFile(file: string): ModelCard {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ModelCardError(`cannot read model card ${file}: ${(error as Error).message}`);
  }
  const parsed = CardFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new ModelCardError(`invalid model card ${file}: ${issues}`);
  }
  const card = parsed.data;
  const dir = path.dirname(file);
  return {
    modelId: card.id,
    name: card.name ?? card.id,
    layerCount: card.layerCount,
    sizeBytes: card.sizeBytes,
    contextLength: card.contextLength,
    path: card.path === null ? null : path.resolve(dir, card.path),
    engineModule: card.engineModule === null ? null : pathToFileURL(path.resolve(dir, card.engineModule)).href,
    engineOptions: card.engineOptions,
  };
}
