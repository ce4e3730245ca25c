// Shared fixtures for runner tests (not a test file itself).
import type { TaskId } from "../../src/shared/ids.ts";
import type { GenerationParams } from "../../src/shared/types.ts";
import { testGenerationParams } from "../support/generation-params.ts";

/** Runner tests' name for the shared test GenerationParams. */
export const testParams = testGenerationParams;

let taskCounter = 0;
/** Test task ids: distinct per call, readable in failures. */
export function testTaskId(label = "task"): TaskId {
  taskCounter += 1;
  return `test-${label}-${taskCounter}` as TaskId;
}

/** A prompt whose fake-engine encoding is exactly `tokenCount` tokens ("<user>", " w", …, "\n"). */
export function promptOfTokens(tokenCount: number): GenerationParams["messages"] {
  const words = Array.from({ length: tokenCount - 2 }, (_, i) => `w${i}`);
  return [{ role: "user", content: words.join(" ") }];
}
