// nextPrefillChunkTokens: the largest chunk on a fast machine, chunks of about the target time on a slow one.
import assert from "node:assert/strict";
import { test } from "node:test";
import { nextPrefillChunkTokens } from "../../src/runner/prefill-chunks.ts";
import { PREFILL_CHUNK_TARGET_MS, PREFILL_CHUNK_TOKENS, PREFILL_CHUNK_TOKENS_MIN, PREFILL_FIRST_CHUNK_TOKENS } from "../../src/shared/limits.ts";

test("the first chunk is the measuring one; then chunks fill the target time, within [min, max]", () => {
  assert.equal(nextPrefillChunkTokens(null), PREFILL_FIRST_CHUNK_TOKENS);
  // 318 tokens/s (the 0.5B model here): the largest chunk takes 0.8 s, under the target.
  assert.equal(nextPrefillChunkTokens({ tokens: 64, elapsedMs: 201 }), PREFILL_CHUNK_TOKENS);
  // 16 tokens/s (an 8B model on two slow cores): 32 tokens take 2 s.
  assert.equal(nextPrefillChunkTokens({ tokens: 64, elapsedMs: 4_000 }), 32);
  // Slower than the floor allows: the floor, so progress is still made in useful steps.
  assert.equal(nextPrefillChunkTokens({ tokens: 8, elapsedMs: 60_000 }), PREFILL_CHUNK_TOKENS_MIN);
  // A clock that did not move (a coarse timer) is no evidence of slowness.
  assert.equal(nextPrefillChunkTokens({ tokens: 64, elapsedMs: 0 }), PREFILL_CHUNK_TOKENS);
  const atTarget = nextPrefillChunkTokens({ tokens: 100, elapsedMs: PREFILL_CHUNK_TARGET_MS });
  assert.equal(atTarget, 100);
});
