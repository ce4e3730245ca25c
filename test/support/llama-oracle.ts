// node-llama-cpp as the oracle: llama.cpp itself, loading the same GGUF files as our engine.
// Always CPU and always an explicit thread count (unset, it oversubscribes small machines badly).
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from "node-llama-cpp";

let llamaPromise: Promise<Llama> | null = null;

/** One llama.cpp instance per test process. */
export function getOracleLlama(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
  return llamaPromise;
}

export const ORACLE_THREADS = 1;

/** Loads `modelPath` in llama.cpp, runs `use`, and always disposes the model. */
export async function withOracleModel<T>(modelPath: string, use: (model: LlamaModel) => Promise<T> | T): Promise<T> {
  const llama = await getOracleLlama();
  const model = await llama.loadModel({ modelPath, useMmap: true });
  try {
    return await use(model);
  } finally {
    await model.dispose();
  }
}

/** Greedy generation of `tokenCount` tokens after `promptTokens`, by llama.cpp. */
export async function oracleGreedyTokens(model: LlamaModel, promptTokens: readonly number[], tokenCount: number, contextSize = 512): Promise<number[]> {
  const context = await model.createContext({ contextSize, threads: ORACLE_THREADS, batchSize: Math.min(contextSize, 512) });
  try {
    const sequence = context.getSequence();
    const generated: number[] = [];
    // node-llama-cpp's Token type is a branded number.
    const tokens = promptTokens as Parameters<typeof sequence.evaluate>[0];
    for await (const token of sequence.evaluate(tokens, { temperature: 0 })) {
      generated.push(token);
      if (generated.length >= tokenCount) break;
    }
    return generated;
  } finally {
    await context.dispose();
  }
}

export async function disposeOracle(): Promise<void> {
  if (llamaPromise === null) return;
  const llama = await llamaPromise;
  llamaPromise = null;
  await llama.dispose();
}
