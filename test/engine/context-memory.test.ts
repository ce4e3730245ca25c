// An explicit --ctx-size whose KV cache cannot fit in memory is refused at load with the numbers,
// instead of an allocation the OS answers by killing the runner.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { EngineShardSpec } from "../../src/engine/engine.ts";
import { chooseContextSize, kvBytesPerToken } from "../../src/engine/gguf-engine.ts";
import type { ModelArch } from "../../src/engine/model.ts";
import type { ModelId } from "../../src/shared/ids.ts";

// Only the KV geometry and context length matter here.
const arch = { nHeadKv: 2, headDim: 64, contextLength: 32_768 } as ModelArch;
const spec = (contextSize: number | null): EngineShardSpec => ({
  modelId: "m" as ModelId,
  modelPath: "/nonexistent.gguf",
  layerStart: 0,
  layerEnd: 24,
  layerCount: 24,
  contextSize,
  threads: 1,
  options: {},
});

test("an explicit context within 75% of memory is used as given", () => {
  const perToken = kvBytesPerToken(arch, 24);
  assert.equal(chooseContextSize(arch, spec(100_000), perToken * 200_000), 100_000);
});

test("an explicit context whose KV cache exceeds 75% of memory is refused, naming the sizes", () => {
  const perToken = kvBytesPerToken(arch, 24);
  const memoryBytes = perToken * 100_000;
  assert.throws(
    () => chooseContextSize(arch, spec(1_000_000), memoryBytes),
    (error: Error) => /1000000 tokens.*--ctx-size.*GiB of KV cache for 24 layer\(s\).*GiB of memory/.test(error.message),
  );
});
