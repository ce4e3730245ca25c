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

enum PackedKind : int {
  PACK_NONE = 0,
  PACK_Q4_0x8 = 1,
  PACK_Q8_0x8 = 2,
  PACK_Q5_0x8 = 3,
  // 16-row groups for AVX-512 (one 512-bit register = 16 rows × 4 bytes), see below.
  PACK_Q4_0x16 = 4,
  PACK_Q8_0x16 = 5,
  PACK_Q5_0x16 = 6,
};

inline bool packed_x16(int kind) { return kind >= PACK_Q4_0x16; }
inline int packed_group_rows(int kind) { return packed_x16(kind) ? 16 : 8; }

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

// 16-row groups: the weights are the unsigned operand of the byte dot and the activations the
// signed one, so the constant that makes the weights unsigned (8, 16 or 128 per element) costs
// one term per block, −K·Σy, computed once per activation block instead of stored per row. The
// groups hold exactly the file's bytes, so repacking adds no memory.
// Chunk k (0..3) of qs: 16 rows × bytes 4k..4k+3 of the row's q4_0 qs, nibbles as in the file.
struct block_q4_0x16 {
  f16_t d[16];
  uint8_t qs[16 * QK4_0 / 2];
};
// Chunk k (0..7): 16 rows × elements 4k..4k+3, each stored as q + 128 (q ^ 0x80).
struct block_q8_0x16 {
  f16_t d[16];
  uint8_t qs[16 * QK8_0];
};
// Low nibbles as q4_0x16; qh[c] is the fifth bit of chunk c's 64 bytes (bit 4r + e: row r,
// element e of the chunk), chunks 0..3 for the low nibbles, 4..7 for the high ones.
struct block_q5_0x16 {
  f16_t d[16];
  uint64_t qh[8];
  uint8_t qs[16 * QK5_0 / 2];
};
#pragma pack(pop)
static_assert(sizeof(block_q4_0x16) == 16 * sizeof(block_q4_0), "q4_0x16 size");
static_assert(sizeof(block_q8_0x16) == 16 * sizeof(block_q8_0), "q8_0x16 size");
static_assert(sizeof(block_q5_0x16) == 16 * sizeof(block_q5_0), "q5_0x16 size");
static_assert(sizeof(block_q5_0x8) == 16 + 16 + 128 + 32, "q5_0x8 size");
static_assert(sizeof(block_q4_0x8) == 16 + 16 + 128, "q4_0x8 size");
static_assert(sizeof(block_q8_0x8) == 16 + 16 + 256, "q8_0x8 size");

inline size_t packed_block_bytes(int kind) {
  switch (kind) {
    case PACK_Q4_0x8: return sizeof(block_q4_0x8);
    case PACK_Q5_0x8: return sizeof(block_q5_0x8);
    case PACK_Q8_0x8: return sizeof(block_q8_0x8);
    case PACK_Q4_0x16: return sizeof(block_q4_0x16);
    case PACK_Q5_0x16: return sizeof(block_q5_0x16);
    default: return sizeof(block_q8_0x16);
  }
}

// Activation rows for packed kernels, per row: nb blocks of 32 unsigned bytes (y + 128) for the
// 8-row kernels, the same 32 signed bytes (y) for the 16-row ones, nb floats (the scales) and nb
// block sums Σy.
struct PackedActs {
  const uint8_t* qs;   // row t at qs + t * qsStride
  const int8_t* qsS;   // row t at qsS + t * qsStride
  const float* d;      // row t at d + t * dStride
  const int32_t* sum;  // row t at sum + t * dStride
  size_t qsStride, dStride;
};

// Rows must be a multiple of 8. `dst` holds (rows / 8) * nb blocks of the packed type.
void repack_q4_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q8_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q5_0x8(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q4_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q8_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
void repack_q5_0x16(const uint8_t* src, size_t rowBytes, int64_t rows, int64_t nb, void* dst);
// Converts q8_0 activation blocks into PackedActs layout (nb*32 unsigned and nb*32 signed bytes,
// nb floats, nb sums per row).
void pack_acts_q8_0(const void* q8, int64_t nb, uint8_t* qsOut, int8_t* qsSOut, float* dOut, int32_t* sumOut);

// out[t * os + r] for the 8 (16) rows of `group` and T activation rows: 1..4 for the 8-row
// kernels, 1..kMaxTokensX16 for the 16-row ones.
using packed_gemm_fn = void (*)(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os,
                                bool accumulate);
constexpr int kMaxTokensX16 = 8;
struct PackedKernels {
  packed_gemm_fn q4_0x8 = nullptr;
  packed_gemm_fn q8_0x8 = nullptr;  // needs VNNI (unsigned 255 × signed 127 overflows maddubs)
  packed_gemm_fn q5_0x8 = nullptr;
  // AVX-512 (F, BW, VL, VNNI); preferred over the 8-row kernels when present.
  packed_gemm_fn q4_0x16 = nullptr;
  packed_gemm_fn q8_0x16 = nullptr;
  packed_gemm_fn q5_0x16 = nullptr;
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

namespace avx512 {
bool compiled();
void gemm_q4_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q8_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
void gemm_q5_0x16(int64_t nb, const void* group, const PackedActs& a, int T, float* out, int64_t os, bool acc);
}

}  // namespace skein
