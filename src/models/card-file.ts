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
  /** A file on the Hugging Face hub (`skein models pull ID` fetches it into the store). */
  repo: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/, "repo must be owner/name").optional(),
  file: z.string().regex(/^[A-Za-z0-9._-]+\.gguf$/, "file must be a .gguf file name").optional(),
  revision: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).default("main"),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lowercase hex digits").nullable().default(null),
}).refine((c) => (c.repo === undefined) === (c.file === undefined), { message: "repo and file go together" });

export class ModelCardError extends Error {
  override name = "ModelCardError";
}

/** Where a user card's GGUF comes from when it has no local path. */
export interface UserCardHubSource {
  readonly repo: string;
  readonly file: string;
  readonly revision: string;
  readonly sha256: string | null;
}

export interface UserModelCard {
  readonly card: ModelCard;
  readonly hub: UserCardHubSource | null;
}

export function readModelCardFile(file: string): ModelCard {
  return readUserModelCardFile(file).card;
}

/** A card file with its hub source (repo + file), for the model store. */
export function readUserModelCardFile(file: string): UserModelCard {
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
  const modelCard: ModelCard = {
    modelId: card.id,
    name: card.name ?? card.id,
    layerCount: card.layerCount,
    sizeBytes: card.sizeBytes,
    contextLength: card.contextLength,
    path: card.path === null ? null : path.resolve(dir, card.path),
    engineModule: card.engineModule === null ? null : pathToFileURL(path.resolve(dir, card.engineModule)).href,
    engineOptions: card.engineOptions,
  };
  const hub = card.repo !== undefined && card.file !== undefined ? { repo: card.repo, file: card.file, revision: card.revision, sha256: card.sha256 } : null;
  return { card: modelCard, hub };
}
