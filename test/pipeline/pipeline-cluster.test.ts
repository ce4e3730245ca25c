// Pipeline-parallel inference with real runner processes: one master, three workers in this process,
// a GGUF model split over 1, 2 and 3 nodes. Same greedy tokens everywhere; cancellation stops every
// stage; a killed stage fails the task (no hang) and the pipeline serves again after its restart.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { findTaskByCommandId } from "../../src/shared/state.ts";
import type { Instance } from "../../src/shared/types.ts";
import { writeModelFixture } from "../support/gguf-model-fixture.ts";
import { testGenerationParams } from "../support/generation-params.ts";
import { ggufCard, PipelineCluster } from "../support/pipeline-cluster.ts";

const LAYER_COUNT = 6;
const directory = mkdtempSync(join(tmpdir(), "skein-pipeline-test-"));
const modelPath = join(directory, "model.gguf");
writeModelFixture(modelPath, {
  arch: "qwen2",
  vocab: "tiny",
  nLayer: LAYER_COUNT,
  nEmbd: 128,
  nHead: 4,
  nHeadKv: 2,
  nFf: 256,
  contextLength: 1024,
  tensorType: GgmlType.Q8_0,
  tiedOutput: true,
  seed: 7,
});

const cluster = new PipelineCluster({
  nodeCount: 3,
  cards: [ggufCard("whole", modelPath, LAYER_COUNT), ggufCard("split2", modelPath, LAYER_COUNT), ggufCard("split3", modelPath, LAYER_COUNT)],
  contextSize: 1024,
});
let whole: Instance;
let split2: Instance;
let split3: Instance;

before(async () => {
  cluster.start();
  whole = await cluster.place("whole", 1);
  split2 = await cluster.place("split2", 2);
  split3 = await cluster.place("split3", 3);
});
after(async () => {
  await cluster.stop();
  rmSync(directory, { recursive: true, force: true });
});

const greedy = (content: string, maxTokens = 24) =>
  testGenerationParams({ messages: [{ role: "user", content }], maxTokens, temperature: 0, logprobs: true, topLogprobs: 2 });

test("a model split over 2 and 3 nodes gives the same greedy tokens as on 1 node", async () => {
  assert.equal(whole.shards.length, 1);
  assert.equal(split2.shards.length, 2);
  assert.equal(split3.shards.length, 3);
  assert.equal(new Set(split3.shards.map((s) => s.nodeId)).size, 3, "three stages on three nodes");
  for (const prompt of ["Tell me a story about a fox.", "x"]) {
    const [one, two, three] = await Promise.all(["whole", "split2", "split3"].map((m) => cluster.submit(m, greedy(prompt)).result));
    assert.equal(one!.task.status, "Complete", one!.task.failureReason ?? "");
    assert.ok(one!.task.tokensGenerated > 0);
    for (const split of [two!, three!]) {
      assert.equal(split.task.status, "Complete", split.task.failureReason ?? "");
      assert.equal(split.text, one!.text);
      if (process.env.SKEIN_TEST_VERBOSE) console.log(JSON.stringify(split.text), split.task.tokensGenerated);
      assert.equal(split.task.tokensGenerated, one!.task.tokensGenerated);
      assert.equal(split.task.promptTokens, one!.task.promptTokens);
      assert.deepEqual(
        split.chunks.flatMap((c) => c.logprobs ?? []),
        one!.chunks.flatMap((c) => c.logprobs ?? []),
        "same tokens with the same log-probabilities",
      );
    }
  }
});
