// GenerationParams for tests and benchmarks: greedy, no penalties, a one-line chat; override what matters.
import type { GenerationParams } from "../../src/shared/types.ts";

export function testGenerationParams(overrides: Partial<GenerationParams> = {}): GenerationParams {
  return {
    messages: [{ role: "user", content: "Say something." }],
    maxTokens: 16,
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 0,
    seed: null,
    stop: [],
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logprobs: false,
    topLogprobs: 0,
    ...overrides,
  };
}
