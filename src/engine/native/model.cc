#include "model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <ctime>

#include "fp16.h"
#include "kernels/packed.h"
#include "threadpool.h"

namespace skein {

// ---------------------------------------------------------------------------------------------
// Scratch: per-call buffers reused across calls (one engine process runs one forward at a time).

namespace {

// SKEIN_PROFILE=1: per-phase wall time, printed at exit (in-process timers; perf distorts spinning).
// SKEIN_PROFILE=cpu: the calling thread's CPU time instead, which a busy machine's preemption
// does not inflate (meaningful with one thread).
struct PhaseTimes {
  bool on = std::getenv("SKEIN_PROFILE") != nullptr;
  bool cpu = on && std::strcmp(std::getenv("SKEIN_PROFILE"), "cpu") == 0;
  double ms[8] = {0};
  const char* names[8] = {"norm+quant", "qkv", "rope+kv", "attention", "wo", "gate+up", "silu", "down"};
  ~PhaseTimes() {
    if (!on) return;
    for (int i = 0; i < 8; i++) std::fprintf(stderr, "skein phase %-10s %9.1f ms\n", names[i], ms[i]);
  }
};
PhaseTimes g_phase;
double phase_now_ms() {
  if (g_phase.cpu) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
struct PhaseClock {
  double t = g_phase.on ? phase_now_ms() : 0.0;
  void lap(int i) {
    if (!g_phase.on) return;
    const double now = phase_now_ms();
    g_phase.ms[i] += now - t;
    t = now;
  }
};

// Tokens per feed-forward block in a prefill chunk (see forwardLayer).
#ifndef SKEIN_FFN_BLOCK_TOKENS
#define SKEIN_FFN_BLOCK_TOKENS 64
#endif
constexpr int kFfnBlockTokens = SKEIN_FFN_BLOCK_TOKENS;

struct Scratch {
  std::vector<uint8_t> quant[T_COUNT];  // activations quantized to each partner type
  std::vector<float> xn, q, k, v, attn, gate, up, tmp;
  std::vector<float> scores;  // per thread, nCtx each
  std::vector<uint16_t> q16;  // per thread, headDim each
  std::vector<float> qf;      // per thread, a batch of query heads
  std::vector<uint8_t> embdRow;
  std::vector<float> rope;    // per token, ropeDims cos/sin pairs
};
Scratch g_scratch;

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Runs fn(t) for t in [0, n) across the pool, or inline when the work is too small to share.
template <typename F>
void parallel_for(int n, int minPerThread, F&& fn) {
  ThreadPool& p = pool();
  if (p.size() == 1 || n < 2 * minPerThread) {
    for (int t = 0; t < n; t++) fn(t);
    return;
  }
  ChunkCounter counter;
  auto task = [&](int, int) {
    int64_t s, e;
    while (counter.take(n, minPerThread, &s, &e))
      for (int64_t t = s; t < e; t++) fn((int)t);
  };
  p.run(task);
}

// The activation rows converted once into the weight's partner type (and, for q8_0, also into
// the layout of the packed kernels).
struct QuantizedActs {
  const uint8_t* data;
  size_t stride;
  PackedActs packed;
};

std::vector<uint8_t> g_packedQs;
std::vector<int8_t> g_packedQsS;
std::vector<float> g_packedD;
std::vector<int32_t> g_packedSum;

QuantizedActs quantize_acts(TypeId partner, const float* x, int n, int64_t k) {
  const TypeTraits* pt = type_traits(partner);
  if (partner == T_F32) return {(const uint8_t*)x, (size_t)k * 4, PackedActs{}};
  const size_t stride = row_bytes(pt, k);
  uint8_t* buf = grow(g_scratch.quant[partner], stride * (size_t)n);
  PackedActs pa{};
  if (partner == T_Q8_0) {
    const int64_t nb = k / QK8_0;
    pa.qs = grow(g_packedQs, (size_t)(n * nb * 32));
    pa.qsS = grow(g_packedQsS, (size_t)(n * nb * 32));
    pa.d = grow(g_packedD, (size_t)(n * nb));
    pa.sum = grow(g_packedSum, (size_t)(n * nb));
    pa.qsStride = (size_t)nb * 32;
    pa.dStride = (size_t)nb;
  }
  parallel_for(n, 4, [&](int t) {
    pt->fromFloat(x + (size_t)t * k, buf + stride * t, k);
    if (partner == T_Q8_0)
      pack_acts_q8_0(buf + stride * t, k / QK8_0, (uint8_t*)pa.qs + pa.qsStride * t, (int8_t*)pa.qsS + pa.qsStride * t,
                     (float*)pa.d + pa.dStride * t, (int32_t*)pa.sum + pa.dStride * t);
  });
  return {buf, stride, pa};
}

packed_gemm_fn packed_gemm_for(int kind) {
  const PackedKernels& pk = packed_kernels();
  switch (kind) {
    case PACK_Q4_0x8: return pk.q4_0x8;
    case PACK_Q5_0x8: return pk.q5_0x8;
    case PACK_Q8_0x8: return pk.q8_0x8;
    case PACK_Q4_0x16: return pk.q4_0x16;
    case PACK_Q5_0x16: return pk.q5_0x16;
    default: return pk.q8_0x16;
  }
}

struct MatJob {
  const Tensor* w;
  QuantizedActs x;
  float* out;
  int64_t outStride;
  bool accumulate;
};

// All jobs share one pass over the pool: rows are handed out in chunks across every job, so
// small matrices (k, v) do not leave threads idle.
void run_matmuls(const MatJob* jobs, int nJobs, int n) {
  ThreadPool& p = pool();
  const int nth = p.size();
  int64_t totalRows = 0;
  for (int j = 0; j < nJobs; j++) totalRows += jobs[j].w->ne1;
  // Enough chunks for balance, few enough that the counter is not contended.
  int64_t chunk = std::max<int64_t>(16, totalRows / (nth * 16));
  if (n > 1) {
    // Prefill: a chunk's rows stay in L1 while every group of tokens passes over them.
    size_t maxRowBytes = 1;
    for (int j = 0; j < nJobs; j++) maxRowBytes = std::max(maxRowBytes, jobs[j].w->rowBytes);
    chunk = std::min<int64_t>(64, std::max<int64_t>(8, (int64_t)(16384 / maxRowBytes)));
  }
  chunk = (chunk + 15) & ~int64_t(15);  // packed tensors work in groups of 8 or 16 rows
  // Chunks never straddle jobs: a chunk index maps to (job, first row).
  std::vector<int64_t> firstChunk(nJobs + 1, 0);
  for (int j = 0; j < nJobs; j++) firstChunk[j + 1] = firstChunk[j] + (jobs[j].w->ne1 + chunk - 1) / chunk;
  const int64_t nChunks = firstChunk[nJobs];
  std::atomic<int64_t> next{0};
  auto task = [&](int, int) {
    int j = 0;
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= nChunks) return;
      while (c >= firstChunk[j + 1]) j++;
      const MatJob& job = jobs[j];
      const Tensor& w = *job.w;
      const int64_t r0 = (c - firstChunk[j]) * chunk;
      const int64_t r1 = std::min<int64_t>(r0 + chunk, w.ne1);
      const int k = (int)w.ne0;
      if (w.packKind != PACK_NONE) {
        const packed_gemm_fn gemm = packed_gemm_for(w.packKind);
        const int64_t nb = w.ne0 / QK8_0;
        const int groupRows = packed_group_rows(w.packKind);
        const int tile = packed_x16(w.packKind) ? kMaxTokensX16 : 4;
        const size_t groupBytes = (size_t)nb * packed_block_bytes(w.packKind);
        for (int t0 = 0; t0 < n; t0 += tile) {
          const int tn = std::min(tile, n - t0);
          PackedActs a = job.x.packed;
          a.qs += a.qsStride * t0;
          a.qsS += a.qsStride * t0;
          a.d += a.dStride * t0;
          a.sum += a.dStride * t0;
          for (int64_t r = r0; r < r1; r += groupRows)
            gemm(nb, w.packed + (size_t)(r / groupRows) * groupBytes, a, tn, job.out + job.outStride * t0 + r, job.outStride,
                 job.accumulate);
        }
        continue;
      }
      const dot_tile_fn tile = w.tr->tile;
      if (tile != nullptr) {
        // Decode: 4 rows share each activation block. Prefill: 2 rows × 4 tokens share unpacking.
        const int R = n == 1 ? 4 : 2, T = n == 1 ? 1 : 4;
        for (int t0 = 0; t0 < n; t0 += T) {
          const int tn = std::min(T, n - t0);
          for (int64_t r = r0; r < r1; r += R) {
            const int rn = (int)std::min<int64_t>(R, r1 - r);
            tile(k, rn, tn, w.data + (size_t)r * w.rowBytes, w.rowBytes, job.x.data + job.x.stride * t0, job.x.stride,
                 job.out + job.outStride * t0 + r, job.outStride, job.accumulate);
          }
        }
        continue;
      }
      const vec_dot_fn dot = w.tr->dot;
      for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + (size_t)r * w.rowBytes;
        for (int t = 0; t < n; t++) {
          float s;
          dot(k, &s, row, job.x.data + job.x.stride * t);
          float* o = job.out + job.outStride * t + r;
          *o = job.accumulate ? *o + s : s;
        }
      }
    }
  };
  if (nth == 1 || nChunks == 1) {
    task(0, 1);
  } else {
    p.run(task);
  }
}

void rms_norm_row(const float* x, const float* w, float* y, int n, float eps) {
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
  const float mean = (float)(sum / n);
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

// cos/sin pairs for one position, as ggml's rope cache computes them.
void rope_cache(const ModelConfig& c, const float* freqFactors, int pos, float* cache) {
  const float thetaScale = std::pow(c.ropeBase, -2.0f / (float)c.ropeDims);
  float theta = (float)pos;
  for (int i0 = 0; i0 < c.ropeDims; i0 += 2) {
    const float ff = freqFactors ? freqFactors[i0 / 2] : 1.0f;
    const float t = c.ropeFreqScale * (theta / ff);
    cache[i0] = std::cos(t);
    cache[i0 + 1] = std::sin(t);
    theta *= thetaScale;
  }
}

void rope_apply(const ModelConfig& c, const float* cache, float* x) {
  if (c.ropeNeox) {
    const int half = c.ropeDims / 2;
    for (int i0 = 0; i0 < c.ropeDims; i0 += 2) {
      const int ic = i0 / 2;
      const float x0 = x[ic], x1 = x[ic + half];
      x[ic] = x0 * cache[i0] - x1 * cache[i0 + 1];
      x[ic + half] = x0 * cache[i0 + 1] + x1 * cache[i0];
    }
  } else {
    for (int i0 = 0; i0 < c.ropeDims; i0 += 2) {
      const float x0 = x[i0], x1 = x[i0 + 1];
      x[i0] = x0 * cache[i0] - x1 * cache[i0 + 1];
      x[i0 + 1] = x0 * cache[i0 + 1] + x1 * cache[i0];
    }
  }
}

}  // namespace

void matmul(const Tensor& w, const float* x, int n, float* out, int64_t outStride, bool accumulate) {
  MatJob job{&w, quantize_acts(w.tr->dotPartner, x, n, w.ne0), out, outStride, accumulate};
  run_matmuls(&job, 1, n);
}

// ---------------------------------------------------------------------------------------------
// KV cache

KvCache::KvCache(const ModelConfig& cfg, int nCtx, bool f16)
    : nCtx_(nCtx), layerStart_(cfg.layerStart), layerEnd_(cfg.layerEnd), f16_(f16) {
  if (nCtx <= 0) throw ModelError("KV cache size must be positive");
  layerBytes_ = (size_t)nCtx * cfg.nHeadKv * cfg.headDim * (f16 ? 2 : 4);
  totalBytes_ = layerBytes_ * 2 * (size_t)std::max(1, layerEnd_ - layerStart_);
  // Anonymous pages cost nothing until a position is written, so a large context is cheap.
  void* p = mmap(nullptr, totalBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw ModelError("cannot allocate KV cache of " + std::to_string(totalBytes_) + " bytes");
  base_ = (uint8_t*)p;
}

KvCache::~KvCache() { munmap(base_, totalBytes_); }

// ---------------------------------------------------------------------------------------------
// Loading

static const char* kLayerRoles[] = {"attn_norm",   "attn_q",      "attn_k",      "attn_v",      "attn_output",
                                    "attn_q_bias", "attn_k_bias", "attn_v_bias", "attn_q_norm", "attn_k_norm",
                                    "ffn_norm",    "ffn_gate",    "ffn_up",      "ffn_down"};

Model::Model(const std::string& path, const ModelConfig& cfg, const std::vector<TensorDesc>& tensors)
    : cfg_(cfg), path_(path) {
  init_kernels();
  if (cfg.nEmbd <= 0 || cfg.nHead <= 0 || cfg.nHeadKv <= 0 || cfg.headDim <= 0 || cfg.nHead % cfg.nHeadKv != 0)
    throw ModelError("invalid model shape");
  if (cfg.layerStart < 0 || cfg.layerEnd > cfg.nLayer || cfg.layerStart > cfg.layerEnd)
    throw ModelError("invalid layer range");
  if (cfg.ropeDims <= 0 || cfg.ropeDims > cfg.headDim || cfg.ropeDims % 2 != 0)
    throw ModelError("invalid rope dimension count " + std::to_string(cfg.ropeDims));
  fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw ModelError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    close(fd_);
    throw ModelError("cannot stat " + path);
  }
  fileBytes_ = (uint64_t)st.st_size;
  try {
    layers_.resize(std::max(0, cfg.layerEnd - cfg.layerStart));
    const int64_t qDim = (int64_t)cfg.nHead * cfg.headDim;
    const int64_t kvDim = (int64_t)cfg.nHeadKv * cfg.headDim;
    for (const TensorDesc& d : tensors) {
      if (d.layer < 0) {
        if (d.role == "token_embd") {
          tokEmbd_ = mapTensor(d, false);
          if (tokEmbd_.ne0 != cfg.nEmbd) throw ModelError("token_embd has the wrong width");
        } else if (d.role == "output") {
          output_ = mapTensor(d, true);
          if (output_.ne0 != cfg.nEmbd) throw ModelError("output has the wrong width");
        } else if (d.role == "output_norm") {
          outNorm_ = loadVector(d, cfg.nEmbd);
        } else if (d.role == "rope_freqs") {
          ropeFreqs_ = loadVector(d, cfg.ropeDims / 2);
        } else {
          throw ModelError("unknown tensor role " + d.role);
        }
        continue;
      }
      if (d.layer < cfg.layerStart || d.layer >= cfg.layerEnd)
        throw ModelError("tensor for layer " + std::to_string(d.layer) + " is outside the shard");
      LayerWeights& L = layers_[d.layer - cfg.layerStart];
      auto mat = [&](Tensor& t, int64_t ne0, int64_t ne1) {
        t = mapTensor(d, true);
        if (t.ne0 != ne0 || t.ne1 != ne1)
          throw ModelError("blk." + std::to_string(d.layer) + "." + d.role + " has shape [" + std::to_string(t.ne0) +
                           ", " + std::to_string(t.ne1) + "], expected [" + std::to_string(ne0) + ", " +
                           std::to_string(ne1) + "]");
      };
      if (d.role == "attn_norm") L.attnNormF = loadVector(d, cfg.nEmbd);
      else if (d.role == "ffn_norm") L.ffnNormF = loadVector(d, cfg.nEmbd);
      else if (d.role == "attn_q") mat(L.wq, cfg.nEmbd, qDim);
      else if (d.role == "attn_k") mat(L.wk, cfg.nEmbd, kvDim);
      else if (d.role == "attn_v") mat(L.wv, cfg.nEmbd, kvDim);
      else if (d.role == "attn_output") mat(L.wo, qDim, cfg.nEmbd);
      else if (d.role == "ffn_gate") mat(L.wGate, cfg.nEmbd, cfg.nFf);
      else if (d.role == "ffn_up") mat(L.wUp, cfg.nEmbd, cfg.nFf);
      else if (d.role == "ffn_down") mat(L.wDown, cfg.nFf, cfg.nEmbd);
      else if (d.role == "attn_q_bias") L.bq = loadVector(d, qDim);
      else if (d.role == "attn_k_bias") L.bk = loadVector(d, kvDim);
      else if (d.role == "attn_v_bias") L.bv = loadVector(d, kvDim);
      else if (d.role == "attn_q_norm") L.qNorm = loadVector(d, cfg.headDim);
      else if (d.role == "attn_k_norm") L.kNorm = loadVector(d, cfg.headDim);
      else throw ModelError("unknown tensor role " + d.role);
    }
    layerReady_.assign(layers_.size(), false);
    for (int il = cfg.layerStart; il < cfg.layerEnd; il++) {
      const LayerWeights& L = layers_[il - cfg.layerStart];
      const std::string p = "blk." + std::to_string(il) + ".";
      if (L.attnNormF.empty()) throw ModelError("missing tensor " + p + "attn_norm.weight");
      if (L.ffnNormF.empty()) throw ModelError("missing tensor " + p + "ffn_norm.weight");
      const std::pair<const Tensor*, const char*> req[] = {{&L.wq, "attn_q"},         {&L.wk, "attn_k"},
                                                           {&L.wv, "attn_v"},         {&L.wo, "attn_output"},
                                                           {&L.wGate, "ffn_gate"},    {&L.wUp, "ffn_up"},
                                                           {&L.wDown, "ffn_down"}};
      for (auto& r : req)
        if (!r.first->present()) throw ModelError("missing tensor " + p + r.second + ".weight");
    }
    if (output_.present() && outNorm_.empty()) throw ModelError("missing tensor output_norm.weight");
  } catch (...) {
    unmapAll();
    throw;
  }
  (void)kLayerRoles;
}

Model::~Model() { unmapAll(); }

void Model::unmapAll() {
  auto freePacked = [](Tensor& t) {
    if (t.packed != nullptr) munmap(t.packed, t.packedBytes);
    t.packed = nullptr;
  };
  for (LayerWeights& L : layers_)
    for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.wGate, &L.wUp, &L.wDown}) freePacked(*t);
  freePacked(output_);
  for (auto& kv : regions_) munmap(kv.second.first.base, kv.second.first.len);
  regions_.clear();
  mappedBytes_ = 0;
  layers_.clear();
  tokEmbd_ = Tensor{};
  output_ = Tensor{};
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

Tensor Model::mapTensor(const TensorDesc& d, bool needsDot) {
  const std::string name = d.layer >= 0 ? "blk." + std::to_string(d.layer) + "." + d.role : d.role;
  const TypeTraits* tr = type_traits(d.type);
  if (tr == nullptr || (needsDot && tr->dot == nullptr))
    throw ModelError("tensor " + name + " has unsupported type " + std::to_string(d.type));
  if (d.ne0 % tr->blockElems != 0)
    throw ModelError("tensor " + name + ": row of " + std::to_string(d.ne0) + " is not a multiple of the " +
                     tr->name + " block size");
  Tensor t;
  t.type = d.type;
  t.tr = tr;
  t.ne0 = d.ne0;
  t.ne1 = d.ne1;
  t.rowBytes = row_bytes(tr, d.ne0);
  t.fileOffset = d.offset;
  if ((uint64_t)t.rowBytes * (uint64_t)d.ne1 != d.sizeBytes)
    throw ModelError("tensor " + name + ": size does not match its shape and type");
  if (d.offset > fileBytes_ || d.sizeBytes > fileBytes_ - d.offset)
    throw ModelError("tensor " + name + " lies outside the file (" + path_ + ")");
  auto it = regions_.find(d.offset);
  if (it != regions_.end()) {
    t.data = it->second.second;
    return t;
  }
  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  const uint64_t start = d.offset & ~(page - 1);
  const size_t len = (size_t)(d.offset + d.sizeBytes - start);
  void* base = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd_, (off_t)start);
  if (base == MAP_FAILED) throw ModelError("cannot map tensor " + name + ": " + std::strerror(errno));
  t.data = (const uint8_t*)base + (d.offset - start);
  regions_[d.offset] = {Region{base, len}, t.data};
  mappedBytes_ += len;
  return t;
}

std::vector<float> Model::loadVector(const TensorDesc& d, int64_t expected) {
  const std::string name = d.layer >= 0 ? "blk." + std::to_string(d.layer) + "." + d.role : d.role;
  const TypeTraits* tr = type_traits(d.type);
  if (tr == nullptr) throw ModelError("tensor " + name + " has unsupported type " + std::to_string(d.type));
  if (d.ne0 * d.ne1 != expected)
    throw ModelError("tensor " + name + " has " + std::to_string(d.ne0 * d.ne1) + " elements, expected " +
                     std::to_string(expected));
  if (d.ne0 % tr->blockElems != 0 || row_bytes(tr, d.ne0) * (uint64_t)d.ne1 != d.sizeBytes)
    throw ModelError("tensor " + name + ": size does not match its shape and type");
  if (d.offset > fileBytes_ || d.sizeBytes > fileBytes_ - d.offset)
    throw ModelError("tensor " + name + " lies outside the file (" + path_ + ")");
  std::vector<uint8_t> raw(d.sizeBytes);
  size_t done = 0;
  while (done < raw.size()) {
    const ssize_t r = pread(fd_, raw.data() + done, raw.size() - done, (off_t)(d.offset + done));
    if (r <= 0) throw ModelError("cannot read tensor " + name);
    done += (size_t)r;
  }
  std::vector<float> out((size_t)expected);
  tr->toFloat(raw.data(), out.data(), expected);
  return out;
}

void Model::pack(Tensor& t, bool releaseFilePages) {
  if (t.packKind != PACK_NONE || !t.present()) return;
  pack_tensor(t, releaseFilePages);
}

// Drops [p, p + len) (shrunk to whole pages) from the resident set. The file pages are no longer
// read after repacking; a tied head's embedding lookup faults back in only the rows it reads.
static void release_pages(const uint8_t* p, size_t len) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
  const uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
  if (end > start) madvise((void*)start, end - start, MADV_DONTNEED);
}

// The packed layout for a tensor on this CPU, or PACK_NONE: 16-row groups where AVX-512 is
// available and the rows divide, else 8-row groups.
static int pack_kind_for(const Tensor& t) {
  const PackedKernels& pk = packed_kernels();
  if (t.ne1 % 16 == 0) {
    if (t.type == T_Q4_0 && pk.q4_0x16 != nullptr) return PACK_Q4_0x16;
    if (t.type == T_Q8_0 && pk.q8_0x16 != nullptr) return PACK_Q8_0x16;
    if (t.type == T_Q5_0 && pk.q5_0x16 != nullptr) return PACK_Q5_0x16;
  }
  if (t.ne1 % 8 == 0) {
    if (t.type == T_Q4_0 && pk.q4_0x8 != nullptr) return PACK_Q4_0x8;
    if (t.type == T_Q8_0 && pk.q8_0x8 != nullptr) return PACK_Q8_0x8;
    if (t.type == T_Q5_0 && pk.q5_0x8 != nullptr) return PACK_Q5_0x8;
  }
  return PACK_NONE;
}

bool pack_tensor(Tensor& t, bool releaseFilePages) {
  const int kind = pack_kind_for(t);
  if (kind == PACK_NONE) return false;
  const int64_t nb = t.ne0 / QK8_0;
  const int groupRows = packed_group_rows(kind);
  const size_t blockBytes = packed_block_bytes(kind);
  const size_t bytes = (size_t)(t.ne1 / groupRows) * (size_t)nb * blockBytes;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw ModelError("cannot allocate " + std::to_string(bytes) + " bytes for repacked weights");
  // In slices, releasing each slice's file pages at once, so the peak is not file + copy.
  const int64_t groups = t.ne1 / groupRows;
  const int64_t sliceGroups = std::max<int64_t>(1, (int64_t)((4u << 20) / (groupRows * t.rowBytes)));
  for (int64_t g0 = 0; g0 < groups; g0 += sliceGroups) {
    const int64_t gn = std::min(sliceGroups, groups - g0);
    const int64_t rows = gn * groupRows;
    const uint8_t* src = t.data + (size_t)g0 * groupRows * t.rowBytes;
    uint8_t* dst = (uint8_t*)p + (size_t)g0 * (size_t)nb * blockBytes;
    switch (kind) {
      case PACK_Q4_0x8: repack_q4_0x8(src, t.rowBytes, rows, nb, dst); break;
      case PACK_Q5_0x8: repack_q5_0x8(src, t.rowBytes, rows, nb, dst); break;
      case PACK_Q8_0x8: repack_q8_0x8(src, t.rowBytes, rows, nb, dst); break;
      case PACK_Q4_0x16: repack_q4_0x16(src, t.rowBytes, rows, nb, dst); break;
      case PACK_Q5_0x16: repack_q5_0x16(src, t.rowBytes, rows, nb, dst); break;
      default: repack_q8_0x16(src, t.rowBytes, rows, nb, dst); break;
    }
    if (releaseFilePages) release_pages(src, (size_t)rows * t.rowBytes);
  }
  t.packed = (uint8_t*)p;
  t.packedBytes = bytes;
  t.packKind = kind;
  return true;
}

void free_packed(Tensor& t) {
  if (t.packed != nullptr) munmap(t.packed, t.packedBytes);
  t.packed = nullptr;
  t.packKind = PACK_NONE;
}

void Model::ensureLayerReady(int layer) {
  const int i = layer - cfg_.layerStart;
  if (layerReady_[i]) return;
  LayerWeights& L = layers_[i];
  for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.wGate, &L.wUp, &L.wDown}) pack(*t, true);
  layerReady_[i] = true;
}

void Model::prefetch(const Tensor& t) {
  if (!t.present()) return;
  const size_t bytes = t.rowBytes * (size_t)t.ne1;
  volatile uint8_t sink = 0;
  for (size_t off = 0; off < bytes; off += 4096) sink = sink + t.data[off];
  (void)sink;
}

void Model::prefetchLayer(int layer) {
  if (layer < cfg_.layerStart || layer >= cfg_.layerEnd) throw ModelError("layer outside the shard");
  ensureLayerReady(layer);
  const LayerWeights& L = layers_[layer - cfg_.layerStart];
  for (const Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.wGate, &L.wUp, &L.wDown})
    if (t->packKind == PACK_NONE) prefetch(*t);
}

void Model::prefetchRest() {
  // Token embeddings are read a row at a time: only the rows used become resident.
  if (output_.present() && !headReady_) {
    // Dropping the pages is safe even for a tied head: the embedding lookup faults back in only
    // the rows it reads.
    pack(output_, true);
    headReady_ = true;
  }
  if (output_.packKind == PACK_NONE) prefetch(output_);
}

// ---------------------------------------------------------------------------------------------
// Forward

void Model::embed(const int32_t* tokens, int n, float* out) {
  if (!tokEmbd_.present()) throw ModelError("this shard has no token embeddings (not the first stage)");
  for (int t = 0; t < n; t++) {
    if (tokens[t] < 0 || tokens[t] >= tokEmbd_.ne1)
      throw ModelError("token id " + std::to_string(tokens[t]) + " is outside the vocabulary");
  }
  // Rows are read with pread, not through the mapping: a fault on a mapped row also maps the
  // cached pages around it (fault-around, readahead), so a long prompt would make tens of MiB of
  // rows resident that are never used — and a tied head's table already lives in its packed copy.
  std::vector<uint8_t>& row = g_scratch.embdRow;
  row.resize(tokEmbd_.rowBytes);
  for (int t = 0; t < n; t++) {
    const uint64_t at = tokEmbd_.fileOffset + (uint64_t)tokens[t] * tokEmbd_.rowBytes;
    size_t done = 0;
    while (done < row.size()) {
      const ssize_t r = pread(fd_, row.data() + done, row.size() - done, (off_t)(at + done));
      if (r <= 0) throw ModelError("cannot read the embedding of token " + std::to_string(tokens[t]));
      done += (size_t)r;
    }
    tokEmbd_.tr->toFloat(row.data(), out + (size_t)t * cfg_.nEmbd, cfg_.nEmbd);
  }
}

void Model::forwardLayer(int il, KvCache& kv, float* x, int n, int pos) {
  const ModelConfig& c = cfg_;
  if (il < c.layerStart || il >= c.layerEnd) throw ModelError("layer " + std::to_string(il) + " is not in this shard");
  if (il < kv.layerStart() || il >= kv.layerEnd()) throw ModelError("KV cache does not hold layer " + std::to_string(il));
  if (pos < 0 || n <= 0 || pos + n > kv.nCtx())
    throw ModelError("positions " + std::to_string(pos) + ".." + std::to_string(pos + n) +
                     " do not fit the context of " + std::to_string(kv.nCtx()));
  ensureLayerReady(il);
  const LayerWeights& L = layers_[il - c.layerStart];
  const int nEmbd = c.nEmbd, hd = c.headDim;
  const int64_t qDim = (int64_t)c.nHead * hd, kvDim = (int64_t)c.nHeadKv * hd;
  Scratch& S = g_scratch;
  float* xn = grow(S.xn, (size_t)n * nEmbd);
  float* q = grow(S.q, (size_t)n * qDim);
  float* k = grow(S.k, (size_t)n * kvDim);
  float* v = grow(S.v, (size_t)n * kvDim);
  float* attn = grow(S.attn, (size_t)n * qDim);
  float* rope = grow(S.rope, (size_t)n * c.ropeDims);
  const float* freqs = ropeFreqs_.empty() ? nullptr : ropeFreqs_.data();

  // Attention block.
  PhaseClock clock;
  for (int t = 0; t < n; t++) rms_norm_row(x + (size_t)t * nEmbd, L.attnNormF.data(), xn + (size_t)t * nEmbd, nEmbd, c.eps);
  {
    const QuantizedActs aq = quantize_acts(L.wq.tr->dotPartner, xn, n, nEmbd);
    const QuantizedActs ak = L.wk.tr->dotPartner == L.wq.tr->dotPartner ? aq : quantize_acts(L.wk.tr->dotPartner, xn, n, nEmbd);
    const QuantizedActs av = L.wv.tr->dotPartner == L.wq.tr->dotPartner ? aq
                             : L.wv.tr->dotPartner == L.wk.tr->dotPartner ? ak
                                                                           : quantize_acts(L.wv.tr->dotPartner, xn, n, nEmbd);
    clock.lap(0);
    const MatJob jobs[3] = {{&L.wq, aq, q, qDim, false}, {&L.wk, ak, k, kvDim, false}, {&L.wv, av, v, kvDim, false}};
    run_matmuls(jobs, 3, n);
    clock.lap(1);
  }
  uint8_t* kc = kv.k(il);
  uint8_t* vc = kv.v(il);
  const bool f16 = kv.f16();
  const size_t eltBytes = f16 ? 2 : 4;
  const FloatKernels& fk = float_kernels();
  parallel_for(n, 8, [&](int t) {
    float* qt = q + (size_t)t * qDim;
    float* kt = k + (size_t)t * kvDim;
    float* vt = v + (size_t)t * kvDim;
    if (!L.bq.empty())
      for (int64_t i = 0; i < qDim; i++) qt[i] += L.bq[i];
    if (!L.bk.empty())
      for (int64_t i = 0; i < kvDim; i++) kt[i] += L.bk[i];
    if (!L.bv.empty())
      for (int64_t i = 0; i < kvDim; i++) vt[i] += L.bv[i];
    if (!L.qNorm.empty())
      for (int h = 0; h < c.nHead; h++) rms_norm_row(qt + h * hd, L.qNorm.data(), qt + h * hd, hd, c.eps);
    if (!L.kNorm.empty())
      for (int h = 0; h < c.nHeadKv; h++) rms_norm_row(kt + h * hd, L.kNorm.data(), kt + h * hd, hd, c.eps);
    float* rc = rope + (size_t)t * c.ropeDims;
    rope_cache(c, freqs, pos + t, rc);
    for (int h = 0; h < c.nHead; h++) rope_apply(c, rc, qt + h * hd);
    for (int h = 0; h < c.nHeadKv; h++) rope_apply(c, rc, kt + h * hd);
    const size_t at = (size_t)(pos + t) * kvDim * eltBytes;
    if (f16) {
      fk.f32ToF16(kt, kc + at, kvDim);
      fk.f32ToF16(vt, vc + at, kvDim);
    } else {
      std::memcpy(kc + at, kt, kvDim * 4);
      std::memcpy(vc + at, vt, kvDim * 4);
    }
  });

  clock.lap(2);
  // Grouped-query attention.
  if (f16 && fk.scoresF16Heads != nullptr && (hd == 64 || hd == 128)) {
    attendGrouped(kv, il, q, attn, n, pos);
  } else {
    // One (token, head) pair per work item.
    ThreadPool& p = pool();
    const int nth = p.size();
    const int nCtx = kv.nCtx();
    float* scoresAll = grow(S.scores, (size_t)nth * nCtx);
    uint16_t* q16All = grow(S.q16, (size_t)nth * hd);
    const int group = c.nHead / c.nHeadKv;
    const float scale = 1.0f / std::sqrt((float)hd);
    const int items = n * c.nHead;
    ChunkCounter counter;
    auto task = [&](int ith, int) {
      float* sc = scoresAll + (size_t)ith * nCtx;
      uint16_t* q16 = q16All + (size_t)ith * hd;
      int64_t s, e;
      while (counter.take(items, 1, &s, &e)) {
        const int t = (int)(s / c.nHead), h = (int)(s % c.nHead);
        const int kvh = h / group;
        const int last = pos + t;  // causal: attends to positions 0..last
        const float* qh = q + (size_t)t * qDim + (size_t)h * hd;
        float mx = -INFINITY;
        if (f16) {
          // Like llama.cpp, the query meets an f16 cache as f16.
          fk.f32ToF16(qh, q16, hd);
          fk.scoresF16(last + 1, hd, (const uint16_t*)kc + (size_t)kvh * hd, (size_t)kvDim, q16, sc);
          for (int j = 0; j <= last; j++) {
            sc[j] *= scale;
            mx = std::max(mx, sc[j]);
          }
        } else {
          const TypeTraits* kt32 = type_traits(T_F32);
          for (int j = 0; j <= last; j++) {
            float d;
            kt32->dot(hd, &d, kc + ((size_t)j * kvDim + (size_t)kvh * hd) * 4, qh);
            sc[j] = d * scale;
            mx = std::max(mx, sc[j]);
          }
        }
        const double sum = fk.expSubSum(last + 1, sc, mx);
        const float inv = (float)(1.0 / sum);
        float* out = attn + (size_t)t * qDim + (size_t)h * hd;
        std::memset(out, 0, hd * sizeof(float));
        if (f16) {
          // llama.cpp multiplies an f16 V by the probabilities rounded to f16; do the same.
          for (int j = 0; j <= last; j++) sc[j] = fp16_to_f32(f32_to_fp16(sc[j] * inv));
          fk.valuesF16(last + 1, hd, (const uint16_t*)vc + (size_t)kvh * hd, (size_t)kvDim, sc, out);
        } else {
          for (int j = 0; j <= last; j++) fk.axpyF32(hd, sc[j] * inv, (const float*)vc + (size_t)j * kvDim + (size_t)kvh * hd, out);
        }
      }
    };
    if (nth == 1 || items == 1) task(0, 1);
    else p.run(task);
  }
  clock.lap(3);
  {
    const MatJob job{&L.wo, quantize_acts(L.wo.tr->dotPartner, attn, n, qDim), x, nEmbd, true};
    run_matmuls(&job, 1, n);
  }
  clock.lap(4);

  // Feed-forward block (SwiGLU), kFfnBlockTokens tokens at a time: each token is independent here,
  // and gate, up and the quantized activations take ~5 nFf floats per token (10 MB for a 256-token
  // chunk of a 0.5B model, 2.5 MB in blocks of 64), while the weights stay hot across blocks.
  for (int t = 0; t < n; t++) rms_norm_row(x + (size_t)t * nEmbd, L.ffnNormF.data(), xn + (size_t)t * nEmbd, nEmbd, c.eps);
  for (int t0 = 0; t0 < n; t0 += kFfnBlockTokens) {
    const int bn = std::min(kFfnBlockTokens, n - t0);
    float* gate = grow(S.gate, (size_t)bn * c.nFf);
    float* up = grow(S.up, (size_t)bn * c.nFf);
    const float* xb = xn + (size_t)t0 * nEmbd;
    {
      const QuantizedActs ag = quantize_acts(L.wGate.tr->dotPartner, xb, bn, nEmbd);
      const QuantizedActs au = L.wUp.tr->dotPartner == L.wGate.tr->dotPartner ? ag : quantize_acts(L.wUp.tr->dotPartner, xb, bn, nEmbd);
      const MatJob jobs[2] = {{&L.wGate, ag, gate, c.nFf, false}, {&L.wUp, au, up, c.nFf, false}};
      run_matmuls(jobs, 2, bn);
    }
    clock.lap(5);
    parallel_for(bn, 8, [&](int t) {
      float* g = gate + (size_t)t * c.nFf;
      const float* u = up + (size_t)t * c.nFf;
      fk.siluMul(c.nFf, g, u);
    });
    clock.lap(6);
    {
      const MatJob job{&L.wDown, quantize_acts(L.wDown.tr->dotPartner, gate, bn, c.nFf), x + (size_t)t0 * nEmbd, nEmbd, true};
      run_matmuls(&job, 1, bn);
    }
    clock.lap(7);
  }
}

void Model::attendGrouped(KvCache& kv, int il, const float* q, float* attn, int n, int pos) {
  const ModelConfig& c = cfg_;
  const int hd = c.headDim, group = c.nHead / c.nHeadKv;
  const int64_t qDim = (int64_t)c.nHead * hd, kvDim = (int64_t)c.nHeadKv * hd;
  // A work item is one token × KV head × batch of up to kHeadsPerItem of its query heads: small
  // enough that decode (one token, few KV heads) still gives every thread work.
  constexpr int kHeadsPerItem = 4;
  const int batches = (group + kHeadsPerItem - 1) / kHeadsPerItem;
  const int items = n * c.nHeadKv * batches;
  ThreadPool& p = pool();
  const int nth = p.size();
  const int nCtx = kv.nCtx();
  float* scoresAll = grow(g_scratch.scores, (size_t)nth * kHeadsPerItem * nCtx);
  float* qAll = grow(g_scratch.qf, (size_t)nth * kHeadsPerItem * hd);
  const uint16_t* kc = (const uint16_t*)kv.k(il);
  const uint16_t* vc = (const uint16_t*)kv.v(il);
  const float scale = 1.0f / std::sqrt((float)hd);
  const FloatKernels& fk = float_kernels();
  ChunkCounter counter;
  auto task = [&](int ith, int) {
    float* sc = scoresAll + (size_t)ith * kHeadsPerItem * nCtx;
    float* qf = qAll + (size_t)ith * kHeadsPerItem * hd;
    int64_t s, e;
    while (counter.take(items, 1, &s, &e)) {
      const int t = (int)(s / (c.nHeadKv * batches));
      const int rem = (int)(s % (c.nHeadKv * batches));
      const int kvh = rem / batches, b = rem % batches;
      const int h0 = kvh * group + b * kHeadsPerItem;
      const int nh = std::min(kHeadsPerItem, group - b * kHeadsPerItem);
      const int nPos = pos + t + 1;  // causal: positions 0..pos+t
      // Like llama.cpp, the query meets an f16 cache as f16.
      std::memcpy(qf, q + (size_t)t * qDim + (size_t)h0 * hd, (size_t)nh * hd * sizeof(float));
      fk.roundF16(nh * hd, qf);
      fk.scoresF16Heads(nh, nPos, hd, kc + (size_t)kvh * hd, (size_t)kvDim, qf, sc, (size_t)nCtx);
      for (int i = 0; i < nh; i++) {
        float* si = sc + (size_t)i * nCtx;
        float mx = -INFINITY;
        for (int j = 0; j < nPos; j++) {
          si[j] *= scale;
          mx = std::max(mx, si[j]);
        }
        const float inv = (float)(1.0 / fk.expSubSum(nPos, si, mx));
        for (int j = 0; j < nPos; j++) si[j] *= inv;
        // llama.cpp multiplies an f16 V by the probabilities rounded to f16; do the same.
        fk.roundF16(nPos, si);
      }
      float* out = attn + (size_t)t * qDim + (size_t)h0 * hd;
      std::memset(out, 0, (size_t)nh * hd * sizeof(float));
      fk.valuesF16Heads(nh, nPos, hd, vc + (size_t)kvh * hd, (size_t)kvDim, sc, (size_t)nCtx, out);
    }
  };
  if (nth == 1 || items == 1) task(0, 1);
  else p.run(task);
}

void Model::head(const float* x, int n, int first, float* logits) {
  if (!output_.present()) throw ModelError("this shard has no output head (not the last stage)");
  if (first < 0 || first >= n) throw ModelError("invalid head row range");
  if (!headReady_) {
    pack(output_, true);
    headReady_ = true;
  }
  const int rows = n - first;
  const int nEmbd = cfg_.nEmbd;
  float* xn = grow(g_scratch.tmp, (size_t)rows * nEmbd);
  for (int t = 0; t < rows; t++)
    rms_norm_row(x + (size_t)(first + t) * nEmbd, outNorm_.data(), xn + (size_t)t * nEmbd, nEmbd, cfg_.eps);
  matmul(output_, xn, rows, logits, output_.ne1, false);
}

}  // namespace skein
