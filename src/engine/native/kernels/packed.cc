#include "packed.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "../fp16.h"
#include "kernels.h"

namespace skein {

void repack_q4_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q4_0x8* out = (block_q4_0x8*)dst;
  for (int64_t g = 0; g < rows / 8; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q4_0x8& o = out[g * nb + b];
      for (int r = 0; r < 8; r++) {
        const block_q4_0* s = (const block_q4_0*)(src + (size_t)(g * 8 + r) * rowBytes) + b;
        o.d[r] = s->d;
        int sum = 0;
        for (int j = 0; j < 16; j++) sum += (s->qs[j] & 0x0F) + (s->qs[j] >> 4) - 16;
        o.wsum[r] = (int16_t)sum;
        for (int k = 0; k < 4; k++) std::memcpy(o.qs + 32 * k + 4 * r, s->qs + 4 * k, 4);
      }
    }
  }
}

void repack_q8_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q8_0x8* out = (block_q8_0x8*)dst;
  for (int64_t g = 0; g < rows / 8; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q8_0x8& o = out[g * nb + b];
      for (int r = 0; r < 8; r++) {
        const block_q8_0* s = (const block_q8_0*)(src + (size_t)(g * 8 + r) * rowBytes) + b;
        o.d[r] = s->d;
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += s->qs[j];
        o.wsum[r] = (int16_t)sum;
        for (int k = 0; k < 8; k++) std::memcpy(o.qs + 32 * k + 4 * r, s->qs + 4 * k, 4);
      }
    }
  }
}

void repack_q5_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q5_0x8* out = (block_q5_0x8*)dst;
  for (int64_t g = 0; g < rows / 8; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q5_0x8& o = out[g * nb + b];
      for (int r = 0; r < 8; r++) {
        const block_q5_0* s = (const block_q5_0*)(src + (size_t)(g * 8 + r) * rowBytes) + b;
        uint32_t qh;
        std::memcpy(&qh, s->qh, 4);
        o.d[r] = s->d;
        o.qh[r] = qh;
        int sum = 0;
        for (int j = 0; j < 16; j++)
          sum += ((s->qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) + ((s->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 32;
        o.wsum[r] = (int16_t)sum;
        for (int k = 0; k < 4; k++) std::memcpy(o.qs + 32 * k + 4 * r, s->qs + 4 * k, 4);
      }
    }
  }
}

void repack_q4_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q4_0x16* out = (block_q4_0x16*)dst;
  for (int64_t g = 0; g < rows / 16; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q4_0x16& o = out[g * nb + b];
      for (int r = 0; r < 16; r++) {
        const block_q4_0* s = (const block_q4_0*)(src + (size_t)(g * 16 + r) * rowBytes) + b;
        o.d[r] = s->d;
        for (int k = 0; k < 4; k++) std::memcpy(o.qs + 64 * k + 4 * r, s->qs + 4 * k, 4);
      }
    }
  }
}

void repack_q8_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q8_0x16* out = (block_q8_0x16*)dst;
  for (int64_t g = 0; g < rows / 16; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q8_0x16& o = out[g * nb + b];
      for (int r = 0; r < 16; r++) {
        const block_q8_0* s = (const block_q8_0*)(src + (size_t)(g * 16 + r) * rowBytes) + b;
        o.d[r] = s->d;
        for (int k = 0; k < 8; k++)
          for (int e = 0; e < 4; e++) o.qs[64 * k + 4 * r + e] = (uint8_t)(s->qs[4 * k + e] ^ 0x80);
      }
    }
  }
}

void repack_q5_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst) {
  block_q5_0x16* out = (block_q5_0x16*)dst;
  for (int64_t g = 0; g < rows / 16; g++) {
    for (int64_t b = 0; b < nb; b++) {
      block_q5_0x16& o = out[g * nb + b];
      std::memset(o.qh, 0, sizeof o.qh);
      for (int r = 0; r < 16; r++) {
        const block_q5_0* s = (const block_q5_0*)(src + (size_t)(g * 16 + r) * rowBytes) + b;
        uint32_t qh;
        std::memcpy(&qh, s->qh, 4);
        o.d[r] = s->d;
        for (int k = 0; k < 4; k++) std::memcpy(o.qs + 64 * k + 4 * r, s->qs + 4 * k, 4);
        // Chunk c holds elements 4c..4c+3 (c < 4: low nibbles; c >= 4: high nibbles 16 + 4(c - 4)..).
        for (int c = 0; c < 8; c++)
          for (int e = 0; e < 4; e++) o.qh[c] |= (uint64_t)((qh >> (4 * c + e)) & 1) << (4 * r + e);
      }
    }
  }
}

void pack_acts_q8_0(const void* q8, int64_t nb, uint8_t* qsOut, int8_t* qsSOut, float* dOut, int32_t* sumOut) {
  const block_q8_0* y = (const block_q8_0*)q8;
  for (int64_t b = 0; b < nb; b++) {
    int32_t sum = 0;
    for (int j = 0; j < 32; j++) {
      qsOut[b * 32 + j] = (uint8_t)(y[b].qs[j] ^ 0x80);
      qsSOut[b * 32 + j] = y[b].qs[j];
      sum += y[b].qs[j];
    }
    dOut[b] = fp16_to_f32(y[b].d);
    sumOut[b] = sum;
  }
}

static PackedKernels g_packed;
static std::once_flag g_packed_once;

const PackedKernels& packed_kernels() {
  std::call_once(g_packed_once, [] {
    init_kernels();
#if defined(__x86_64__)
    if (std::getenv("SKEIN_NO_PACK") != nullptr) return;
    const bool avx2 = avx2::compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    if (!avx2) return;
    if (std::getenv("SKEIN_NO_AVX512") == nullptr && avx512::compiled() && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
      g_packed.q4_0x16 = avx512::gemm_q4_0x16;
      g_packed.q5_0x16 = avx512::gemm_q5_0x16;
      g_packed.q8_0x16 = avx512::gemm_q8_0x16;
    }
    g_packed.q4_0x8 = avx2::gemm_q4_0x8;
    g_packed.q5_0x8 = avx2::gemm_q5_0x8;
    if (std::getenv("SKEIN_NO_VNNI") != nullptr) return;
    if (__builtin_cpu_supports("avxvnni")) {
      g_packed.q4_0x8 = avxvnni::gemm_q4_0x8;
      g_packed.q5_0x8 = avxvnni::gemm_q5_0x8;
      g_packed.q8_0x8 = avxvnni::gemm_q8_0x8;
    } else if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
      g_packed.q4_0x8 = avx512vnni::gemm_q4_0x8;
      g_packed.q5_0x8 = avx512vnni::gemm_q5_0x8;
      g_packed.q8_0x8 = avx512vnni::gemm_q8_0x8;
    }
#endif
  });
  return g_packed;
}

}  // namespace skein

#if defined(__x86_64__)
#include <immintrin.h>
namespace skein {
namespace avx2 {
#define SKEIN_PK_TARGET __attribute__((target("avx2,fma,f16c")))
#define SKEIN_PK_DOT(acc, u, s) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#include "packed_gemm.inc"
#undef SKEIN_PK_TARGET
#undef SKEIN_PK_DOT
}  // namespace avx2
namespace avxvnni {
#define SKEIN_PK_HAS_VNNI
#define SKEIN_PK_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define SKEIN_PK_DOT(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#include "packed_gemm.inc"
#undef SKEIN_PK_TARGET
#undef SKEIN_PK_DOT
}  // namespace avxvnni
namespace avx512vnni {
#define SKEIN_PK_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define SKEIN_PK_DOT(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#include "packed_gemm.inc"
#undef SKEIN_PK_TARGET
#undef SKEIN_PK_DOT
#undef SKEIN_PK_HAS_VNNI
}  // namespace avx512vnni
}  // namespace skein
#endif
