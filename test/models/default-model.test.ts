// The bundled default model (models/skein-default/skein-default.gguf, made by
// tools/train-default-model/train.py) checked against llama.cpp (node-llama-cpp, CPU, 1 thread) and
// against what the training script recorded from its own PyTorch model: the tokenizer llama.cpp
// rebuilds from the GGUF metadata must tokenize exactly as the training did, and greedy decoding
// must give the training-time model's tokens (a wrong RoPE ordering of the Q/K weights, a transposed
// tensor or a wrong hyperparameter all break that within a few tokens).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { openSync, readFileSync, readSync, closeSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";
import type { LlamaModel } from "node-llama-cpp";
import type { EngineShardSpec } from "../../src/engine/engine.ts";
import { createEngine } from "../../src/engine/gguf-engine.ts";
import type { GenerationParams } from "../../src/shared/types.ts";
import { disposeOracle, getOracleLlama, oracleGreedyTokens, ORACLE_THREADS } from "../support/llama-oracle.ts";

const MODEL_PATH = fileURLToPath(new URL("../../models/skein-default/skein-default.gguf", import.meta.url));
const REFERENCE_PATH = fileURLToPath(new URL("../../tools/train-default-model/reference.json", import.meta.url));
const MODEL_SIZE_BYTES_MAX = 25 * 1024 * 1024;
const LOAD_TIME_MS_MAX = 1000;
const CONTEXT_SIZE = 512;

interface Reference {
  readonly vocab_size: number;
  readonly parameters: number;
  readonly config: { readonly n_layer: number };
  readonly tokenization: readonly { readonly text: string; readonly ids: readonly number[] }[];
  readonly generations: readonly {
    readonly prompt: string;
    readonly prompt_ids: readonly number[];
    readonly greedy_ids: readonly number[];
    readonly text: string;
  }[];
}

const reference = JSON.parse(readFileSync(REFERENCE_PATH, "utf8")) as Reference;

after(async () => {
  await disposeOracle();
});

let modelPromise: Promise<LlamaModel> | null = null;
let loadTimeMs = Number.NaN;

async function oracleModel(): Promise<LlamaModel> {
  modelPromise ??= (async () => {
    // Starting llama.cpp itself is not part of loading the model.
    const llama = await getOracleLlama();
    const startedMs = performance.now();
    const model = await llama.loadModel({ modelPath: MODEL_PATH, useMmap: true });
    loadTimeMs = performance.now() - startedMs;
    return model;
  })();
  return modelPromise;
}

after(async () => {
  if (modelPromise !== null) await (await modelPromise).dispose();
});

function chatml(messages: readonly { role: string; content: string }[]): string {
  return messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join("") + "<|im_start|>assistant\n";
}

/** The generated text without the end-of-turn token, as a user would see it. */
function visibleText(model: LlamaModel, ids: readonly number[]): string {
  const imEnd = model.tokenize("<|im_end|>", true)[0];
  const body = ids.filter((id) => id !== imEnd);
  return model.detokenize(body as unknown as Parameters<typeof model.detokenize>[0]);
}

function assertEnglishLike(text: string, label: string): void {
  const letters = [...text].filter((ch) => /[A-Za-z ]/.test(ch)).length;
  assert.ok(letters >= 0.8 * text.length, `${label}: mostly letters and spaces: ${JSON.stringify(text)}`);
  const words = new Set(text.toLowerCase().match(/[a-z]{2,}/g) ?? []);
  assert.ok(words.size >= 4, `${label}: several distinct words: ${JSON.stringify(text)}`);
}

test("the bundled model is a small GGUF v3 file", () => {
  const sizeBytes = statSync(MODEL_PATH).size;
  assert.ok(sizeBytes <= MODEL_SIZE_BYTES_MAX, `${sizeBytes} bytes`);
  const header = Buffer.alloc(8);
  const fd = openSync(MODEL_PATH, "r");
  try {
    readSync(fd, header, 0, 8, 0);
  } finally {
    closeSync(fd);
  }
  assert.equal(header.subarray(0, 4).toString("latin1"), "GGUF");
  assert.equal(header.readUInt32LE(4), 3);
});

test("llama.cpp loads it in under a second, as a llama model with a ChatML template", async (t) => {
  const model = await oracleModel();
  t.diagnostic(`llama.cpp load: ${loadTimeMs.toFixed(1)} ms`);
  assert.ok(loadTimeMs < LOAD_TIME_MS_MAX, `load took ${loadTimeMs.toFixed(0)} ms`);
  const metadata = model.fileInfo.metadata as unknown as {
    general: { architecture: string };
    llama: { block_count: number };
    tokenizer: { ggml: { model: string; pre: string }; chat_template: string };
  };
  assert.equal(metadata.general.architecture, "llama");
  assert.equal(metadata.tokenizer.ggml.model, "gpt2");
  assert.equal(metadata.tokenizer.ggml.pre, "qwen2");
  assert.equal(metadata.llama.block_count, reference.config.n_layer);
  assert.equal(model.tokens.bos !== null && model.tokens.eos !== null, true);
  assert.equal(model.detokenize([model.tokens.eos!], true), "<|im_end|>");

  const messages = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Tell me a fortune." },
  ];
  const rendered = new Template(metadata.tokenizer.chat_template).render({ messages, add_generation_prompt: true });
  assert.equal(rendered, chatml(messages));
});

test("llama.cpp's tokenizer from the GGUF metadata matches the training tokenizer and round-trips", async () => {
  const model = await oracleModel();
  for (const { text, ids } of reference.tokenization) {
    const tokens = model.tokenize(text, true);
    assert.deepEqual([...tokens], ids, JSON.stringify(text));
    assert.equal(model.detokenize(tokens, true), text);
  }
  // Text the training never saw still round-trips byte for byte.
  const unusual = "Zebras\u00a0\u00e9t\u00e9 \u2603 \u{1F680}\ttab  <|im_start|> is text here";
  assert.equal(model.detokenize(model.tokenize(unusual, false), false), unusual);
});

test("greedy chat replies from llama.cpp equal the trained model's and read like English", async () => {
  const model = await oracleModel();
  for (const generation of reference.generations) {
    const prompt = model.tokenize(chatml([{ role: "user", content: generation.prompt }]), true);
    assert.deepEqual([...prompt], generation.prompt_ids, generation.prompt);
    const tokens = await oracleGreedyTokens(model, prompt, generation.greedy_ids.length, CONTEXT_SIZE);
    // node-llama-cpp ends the evaluation at an end-of-generation token without yielding it.
    const eos = model.tokens.eos!;
    const expected = generation.greedy_ids.at(-1) === eos ? generation.greedy_ids.slice(0, -1) : generation.greedy_ids;
    assert.deepEqual(tokens, expected, generation.prompt);
    const text = visibleText(model, tokens);
    assert.equal(text, generation.text.replace("<|im_end|>", ""));
    assertEnglishLike(text, generation.prompt);
  }
});

test("skein's engine loads it in under a second and generates llama.cpp's greedy tokens", async (t) => {
  const spec: EngineShardSpec = {
    modelId: "skein-default",
    modelPath: MODEL_PATH,
    layerStart: 0,
    layerEnd: reference.config.n_layer,
    layerCount: reference.config.n_layer,
    contextSize: CONTEXT_SIZE,
    threads: ORACLE_THREADS,
    options: {},
  };
  const engine = createEngine(spec);
  const startedMs = performance.now();
  await engine.load(() => {});
  const engineLoadMs = performance.now() - startedMs;
  t.diagnostic(`skein engine load: ${engineLoadMs.toFixed(1)} ms`);
  try {
    assert.ok(engineLoadMs < LOAD_TIME_MS_MAX, `load took ${engineLoadMs.toFixed(0)} ms`);
    for (const generation of reference.generations) {
      const params = {
        messages: [{ role: "user", content: generation.prompt }],
        maxTokens: generation.greedy_ids.length,
        temperature: 0,
        topP: 1,
        topK: 0,
        minP: 0,
        seed: 1,
        stop: [],
        presencePenalty: 0,
        frequencyPenalty: 0,
        repetitionPenalty: 1,
        logprobs: false,
        topLogprobs: 0,
      } as unknown as GenerationParams;
      const prompt = engine.encodeChat([{ role: "user", content: generation.prompt }]);
      assert.deepEqual(prompt, generation.prompt_ids, generation.prompt);
      const sequence = engine.openSequence(params, prompt.length);
      const tokens: number[] = [];
      try {
        sequence.prefill(prompt);
        while (tokens.length < generation.greedy_ids.length) {
          const token = sequence.sample().tokenId;
          tokens.push(token);
          if (sequence.isEndOfGeneration(token)) break;
          sequence.decode(token);
        }
      } finally {
        sequence.free();
      }
      assert.deepEqual(tokens, generation.greedy_ids, generation.prompt);
    }
  } finally {
    engine.close();
  }
});
