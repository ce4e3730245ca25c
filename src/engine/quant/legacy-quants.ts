// Reference codecs for ggml's 32-element block types, byte-compatible with ggml-common.h:
//   q4_0 {f16 d; u8 qs[16]}            x = (q - 8)·d
//   q4_1 {f16 d; f16 m; u8 qs[16]}     x = q·d + m
//   q5_0 {f16 d; u8 qh[4]; u8 qs[16]}  x = (q - 16)·d, bit 4 of q in qh
//   q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}
//   q8_0 {f16 d; i8 qs[32]}            x = q·d
// Nibble j of a 4-bit block holds element j (low) and element j+16 (high). The quantizers follow
// ggml's *_ref rounding, so their output matches llama-quantize's for the same input.
import { f16BitsToF32, f32ToF16Bits } from "./half.ts";

export const QK_LEGACY = 32;

/** ggml quantizes in float32; rounding every step the same way makes our bytes equal to its bytes. */
const f = Math.fround;

/** C's roundf: halves away from zero (Math.round rounds -2.5 to -2). */
export function roundHalfAway(value: number): number {
  return value < 0 ? -Math.round(-value) : Math.round(value);
}

function readF16(data: Uint8Array, at: number): number {
  return f16BitsToF32(data[at]! | (data[at + 1]! << 8));
}

function writeF16(data: Uint8Array, at: number, value: number): void {
  const bits = f32ToF16Bits(value);
  data[at] = bits & 0xff;
  data[at + 1] = bits >>> 8;
}

function blockCount(elementCount: number): number {
  if (elementCount % QK_LEGACY !== 0) throw new RangeError(`${elementCount} elements is not a multiple of ${QK_LEGACY}`);
  return elementCount / QK_LEGACY;
}

/** The element with the largest magnitude, sign kept (ggml scales by it so that it maps to -8 / -16 exactly). */
function signedAbsMax(values: Float32Array, start: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QK_LEGACY; j++) {
    const value = values[start + j]!;
    if (Math.abs(value) > amax) {
      amax = Math.abs(value);
      max = value;
    }
  }
  return max;
}

function minMax(values: Float32Array, start: number): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < QK_LEGACY; j++) {
    const value = values[start + j]!;
    if (value < min) min = value;
    if (value > max) max = value;
  }
  return [min, max];
}

// ---- q4_0 (18 bytes)

export function quantizeQ4_0(values: Float32Array): Uint8Array {
  const blocks = blockCount(values.length);
  const out = new Uint8Array(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_LEGACY;
    const d = f(signedAbsMax(values, start) / -8);
    const id = d !== 0 ? f(1 / d) : 0;
    const at = b * 18;
    writeF16(out, at, d);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(f(f(values[start + j]! * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(f(values[start + j + 16]! * id) + 8.5)));
      out[at + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

export function dequantizeQ4_0(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = blockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * 18;
    const d = readF16(data, at);
    for (let j = 0; j < 16; j++) {
      const byte = data[at + 2 + j]!;
      out[b * 32 + j] = ((byte & 0xf) - 8) * d;
      out[b * 32 + j + 16] = ((byte >>> 4) - 8) * d;
    }
  }
  return out;
}

// ---- q4_1 (20 bytes)

export function quantizeQ4_1(values: Float32Array): Uint8Array {
  const blocks = blockCount(values.length);
  const out = new Uint8Array(blocks * 20);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_LEGACY;
    const [min, max] = minMax(values, start);
    const d = f(f(max - min) / 15);
    const id = d !== 0 ? f(1 / d) : 0;
    const at = b * 20;
    writeF16(out, at, d);
    writeF16(out, at + 2, min);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(f(f(f(values[start + j]! - min) * id) + 0.5)));
      const q1 = Math.min(15, Math.trunc(f(f(f(values[start + j + 16]! - min) * id) + 0.5)));
      out[at + 4 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

export function dequantizeQ4_1(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = blockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * 20;
    const d = readF16(data, at);
    const m = readF16(data, at + 2);
    for (let j = 0; j < 16; j++) {
      const byte = data[at + 4 + j]!;
      out[b * 32 + j] = (byte & 0xf) * d + m;
      out[b * 32 + j + 16] = (byte >>> 4) * d + m;
    }
  }
  return out;
}

// ---- q5_0 (22 bytes) and q5_1 (24 bytes): qh is a little-endian u32, bit j = bit 4 of element j.

function writeU32(data: Uint8Array, at: number, value: number): void {
  data[at] = value & 0xff;
  data[at + 1] = (value >>> 8) & 0xff;
  data[at + 2] = (value >>> 16) & 0xff;
  data[at + 3] = (value >>> 24) & 0xff;
}

function readU32(data: Uint8Array, at: number): number {
  return (data[at]! | (data[at + 1]! << 8) | (data[at + 2]! << 16) | (data[at + 3]! << 24)) >>> 0;
}

export function quantizeQ5_0(values: Float32Array): Uint8Array {
  const blocks = blockCount(values.length);
  const out = new Uint8Array(blocks * 22);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_LEGACY;
    const d = f(signedAbsMax(values, start) / -16);
    const id = d !== 0 ? f(1 / d) : 0;
    const at = b * 22;
    writeF16(out, at, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(31, Math.trunc(f(f(values[start + j]! * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(f(f(values[start + j + 16]! * id) + 16.5)));
      out[at + 6 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
      qh |= ((q0 >>> 4) << j) | ((q1 >>> 4) << (j + 16));
    }
    writeU32(out, at + 2, qh >>> 0);
  }
  return out;
}

export function dequantizeQ5_0(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = blockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * 22;
    const d = readF16(data, at);
    const qh = readU32(data, at + 2);
    for (let j = 0; j < 16; j++) {
      const byte = data[at + 6 + j]!;
      const q0 = (byte & 0xf) | (((qh >>> j) & 1) << 4);
      const q1 = (byte >>> 4) | (((qh >>> (j + 16)) & 1) << 4);
      out[b * 32 + j] = (q0 - 16) * d;
      out[b * 32 + j + 16] = (q1 - 16) * d;
    }
  }
  return out;
}

export function quantizeQ5_1(values: Float32Array): Uint8Array {
  const blocks = blockCount(values.length);
  const out = new Uint8Array(blocks * 24);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_LEGACY;
    const [min, max] = minMax(values, start);
    const d = f(f(max - min) / 31);
    const id = d !== 0 ? f(1 / d) : 0;
    const at = b * 24;
    writeF16(out, at, d);
    writeF16(out, at + 2, min);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(31, Math.trunc(f(f(f(values[start + j]! - min) * id) + 0.5)));
      const q1 = Math.min(31, Math.trunc(f(f(f(values[start + j + 16]! - min) * id) + 0.5)));
      out[at + 8 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
      qh |= ((q0 >>> 4) << j) | ((q1 >>> 4) << (j + 16));
    }
    writeU32(out, at + 4, qh >>> 0);
  }
  return out;
}

export function dequantizeQ5_1(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = blockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * 24;
    const d = readF16(data, at);
    const m = readF16(data, at + 2);
    const qh = readU32(data, at + 4);
    for (let j = 0; j < 16; j++) {
      const byte = data[at + 8 + j]!;
      const q0 = (byte & 0xf) | (((qh >>> j) & 1) << 4);
      const q1 = (byte >>> 4) | (((qh >>> (j + 16)) & 1) << 4);
      out[b * 32 + j] = q0 * d + m;
      out[b * 32 + j + 16] = q1 * d + m;
    }
  }
  return out;
}

// ---- q8_0 (34 bytes)

export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const blocks = blockCount(values.length);
  const out = new Uint8Array(blocks * 34);
  const signedView = new Int8Array(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_LEGACY;
    let amax = 0;
    for (let j = 0; j < QK_LEGACY; j++) amax = Math.max(amax, Math.abs(values[start + j]!));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    const at = b * 34;
    writeF16(out, at, d);
    for (let j = 0; j < QK_LEGACY; j++) signedView[at + 2 + j] = roundHalfAway(f(values[start + j]! * id));
  }
  return out;
}

export function dequantizeQ8_0(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = blockCount(elementCount);
  const out = new Float32Array(elementCount);
  const signedView = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let b = 0; b < blocks; b++) {
    const at = b * 34;
    const d = readF16(data, at);
    for (let j = 0; j < QK_LEGACY; j++) out[b * 32 + j] = signedView[at + 2 + j]! * d;
  }
  return out;
}

export { readF16, writeF16 };
