import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { GgmlType, ggmlRowSizeBytes } from "../../src/engine/gguf/ggml-types.ts";
import { QUANT_TYPES_SUPPORTED, dequantize, f16BitsToF32, f32ToF16Bits, quantize } from "../../src/engine/quant/index.ts";

interface GoldenType {
  readonly id: number;
  readonly quantized: string;
  readonly dequantized: string;
  readonly randomBlocks?: string;
  readonly randomBlocksDequantized?: string;
}
const golden = JSON.parse(readFileSync(new URL("./fixtures/ggml-quant-golden.json", import.meta.url), "utf8")) as {
  elementCount: number;
  input: string;
  types: Record<string, GoldenType>;
};

function floatsOf(base64: string): Float32Array {
  const bytes = Buffer.from(base64, "base64");
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

function bytesOf(base64: string): Uint8Array {
  return new Uint8Array(Buffer.from(base64, "base64"));
}

function assertSameFloatBits(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, what);
  const actualBits = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const expectedBits = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  for (let index = 0; index < actual.length; index++) {
    if (actualBits[index] !== expectedBits[index]) {
      assert.fail(`${what}: element ${index} is ${actual[index]}, ggml gives ${expected[index]}`);
    }
  }
}

// Seeded so that a failure replays.
function randomFloats(count: number, seed: number, scale: number): Float32Array {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const out = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    out[index] = Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next()) * scale;
  }
  return out;
}

const input = floatsOf(golden.input);

for (const [name, entry] of Object.entries(golden.types)) {
  const type = entry.id as GgmlType;
  test(`${name}: dequantize of ggml's own bytes equals ggml's dequantize bit for bit`, () => {
    assertSameFloatBits(dequantize(type, bytesOf(entry.quantized), golden.elementCount), floatsOf(entry.dequantized), name);
    if (entry.randomBlocks !== undefined && entry.randomBlocksDequantized !== undefined) {
      assertSameFloatBits(
        dequantize(type, bytesOf(entry.randomBlocks), golden.elementCount),
        floatsOf(entry.randomBlocksDequantized),
        `${name} (random bit patterns)`,
      );
    }
  });
}

for (const name of ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]) {
  test(`${name}: quantize gives the bytes ggml's reference quantizer gives`, () => {
    const entry = golden.types[name];
    assert.ok(entry);
    assert.deepEqual(quantize(entry.id as GgmlType, input), bytesOf(entry.quantized));
  });
}

// Relative RMS error of a round trip on Gaussian data: what each format's bits allow, with margin.
const RELATIVE_RMS_ERROR_MAX: ReadonlyMap<GgmlType, number> = new Map([
  [GgmlType.F32, 0],
  [GgmlType.F16, 0.001],
  [GgmlType.BF16, 0.005],
  [GgmlType.Q8_0, 0.01],
  [GgmlType.Q6_K, 0.03],
  [GgmlType.Q5_0, 0.06],
  [GgmlType.Q5_1, 0.05],
  [GgmlType.Q5_K, 0.06],
  [GgmlType.Q4_0, 0.12],
  [GgmlType.Q4_1, 0.1],
  [GgmlType.Q4_K, 0.12],
]);

for (const type of QUANT_TYPES_SUPPORTED) {
  test(`${GgmlType[type]}: quantize → dequantize stays within its error bound`, () => {
    const bound = RELATIVE_RMS_ERROR_MAX.get(type);
    assert.ok(bound !== undefined, "every supported type has a bound");
    for (const scale of [0.02, 1, 30]) {
      const values = randomFloats(256 * 8, 7 + scale, scale);
      const data = quantize(type, values);
      assert.equal(data.length, ggmlRowSizeBytes(type, values.length));
      const back = dequantize(type, data, values.length);
      let errorSquares = 0;
      let valueSquares = 0;
      for (let index = 0; index < values.length; index++) {
        errorSquares += (back[index]! - values[index]!) ** 2;
        valueSquares += values[index]! ** 2;
      }
      const relativeRms = Math.sqrt(errorSquares / valueSquares);
      assert.ok(relativeRms <= bound, `${GgmlType[type]} at scale ${scale}: relative RMS error ${relativeRms} > ${bound}`);
    }
  });
}

test("q4_0: a hand-built block decodes as the layout says (low nibbles first half, high nibbles second)", () => {
  const block = new Uint8Array(18);
  const d = f32ToF16Bits(0.5);
  block[0] = d & 0xff;
  block[1] = d >>> 8;
  for (let j = 0; j < 16; j++) block[2 + j] = j | ((15 - j) << 4);
  const values = dequantize(GgmlType.Q4_0, block, 32);
  for (let j = 0; j < 16; j++) {
    assert.equal(values[j], (j - 8) * 0.5);
    assert.equal(values[j + 16], (15 - j - 8) * 0.5);
  }
});

test("f16 conversion rounds to nearest even and handles subnormals, infinities and NaN", () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00); // halfway to the next binade rounds up to infinity
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // a tie rounds to even (zero)
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie, even stays
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie, odd rounds up
  assert.equal(f32ToF16Bits(Infinity), 0x7c00);
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  assert.equal(f16BitsToF32(0x0001), 2 ** -24);
});

test("types without a reference codec and partial blocks are refused with the type's name", () => {
  assert.throws(() => quantize(GgmlType.Q2_K, new Float32Array(256)), /q2_K/);
  assert.throws(() => dequantize(GgmlType.Q3_K, new Uint8Array(110), 256), /q3_K/);
  assert.throws(() => quantize(GgmlType.Q4_0, new Float32Array(48)), /q4_0.*48/);
  assert.throws(() => dequantize(GgmlType.Q8_0, new Uint8Array(10), 32), /34 bytes/);
});
