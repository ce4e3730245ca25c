// ARM NEON overrides (Apple Silicon, Graviton). Compiled everywhere; empty off ARM.
#include "kernels.h"

#if defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>

#include "../fp16.h"

namespace skein {
namespace neon {
bool compiled() { return true; }

void dot_q4_0_q8_0(int n, float* s, const void* vx, const void* vy) {
  const block_q4_0* x = (const block_q4_0*)vx;
  const block_q8_0* y = (const block_q8_0*)vy;
  float32x4_t acc = vdupq_n_f32(0.0f);
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  const int8x16_t eight = vdupq_n_s8(8);
  for (int i = 0; i < n / QK8_0; i++) {
    const uint8x16_t q = vld1q_u8(x[i].qs);
    const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, mask)), eight);
    const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
    const int8x16_t y0 = vld1q_s8(y[i].qs);
    const int8x16_t y1 = vld1q_s8(y[i].qs + 16);
    int16x8_t p = vmull_s8(vget_low_s8(lo), vget_low_s8(y0));
    p = vmlal_s8(p, vget_high_s8(lo), vget_high_s8(y0));
    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(y1));
    p = vmlal_s8(p, vget_high_s8(hi), vget_high_s8(y1));
    const int32x4_t p32 = vpaddlq_s16(p);
    acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p32), fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d));
  }
  *s = vaddvq_f32(acc);
}

void dot_q8_0_q8_0(int n, float* s, const void* vx, const void* vy) {
  const block_q8_0* x = (const block_q8_0*)vx;
  const block_q8_0* y = (const block_q8_0*)vy;
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int i = 0; i < n / QK8_0; i++) {
    int32x4_t sum = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++) {
      const int8x16_t a = vld1q_s8(x[i].qs + 16 * h);
      const int8x16_t b = vld1q_s8(y[i].qs + 16 * h);
      int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
      p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
      sum = vpadalq_s16(sum, p);
    }
    acc = vmlaq_n_f32(acc, vcvtq_f32_s32(sum), fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d));
  }
  *s = vaddvq_f32(acc);
}
}  // namespace neon
}  // namespace skein
#else
namespace skein {
namespace neon {
bool compiled() { return false; }
void dot_q4_0_q8_0(int n, float* s, const void* x, const void* y) { generic::dot_q4_0_q8_0(n, s, x, y); }
void dot_q8_0_q8_0(int n, float* s, const void* x, const void* y) { generic::dot_q8_0_q8_0(n, s, x, y); }
}  // namespace neon
}  // namespace skein
#endif
