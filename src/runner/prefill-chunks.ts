// How many prompt tokens the next prefill call takes. A fast machine gets the largest chunks (the
// fewest calls, the best matrix-multiply batches); a large model on a slow CPU gets chunks that each
// take about PREFILL_CHUNK_TARGET_MS, so the runner answers heartbeats and cancels in time.
import { PREFILL_CHUNK_TARGET_MS, PREFILL_CHUNK_TOKENS, PREFILL_CHUNK_TOKENS_MIN, PREFILL_FIRST_CHUNK_TOKENS } from "../shared/limits.ts";

/** The last chunk's size and duration; null before the first chunk. */
export interface PrefillChunkTiming {
  readonly tokens: number;
  readonly elapsedMs: number;
}

export function nextPrefillChunkTokens(last: PrefillChunkTiming | null): number {
  if (last === null) return PREFILL_FIRST_CHUNK_TOKENS;
  if (last.tokens <= 0 || last.elapsedMs <= 0) return PREFILL_CHUNK_TOKENS;
  const msPerToken = last.elapsedMs / last.tokens;
  const fitting = Math.floor(PREFILL_CHUNK_TARGET_MS / msPerToken);
  return Math.max(PREFILL_CHUNK_TOKENS_MIN, Math.min(PREFILL_CHUNK_TOKENS, fitting));
}
