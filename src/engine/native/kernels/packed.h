// Weights repacked at load into groups of 8 rows so that one 32-bit lane of a 256-bit register holds
// 4 consecutive weights of one row: a broadcast of 4 activation bytes then multiplies 8 rows at once,
// every lane ends a block holding its row's whole integer sum (no horizontal adds), and one
// conversion plus one fused multiply-add scales 8 rows. Activations are offset to unsigned bytes
// (y + 128) for the unsigned×signed byte dot; the offset's contribution, 128 × Σw per row and
// block, is stored with the block at repack time.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../blocks.h"

namespace skein {

enum PackedKind : int { PACK_NONE = 0, PACK_Q4_0x8 = 1, PACK_Q8_0x8 = 2, PACK_Q5_0x8 = 3 };

#pragma pack(push, 1)
// Chunk k (0..3) of qs: 8 rows × bytes 4k..4k+3 of the row's q4_0 qs (low nibbles: elements
// 4k..4k+3, high nibbles: elements 16+4k..16+4k+3). Nibbles are stored as in the file (q + 8).
struct block_q4_0x8 {
  f16_t d[8];
  int16_t wsum[8];  // Σ(q - 8) over the block, per row
  uint8_t qs[8 * QK4_0 / 2];
};
// Chunk k (0..7): 8 rows × elements 4k..4k+3.
struct block_q8_0x8 {
  f16_t d[8];
  int16_t wsum[8];  // Σq over the block, per row
  int8_t qs[8 * QK8_0];
};
// As q4_0x8 for the low nibbles; qh[r] is row r's 32 high bits (bit j: element j).
struct block_q5_0x8 {
  f16_t d[8];
  int16_t wsum[8];  // Σ(q - 16) over the block, per row
  uint8_t qs[8 * QK5_0 / 2];
  uint32_t qh[8];
};
#pragma pack(pop)
static_assert(sizeof(block_q5_0x8) == 16 + 16 + 128 + 32, "q5_0x8 size");
static_assert(sizeof(block_q4_0x8) == 16 + 16 + 128, "q4_0x8 size");
static_assert(sizeof(block_q8_0x8) == 16 + 16 + 256, "q8_0x8 size");

inline size_t packed_block_bytes(int kind) {
  return kind == PACK_Q4_0x8 ? sizeof(block_q4_0x8) : kind == PACK_Q5_0x8 ? sizeof(block_q5_0x8) : sizeof(block_q8_0x8);
}

// Activation rows for packed kernels: per row, nb blocks of 32 unsigned bytes (y + 128), then nb floats.
struct PackedActs {
  const uint8_t* qs;  // row t at qs + t * qsStride
  const float* d;     // row t at d + t * dStride
  size_t qsStride, dStride;
};

// Rows must be a multiple of 8. `dst` holds (rows / 8) * nb blocks of the packed type.
void repack_q4_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q8_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q5_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
// Converts q8_0 activation blocks into PackedActs layout (qs: nb*32 bytes, d: nb floats per row).
void pack_acts_q8_0(const void* q8, int64_t nb, uint8_t* qsOut, float* dOut);

// out[t * os + r] for the 8 rows of `group` and T (1..4) activation rows.
using packed_gemm_fn = void (*)(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os,
                                bool accumulate);
struct PackedKernels {
  packed_gemm_fn q4_0x8 = nullptr;
  packed_gemm_fn q8_0x8 = nullptr;  // needs VNNI (unsigned 255 × signed 127 overflows maddubs)
  packed_gemm_fn q5_0x8 = nullptr;
};
const PackedKernels& packed_kernels();

namespace avx2 {
void gemm_q5_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q4_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
}
namespace avxvnni {
void gemm_q5_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q4_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q8_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
}
namespace avx512vnni {
void gemm_q5_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q4_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q8_0x8(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
}

}  // namespace skein
