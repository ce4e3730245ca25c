// Reference codecs for ggml's 256-element "K" super-blocks, byte-compatible with ggml-common.h:
//   q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}             8 sub-blocks of 32, x = d·sc·q - dmin·m
//   q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}  as q4_K with a 5th bit in qh
//   q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}            16 sub-blocks of 16, x = d·sc·(q - 32)
// The 12 scale bytes of q4_K/q5_K pack eight 6-bit scales and eight 6-bit mins (see unpackScaleMin).
// The dequantizers are exact; the quantizers are simpler than ggml's iterative search (min/max per
// sub-block), so they produce valid blocks with a slightly larger error than llama-quantize.
import { readF16, roundHalfAway, writeF16 } from "./legacy-quants.ts";
import { QK_K } from "../gguf/ggml-types.ts";

export const Q4_K_BLOCK_BYTES = 144;
export const Q5_K_BLOCK_BYTES = 176;
export const Q6_K_BLOCK_BYTES = 210;

function superBlockCount(elementCount: number): number {
  if (elementCount % QK_K !== 0) throw new RangeError(`${elementCount} elements is not a multiple of ${QK_K}`);
  return elementCount / QK_K;
}

/** Scale and min of sub-block j (0..7) from the 12 packed bytes at `at`. */
export function unpackScaleMin(data: Uint8Array, at: number, j: number): [scale: number, min: number] {
  if (j < 4) return [data[at + j]! & 63, data[at + j + 4]! & 63];
  const scale = (data[at + j + 4]! & 0xf) | ((data[at + j - 4]! >>> 6) << 4);
  const min = (data[at + j + 4]! >>> 4) | ((data[at + j]! >>> 6) << 4);
  return [scale, min];
}

function packScaleMins(out: Uint8Array, at: number, scales: readonly number[], mins: readonly number[]): void {
  for (let j = 0; j < 8; j++) {
    const scale = scales[j]!;
    const min = mins[j]!;
    if (j < 4) {
      out[at + j] = (out[at + j]! & 0xc0) | scale;
      out[at + j + 4] = (out[at + j + 4]! & 0xc0) | min;
    } else {
      out[at + j + 4] = (scale & 0xf) | ((min & 0xf) << 4);
      out[at + j - 4] = out[at + j - 4]! | ((scale >>> 4) << 6);
      out[at + j] = out[at + j]! | ((min >>> 4) << 6);
    }
  }
}

/**
 * Chooses per-sub-block 6-bit scales and mins (x ≈ d·sc·q - dmin·m, q in [0, levelMax]) for one
 * super-block and writes d, dmin and the packed scales; returns the quantized q of each element.
 */
function quantizeScaleMinBlock(values: Float32Array, start: number, levelMax: number, out: Uint8Array, at: number): Uint8Array {
  const subScales: number[] = [];
  const subMins: number[] = [];
  for (let sub = 0; sub < 8; sub++) {
    let min = 0; // the offset only ever subtracts, as in ggml (mins are stored as positive magnitudes)
    let max = 0;
    for (let l = 0; l < 32; l++) {
      const value = values[start + sub * 32 + l]!;
      min = Math.min(min, value);
      max = Math.max(max, value);
    }
    subScales.push((max - min) / levelMax);
    subMins.push(-min);
  }
  const maxScale = Math.max(...subScales);
  const maxMin = Math.max(...subMins);
  const d = maxScale / 63;
  const dmin = maxMin / 63;
  writeF16(out, at, d);
  writeF16(out, at + 2, dmin);
  const dStored = readF16(out, at);
  const dminStored = readF16(out, at + 2);
  const scaleCodes = subScales.map((scale) => (dStored > 0 ? Math.min(63, roundHalfAway(scale / dStored)) : 0));
  const minCodes = subMins.map((min) => (dminStored > 0 ? Math.min(63, roundHalfAway(min / dminStored)) : 0));
  packScaleMins(out, at + 4, scaleCodes, minCodes);

  const levels = new Uint8Array(QK_K);
  for (let sub = 0; sub < 8; sub++) {
    const step = dStored * scaleCodes[sub]!;
    const offset = dminStored * minCodes[sub]!;
    for (let l = 0; l < 32; l++) {
      const value = values[start + sub * 32 + l]!;
      const level = step > 0 ? roundHalfAway((value + offset) / step) : 0;
      levels[sub * 32 + l] = Math.max(0, Math.min(levelMax, level));
    }
  }
  return levels;
}

// ---- q4_K: qs[32c + l] holds element 64c+l (low nibble) and 64c+32+l (high nibble), sub-blocks 2c and 2c+1.

export function quantizeQ4_K(values: Float32Array): Uint8Array {
  const blocks = superBlockCount(values.length);
  const out = new Uint8Array(blocks * Q4_K_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q4_K_BLOCK_BYTES;
    const levels = quantizeScaleMinBlock(values, b * QK_K, 15, out, at);
    for (let chunk = 0; chunk < 4; chunk++) {
      for (let l = 0; l < 32; l++) {
        out[at + 16 + chunk * 32 + l] = levels[chunk * 64 + l]! | (levels[chunk * 64 + 32 + l]! << 4);
      }
    }
  }
  return out;
}

export function dequantizeQ4_K(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = superBlockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q4_K_BLOCK_BYTES;
    const d = readF16(data, at);
    const dmin = readF16(data, at + 2);
    for (let chunk = 0; chunk < 4; chunk++) {
      const [scaleLow, minLow] = unpackScaleMin(data, at + 4, 2 * chunk);
      const [scaleHigh, minHigh] = unpackScaleMin(data, at + 4, 2 * chunk + 1);
      const d1 = d * scaleLow;
      const m1 = dmin * minLow;
      const d2 = d * scaleHigh;
      const m2 = dmin * minHigh;
      const outAt = b * QK_K + chunk * 64;
      for (let l = 0; l < 32; l++) {
        const byte = data[at + 16 + chunk * 32 + l]!;
        out[outAt + l] = d1 * (byte & 0xf) - m1;
        out[outAt + 32 + l] = d2 * (byte >>> 4) - m2;
      }
    }
  }
  return out;
}

// ---- q5_K: as q4_K; bit (2c) of qh[l] is bit 4 of element 64c+l, bit (2c+1) that of element 64c+32+l.

export function quantizeQ5_K(values: Float32Array): Uint8Array {
  const blocks = superBlockCount(values.length);
  const out = new Uint8Array(blocks * Q5_K_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q5_K_BLOCK_BYTES;
    const levels = quantizeScaleMinBlock(values, b * QK_K, 31, out, at);
    for (let chunk = 0; chunk < 4; chunk++) {
      for (let l = 0; l < 32; l++) {
        const low = levels[chunk * 64 + l]!;
        const high = levels[chunk * 64 + 32 + l]!;
        out[at + 48 + chunk * 32 + l] = (low & 0xf) | ((high & 0xf) << 4);
        out[at + 16 + l] = out[at + 16 + l]! | ((low >>> 4) << (2 * chunk)) | ((high >>> 4) << (2 * chunk + 1));
      }
    }
  }
  return out;
}

export function dequantizeQ5_K(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = superBlockCount(elementCount);
  const out = new Float32Array(elementCount);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q5_K_BLOCK_BYTES;
    const d = readF16(data, at);
    const dmin = readF16(data, at + 2);
    for (let chunk = 0; chunk < 4; chunk++) {
      const [scaleLow, minLow] = unpackScaleMin(data, at + 4, 2 * chunk);
      const [scaleHigh, minHigh] = unpackScaleMin(data, at + 4, 2 * chunk + 1);
      const d1 = d * scaleLow;
      const m1 = dmin * minLow;
      const d2 = d * scaleHigh;
      const m2 = dmin * minHigh;
      const outAt = b * QK_K + chunk * 64;
      for (let l = 0; l < 32; l++) {
        const byte = data[at + 48 + chunk * 32 + l]!;
        const high = data[at + 16 + l]!;
        out[outAt + l] = d1 * ((byte & 0xf) + (((high >>> (2 * chunk)) & 1) << 4)) - m1;
        out[outAt + 32 + l] = d2 * ((byte >>> 4) + (((high >>> (2 * chunk + 1)) & 1) << 4)) - m2;
      }
    }
  }
  return out;
}

// ---- q6_K: each half n of 128 elements uses ql[64n..], qh[32n..], scales[8n..]. For l < 32,
// element 128n + l + 32k (k = 0..3) takes its low nibble from ql[64n + l + 32(k&1)] (low nibble for
// k < 2, high for k ≥ 2), its top 2 bits from qh[32n + l] bits 2k..2k+1, its scale from
// scales[8n + l/16 + 2k].

export function quantizeQ6_K(values: Float32Array): Uint8Array {
  const blocks = superBlockCount(values.length);
  const out = new Uint8Array(blocks * Q6_K_BLOCK_BYTES);
  const signedView = new Int8Array(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0; b < blocks; b++) {
    const start = b * QK_K;
    const at = b * Q6_K_BLOCK_BYTES;
    const subScales: number[] = [];
    for (let sub = 0; sub < 16; sub++) {
      let amax = 0;
      for (let l = 0; l < 16; l++) amax = Math.max(amax, Math.abs(values[start + sub * 16 + l]!));
      subScales.push(amax / 31);
    }
    const d = Math.max(...subScales) / 127;
    writeF16(out, at + 208, d);
    const dStored = readF16(out, at + 208);
    const scaleCodes = subScales.map((scale) => (dStored > 0 ? Math.min(127, roundHalfAway(scale / dStored)) : 0));
    for (let sub = 0; sub < 16; sub++) signedView[at + 192 + sub] = scaleCodes[sub]!;
    const levels = new Uint8Array(QK_K);
    for (let index = 0; index < QK_K; index++) {
      const step = dStored * scaleCodes[index >>> 4]!;
      const level = step > 0 ? roundHalfAway(values[start + index]! / step) : 0;
      levels[index] = Math.max(-32, Math.min(31, level)) + 32;
    }
    for (let half = 0; half < 2; half++) {
      for (let l = 0; l < 32; l++) {
        const q1 = levels[half * 128 + l]!;
        const q2 = levels[half * 128 + l + 32]!;
        const q3 = levels[half * 128 + l + 64]!;
        const q4 = levels[half * 128 + l + 96]!;
        out[at + half * 64 + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        out[at + half * 64 + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
        out[at + 128 + half * 32 + l] = (q1 >>> 4) | ((q2 >>> 4) << 2) | ((q3 >>> 4) << 4) | ((q4 >>> 4) << 6);
      }
    }
  }
  return out;
}

export function dequantizeQ6_K(data: Uint8Array, elementCount: number): Float32Array {
  const blocks = superBlockCount(elementCount);
  const out = new Float32Array(elementCount);
  const signedView = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q6_K_BLOCK_BYTES;
    const d = readF16(data, at + 208);
    for (let half = 0; half < 2; half++) {
      const lowAt = at + half * 64;
      const highAt = at + 128 + half * 32;
      const scaleAt = at + 192 + half * 8;
      const outAt = b * QK_K + half * 128;
      for (let l = 0; l < 32; l++) {
        const scaleIndex = scaleAt + (l >>> 4);
        const high = data[highAt + l]!;
        const q1 = ((data[lowAt + l]! & 0xf) | (((high >>> 0) & 3) << 4)) - 32;
        const q2 = ((data[lowAt + l + 32]! & 0xf) | (((high >>> 2) & 3) << 4)) - 32;
        const q3 = ((data[lowAt + l]! >>> 4) | (((high >>> 4) & 3) << 4)) - 32;
        const q4 = ((data[lowAt + l + 32]! >>> 4) | (((high >>> 6) & 3) << 4)) - 32;
        out[outAt + l] = d * signedView[scaleIndex]! * q1;
        out[outAt + l + 32] = d * signedView[scaleIndex + 2]! * q2;
        out[outAt + l + 64] = d * signedView[scaleIndex + 4]! * q3;
        out[outAt + l + 96] = d * signedView[scaleIndex + 6]! * q4;
      }
    }
  }
  return out;
}
