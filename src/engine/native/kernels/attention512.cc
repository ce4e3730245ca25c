// AVX-512 attention over an f16 KV cache for the query heads that share one KV head (GQA): each
// K and V row is loaded and widened once for all of them instead of once per head, dot products
// of 16 positions are reduced together (a transposing add tree, not 16 horizontal sums), and the
// output rows of a batch of heads stay in registers across all positions.
#include <cstddef>
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's _mm512_cvtph_ps starts from a deliberately undefined register and then warns about it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace skein {
namespace avx512 {

#if defined(__x86_64__)
#define SKEIN_512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))

namespace {

// 16 vectors in, one vector out whose lane i is the sum of the lanes of v[i].
SKEIN_512 inline __m512 reduce16(__m512 (&v)[16]) {
  __m512 a[8];
  for (int i = 0; i < 8; i++)
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  __m512 b[4];
  for (int i = 0; i < 4; i++)
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xEE));
  // b[i] lane L (128-bit) holds partial sums of v[4i..4i+3] over that lane's quarter.
  __m512 c[2];
  for (int i = 0; i < 2; i++)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

SKEIN_512 inline __m512 load_f16x16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }

template <int NV>  // hd = 16 * NV
SKEIN_512 void scores_t(int nHeads, int nPos, const uint16_t* k, size_t stride, const float* q, float* out, size_t outStride) {
  constexpr int hd = 16 * NV;
  alignas(64) float kf[16 * hd];
  for (int j0 = 0; j0 < nPos; j0 += 16) {
    const int m = nPos - j0 < 16 ? nPos - j0 : 16;
    for (int j = 0; j < 16; j++) {
      // Rows past the end are zeros: their (discarded) scores cost less than a separate tail path.
      for (int c = 0; c < NV; c++)
        _mm512_store_ps(kf + j * hd + 16 * c, j < m ? load_f16x16(k + (size_t)(j0 + j) * stride + 16 * c) : _mm512_setzero_ps());
    }
    for (int h = 0; h < nHeads; h++) {
      __m512 qv[NV];
      for (int c = 0; c < NV; c++) qv[c] = _mm512_loadu_ps(q + (size_t)h * hd + 16 * c);
      __m512 acc[16];
      for (int j = 0; j < 16; j++) {
        __m512 s = _mm512_mul_ps(qv[0], _mm512_load_ps(kf + j * hd));
        for (int c = 1; c < NV; c++) s = _mm512_fmadd_ps(qv[c], _mm512_load_ps(kf + j * hd + 16 * c), s);
        acc[j] = s;
      }
      const __m512 r = reduce16(acc);
      _mm512_mask_storeu_ps(out + (size_t)h * outStride + j0, (__mmask16)((1u << m) - 1), r);
    }
  }
}

// out[h] += Σ_j p[h][j] · V_j for up to HB heads at a time, their rows held in registers.
template <int NV, int HB>
SKEIN_512 void values_batch(int nHeads, int nPos, const uint16_t* v, size_t stride, const float* p, size_t pStride, float* out) {
  constexpr int hd = 16 * NV;
  __m512 acc[HB][NV];
  for (int h = 0; h < HB; h++)
    for (int c = 0; c < NV; c++) acc[h][c] = h < nHeads ? _mm512_loadu_ps(out + (size_t)h * hd + 16 * c) : _mm512_setzero_ps();
  for (int j = 0; j < nPos; j++) {
    __m512 vr[NV];
    for (int c = 0; c < NV; c++) vr[c] = load_f16x16(v + (size_t)j * stride + 16 * c);
    for (int h = 0; h < HB; h++) {
      if (h >= nHeads) break;
      const __m512 w = _mm512_set1_ps(p[(size_t)h * pStride + j]);
      for (int c = 0; c < NV; c++) acc[h][c] = _mm512_fmadd_ps(w, vr[c], acc[h][c]);
    }
  }
  for (int h = 0; h < HB && h < nHeads; h++)
    for (int c = 0; c < NV; c++) _mm512_storeu_ps(out + (size_t)h * hd + 16 * c, acc[h][c]);
}

template <int NV>
SKEIN_512 void values_t(int nHeads, int nPos, const uint16_t* v, size_t stride, const float* p, size_t pStride, float* out) {
  // Registers: HB * NV accumulators + NV row vectors within 32.
  constexpr int HB = NV <= 4 ? 4 : 2;
  constexpr int hd = 16 * NV;
  for (int h0 = 0; h0 < nHeads; h0 += HB)
    values_batch<NV, HB>(nHeads - h0 < HB ? nHeads - h0 : HB, nPos, v, stride, p + (size_t)h0 * pStride, pStride, out + (size_t)h0 * hd);
}

}  // namespace

bool scores_f16_heads(int nHeads, int nPos, int hd, const uint16_t* k, size_t stride, const float* q, float* out, size_t outStride) {
  switch (hd) {
    case 64: scores_t<4>(nHeads, nPos, k, stride, q, out, outStride); return true;
    case 128: scores_t<8>(nHeads, nPos, k, stride, q, out, outStride); return true;
    default: return false;
  }
}

bool values_f16_heads(int nHeads, int nPos, int hd, const uint16_t* v, size_t stride, const float* p, size_t pStride, float* out) {
  switch (hd) {
    case 64: values_t<4>(nHeads, nPos, v, stride, p, pStride, out); return true;
    case 128: values_t<8>(nHeads, nPos, v, stride, p, pStride, out); return true;
    default: return false;
  }
}

SKEIN_512 void round_f16(int n, float* x) {
  int i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
  if (i < n) {
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    const __m512 t = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_cvtph_ps(_mm512_cvtps_ph(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
  }
}

#else
bool scores_f16_heads(int, int, int, const uint16_t*, size_t, const float*, float*, size_t) { return false; }
bool values_f16_heads(int, int, int, const uint16_t*, size_t, const float*, size_t, float*) { return false; }
void round_f16(int, float*) {}
#endif

}  // namespace avx512
}  // namespace skein
