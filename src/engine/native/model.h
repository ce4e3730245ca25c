// A transformer shard over memory-mapped GGUF weights: the layers [layerStart, layerEnd), the token
// embeddings when it is the first stage, the final norm and output head when it is the last.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace skein {

struct ModelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Tensor {
  const uint8_t* data = nullptr;
  int type = -1;
  const TypeTraits* tr = nullptr;
  int64_t ne0 = 0;  // elements per row
  int64_t ne1 = 0;  // rows
  size_t rowBytes = 0;
  uint64_t fileOffset = 0;
  // Set once the rows were repacked in groups of 8 (kernels/packed.h); the forward pass then uses
  // only the packed copy and the file pages of `data` are released.
  int packKind = 0;
  uint8_t* packed = nullptr;
  size_t packedBytes = 0;
  bool present() const { return data != nullptr; }
};

struct LayerWeights {
  Tensor attnNorm, wq, wk, wv, wo, ffnNorm, wGate, wUp, wDown;
  // Small vectors kept as floats whatever their file type.
  std::vector<float> attnNormF, ffnNormF, bq, bk, bv, qNorm, kNorm;
};

struct ModelConfig {
  int nEmbd = 0, nHead = 0, nHeadKv = 0, headDim = 0, nFf = 0, nVocab = 0, nLayer = 0;
  int layerStart = 0, layerEnd = 0;
  float eps = 1e-5f;
  int ropeDims = 0;
  bool ropeNeox = false;
  float ropeBase = 10000.0f, ropeFreqScale = 1.0f;
};

struct TensorDesc {
  std::string role;
  int layer = -1;
  uint64_t offset = 0, sizeBytes = 0;
  int type = -1;
  int64_t ne0 = 0, ne1 = 1;
};

class KvCache {
 public:
  KvCache(const ModelConfig& cfg, int nCtx, bool f16);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  uint8_t* k(int layer) { return base_ + (size_t)(layer - layerStart_) * 2 * layerBytes_; }
  uint8_t* v(int layer) { return k(layer) + layerBytes_; }
  int nCtx() const { return nCtx_; }
  bool f16() const { return f16_; }
  size_t bytes() const { return totalBytes_; }
  int layerStart() const { return layerStart_; }
  int layerEnd() const { return layerEnd_; }

 private:
  int nCtx_, layerStart_, layerEnd_;
  bool f16_;
  size_t layerBytes_, totalBytes_;
  uint8_t* base_;
};

class Model {
 public:
  Model(const std::string& path, const ModelConfig& cfg, const std::vector<TensorDesc>& tensors);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  bool hasEmbeddings() const { return tokEmbd_.present(); }
  bool hasHead() const { return output_.present(); }
  size_t mappedBytes() const { return mappedBytes_; }

  // Reads the layer's weights into the page cache so the first token does not fault them in.
  void prefetchLayer(int layer);
  void prefetchRest();
  void embed(const int32_t* tokens, int n, float* out);
  // Runs one layer in place over n hidden states for positions pos..pos+n-1.
  void forwardLayer(int layer, KvCache& kv, float* x, int n, int pos);
  // Final norm + head for the rows [first, n) of x; logits are written row after row.
  void head(const float* x, int n, int first, float* logits);
  void unmapAll();

 private:
  Tensor mapTensor(const TensorDesc& d, bool needsDot);
  void pack(Tensor& t, bool releaseFilePages);
  void ensureLayerReady(int layer);
  // Attention over an f16 cache with the AVX-512 kernels that serve a KV head's query heads at once.
  void attendGrouped(KvCache& kv, int layer, const float* q, float* attn, int n, int pos);
  std::vector<bool> layerReady_;
  bool headReady_ = false;
  std::vector<float> loadVector(const TensorDesc& d, int64_t expected);
  void prefetch(const Tensor& t);

  ModelConfig cfg_;
  int fd_ = -1;
  uint64_t fileBytes_ = 0;
  struct Region {
    void* base;
    size_t len;
  };
  std::map<uint64_t, std::pair<Region, const uint8_t*>> regions_;  // by tensor offset
  size_t mappedBytes_ = 0;
  std::vector<LayerWeights> layers_;  // indexed by layer - layerStart
  Tensor tokEmbd_, output_;
  std::vector<float> outNorm_, ropeFreqs_;
  std::string path_;
};

// Multiplies n activation rows (floats, `k` wide, stride k) by the weight, writing or adding
// out[t * outStride + r]. Exposed for tests and the benchmark.
void matmul(const Tensor& w, const float* x, int n, float* out, int64_t outStride, bool accumulate);
// Repacks a tensor for the packed kernels when its type and shape allow (tests, benchmarks).
bool pack_tensor(Tensor& t, bool releaseFilePages = false);
void free_packed(Tensor& t);

}  // namespace skein
