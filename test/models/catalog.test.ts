import { test } from "node:test";
import assert from "node:assert/strict";
import { CATALOG, CatalogEntrySchema, estimateMemoryBytes, findCatalogEntry } from "../../src/models/catalog.ts";

test("every catalogue card passes the schema", () => {
  for (const entry of CATALOG) {
    const parsed = CatalogEntrySchema.safeParse(entry);
    assert.ok(parsed.success, `${entry.id}: ${parsed.success ? "" : parsed.error.message}`);
  }
});

test("ids and repo/file pairs are unique", () => {
  assert.equal(new Set(CATALOG.map((e) => e.id)).size, CATALOG.length);
  assert.equal(new Set(CATALOG.map((e) => `${e.repo}/${e.file}`)).size, CATALOG.length);
});

test("the issue's models are all there", () => {
  const wanted = [
    "smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct",
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "mistral-7b-instruct-v0.3",
  ];
  for (const id of wanted) assert.ok(findCatalogEntry(CATALOG, id), id);
});

test("the schema refuses a malformed card", () => {
  const good = CATALOG[0]!;
  assert.equal(CatalogEntrySchema.safeParse({ ...good, sha256: "ABC" }).success, false);
  assert.equal(CatalogEntrySchema.safeParse({ ...good, file: "../evil.gguf" }).success, false);
  assert.equal(CatalogEntrySchema.safeParse({ ...good, repo: "no-owner" }).success, false);
  assert.equal(CatalogEntrySchema.safeParse({ ...good, architecture: "gpt2" }).success, false);
  assert.equal(CatalogEntrySchema.safeParse({ ...good, sizeBytes: good.approximateSizeBytes * 2 }).success, false);
});

test("memory estimate counts the f16 KV cache", () => {
  // 2 layers × 1 KV head × 4 dims × 2 (K,V) × 2 bytes = 32 bytes per token.
  const base = estimateMemoryBytes(1000, 2, 1, 4, 0);
  assert.equal(estimateMemoryBytes(1000, 2, 1, 4, 10) - base, 320);
});
