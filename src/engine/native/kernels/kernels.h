// Kernel signatures and the traits table (one row per tensor type; see traits.cc).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../blocks.h"

namespace skein {

// Converts k floats (k a multiple of the block size) into blocks of the type.
using from_float_fn = void (*)(const float* x, void* y, int64_t k);
// Converts k elements of the type back into floats.
using to_float_fn = void (*)(const void* x, float* y, int64_t k);
// *s = dot(row x of the weight type, row y of the partner type), n elements.
using vec_dot_fn = void (*)(int n, float* s, const void* x, const void* y);
// A tile of dot products: R weight rows (stride ws bytes) by T activation rows (stride ys bytes),
// R <= 4 and T <= 4; writes (or adds to) out[t * os + r]. Bit-identical to R*T single dots, so
// decode, prefill and any shard split compute exactly the same numbers.
using dot_tile_fn = void (*)(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out,
                             int64_t os, bool accumulate);

struct TypeTraits {
  const char* name;
  int blockElems;      // elements per block
  int blockBytes;      // bytes per block
  TypeId dotPartner;   // activation type the dot product takes
  to_float_fn toFloat;
  from_float_fn fromFloat;  // null for weight-only types
  from_float_fn fromFloatGeneric;
  vec_dot_fn dotGeneric;    // portable reference
  vec_dot_fn dot;           // best for this CPU (set by init_kernels)
  dot_tile_fn tile;         // optional multi-row / multi-token kernel matching `dot` bit for bit
};

// Null when the type has no row (not supported).
const TypeTraits* type_traits(int type);
// Chooses SIMD kernels for the running CPU; idempotent.
void init_kernels();
// "avx2", "neon" or "generic": what init_kernels picked.
const char* kernel_isa();
// Row size in bytes of n elements of the type.
size_t row_bytes(const TypeTraits* t, int64_t n);

// Float helpers for attention and activations, chosen like the dot products.
struct FloatKernels {
  void (*axpyF16)(int n, float a, const uint16_t* x, float* y);  // y += a * x
  void (*axpyF32)(int n, float a, const float* x, float* y);
  void (*f32ToF16)(const float* x, void* y, int64_t k);
  // Attention over an f16 cache, one call per (token, head) instead of one per position:
  // out[j] = dot(K row j, q) for j < nPos; and out += Σ_j w[j] * V row j (rows `stride` apart).
  void (*scoresF16)(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out);
  void (*valuesF16)(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out);
  // g[i] = silu(g[i]) * u[i]
  void (*siluMul)(int n, float* g, const float* u);
  // x[i] = exp(x[i] - max); returns the sum (accumulated in double, as llama.cpp does).
  double (*expSubSum)(int n, float* x, float max);
  // Optional (null without AVX-512): the same attention for nHeads query heads sharing one KV
  // head, each K/V row read once for all of them. q holds nHeads rows of hd floats (already
  // rounded to f16 values); scores of head h go to out + h * outStride, outputs are added to
  // out + h * hd. They return false for head sizes they do not handle.
  bool (*scoresF16Heads)(int nHeads, int nPos, int hd, const uint16_t* k, size_t stride, const float* q, float* out,
                         size_t outStride) = nullptr;
  bool (*valuesF16Heads)(int nHeads, int nPos, int hd, const uint16_t* v, size_t stride, const float* p, size_t pStride,
                         float* out) = nullptr;
  // x[i] = the nearest f16 value of x[i].
  void (*roundF16)(int n, float* x) = nullptr;
};
const FloatKernels& float_kernels();

// Generic (portable) kernels, defined in generic.cc.
namespace generic {
void quantize_row_q8_0(const float* x, void* y, int64_t k);
void quantize_row_q8_1(const float* x, void* y, int64_t k);
void quantize_row_q8_K(const float* x, void* y, int64_t k);
void f32_to_f16_row(const float* x, void* y, int64_t k);
void f32_to_bf16_row(const float* x, void* y, int64_t k);
void f32_copy_row(const float* x, void* y, int64_t k);

void dequant_f32(const void* x, float* y, int64_t k);
void dequant_f16(const void* x, float* y, int64_t k);
void dequant_bf16(const void* x, float* y, int64_t k);
void dequant_q4_0(const void* x, float* y, int64_t k);
void dequant_q4_1(const void* x, float* y, int64_t k);
void dequant_q5_0(const void* x, float* y, int64_t k);
void dequant_q5_1(const void* x, float* y, int64_t k);
void dequant_q8_0(const void* x, float* y, int64_t k);
void dequant_q8_1(const void* x, float* y, int64_t k);
void dequant_q4_K(const void* x, float* y, int64_t k);
void dequant_q5_K(const void* x, float* y, int64_t k);
void dequant_q6_K(const void* x, float* y, int64_t k);
void dequant_q8_K(const void* x, float* y, int64_t k);

void dot_f32(int n, float* s, const void* x, const void* y);
void dot_f16(int n, float* s, const void* x, const void* y);
void dot_bf16(int n, float* s, const void* x, const void* y);
void dot_q4_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q4_1_q8_1(int n, float* s, const void* x, const void* y);
void dot_q5_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q5_1_q8_1(int n, float* s, const void* x, const void* y);
void dot_q8_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q4_K_q8_K(int n, float* s, const void* x, const void* y);
void dot_q5_K_q8_K(int n, float* s, const void* x, const void* y);
void dot_q6_K_q8_K(int n, float* s, const void* x, const void* y);
void axpy_f16(int n, float a, const uint16_t* x, float* y);
void axpy_f32(int n, float a, const float* x, float* y);
void scores_f16(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out);
void values_f16(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out);
void silu_mul(int n, float* g, const float* u);
double exp_sub_sum(int n, float* x, float max);
}  // namespace generic

// The x86 overrides (avx2.cc); each falls back to generic when the CPU lacks AVX2.
namespace avx2 {
bool compiled();
void dot_f32(int n, float* s, const void* x, const void* y);
void dot_f16(int n, float* s, const void* x, const void* y);
void dot_bf16(int n, float* s, const void* x, const void* y);
void dot_q4_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q4_1_q8_1(int n, float* s, const void* x, const void* y);
void dot_q5_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q5_1_q8_1(int n, float* s, const void* x, const void* y);
void dot_q8_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q4_K_q8_K(int n, float* s, const void* x, const void* y);
void dot_q5_K_q8_K(int n, float* s, const void* x, const void* y);
void dot_q6_K_q8_K(int n, float* s, const void* x, const void* y);
void axpy_f16(int n, float a, const uint16_t* x, float* y);
void axpy_f32(int n, float a, const float* x, float* y);
void f32_to_f16_row(const float* x, void* y, int64_t k);
void scores_f16(int nPos, int hd, const uint16_t* k, size_t stride, const uint16_t* q, float* out);
void values_f16(int nPos, int hd, const uint16_t* v, size_t stride, const float* w, float* out);
void silu_mul(int n, float* g, const float* u);
double exp_sub_sum(int n, float* x, float max);
void tile_q4_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc);
void tile_q5_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc);
void tile_q8_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc);
void tile_q4_K(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc);
void tile_q6_K(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, bool acc);
}  // namespace avx2

// Same tiles with VNNI dot products (avx2.cc); selected when the CPU has them.
#define SKEIN_DECLARE_TILES                                                                                    \
  void tile_q4_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, \
                 bool acc);                                                                                     \
  void tile_q5_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, \
                 bool acc);                                                                                     \
  void tile_q8_0(int n, int R, int T, const uint8_t* w, size_t ws, const uint8_t* y, size_t ys, float* out, int64_t os, \
                 bool acc);                                                                                     \
  void dot_q4_0_q8_0(int n, float* s, const void* x, const void* y);                                           \
  void dot_q5_0_q8_0(int n, float* s, const void* x, const void* y);                                           \
  void dot_q8_0_q8_0(int n, float* s, const void* x, const void* y);
namespace avxvnni {
SKEIN_DECLARE_TILES
}
namespace avx512vnni {
SKEIN_DECLARE_TILES
}

namespace avx512 {
bool scores_f16_heads(int nHeads, int nPos, int hd, const uint16_t* k, size_t stride, const float* q, float* out, size_t outStride);
bool values_f16_heads(int nHeads, int nPos, int hd, const uint16_t* v, size_t stride, const float* p, size_t pStride, float* out);
void round_f16(int n, float* x);
// Bit-identical to the avx2 version (kquant512.cc).
void dot_q6_K_q8_K(int n, float* s, const void* x, const void* y);
}  // namespace avx512

namespace neon {
bool compiled();
void dot_q4_0_q8_0(int n, float* s, const void* x, const void* y);
void dot_q8_0_q8_0(int n, float* s, const void* x, const void* y);
}  // namespace neon

}  // namespace skein
