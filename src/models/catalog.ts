// The curated catalogue: real GGUF files on the Hugging Face hub that skein's engine can run
// (architectures llama, qwen2, qwen3). Sizes and hashes come from the hub's file pages where they
// could be looked up; the hub only shows rounded sizes there, so `sizeBytes` (exact) is null unless
// known and `approximateSizeBytes` is what the page rounds to. The downloader takes the exact size
// from the server's headers and checks it against `sizeBytes` when that is known, and verifies
// `sha256` (or, when null, the hub's own X-Linked-Etag hash) before a file is used. A card with a
// sha256 pins `revision` to the commit at which that hash was recorded, so the pin cannot go stale
// when a repo re-uploads a file; the others follow "main".
import { z } from "zod";
import { ModelIdSchema } from "../shared/ids.ts";

export const ARCHITECTURES = ["llama", "qwen2", "qwen3"] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

/** Context the memory estimate of a card assumes (tokens of KV cache). */
export const MEMORY_ESTIMATE_CONTEXT_TOKENS = 4096;
/** Runtime overhead per loaded model in the memory estimate (scratch buffers, tokenizer, Node). */
export const MEMORY_OVERHEAD_BYTES = 128 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lowercase hex digits");

export const CatalogEntrySchema = z
  .object({
    id: ModelIdSchema,
    name: z.string().min(1),
    /** owner/name on the hub. */
    repo: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/, "repo must be owner/name"),
    file: z.string().regex(/^[A-Za-z0-9._-]+\.gguf$/, "file must be a .gguf file name without folders"),
    revision: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
    quantization: z.string().regex(/^(F32|F16|BF16|Q8_0|Q[2-6]_K(_[SML])?|Q4_0|Q4_1|Q5_0|Q5_1)$/),
    architecture: z.enum(ARCHITECTURES),
    layerCount: z.number().int().min(1).max(512),
    contextLength: z.number().int().min(512),
    kvHeadCount: z.number().int().min(1),
    headDimension: z.number().int().min(1),
    /** Exact file size; null when only a rounded figure was available. */
    sizeBytes: z.number().int().min(1).nullable(),
    approximateSizeBytes: z.number().int().min(1),
    /** Weights + f16 KV cache for MEMORY_ESTIMATE_CONTEXT_TOKENS + overhead. */
    memoryBytes: z.number().int().min(1),
    sha256: sha256Hex.nullable(),
    license: z.string().min(1),
    /** The repo asks users to accept terms: downloads need HF_TOKEN. */
    gated: z.boolean(),
  })
  .refine((e) => e.sizeBytes === null || Math.abs(e.sizeBytes - e.approximateSizeBytes) <= e.approximateSizeBytes * 0.01, {
    message: "sizeBytes and approximateSizeBytes disagree by more than 1%",
  })
  .refine((e) => e.memoryBytes > e.approximateSizeBytes, { message: "memoryBytes must exceed the file size" });

export type CatalogEntry = z.infer<typeof CatalogEntrySchema>;

/** f16 K and V for every layer: 2 tensors × kvHeads × headDim × 2 bytes per token per layer. */
export function kvCacheBytesPerToken(layerCount: number, kvHeadCount: number, headDimension: number): number {
  return 2 * layerCount * kvHeadCount * headDimension * 2;
}

export function estimateMemoryBytes(fileBytes: number, layerCount: number, kvHeadCount: number, headDimension: number, contextTokens: number): number {
  return fileBytes + kvCacheBytesPerToken(layerCount, kvHeadCount, headDimension) * contextTokens + MEMORY_OVERHEAD_BYTES;
}

const MB = 1_000_000;

type EntryInput = Omit<CatalogEntry, "memoryBytes" | "revision" | "id"> & { id: string; revision?: string };

function entry(input: EntryInput): CatalogEntry {
  const fileBytes = input.sizeBytes ?? input.approximateSizeBytes;
  return CatalogEntrySchema.parse({
    ...input,
    revision: input.revision ?? "main",
    memoryBytes: estimateMemoryBytes(fileBytes, input.layerCount, input.kvHeadCount, input.headDimension, MEMORY_ESTIMATE_CONTEXT_TOKENS),
  });
}

// Layer counts, context lengths and KV geometry are the models' published configurations.
export const CATALOG: readonly CatalogEntry[] = [
  entry({
    id: "smollm2-135m-instruct", name: "SmolLM2 135M Instruct (Q8_0)",
    repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", file: "smollm2-135m-instruct-q8_0.gguf", quantization: "Q8_0",
    architecture: "llama", layerCount: 30, contextLength: 8192, kvHeadCount: 3, headDimension: 64,
    sizeBytes: null, approximateSizeBytes: 145 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "smollm2-360m-instruct", name: "SmolLM2 360M Instruct (Q8_0)",
    repo: "HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", file: "smollm2-360m-instruct-q8_0.gguf", quantization: "Q8_0",
    architecture: "llama", layerCount: 32, contextLength: 8192, kvHeadCount: 5, headDimension: 64,
    revision: "2633adad3eb0aec759aec7f41db367d974571ecf",
    sizeBytes: 386_404_992, approximateSizeBytes: 386 * MB,
    sha256: "48ab3034d0dd401fbc721eb1df3217902fee7dab9078992d66431f09b7750201", license: "apache-2.0", gated: false,
  }),
  entry({
    id: "smollm2-1.7b-instruct", name: "SmolLM2 1.7B Instruct (Q4_K_M)",
    repo: "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF", file: "smollm2-1.7b-instruct-q4_k_m.gguf", quantization: "Q4_K_M",
    architecture: "llama", layerCount: 24, contextLength: 8192, kvHeadCount: 32, headDimension: 64,
    sizeBytes: null, approximateSizeBytes: 1_060 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen2.5-0.5b-instruct", name: "Qwen2.5 0.5B Instruct (Q4_K_M)",
    repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", file: "qwen2.5-0.5b-instruct-q4_k_m.gguf", quantization: "Q4_K_M",
    architecture: "qwen2", layerCount: 24, contextLength: 32768, kvHeadCount: 2, headDimension: 64,
    revision: "12145bd1d629190a4d44254073650877954d02c9", sizeBytes: null, approximateSizeBytes: 491 * MB,
    sha256: "74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db", license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen2.5-1.5b-instruct", name: "Qwen2.5 1.5B Instruct (Q4_K_M)",
    repo: "bartowski/Qwen2.5-1.5B-Instruct-GGUF", file: "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "qwen2", layerCount: 28, contextLength: 32768, kvHeadCount: 2, headDimension: 128,
    revision: "85553858e3522ce5b531285b2202bdb40fab1624", sizeBytes: null, approximateSizeBytes: 986 * MB,
    sha256: "50961d9b7d3b89e46be230528fc66d38bbdda8ac3748323dd34f129a714124fc", license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen2.5-3b-instruct", name: "Qwen2.5 3B Instruct (Q4_K_M)",
    repo: "Qwen/Qwen2.5-3B-Instruct-GGUF", file: "qwen2.5-3b-instruct-q4_k_m.gguf", quantization: "Q4_K_M",
    architecture: "qwen2", layerCount: 36, contextLength: 32768, kvHeadCount: 2, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 2_100 * MB, sha256: null, license: "qwen-research", gated: false,
  }),
  entry({
    id: "qwen2.5-7b-instruct", name: "Qwen2.5 7B Instruct (Q4_K_M)",
    repo: "bartowski/Qwen2.5-7B-Instruct-GGUF", file: "Qwen2.5-7B-Instruct-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "qwen2", layerCount: 28, contextLength: 32768, kvHeadCount: 4, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 4_680 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen3-0.6b", name: "Qwen3 0.6B (Q8_0)",
    repo: "Qwen/Qwen3-0.6B-GGUF", file: "Qwen3-0.6B-Q8_0.gguf", quantization: "Q8_0",
    architecture: "qwen3", layerCount: 28, contextLength: 40960, kvHeadCount: 8, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 639 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen3-1.7b", name: "Qwen3 1.7B (Q8_0)",
    repo: "Qwen/Qwen3-1.7B-GGUF", file: "Qwen3-1.7B-Q8_0.gguf", quantization: "Q8_0",
    architecture: "qwen3", layerCount: 28, contextLength: 40960, kvHeadCount: 8, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 1_830 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen3-4b", name: "Qwen3 4B (Q4_K_M)",
    repo: "Qwen/Qwen3-4B-GGUF", file: "Qwen3-4B-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "qwen3", layerCount: 36, contextLength: 40960, kvHeadCount: 8, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 2_500 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "qwen3-8b", name: "Qwen3 8B (Q4_K_M)",
    repo: "Qwen/Qwen3-8B-GGUF", file: "Qwen3-8B-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "qwen3", layerCount: 36, contextLength: 40960, kvHeadCount: 8, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 5_030 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
  entry({
    id: "llama-3.2-1b-instruct", name: "Llama 3.2 1B Instruct (Q4_K_M)",
    repo: "bartowski/Llama-3.2-1B-Instruct-GGUF", file: "Llama-3.2-1B-Instruct-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "llama", layerCount: 16, contextLength: 131072, kvHeadCount: 8, headDimension: 64,
    revision: "d52af3776f99ddf220e5ffd3f93b2a4e4df105be", sizeBytes: null, approximateSizeBytes: 808 * MB,
    sha256: "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83", license: "llama3.2", gated: false,
  }),
  entry({
    id: "llama-3.2-3b-instruct", name: "Llama 3.2 3B Instruct (Q4_K_M)",
    repo: "bartowski/Llama-3.2-3B-Instruct-GGUF", file: "Llama-3.2-3B-Instruct-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "llama", layerCount: 28, contextLength: 131072, kvHeadCount: 8, headDimension: 128,
    revision: "c346bfc2029e79ba6d7edf026cf01fe44242db0d", sizeBytes: null, approximateSizeBytes: 2_020 * MB,
    sha256: "6c1a2b41161032677be168d354123594c0e6e67d2b9227c84f296ad037c728ff", license: "llama3.2", gated: false,
  }),
  entry({
    id: "mistral-7b-instruct-v0.3", name: "Mistral 7B Instruct v0.3 (Q4_K_M)",
    repo: "bartowski/Mistral-7B-Instruct-v0.3-GGUF", file: "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf", quantization: "Q4_K_M",
    architecture: "llama", layerCount: 32, contextLength: 32768, kvHeadCount: 8, headDimension: 128,
    sizeBytes: null, approximateSizeBytes: 4_370 * MB, sha256: null, license: "apache-2.0", gated: false,
  }),
];

export function findCatalogEntry(catalog: readonly CatalogEntry[], id: string): CatalogEntry | undefined {
  return catalog.find((e) => e.id === id);
}
