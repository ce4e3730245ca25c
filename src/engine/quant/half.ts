// IEEE half (f16) and bfloat16 conversions with ggml's rounding: round to nearest, ties to even.
const scratch = new DataView(new ArrayBuffer(4));

function f32Bits(value: number): number {
  scratch.setFloat32(0, value, true);
  return scratch.getUint32(0, true);
}

export function f32ToF16Bits(value: number): number {
  const bits = f32Bits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal half: value = m · 2^-24, so shift the full 24-bit significand right.
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  // A carry out of the mantissa bumps the exponent, which is exactly right (up to infinity).
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1)) half++;
  return sign | half;
}

function f16BitsToF32Slow(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

const F16_TO_F32 = new Float32Array(65536);
for (let bits = 0; bits < 65536; bits++) F16_TO_F32[bits] = f16BitsToF32Slow(bits);

export function f16BitsToF32(bits: number): number {
  return F16_TO_F32[bits & 0xffff]!;
}

/** The float a value becomes after a round trip through f16. */
export function roundToF16(value: number): number {
  return f16BitsToF32(f32ToF16Bits(value));
}

export function f32ToBf16Bits(value: number): number {
  const bits = f32Bits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 64) & 0xffff; // keep NaN a quiet NaN
  return ((bits + (0x7fff + ((bits >>> 16) & 1))) >>> 16) & 0xffff;
}

export function bf16BitsToF32(bits: number): number {
  scratch.setUint32(0, (bits & 0xffff) << 16, true);
  return scratch.getFloat32(0, true);
}
