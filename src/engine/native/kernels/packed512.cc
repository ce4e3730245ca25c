// AVX-512 kernels for the 16-row packed groups (packed.h). One 512-bit register holds 4 weights of
// each of 16 rows; a broadcast of 4 signed activation bytes meets them in one VNNI byte dot, so a
// block of 16 rows × 32 elements costs 8 dot instructions and a few unpacking ones. The weights
// are unsigned (nibble, nibble | fifth bit, or q + 128); the activation block's −K·Σy starts the
// integer sum instead of a per-row correction. Integer sums are exact, so every token count and
// every chain split gives the same float results.
#include "packed.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// GCC 12's _mm512_cvtph_ps starts from a deliberately undefined register and then warns about it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace skein {
namespace avx512 {

#if defined(__x86_64__)
bool compiled() { return true; }

#define SKEIN_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))

namespace {

// Scales the exact integer sums of one block and accumulates, then stores 16 outputs per token.
template <int T>
SKEIN_512 inline void store_rows(const __m512 (&acc)[T], float* out, int64_t os, bool accumulate) {
  for (int t = 0; t < T; t++) {
    float* o = out + (int64_t)t * os;
    __m512 v = acc[t];
    if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(o));
    _mm512_storeu_ps(o, v);
  }
}

// The 8 weight vectors of a block (chunks 0..3 low nibbles, then high) and K, per kind.
struct Q4 {
  static constexpr int K = 8;
  using Block = block_q4_0x16;
  SKEIN_512 static inline void unpack(const Block* p, __m512i (&w)[8]) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; k++) {
      const __m512i c = _mm512_loadu_si512((const void*)(p->qs + 64 * k));
      w[k] = _mm512_and_si512(c, low4);
      w[4 + k] = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
    }
  }
};

struct Q5 {
  static constexpr int K = 16;
  using Block = block_q5_0x16;
  SKEIN_512 static inline void unpack(const Block* p, __m512i (&w)[8]) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    for (int k = 0; k < 4; k++) {
      const __m512i c = _mm512_loadu_si512((const void*)(p->qs + 64 * k));
      const __m512i lo = _mm512_and_si512(c, low4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
      w[k] = _mm512_mask_add_epi8(lo, _cvtu64_mask64(p->qh[k]), lo, bit4);
      w[4 + k] = _mm512_mask_add_epi8(hi, _cvtu64_mask64(p->qh[4 + k]), hi, bit4);
    }
  }
};

struct Q8 {
  static constexpr int K = 128;
  using Block = block_q8_0x16;
  SKEIN_512 static inline void unpack(const Block* p, __m512i (&w)[8]) {
    for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void*)(p->qs + 64 * k));
  }
};

// Chunk k of the unpacked block pairs with activation bytes 4k..4k+3 (the order repacking chose:
// q4/q5 low chunks are elements 4k.., high chunks 16 + 4k..; q8 chunks are elements 4k..).
template <typename Kind, int T>
SKEIN_512 void gemm_t(int64_t nb, const typename Kind::Block* g, const PackedActs& a, float* out, int64_t os, bool accumulate) {
  __m512 acc[T];
  for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const typename Kind::Block* p = g + b;
    __m512i w[8];
    Kind::unpack(p, w);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p->d));
    for (int t = 0; t < T; t++) {
      const int32_t* y4 = (const int32_t*)(a.qsS + (size_t)t * a.qsStride + (size_t)b * 32);
      const size_t at = (size_t)t * a.dStride + (size_t)b;
      __m512i s;
      if (T == 1) {
        // Two chains halve the dependent latency when there is only one token to overlap.
        __m512i s0 = _mm512_set1_epi32(-Kind::K * a.sum[at]);
        __m512i s1 = _mm512_setzero_si512();
        for (int k = 0; k < 8; k += 2) {
          s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(y4[k]));
          s1 = _mm512_dpbusd_epi32(s1, w[k + 1], _mm512_set1_epi32(y4[k + 1]));
        }
        s = _mm512_add_epi32(s0, s1);
      } else {
        s = _mm512_set1_epi32(-Kind::K * a.sum[at]);
        for (int k = 0; k < 8; k++) s = _mm512_dpbusd_epi32(s, w[k], _mm512_set1_epi32(y4[k]));
      }
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a.d[at])), _mm512_cvtepi32_ps(s), acc[t]);
    }
  }
  store_rows<T>(acc, out, os, accumulate);
}

template <typename Kind>
SKEIN_512 void gemm(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc) {
  const typename Kind::Block* g = (const typename Kind::Block*)group;
  switch (T) {
    case 1: return gemm_t<Kind, 1>(nb, g, a, out, os, acc);
    case 2: return gemm_t<Kind, 2>(nb, g, a, out, os, acc);
    case 3: return gemm_t<Kind, 3>(nb, g, a, out, os, acc);
    case 4: return gemm_t<Kind, 4>(nb, g, a, out, os, acc);
    case 5: return gemm_t<Kind, 5>(nb, g, a, out, os, acc);
    case 6: return gemm_t<Kind, 6>(nb, g, a, out, os, acc);
    case 7: return gemm_t<Kind, 7>(nb, g, a, out, os, acc);
    default: return gemm_t<Kind, 8>(nb, g, a, out, os, acc);
  }
}
static_assert(kMaxTokensX16 == 8, "the switch above covers 1..8 tokens");

}  // namespace

void gemm_q4_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc) {
  gemm<Q4>(nb, group, a, T, out, os, acc);
}
void gemm_q5_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc) {
  gemm<Q5>(nb, group, a, T, out, os, acc);
}
void gemm_q8_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc) {
  gemm<Q8>(nb, group, a, T, out, os, acc);
}

#else
bool compiled() { return false; }
void gemm_q4_0x16(int64_t, const void*, const PackedActs&, int, float*, int64_t, bool) {}
void gemm_q5_0x16(int64_t, const void*, const PackedActs&, int, float*, int64_t, bool) {}
void gemm_q8_0x16(int64_t, const void*, const PackedActs&, int, float*, int64_t, bool) {}
#endif

}  // namespace avx512
}  // namespace skein
