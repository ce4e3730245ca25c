// One byte layout per GGUF tensor type, declared once. The sizes are part of the file format, so
// every struct is checked at compile time and exported to TypeScript (see addon.cc: blockSizes).
#pragma once
#include <cstddef>
#include <cstdint>

namespace skein {

using f16_t = uint16_t;
using bf16_t = uint16_t;

// GGUF / ggml type ids. Only the ones we run have a traits row.
enum TypeId : int {
  T_F32 = 0,
  T_F16 = 1,
  T_Q4_0 = 2,
  T_Q4_1 = 3,
  T_Q5_0 = 6,
  T_Q5_1 = 7,
  T_Q8_0 = 8,
  T_Q8_1 = 9,
  T_Q2_K = 10,
  T_Q3_K = 11,
  T_Q4_K = 12,
  T_Q5_K = 13,
  T_Q6_K = 14,
  T_Q8_K = 15,
  T_BF16 = 30,
  T_COUNT = 40,
};

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK8_1 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

#pragma pack(push, 1)
// x = (q - 8) * d, low nibbles hold elements 0..15, high nibbles 16..31.
struct block_q4_0 {
  f16_t d;
  uint8_t qs[QK4_0 / 2];
};
// x = q * d + m
struct block_q4_1 {
  f16_t d;
  f16_t m;
  uint8_t qs[QK4_1 / 2];
};
// x = (q - 16) * d with the fifth bit of element j in bit j of qh.
struct block_q5_0 {
  f16_t d;
  uint8_t qh[4];
  uint8_t qs[QK5_0 / 2];
};
struct block_q5_1 {
  f16_t d;
  f16_t m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
struct block_q8_0 {
  f16_t d;
  int8_t qs[QK8_0];
};
// Activation partner of q4_1 / q5_1: s = d * sum(qs) carries the offset term.
struct block_q8_1 {
  f16_t d;
  f16_t s;
  int8_t qs[QK8_1];
};
// 8 sub-blocks of 32, 6-bit scales and mins packed into 12 bytes.
struct block_q4_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
struct block_q5_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
// 16 sub-blocks of 16, 8-bit signed scales, 6-bit quants split into low 4 + high 2 bits.
struct block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  f16_t d;
};
// Activation partner of the K-quants; bsums are sums of 16 consecutive quants.
struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
#pragma pack(pop)

static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "q4_0 size");
static_assert(sizeof(block_q4_1) == 4 + QK4_1 / 2, "q4_1 size");
static_assert(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "q5_0 size");
static_assert(sizeof(block_q5_1) == 4 + 4 + QK5_1 / 2, "q5_1 size");
static_assert(sizeof(block_q8_0) == 2 + QK8_0, "q8_0 size");
static_assert(sizeof(block_q8_1) == 4 + QK8_1, "q8_1 size");
static_assert(sizeof(block_q4_K) == 4 + K_SCALE_SIZE + QK_K / 2, "q4_K size");
static_assert(sizeof(block_q5_K) == 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, "q5_K size");
static_assert(sizeof(block_q6_K) == 2 + QK_K / 16 + 3 * QK_K / 4, "q6_K size");
static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 8, "q8_K size");

}  // namespace skein
