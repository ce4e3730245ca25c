// Portable reference kernels: the definition of what every SIMD kernel must compute.
#include <cmath>
#include <cstring>

#include "../fp16.h"
#include "kernels.h"

namespace skein {

float g_fp16_table[1 << 16];
void init_fp16_table() {
  for (uint32_t i = 0; i < (1u << 16); i++) g_fp16_table[i] = fp16_to_f32_compute((uint16_t)i);
}

namespace generic {

// Round half to even, as the hardware's default rounding mode does.
static inline int nearest_int(float f) { return (int)std::nearbyintf(f); }

void quantize_row_q8_0(const float* x, void* vy, int64_t k) {
  block_q8_0* y = (block_q8_0*)vy;
  for (int64_t i = 0; i < k / QK8_0; i++) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; j++) amax = std::fmax(amax, std::fabs(x[i * QK8_0 + j]));
    // Same float operations as llama.cpp's SIMD quantizer, so both round activations alike.
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)nearest_int(x[i * QK8_0 + j] * id);
  }
}

void quantize_row_q8_1(const float* x, void* vy, int64_t k) {
  block_q8_1* y = (block_q8_1*)vy;
  for (int64_t i = 0; i < k / QK8_1; i++) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_1; j++) amax = std::fmax(amax, std::fabs(x[i * QK8_1 + j]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK8_1; j++) {
      const int q = nearest_int(x[i * QK8_1 + j] * id);
      y[i].qs[j] = (int8_t)q;
      sum += q;
    }
    y[i].d = f32_to_fp16(d);
    y[i].s = f32_to_fp16((float)sum * d);
  }
}

void quantize_row_q8_K(const float* x, void* vy, int64_t k) {
  block_q8_K* y = (block_q8_K*)vy;
  for (int64_t i = 0; i < k / QK_K; i++) {
    const float* xb = x + i * QK_K;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK_K; j++) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(block_q8_K));
      continue;
    }
    // Scaling by the signed extreme maps it to exactly -127, which keeps the range symmetric.
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; j++) {
      const int v = nearest_int(iscale * xb[j]);
      y[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
    }
    for (int g = 0; g < QK_K / 16; g++) {
      int sum = 0;
      for (int j = 0; j < 16; j++) sum += y[i].qs[g * 16 + j];
      y[i].bsums[g] = (int16_t)sum;
    }
    y[i].d = 1.0f / iscale;
  }
}

void f32_to_f16_row(const float* x, void* vy, int64_t k) {
  uint16_t* y = (uint16_t*)vy;
  for (int64_t i = 0; i < k; i++) y[i] = f32_to_fp16(x[i]);
}
void f32_to_bf16_row(const float* x, void* vy, int64_t k) {
  uint16_t* y = (uint16_t*)vy;
  for (int64_t i = 0; i < k; i++) y[i] = f32_to_bf16(x[i]);
}
void f32_copy_row(const float* x, void* y, int64_t k) { std::memcpy(y, x, (size_t)k * 4); }

void dequant_f32(const void* x, float* y, int64_t k) { std::memcpy(y, x, (size_t)k * 4); }
void dequant_f16(const void* vx, float* y, int64_t k) {
  const uint16_t* x = (const uint16_t*)vx;
  for (int64_t i = 0; i < k; i++) y[i] = fp16_to_f32(x[i]);
}
void dequant_bf16(const void* vx, float* y, int64_t k) {
  const uint16_t* x = (const uint16_t*)vx;
  for (int64_t i = 0; i < k; i++) y[i] = bf16_to_f32(x[i]);
}

void dequant_q4_0(const void* vx, float* y, int64_t k) {
  const block_q4_0* x = (const block_q4_0*)vx;
  for (int64_t i = 0; i < k / QK4_0; i++) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK4_0 / 2; j++) {
      y[i * QK4_0 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * QK4_0 + j + QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}
void dequant_q4_1(const void* vx, float* y, int64_t k) {
  const block_q4_1* x = (const block_q4_1*)vx;
  for (int64_t i = 0; i < k / QK4_1; i++) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    for (int j = 0; j < QK4_1 / 2; j++) {
      y[i * QK4_1 + j] = (x[i].qs[j] & 0x0F) * d + m;
      y[i * QK4_1 + j + QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
    }
  }
}
static inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void dequant_q5_0(const void* vx, float* y, int64_t k) {
  const block_q5_0* x = (const block_q5_0*)vx;
  for (int64_t i = 0; i < k / QK5_0; i++) {
    const float d = fp16_to_f32(x[i].d);
    const uint32_t qh = load_u32(x[i].qh);
    for (int j = 0; j < QK5_0 / 2; j++) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
      y[i * QK5_0 + j] = (((x[i].qs[j] & 0x0F) | (h0 << 4)) - 16) * d;
      y[i * QK5_0 + j + QK5_0 / 2] = (((x[i].qs[j] >> 4) | (h1 << 4)) - 16) * d;
    }
  }
}
void dequant_q5_1(const void* vx, float* y, int64_t k) {
  const block_q5_1* x = (const block_q5_1*)vx;
  for (int64_t i = 0; i < k / QK5_1; i++) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    const uint32_t qh = load_u32(x[i].qh);
    for (int j = 0; j < QK5_1 / 2; j++) {
      const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
      y[i * QK5_1 + j] = ((x[i].qs[j] & 0x0F) | (h0 << 4)) * d + m;
      y[i * QK5_1 + j + QK5_1 / 2] = ((x[i].qs[j] >> 4) | (h1 << 4)) * d + m;
    }
  }
}
void dequant_q8_0(const void* vx, float* y, int64_t k) {
  const block_q8_0* x = (const block_q8_0*)vx;
  for (int64_t i = 0; i < k / QK8_0; i++) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK8_0; j++) y[i * QK8_0 + j] = x[i].qs[j] * d;
  }
}
void dequant_q8_1(const void* vx, float* y, int64_t k) {
  const block_q8_1* x = (const block_q8_1*)vx;
  for (int64_t i = 0; i < k / QK8_1; i++) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK8_1; j++) y[i * QK8_1 + j] = x[i].qs[j] * d;
  }
}
void dequant_q8_K(const void* vx, float* y, int64_t k) {
  const block_q8_K* x = (const block_q8_K*)vx;
  for (int64_t i = 0; i < k / QK_K; i++)
    for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = x[i].qs[j] * x[i].d;
}

// Unpacks the j-th 6-bit scale and min of a q4_K / q5_K block.
static inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequant_q4_K(const void* vx, float* y, int64_t k) {
  const block_q4_K* x = (const block_q4_K*)vx;
  for (int64_t i = 0; i < k / QK_K; i++) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    float* out = y + i * QK_K;
    for (int c = 0; c < 4; c++) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
      scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
      for (int l = 0; l < 32; l++) out[l] = d * sc0 * (q[l] & 0x0F) - dmin * m0;
      for (int l = 0; l < 32; l++) out[32 + l] = d * sc1 * (q[l] >> 4) - dmin * m1;
      q += 32;
      out += 64;
    }
  }
}
void dequant_q5_K(const void* vx, float* y, int64_t k) {
  const block_q5_K* x = (const block_q5_K*)vx;
  for (int64_t i = 0; i < k / QK_K; i++) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    const uint8_t* qh = x[i].qh;
    float* out = y + i * QK_K;
    for (int c = 0; c < 4; c++) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
      scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
      const int u0 = 1 << (2 * c), u1 = 2 << (2 * c);
      for (int l = 0; l < 32; l++) out[l] = d * sc0 * ((q[l] & 0x0F) + (qh[l] & u0 ? 16 : 0)) - dmin * m0;
      for (int l = 0; l < 32; l++) out[32 + l] = d * sc1 * ((q[l] >> 4) + (qh[l] & u1 ? 16 : 0)) - dmin * m1;
      q += 32;
      out += 64;
    }
  }
}

// Writes the 256 six-bit values of a q6_K block, minus 32, in element order.
static inline void unpack_q6_K(const block_q6_K* b, int8_t* a) {
  for (int h = 0; h < 2; h++) {
    const uint8_t* ql = b->ql + 64 * h;
    const uint8_t* qh = b->qh + 32 * h;
    int8_t* o = a + 128 * h;
    for (int l = 0; l < 32; l++) {
      o[l] = (int8_t)(((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32);
      o[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}
void dequant_q6_K(const void* vx, float* y, int64_t k) {
  const block_q6_K* x = (const block_q6_K*)vx;
  int8_t a[QK_K];
  for (int64_t i = 0; i < k / QK_K; i++) {
    const float d = fp16_to_f32(x[i].d);
    unpack_q6_K(&x[i], a);
    for (int j = 0; j < QK_K; j++) y[i * QK_K + j] = d * x[i].scales[j / 16] * a[j];
  }
}

void dot_f32(int n, float* s, const void* vx, const void* vy) {
  const float* x = (const float*)vx;
  const float* y = (const float*)vy;
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += (double)x[i] * (double)y[i];
  *s = (float)sum;
}
void dot_f16(int n, float* s, const void* vx, const void* vy) {
  const uint16_t* x = (const uint16_t*)vx;
  const uint16_t* y = (const uint16_t*)vy;
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += (double)(fp16_to_f32(x[i]) * fp16_to_f32(y[i]));
  *s = (float)sum;
}
void dot_bf16(int n, float* s, const void* vx, const void* vy) {
  const uint16_t* x = (const uint16_t*)vx;
  const uint16_t* y = (const uint16_t*)vy;
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += (double)(bf16_to_f32(x[i]) * bf16_to_f32(y[i]));
  *s = (float)sum;
}

void dot_q4_0_q8_0(int n, float* s, const void* vx, const void* vy) {
  const block_q4_0* x = (const block_q4_0*)vx;
  const block_q8_0* y = (const block_q8_0*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK8_0; i++) {
    int sumi = 0;
    for (int j = 0; j < QK8_0 / 2; j++) {
      sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
      sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK8_0 / 2];
    }
    sum += sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d);
  }
  *s = sum;
}
void dot_q4_1_q8_1(int n, float* s, const void* vx, const void* vy) {
  const block_q4_1* x = (const block_q4_1*)vx;
  const block_q8_1* y = (const block_q8_1*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK8_1; i++) {
    int sumi = 0;
    for (int j = 0; j < QK8_1 / 2; j++) {
      sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
      sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK8_1 / 2];
    }
    sum += sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d) + fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
  }
  *s = sum;
}
void dot_q5_0_q8_0(int n, float* s, const void* vx, const void* vy) {
  const block_q5_0* x = (const block_q5_0*)vx;
  const block_q8_0* y = (const block_q8_0*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK8_0; i++) {
    const uint32_t qh = load_u32(x[i].qh);
    int sumi = 0;
    for (int j = 0; j < QK8_0 / 2; j++) {
      const int x0 = ((x[i].qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16;
      const int x1 = ((x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
      sumi += x0 * y[i].qs[j] + x1 * y[i].qs[j + QK8_0 / 2];
    }
    sum += sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d);
  }
  *s = sum;
}
void dot_q5_1_q8_1(int n, float* s, const void* vx, const void* vy) {
  const block_q5_1* x = (const block_q5_1*)vx;
  const block_q8_1* y = (const block_q8_1*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK8_1; i++) {
    const uint32_t qh = load_u32(x[i].qh);
    int sumi = 0;
    for (int j = 0; j < QK8_1 / 2; j++) {
      const int x0 = (x[i].qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
      const int x1 = (x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      sumi += x0 * y[i].qs[j] + x1 * y[i].qs[j + QK8_1 / 2];
    }
    sum += sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d) + fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
  }
  *s = sum;
}
void dot_q8_0_q8_0(int n, float* s, const void* vx, const void* vy) {
  const block_q8_0* x = (const block_q8_0*)vx;
  const block_q8_0* y = (const block_q8_0*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK8_0; i++) {
    int sumi = 0;
    for (int j = 0; j < QK8_0; j++) sumi += x[i].qs[j] * y[i].qs[j];
    sum += sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d);
  }
  *s = sum;
}
void dot_q4_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q4_K* x = (const block_q4_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK_K; i++) {
    const uint8_t* q4 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    int sumi = 0, summ = 0;
    for (int c = 0; c < 4; c++) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
      scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
      int s0 = 0, s1 = 0;
      for (int l = 0; l < 32; l++) {
        s0 += (q4[l] & 0x0F) * q8[l];
        s1 += (q4[l] >> 4) * q8[l + 32];
      }
      sumi += sc0 * s0 + sc1 * s1;
      summ += m0 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) + m1 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
      q4 += 32;
      q8 += 64;
    }
    sum += y[i].d * fp16_to_f32(x[i].d) * sumi - y[i].d * fp16_to_f32(x[i].dmin) * summ;
  }
  *s = sum;
}
void dot_q5_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q5_K* x = (const block_q5_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  float sum = 0.0f;
  for (int i = 0; i < n / QK_K; i++) {
    const uint8_t* q5 = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const int8_t* q8 = y[i].qs;
    int sumi = 0, summ = 0;
    for (int c = 0; c < 4; c++) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
      scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
      const int u0 = 1 << (2 * c), u1 = 2 << (2 * c);
      int s0 = 0, s1 = 0;
      for (int l = 0; l < 32; l++) {
        s0 += ((q5[l] & 0x0F) + (qh[l] & u0 ? 16 : 0)) * q8[l];
        s1 += ((q5[l] >> 4) + (qh[l] & u1 ? 16 : 0)) * q8[l + 32];
      }
      sumi += sc0 * s0 + sc1 * s1;
      summ += m0 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) + m1 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
      q5 += 32;
      q8 += 64;
    }
    sum += y[i].d * fp16_to_f32(x[i].d) * sumi - y[i].d * fp16_to_f32(x[i].dmin) * summ;
  }
  *s = sum;
}
void dot_q6_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q6_K* x = (const block_q6_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  int8_t a[QK_K];
  float sum = 0.0f;
  for (int i = 0; i < n / QK_K; i++) {
    unpack_q6_K(&x[i], a);
    int sumi = 0;
    for (int g = 0; g < QK_K / 16; g++) {
      int sg = 0;
      for (int j = 0; j < 16; j++) sg += a[g * 16 + j] * y[i].qs[g * 16 + j];
      sumi += x[i].scales[g] * sg;
    }
    sum += fp16_to_f32(x[i].d) * y[i].d * sumi;
  }
  *s = sum;
}

void axpy_f16(int n, float a, const uint16_t* x, float* y) {
  for (int i = 0; i < n; i++) y[i] += a * fp16_to_f32(x[i]);
}
void axpy_f32(int n, float a, const float* x, float* y) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void scores_f16(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out) {
  for (int j = 0; j < nPos; j++) dot_f16(hd, &out[j], k + (size_t)j * stride, q);
}
void values_f16(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out) {
  for (int j = 0; j < nPos; j++) axpy_f16(hd, w[j], v + (size_t)j * stride, out);
}

void silu_mul(int n, float* g, const float* u) {
  for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}
double exp_sub_sum(int n, float* x, float max) {
  double sum = 0.0;
  for (int i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  return sum;
}

}  // namespace generic
}  // namespace skein
