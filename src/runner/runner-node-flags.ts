// Node flags every runner process starts with (src/runner/supervisor.ts), kept apart so the engine
// bench can start its measuring child exactly as a runner is started without importing the supervisor.

/**
 * A runner's JS heap is small (the weights, KV cache and scratch live in native memory); V8's
 * default young generation (up to 3 × 16 MB semi-spaces) only holds short-lived garbage there.
 * 1 MB semi-spaces measured −16 MB peak RSS on a 0.5B model with no decode or prefill slowdown.
 */
export const RUNNER_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1"];
