// Every SIMD kernel against its generic version, and both against float math on dequantized
// weights. Bounds: SIMD vs generic differ only by float summation order (relative 1e-5 of the
// row's magnitude); quantized dots vs float reference differ by the activation's quantization.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadNative } from "../../src/engine/native.ts";
import { GgmlType, ggmlTypeTraits } from "../../src/engine/gguf/ggml-types.ts";
import { quantize } from "../../src/engine/quant/index.ts";

const native = loadNative();

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomVector(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (r() * 2 - 1) * scale;
  return v;
}

function encode(type: GgmlType, values: Float32Array): Uint8Array {
  if (type === GgmlType.F32) return new Uint8Array(values.slice().buffer);
  return quantize(type, values);
}

const TYPES: readonly GgmlType[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
];

test("block sizes of the addon match the TypeScript traits", () => {
  const sizes = native.blockSizes();
  const expect: Record<string, GgmlType> = {
    q4_0: GgmlType.Q4_0,
    q4_1: GgmlType.Q4_1,
    q5_0: GgmlType.Q5_0,
    q5_1: GgmlType.Q5_1,
    q8_0: GgmlType.Q8_0,
    q8_1: GgmlType.Q8_1,
    q4_K: GgmlType.Q4_K,
    q5_K: GgmlType.Q5_K,
    q6_K: GgmlType.Q6_K,
    q8_K: GgmlType.Q8_K,
  };
  for (const [name, type] of Object.entries(expect)) {
    assert.equal(sizes[name], ggmlTypeTraits(type).blockSizeBytes, name);
  }
  const table = native.typeTable();
  for (const type of TYPES) {
    const row = table[String(type)];
    assert.ok(row?.hasDot, `type ${type} has a dot kernel`);
    assert.equal(row.blockBytes, ggmlTypeTraits(type).blockSizeBytes);
  }
});

test("the addon reports which kernels it selected", () => {
  assert.match(native.isa(), /^(avx2(\+avxvnni|\+avx512vnni)?|neon|generic)$/);
});

for (const type of TYPES) {
  const name = ggmlTypeTraits(type).name;
  test(`${name}: SIMD dot equals generic dot, both near the float reference`, () => {
    const rows = 8;
    const cols = 512;
    const w = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) w.set(randomVector(cols, 100 + r, 0.5 + r * 0.25), r * cols);
    const bytes = encode(type, w);
    const x = randomVector(cols, 7, 2);
    const generic = native.testDot(type, bytes, rows, cols, x, false);
    const simd = native.testDot(type, bytes, rows, cols, x, true);
    const deq = native.dequantize(type, bytes, rows * cols);
    for (let r = 0; r < rows; r++) {
      let ref = 0;
      let mag = 0;
      for (let i = 0; i < cols; i++) {
        ref += deq[r * cols + i]! * x[i]!;
        mag += Math.abs(deq[r * cols + i]! * x[i]!);
      }
      const g = generic[r]!;
      const s = simd[r]!;
      assert.ok(Math.abs(s - g) <= 1e-5 * mag + 1e-6, `${name} row ${r}: simd ${s} vs generic ${g} (mag ${mag})`);
      // Activation quantization: 8-bit costs ~1/254 of each term, 16-bit floats far less.
      const tol = type === GgmlType.F32 ? 1e-5 : type === GgmlType.F16 ? 1e-3 : type === GgmlType.BF16 ? 1e-2 : 1.5e-2;
      assert.ok(Math.abs(g - ref) <= tol * mag, `${name} row ${r}: generic ${g} vs float ${ref} (mag ${mag})`);
    }
  });
}

test("the native dequantizer agrees with the TypeScript reference codec", async () => {
  const { dequantize } = await import("../../src/engine/quant/index.ts");
  for (const type of TYPES) {
    if (type === GgmlType.F32) continue;
    const v = randomVector(1024, 3, 3);
    const bytes = quantize(type, v);
    const a = native.dequantize(type, bytes, v.length);
    const b = dequantize(type, bytes, v.length);
    assert.deepEqual(a, b, ggmlTypeTraits(type).name);
  }
});

test("threaded matmul equals row-by-row dots for one and many tokens", () => {
  const rows = 300;
  const cols = 512; // two K-quant blocks per row: the tiles must keep the dots' order across blocks
  const w = randomVector(rows * cols, 11);
  for (const type of [GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.F16]) {
    const bytes = encode(type, w);
    for (const n of [1, 5, 40]) {
      const x = randomVector(n * cols, 12 + n);
      const out = native.matmul(type, bytes, rows, cols, x, n);
      for (let t = 0; t < n; t++) {
        const dots = native.testDot(type, bytes, rows, cols, x.subarray(t * cols, (t + 1) * cols), true);
        for (let r = 0; r < rows; r++) assert.equal(out[t * rows + r], dots[r], `${ggmlTypeTraits(type).name} n=${n} t=${t} r=${r}`);
      }
    }
  }
});

test("bad arguments throw instead of crashing", () => {
  assert.throws(() => native.testDot(99, new Uint8Array(10), 1, 32, new Float32Array(32), true), /unsupported type 99/);
  assert.throws(() => native.matmul(GgmlType.Q4_0, new Uint8Array(10), 4, 32, new Float32Array(32), 1), /bad weight shape/);
  assert.throws(() => native.dequantize(GgmlType.Q4_0, new Uint8Array(18), 33), /bad length/);
});

test("repacked 8-row kernels agree with the row-by-row kernels (decode and prefill shapes)", () => {
  const rows = 64;
  const cols = 512;
  const w = randomVector(rows * cols, 21);
  for (const type of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q5_0]) {
    const bytes = encode(type, w);
    for (const n of [1, 3, 9]) {
      const x = randomVector(n * cols, 30 + n);
      const plain = native.matmul(type, bytes, rows, cols, x, n);
      const packed = native.matmul(type, bytes, rows, cols, x, n, true);
      for (let i = 0; i < plain.length; i++) {
        // Same integer sums; only the float order of the per-block scaling differs.
        assert.ok(Math.abs(plain[i]! - packed[i]!) <= 1e-4 * (1 + Math.abs(plain[i]!)), `${ggmlTypeTraits(type).name} n=${n} i=${i}: ${plain[i]} vs ${packed[i]}`);
      }
    }
  }
});

test("repacked kernels agree with the row-by-row kernels for 16-row groups, 8-row remainders and up to 17 tokens", () => {
  // 80 rows take the 16-row groups where the CPU has AVX-512; 72 rows fall back to 8-row groups.
  // 17 tokens cover two full 8-token tiles and a single-token remainder.
  const cols = 256;
  for (const rows of [80, 72]) {
    const w = randomVector(rows * cols, 60 + rows, 0.7);
    for (const type of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q5_0]) {
      const bytes = encode(type, w);
      for (const n of [1, 2, 8, 17]) {
        const x = randomVector(n * cols, 70 + n, 3);
        const plain = native.matmul(type, bytes, rows, cols, x, n);
        const packed = native.matmul(type, bytes, rows, cols, x, n, true);
        for (let i = 0; i < plain.length; i++) {
          assert.ok(Math.abs(plain[i]! - packed[i]!) <= 1e-4 * (1 + Math.abs(plain[i]!)), `${ggmlTypeTraits(type).name} rows=${rows} n=${n} i=${i}: ${plain[i]} vs ${packed[i]}`);
        }
        // Each token's outputs must not depend on which tile it fell into.
        for (const t of [0, n - 1]) {
          const alone = native.matmul(type, bytes, rows, cols, x.subarray(t * cols, (t + 1) * cols), 1, true);
          assert.deepEqual(packed.subarray(t * rows, (t + 1) * rows), alone, `${ggmlTypeTraits(type).name} rows=${rows} n=${n} token ${t}`);
        }
      }
    }
  }
});

test("results do not depend on the thread count (each output is computed whole by one thread)", () => {
  const rows = 96;
  const cols = 256;
  const w = randomVector(rows * cols, 41);
  const before = native.threads();
  try {
    for (const type of [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q5_0, GgmlType.Q4_K]) {
      const bytes = encode(type, w);
      for (const n of [1, 7]) {
        const x = randomVector(n * cols, 50 + n);
        native.setThreads(1);
        const one = native.matmul(type, bytes, rows, cols, x, n, true);
        native.setThreads(3);
        for (let rep = 0; rep < 20; rep++) assert.deepEqual(native.matmul(type, bytes, rows, cols, x, n, true), one);
      }
    }
  } finally {
    native.setThreads(before);
  }
});
