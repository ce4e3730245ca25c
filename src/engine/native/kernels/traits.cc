// The traits table: one row per supported tensor type. Adding a type means adding a row here and
// its kernels; a type without a row is refused at load with an error that names it.
#include <cstdlib>
#include <mutex>

#include "../fp16.h"
#include "kernels.h"

namespace skein {

static TypeTraits g_traits[T_COUNT];
static const char* g_isa = "generic";
static std::once_flag g_init_once;
static FloatKernels g_float{generic::axpy_f16, generic::axpy_f32, generic::f32_to_f16_row, generic::scores_f16, generic::values_f16, generic::silu_mul, generic::exp_sub_sum};

static void set_row(TypeId t, const char* name, int elems, int bytes, TypeId partner, to_float_fn toF,
                    from_float_fn fromF, vec_dot_fn dot) {
  g_traits[t] = TypeTraits{name, elems, bytes, partner, toF, fromF, fromF, dot, dot, nullptr};
}

static void init_once() {
  init_fp16_table();
  using namespace generic;
  set_row(T_F32, "F32", 1, 4, T_F32, dequant_f32, f32_copy_row, dot_f32);
  set_row(T_F16, "F16", 1, 2, T_F16, dequant_f16, f32_to_f16_row, dot_f16);
  set_row(T_BF16, "BF16", 1, 2, T_BF16, dequant_bf16, f32_to_bf16_row, dot_bf16);
  set_row(T_Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0), T_Q8_0, dequant_q4_0, nullptr, dot_q4_0_q8_0);
  set_row(T_Q4_1, "Q4_1", QK4_1, sizeof(block_q4_1), T_Q8_1, dequant_q4_1, nullptr, dot_q4_1_q8_1);
  set_row(T_Q5_0, "Q5_0", QK5_0, sizeof(block_q5_0), T_Q8_0, dequant_q5_0, nullptr, dot_q5_0_q8_0);
  set_row(T_Q5_1, "Q5_1", QK5_1, sizeof(block_q5_1), T_Q8_1, dequant_q5_1, nullptr, dot_q5_1_q8_1);
  set_row(T_Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0), T_Q8_0, dequant_q8_0, quantize_row_q8_0, dot_q8_0_q8_0);
  set_row(T_Q8_1, "Q8_1", QK8_1, sizeof(block_q8_1), T_Q8_1, dequant_q8_1, quantize_row_q8_1, nullptr);
  set_row(T_Q4_K, "Q4_K", QK_K, sizeof(block_q4_K), T_Q8_K, dequant_q4_K, nullptr, dot_q4_K_q8_K);
  set_row(T_Q5_K, "Q5_K", QK_K, sizeof(block_q5_K), T_Q8_K, dequant_q5_K, nullptr, dot_q5_K_q8_K);
  set_row(T_Q6_K, "Q6_K", QK_K, sizeof(block_q6_K), T_Q8_K, dequant_q6_K, nullptr, dot_q6_K_q8_K);
  set_row(T_Q8_K, "Q8_K", QK_K, sizeof(block_q8_K), T_Q8_K, dequant_q8_K, quantize_row_q8_K, nullptr);

#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (avx2::compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    g_isa = "avx2";
    g_float = FloatKernels{avx2::axpy_f16, avx2::axpy_f32, avx2::f32_to_f16_row, avx2::scores_f16, avx2::values_f16, avx2::silu_mul, avx2::exp_sub_sum};
    if (std::getenv("SKEIN_NO_AVX512") == nullptr && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      g_float.scoresF16Heads = avx512::scores_f16_heads;
      g_float.valuesF16Heads = avx512::values_f16_heads;
      g_float.roundF16 = avx512::round_f16;
    }
    g_traits[T_F16].fromFloat = avx2::f32_to_f16_row;
    g_traits[T_F32].dot = avx2::dot_f32;
    g_traits[T_F16].dot = avx2::dot_f16;
    g_traits[T_BF16].dot = avx2::dot_bf16;
    g_traits[T_Q4_0].dot = avx2::dot_q4_0_q8_0;
    g_traits[T_Q4_1].dot = avx2::dot_q4_1_q8_1;
    g_traits[T_Q5_0].dot = avx2::dot_q5_0_q8_0;
    g_traits[T_Q5_1].dot = avx2::dot_q5_1_q8_1;
    g_traits[T_Q8_0].dot = avx2::dot_q8_0_q8_0;
    g_traits[T_Q4_K].dot = avx2::dot_q4_K_q8_K;
    g_traits[T_Q5_K].dot = avx2::dot_q5_K_q8_K;
    g_traits[T_Q6_K].dot = avx2::dot_q6_K_q8_K;
    g_traits[T_Q4_0].tile = avx2::tile_q4_0;
    g_traits[T_Q5_0].tile = avx2::tile_q5_0;
    g_traits[T_Q8_0].tile = avx2::tile_q8_0;
    g_traits[T_Q4_K].tile = avx2::tile_q4_K;
    g_traits[T_Q6_K].tile = avx2::tile_q6_K;
    // AVX-512 F/BW/VL: bit-identical to the avx2 dot and tile.
    if (g_float.roundF16 != nullptr) g_traits[T_Q6_K].dot = avx512::dot_q6_K_q8_K;
#define SKEIN_USE_TILES(ns, label)                    \
  g_isa = label;                                      \
  g_traits[T_Q4_0].dot = ns::dot_q4_0_q8_0;           \
  g_traits[T_Q5_0].dot = ns::dot_q5_0_q8_0;           \
  g_traits[T_Q8_0].dot = ns::dot_q8_0_q8_0;           \
  g_traits[T_Q4_0].tile = ns::tile_q4_0;              \
  g_traits[T_Q5_0].tile = ns::tile_q5_0;              \
  g_traits[T_Q8_0].tile = ns::tile_q8_0;
    if (std::getenv("SKEIN_NO_VNNI") == nullptr) {
      if (__builtin_cpu_supports("avxvnni")) {
        SKEIN_USE_TILES(avxvnni, "avx2+avxvnni")
      } else if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
        SKEIN_USE_TILES(avx512vnni, "avx2+avx512vnni")
      }
    }
  }
#endif
  if (neon::compiled()) {
    g_isa = "neon";
    g_traits[T_Q4_0].dot = neon::dot_q4_0_q8_0;
    g_traits[T_Q8_0].dot = neon::dot_q8_0_q8_0;
  }
}

const FloatKernels& float_kernels() {
  init_kernels();
  return g_float;
}

void init_kernels() { std::call_once(g_init_once, init_once); }

const TypeTraits* type_traits(int type) {
  init_kernels();
  if (type < 0 || type >= T_COUNT || g_traits[type].name == nullptr) return nullptr;
  return &g_traits[type];
}

const char* kernel_isa() {
  init_kernels();
  return g_isa;
}

size_t row_bytes(const TypeTraits* t, int64_t n) { return (size_t)(n / t->blockElems) * (size_t)t->blockBytes; }

}  // namespace skein
