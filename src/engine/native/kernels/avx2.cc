// AVX2 + FMA + F16C overrides. Each function carries its own target attribute so that the rest of
// the addon is built for the baseline ISA and still loads on CPUs without AVX2; init_kernels only
// installs these after __builtin_cpu_supports says yes.
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../fp16.h"

#define SKEIN_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace skein {
namespace avx2 {
bool compiled() { return true; }

SKEIN_AVX2 static inline float hsum8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
SKEIN_AVX2 static inline int hsum8_i32(__m256i v) {
  __m128i r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 1));
  return _mm_cvtsi128_si32(r);
}
SKEIN_AVX2 static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// 16 packed bytes -> 32 bytes: low nibbles (elements 0..15) then high nibbles (16..31).
SKEIN_AVX2 static inline __m256i unpack_nibbles(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128((const __m128i*)p);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, 0xFF where the bit is set (element j <- bit j).
SKEIN_AVX2 static inline __m256i expand_bits(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                       3, 3, 3, 3, 3, 3);
  const __m256i which = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), sel);
  return _mm256_cmpeq_epi8(_mm256_and_si256(bytes, which), which);
}

// Sum over pairs of signed bytes times signed bytes, as 8 int32 lanes.
SKEIN_AVX2 static inline __m256i dot_i8_i32(__m256i a, __m256i b) {
  const __m256i pa = _mm256_sign_epi8(a, a);
  const __m256i pb = _mm256_sign_epi8(b, a);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(pa, pb), _mm256_set1_epi16(1));
}
// Unsigned bytes (< 128) times signed bytes.
SKEIN_AVX2 static inline __m256i dot_u8_i8_i32(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

SKEIN_AVX2 void dot_f32(int n, float* s, const void* vx, const void* vy) {
  const float* x = (const float*)vx;
  const float* y = (const float*)vy;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
  float sum = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; i++) sum += x[i] * y[i];
  *s = sum;
}
SKEIN_AVX2 void axpy_f32(int n, float a, const float* x, float* y) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}
SKEIN_AVX2 void f32_to_f16_row(const float* x, void* vy, int64_t k) {
  uint16_t* y = (uint16_t*)vy;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < k; i++) y[i] = f32_to_fp16(x[i]);
}

SKEIN_AVX2 static inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
}
SKEIN_AVX2 static inline float dot_f16_core(int n, const uint16_t* x, const uint16_t* y);
SKEIN_AVX2 void dot_f16(int n, float* s, const void* vx, const void* vy) {
  *s = dot_f16_core(n, (const uint16_t*)vx, (const uint16_t*)vy);
}
SKEIN_AVX2 static inline float dot_f16_core(int n, const uint16_t* x, const uint16_t* y) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), a0);
    a1 = _mm256_fmadd_ps(load_f16x8(x + i + 8), load_f16x8(y + i + 8), a1);
    a2 = _mm256_fmadd_ps(load_f16x8(x + i + 16), load_f16x8(y + i + 16), a2);
    a3 = _mm256_fmadd_ps(load_f16x8(x + i + 24), load_f16x8(y + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), a0);
  float sum = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; i++) sum += h2f(x[i]) * h2f(y[i]);
  return sum;
}
SKEIN_AVX2 void scores_f16(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out) {
  for (int j = 0; j < nPos; j++) out[j] = dot_f16_core(hd, k + (size_t)j * stride, q);
}


SKEIN_AVX2 static inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
SKEIN_AVX2 void axpy_f16(int n, float a, const uint16_t* x, float* y) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16x8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * h2f(x[i]);
}

SKEIN_AVX2 void values_f16(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out) {
  for (int j = 0; j < nPos; j++) axpy_f16(hd, w[j], v + (size_t)j * stride, out);
}

// e^x for 8 floats: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for accuracy), e^r by its
// degree-6 Taylor polynomial (relative error ~2e-7), 2^n put straight into the exponent bits.
SKEIN_AVX2 static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

SKEIN_AVX2 void silu_mul(int n, float* g, const float* u) {
  int i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

SKEIN_AVX2 double exp_sub_sum(int n, float* x, float max) {
  int i = 0;
  const __m256 m = _mm256_set1_ps(max);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  double sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; i++) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  return sum;
}

SKEIN_AVX2 void dot_bf16(int n, float* s, const void* vx, const void* vy) {
  const uint16_t* x = (const uint16_t*)vx;
  const uint16_t* y = (const uint16_t*)vy;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(load_bf16x8(x + i), load_bf16x8(y + i), a0);
    a1 = _mm256_fmadd_ps(load_bf16x8(x + i + 8), load_bf16x8(y + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_bf16x8(x + i), load_bf16x8(y + i), a0);
  float sum = hsum8(_mm256_add_ps(a0, a1));
  for (; i < n; i++) sum += bf16_to_f32(x[i]) * bf16_to_f32(y[i]);
  *s = sum;
}

SKEIN_AVX2 void dot_q4_1_q8_1(int n, float* s, const void* vx, const void* vy) {
  const block_q4_1* x = (const block_q4_1*)vx;
  const block_q8_1* y = (const block_q8_1*)vy;
  const int nb = n / QK8_1;
  __m256 acc = _mm256_setzero_ps();
  float offs = 0.0f;
  for (int i = 0; i < nb; i++) {
    const __m256i q = unpack_nibbles(x[i].qs);
    const __m256i p = dot_u8_i8_i32(q, _mm256_loadu_si256((const __m256i*)y[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    offs += h2f(x[i].m) * h2f(y[i].s);
  }
  *s = hsum8(acc) + offs;
}

SKEIN_AVX2 void dot_q5_1_q8_1(int n, float* s, const void* vx, const void* vy) {
  const block_q5_1* x = (const block_q5_1*)vx;
  const block_q8_1* y = (const block_q8_1*)vy;
  const int nb = n / QK8_1;
  __m256 acc = _mm256_setzero_ps();
  float offs = 0.0f;
  const __m256i bit4 = _mm256_set1_epi8(0x10);
  for (int i = 0; i < nb; i++) {
    const __m256i hi = _mm256_and_si256(expand_bits(x[i].qh), bit4);
    const __m256i q = _mm256_or_si256(unpack_nibbles(x[i].qs), hi);
    const __m256i p = dot_u8_i8_i32(q, _mm256_loadu_si256((const __m256i*)y[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    offs += h2f(x[i].m) * h2f(y[i].s);
  }
  *s = hsum8(acc) + offs;
}


#define SKEIN_TILE_TARGET SKEIN_AVX2
#define SKEIN_TILE_DOT(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "tile_q8p.inc"
#undef SKEIN_TILE_TARGET
#undef SKEIN_TILE_DOT

// The 8 six-bit scales and mins of a q4_K / q5_K block.
static inline void scales_mins_k4(const uint8_t* q, uint8_t* sc, uint8_t* m) {
  for (int j = 0; j < 4; j++) {
    sc[j] = q[j] & 63;
    m[j] = q[j + 4] & 63;
  }
  for (int j = 4; j < 8; j++) {
    sc[j] = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    m[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Sum over the 8 sub-blocks of min[j] * (sum of the 32 activations of sub-block j).
SKEIN_AVX2 static inline int mins_dot(const uint8_t* m, const int16_t* bsums) {
  const __m256i b = _mm256_loadu_si256((const __m256i*)bsums);
  const __m128i m8 = _mm_loadl_epi64((const __m128i*)m);
  // Each min covers two consecutive bsums: duplicate it into both 16-bit lanes.
  const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  return hsum8_i32(_mm256_madd_epi16(b, m16));
}

SKEIN_AVX2 void dot_q4_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q4_K* x = (const block_q4_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  const int nb = n / QK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float accm = 0.0f;
  for (int i = 0; i < nb; i++) {
    alignas(16) uint8_t sc[8], m[8];
    scales_mins_k4(x[i].scales, sc, m);
    const float d = y[i].d * h2f(x[i].d);
    const float dmin = y[i].d * h2f(x[i].dmin);
    accm += dmin * (float)mins_dot(m, y[i].bsums);
    const uint8_t* q4 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
      const __m256i q = _mm256_loadu_si256((const __m256i*)(q4 + 32 * c));
      const __m256i lo = _mm256_and_si256(q, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c)));
      const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c + 32)));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  *s = hsum8(acc) - accm;
}

SKEIN_AVX2 void dot_q5_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q5_K* x = (const block_q5_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  const int nb = n / QK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float accm = 0.0f;
  for (int i = 0; i < nb; i++) {
    alignas(16) uint8_t sc[8], m[8];
    scales_mins_k4(x[i].scales, sc, m);
    const float d = y[i].d * h2f(x[i].d);
    const float dmin = y[i].d * h2f(x[i].dmin);
    accm += dmin * (float)mins_dot(m, y[i].bsums);
    const uint8_t* q5 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    const __m256i hbits = _mm256_loadu_si256((const __m256i*)x[i].qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
      const __m256i q = _mm256_loadu_si256((const __m256i*)(q5 + 32 * c));
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c + 1), one);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, low4), _mm256_slli_epi16(h0, 4));
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), _mm256_slli_epi16(h1, 4));
      const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c)));
      const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q8 + 64 * c + 32)));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  *s = hsum8(acc) - accm;
}

// Two 16-bit scale values: the first for lanes 0..7 (elements 0..15), the second for 8..15.
SKEIN_AVX2 static inline __m256i scale_pair(int a, int b) {
  return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

SKEIN_AVX2 void dot_q6_K_q8_K(int n, float* s, const void* vx, const void* vy) {
  const block_q6_K* x = (const block_q6_K*)vx;
  const block_q8_K* y = (const block_q8_K*)vy;
  const int nb = n / QK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++) {
    const int8_t* sc = x[i].scales;
    // The stored quants are value + 32: subtract 32 * sum(scale_g * bsum_g) once per block.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)sc));
    const int offset = 32 * hsum8_i32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i*)y[i].bsums)));
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const __m256i qh = _mm256_loadu_si256((const __m256i*)(x[i].qh + 32 * h));
      const int8_t* q8 = y[i].qs + 128 * h;
      const int8_t* s8 = sc + 8 * h;
      const __m256i l0 = _mm256_loadu_si256((const __m256i*)ql);
      const __m256i l1 = _mm256_loadu_si256((const __m256i*)(ql + 32));
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, low4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
      const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
      const __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i*)q8));
      const __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i*)(q8 + 32)));
      const __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i*)(q8 + 64)));
      const __m256i p4 = _mm256_maddubs_epi16(q4, _mm256_loadu_si256((const __m256i*)(q8 + 96)));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, scale_pair(s8[0], s8[1])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, scale_pair(s8[2], s8[3])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p3, scale_pair(s8[4], s8[5])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p4, scale_pair(s8[6], s8[7])));
    }
    sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0));
    const float d = y[i].d * h2f(x[i].d);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  *s = hsum8(acc);
}

// Tiles for the K-quants: one weight row at a time, its block's scales and quants unpacked once
// for up to 4 tokens. Every (row, token) pair runs exactly the operations of the single dot above
// in the same order, so the results are bit-identical to it.
template <int T>
SKEIN_AVX2 static void tile_q4_K_row(int n, const uint8_t* w, const uint8_t* y, size_t ys, float* out, int64_t os, bool accumulate) {
  const block_q4_K* x = (const block_q4_K*)w;
  const int nb = n / QK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  float accm[T];
  for (int t = 0; t < T; t++) {
    acc[t] = _mm256_setzero_ps();
    accm[t] = 0.0f;
  }
  for (int i = 0; i < nb; i++) {
    alignas(16) uint8_t sc[8], m[8];
    scales_mins_k4(x[i].scales, sc, m);
    const float xd = h2f(x[i].d), xdmin = h2f(x[i].dmin);
    __m256i lo[4], hi[4];
    for (int c = 0; c < 4; c++) {
      const __m256i q = _mm256_loadu_si256((const __m256i*)(x[i].qs + 32 * c));
      lo[c] = _mm256_and_si256(q, low4);
      hi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    }
    for (int t = 0; t < T; t++) {
      const block_q8_K* yb = (const block_q8_K*)(y + (size_t)t * ys) + i;
      const float d = yb->d * xd;
      const float dmin = yb->d * xdmin;
      accm[t] += dmin * (float)mins_dot(m, yb->bsums);
      const int8_t* q8 = yb->qs;
      __m256i sumi = _mm256_setzero_si256();
      for (int c = 0; c < 4; c++) {
        const __m256i plo = _mm256_maddubs_epi16(lo[c], _mm256_loadu_si256((const __m256i*)(q8 + 64 * c)));
        const __m256i phi = _mm256_maddubs_epi16(hi[c], _mm256_loadu_si256((const __m256i*)(q8 + 64 * c + 32)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
      }
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
    }
  }
  for (int t = 0; t < T; t++) {
    const float v = hsum8(acc[t]) - accm[t];
    float* o = out + (int64_t)t * os;
    *o = accumulate ? *o + v : v;
  }
}

template <int T>
SKEIN_AVX2 static void tile_q6_K_row(int n, const uint8_t* w, const uint8_t* y, size_t ys, float* out, int64_t os, bool accumulate) {
  const block_q6_K* x = (const block_q6_K*)w;
  const int nb = n / QK_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  __m256 acc[T];
  for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
  for (int i = 0; i < nb; i++) {
    const int8_t* sc = x[i].scales;
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)sc));
    __m256i q[2][4];
    for (int h = 0; h < 2; h++) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const __m256i qh = _mm256_loadu_si256((const __m256i*)(x[i].qh + 32 * h));
      const __m256i l0 = _mm256_loadu_si256((const __m256i*)ql);
      const __m256i l1 = _mm256_loadu_si256((const __m256i*)(ql + 32));
      q[h][0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
      q[h][1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
      q[h][2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
      q[h][3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
    }
    const float xd = h2f(x[i].d);
    for (int t = 0; t < T; t++) {
      const block_q8_K* yb = (const block_q8_K*)(y + (size_t)t * ys) + i;
      const int offset = 32 * hsum8_i32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i*)yb->bsums)));
      __m256i sumi = _mm256_setzero_si256();
      for (int h = 0; h < 2; h++) {
        const int8_t* q8 = yb->qs + 128 * h;
        const int8_t* s8 = sc + 8 * h;
        const __m256i p1 = _mm256_maddubs_epi16(q[h][0], _mm256_loadu_si256((const __m256i*)q8));
        const __m256i p2 = _mm256_maddubs_epi16(q[h][1], _mm256_loadu_si256((const __m256i*)(q8 + 32)));
        const __m256i p3 = _mm256_maddubs_epi16(q[h][2], _mm256_loadu_si256((const __m256i*)(q8 + 64)));
        const __m256i p4 = _mm256_maddubs_epi16(q[h][3], _mm256_loadu_si256((const __m256i*)(q8 + 96)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, scale_pair(s8[0], s8[1])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, scale_pair(s8[2], s8[3])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p3, scale_pair(s8[4], s8[5])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p4, scale_pair(s8[6], s8[7])));
      }
      sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0));
      const float d = yb->d * xd;
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
    }
  }
  for (int t = 0; t < T; t++) {
    const float v = hsum8(acc[t]);
    float* o = out + (int64_t)t * os;
    *o = accumulate ? *o + v : v;
  }
}

using k_row_fn = void (*)(int, const uint8_t*, const uint8_t*, size_t, float*, int64_t, bool);

// One token (decode) goes through the type's selected dot, which may be a wider ISA's
// bit-identical version; several tokens share each row's unpacking here.
static void tile_k(const k_row_fn (&byT)[4], int type, int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y,
                   size_t ys, float* out, int64_t os, bool acc) {
  if (T == 1) {
    const vec_dot_fn dot = type_traits(type)->dot;
    for (int r = 0; r < R; r++) {
      float v;
      dot(n, &v, w + (size_t)r * ws, y);
      out[r] = acc ? out[r] + v : v;
    }
    return;
  }
  for (int r = 0; r < R; r++) {
    for (int t0 = 0; t0 < T; t0 += 4) {
      const int tn = T - t0 < 4 ? T - t0 : 4;
      byT[tn - 1](n, w + (size_t)r * ws, y + (size_t)t0 * ys, ys, out + (int64_t)t0 * os + r, os, acc);
    }
  }
}

void tile_q4_K(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc) {
  static const k_row_fn byT[4] = {tile_q4_K_row<1>, tile_q4_K_row<2>, tile_q4_K_row<3>, tile_q4_K_row<4>};
  tile_k(byT, T_Q4_K, n, R, T, w, ws, y, ys, out, os, acc);
}

void tile_q6_K(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc) {
  static const k_row_fn byT[4] = {tile_q6_K_row<1>, tile_q6_K_row<2>, tile_q6_K_row<3>, tile_q6_K_row<4>};
  tile_k(byT, T_Q6_K, n, R, T, w, ws, y, ys, out, os, acc);
}

}  // namespace avx2

// AVX-VNNI (Alder Lake, Sapphire Rapids, Zen 5): dpbusd replaces maddubs + madd.
namespace avxvnni {
using namespace avx2;
#define SKEIN_TILE_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define SKEIN_TILE_DOT(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
#include "tile_q8p.inc"
#undef SKEIN_TILE_TARGET
#undef SKEIN_TILE_DOT
}  // namespace avxvnni

// AVX512-VNNI at 256 bits (Ice Lake, Zen 4 and later servers).
namespace avx512vnni {
using namespace avx2;
#define SKEIN_TILE_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define SKEIN_TILE_DOT(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "tile_q8p.inc"
#undef SKEIN_TILE_TARGET
#undef SKEIN_TILE_DOT
}  // namespace avx512vnni
}  // namespace skein
#else
namespace skein {
namespace avx2 {
bool compiled() { return false; }
#define SKEIN_FALLBACK(name) \
  void name(int n, float* s, const void* x, const void* y) { generic::name(n, s, x, y); }
SKEIN_FALLBACK(dot_f32)
SKEIN_FALLBACK(dot_f16)
SKEIN_FALLBACK(dot_bf16)
SKEIN_FALLBACK(dot_q4_0_q8_0)
SKEIN_FALLBACK(dot_q4_1_q8_1)
SKEIN_FALLBACK(dot_q5_0_q8_0)
SKEIN_FALLBACK(dot_q5_1_q8_1)
SKEIN_FALLBACK(dot_q8_0_q8_0)
SKEIN_FALLBACK(dot_q4_K_q8_K)
SKEIN_FALLBACK(dot_q5_K_q8_K)
SKEIN_FALLBACK(dot_q6_K_q8_K)
void axpy_f16(int n, float a, const uint16_t* x, float* y) { generic::axpy_f16(n, a, x, y); }
void axpy_f32(int n, float a, const float* x, float* y) { generic::axpy_f32(n, a, x, y); }
void f32_to_f16_row(const float* x, void* y, int64_t k) { generic::f32_to_f16_row(x, y, k); }
void scores_f16(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out) { generic::scores_f16(nPos, hd, k, stride, q, out); }
void values_f16(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out) { generic::values_f16(nPos, hd, v, stride, w, out); }
void silu_mul(int n, float* g, const float* u) { generic::silu_mul(n, g, u); }
double exp_sub_sum(int n, float* x, float max) { return generic::exp_sub_sum(n, x, max); }
void tile_q4_0(int, int, int, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool) {}
void tile_q5_0(int, int, int, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool) {}
void tile_q8_0(int, int, int, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool) {}
void tile_q4_K(int, int, int, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool) {}
void tile_q6_K(int, int, int, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool) {}
}  // namespace avx2
}  // namespace skein
#endif
