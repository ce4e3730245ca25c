// The AVX-512 grouped attention (one pass over K and V for all query heads of a KV head) against
// the per-head path (SKEIN_NO_AVX512=1), on whole models: head sizes 64 and 128, groups of 1, 4
// and 7 query heads, a prompt spanning several 16-position blocks with a partial last one, and
// decode steps after it. Each engine runs in its own process because the kernels are chosen once
// per process. On a CPU without AVX-512 both runs take the per-head path and agree trivially.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GgmlType } from "../../src/engine/gguf/ggml-types.ts";
import { writeModelFixture } from "../support/gguf-model-fixture.ts";

const directory = mkdtempSync(join(tmpdir(), "skein-attention-"));
after(() => rmSync(directory, { recursive: true, force: true }));

const FORWARD = fileURLToPath(new URL("../../src/engine/forward.ts", import.meta.url));
const PROMPT_TOKENS = 37;
const DECODE_STEPS = 3;

// Prompt, then decode steps; prints the last-row logits after each call (rounded to keep the
// output short; the comparison tolerance is far above the rounding).
const CHILD = `
const { ShardForward } = await import(${JSON.stringify(FORWARD)});
const shard = ShardForward.open(process.argv[1]);
const cache = shard.createCache(128);
const prompt = Array.from({ length: ${PROMPT_TOKENS} }, (_, i) => 3 + ((i * 37) % 200));
const rows = [];
let h = shard.forwardHidden(cache, { tokens: prompt }, 0);
rows.push(Array.from(shard.logits(h.hidden, h.nTokens), (v) => Math.round(v * 1e5) / 1e5));
for (let i = 0; i < ${DECODE_STEPS}; i++) {
  h = shard.forwardHidden(cache, { tokens: [5 + i] }, ${PROMPT_TOKENS} + i);
  rows.push(Array.from(shard.logits(h.hidden, 1), (v) => Math.round(v * 1e5) / 1e5));
}
cache.free();
shard.close();
process.stdout.write(JSON.stringify(rows));
`;

function runLogits(model: string, noAvx512: boolean): number[][] {
  const env = { ...process.env };
  if (noAvx512) env.SKEIN_NO_AVX512 = "1";
  else delete env.SKEIN_NO_AVX512;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", CHILD, model], { env, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as number[][];
}

const CASES = [
  { name: "head 64, 7 query heads per KV head", nEmbd: 448, nHead: 7, nHeadKv: 1, headDim: 64 },
  { name: "head 128, 4 query heads per KV head, 2 KV heads", nEmbd: 256, nHead: 8, nHeadKv: 2, headDim: 128 },
  { name: "head 64, no grouping", nEmbd: 128, nHead: 2, nHeadKv: 2, headDim: 64 },
];

for (const c of CASES) {
  test(`grouped attention equals per-head attention: ${c.name}`, () => {
    const path = join(directory, `${c.nHead}-${c.nHeadKv}-${c.headDim}.gguf`);
    writeModelFixture(path, {
      arch: "qwen2",
      vocab: "tiny",
      nLayer: 2,
      nEmbd: c.nEmbd,
      nHead: c.nHead,
      nHeadKv: c.nHeadKv,
      headDim: c.headDim,
      nFf: 256,
      contextLength: 128,
      tensorType: GgmlType.F16,
      tiedOutput: true,
      seed: 5,
    });
    const fast = runLogits(path, false);
    const plain = runLogits(path, true);
    assert.equal(fast.length, DECODE_STEPS + 1);
    for (let step = 0; step < fast.length; step++) {
      const a = fast[step]!;
      const b = plain[step]!;
      assert.equal(a.length, b.length);
      let scale = 0;
      for (const v of b) scale = Math.max(scale, Math.abs(v));
      assert.ok(scale > 0, "logits are not all zero");
      // Only the float summation order of the dot products differs.
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 2e-3 * scale, `step ${step} logit ${i}: ${a[i]} vs ${b[i]}`);
    }
  });
}
