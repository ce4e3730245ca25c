// Half and bfloat16 conversions without any instruction-set assumption (the SIMD kernels use F16C).
#pragma once
#include <cstdint>
#include <cstring>

namespace skein {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// IEEE half -> float, exact for every input including subnormals, inf and NaN.
inline float fp16_to_f32_compute(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    // Subnormal: value = mant * 2^-24.
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000 | (mant << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

// float -> IEEE half, round to nearest even (what F16C's default rounding does).
inline uint16_t f32_to_fp16(float f) {
  uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  x &= 0x7fffffff;
  if (x >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (x > 0x7f800000 ? 0x200 : 0));
  if (x >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds to >= 65520: inf
  if (x < 0x38800000) {
    // Result is subnormal (or zero): scale so that the integer rounding does the work.
    if (x < 0x33000000) return (uint16_t)sign;  // below half the smallest subnormal
    const uint32_t e = x >> 23;
    uint32_t m = (x & 0x7fffff) | 0x800000;
    const int shift = 126 - (int)e;  // 14 + (113 - e) - 1 ... computed as the gap to 2^-24 units
    const uint32_t shifted = m >> (shift - 0);
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = shifted;
    if (rem > half || (rem == half && (shifted & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = x - 0x38000000;  // rebias exponent 127 -> 15
  const uint32_t rem = r & 0x1fff;
  r >>= 13;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

extern float g_fp16_table[1 << 16];
void init_fp16_table();
inline float fp16_to_f32(uint16_t h) { return g_fp16_table[h]; }

inline float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 64);  // quiet NaN
  return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

}  // namespace skein
