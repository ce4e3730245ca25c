// N-API surface. Every call is synchronous and bounded (one layer, one head, one embedding batch):
// the runner process owns its event loop and checks for cancellation between calls.
#include <napi.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "blocks.h"
#include "kernels/kernels.h"
#include "model.h"
#include "threadpool.h"

using namespace skein;

namespace {

int32_t get_int(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}
double get_num(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

Napi::Float32Array f32_arg(const Napi::CallbackInfo& info, size_t i, size_t minLen, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Float32Array");
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (a.ElementLength() < minLen)
    throw Napi::RangeError::New(info.Env(), std::string(what) + " is too short: " + std::to_string(a.ElementLength()) +
                                                " < " + std::to_string(minLen));
  return a;
}
int int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

class ModelWrap;

class KvCacheWrap : public Napi::ObjectWrap<KvCacheWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "KvCache",
                                   {InstanceMethod("free", &KvCacheWrap::Free), InstanceAccessor("bytes", &KvCacheWrap::Bytes, nullptr),
                                    InstanceAccessor("size", &KvCacheWrap::Size, nullptr)});
    ctor = Napi::Persistent(f);
    exports.Set("KvCache", f);
  }
  KvCacheWrap(const Napi::CallbackInfo& info);
  KvCache* get(Napi::Env env) {
    if (!cache) throw Napi::Error::New(env, "KV cache was freed");
    return cache.get();
  }

 private:
  Napi::Value Free(const Napi::CallbackInfo& info) {
    cache.reset();
    return info.Env().Undefined();
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cache ? (double)cache->bytes() : 0); }
  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cache ? cache->nCtx() : 0); }
  std::unique_ptr<KvCache> cache;
};
Napi::FunctionReference KvCacheWrap::ctor;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Model",
                                   {InstanceMethod("embed", &ModelWrap::Embed), InstanceMethod("forwardLayer", &ModelWrap::ForwardLayer),
                                    InstanceMethod("head", &ModelWrap::Head), InstanceMethod("prefetchLayer", &ModelWrap::PrefetchLayer),
                                    InstanceMethod("prefetchRest", &ModelWrap::PrefetchRest), InstanceMethod("close", &ModelWrap::Close),
                                    InstanceAccessor("mappedBytes", &ModelWrap::MappedBytes, nullptr)});
    ctor = Napi::Persistent(f);
    exports.Set("Model", f);
  }

  ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsArray())
      throw Napi::TypeError::New(env, "new Model(path, config, tensors)");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    const Napi::Object c = info[1].As<Napi::Object>();
    ModelConfig cfg;
    cfg.nEmbd = get_int(c, "nEmbd");
    cfg.nHead = get_int(c, "nHead");
    cfg.nHeadKv = get_int(c, "nHeadKv");
    cfg.headDim = get_int(c, "headDim");
    cfg.nFf = get_int(c, "nFf");
    cfg.nVocab = get_int(c, "nVocab");
    cfg.nLayer = get_int(c, "nLayer");
    cfg.layerStart = get_int(c, "layerStart");
    cfg.layerEnd = get_int(c, "layerEnd");
    cfg.eps = (float)get_num(c, "eps");
    cfg.ropeDims = get_int(c, "ropeDims");
    cfg.ropeNeox = c.Get("ropeNeox").ToBoolean().Value();
    cfg.ropeBase = (float)get_num(c, "ropeBase");
    cfg.ropeFreqScale = (float)get_num(c, "ropeFreqScale");
    const Napi::Array arr = info[2].As<Napi::Array>();
    std::vector<TensorDesc> tensors;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      const Napi::Value v = arr.Get(i);
      if (!v.IsObject()) throw Napi::TypeError::New(env, "tensors must be objects");
      const Napi::Object o = v.As<Napi::Object>();
      TensorDesc d;
      d.role = o.Get("role").ToString().Utf8Value();
      d.layer = get_int(o, "layer");
      d.offset = (uint64_t)get_num(o, "offset");
      d.sizeBytes = (uint64_t)get_num(o, "sizeBytes");
      d.type = get_int(o, "type");
      d.ne0 = (int64_t)get_num(o, "ne0");
      d.ne1 = (int64_t)get_num(o, "ne1");
      tensors.push_back(std::move(d));
    }
    try {
      model = std::make_unique<Model>(path, cfg, tensors);
    } catch (const ModelError& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  Model* get(Napi::Env env) {
    if (!model) throw Napi::Error::New(env, "model was closed");
    return model.get();
  }

 private:
  // embed(tokens: Int32Array, out: Float32Array)
  Napi::Value Embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model* m = get(env);
    if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, "tokens must be an Int32Array");
    Napi::Int32Array tokens = info[0].As<Napi::Int32Array>();
    const int n = (int)tokens.ElementLength();
    Napi::Float32Array out = f32_arg(info, 1, (size_t)n * m->config().nEmbd, "out");
    try {
      m->embed(tokens.Data(), n, out.Data());
    } catch (const ModelError& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }
  // forwardLayer(layer, cache, hidden: Float32Array, nTokens, pos)
  Napi::Value ForwardLayer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model* m = get(env);
    const int layer = int_arg(info, 0, "layer");
    if (info.Length() < 2 || !info[1].IsObject() || !info[1].As<Napi::Object>().InstanceOf(KvCacheWrap::ctor.Value()))
      throw Napi::TypeError::New(env, "cache must be a KvCache");
    KvCache* kv = KvCacheWrap::Unwrap(info[1].As<Napi::Object>())->get(env);
    const int n = int_arg(info, 3, "nTokens");
    const int pos = int_arg(info, 4, "pos");
    if (n <= 0) throw Napi::RangeError::New(env, "nTokens must be positive");
    Napi::Float32Array hidden = f32_arg(info, 2, (size_t)n * m->config().nEmbd, "hidden");
    try {
      m->forwardLayer(layer, *kv, hidden.Data(), n, pos);
    } catch (const ModelError& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }
  // head(hidden, nTokens, firstRow, logits)
  Napi::Value Head(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model* m = get(env);
    const int n = int_arg(info, 1, "nTokens");
    const int first = int_arg(info, 2, "firstRow");
    if (n <= 0 || first < 0 || first >= n) throw Napi::RangeError::New(env, "invalid rows");
    Napi::Float32Array hidden = f32_arg(info, 0, (size_t)n * m->config().nEmbd, "hidden");
    Napi::Float32Array logits = f32_arg(info, 3, (size_t)(n - first) * m->config().nVocab, "logits");
    try {
      m->head(hidden.Data(), n, first, logits.Data());
    } catch (const ModelError& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }
  Napi::Value PrefetchLayer(const Napi::CallbackInfo& info) {
    try {
      get(info.Env())->prefetchLayer(int_arg(info, 0, "layer"));
    } catch (const ModelError& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    return info.Env().Undefined();
  }
  Napi::Value PrefetchRest(const Napi::CallbackInfo& info) {
    get(info.Env())->prefetchRest();
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    model.reset();
    return info.Env().Undefined();
  }
  Napi::Value MappedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), model ? (double)model->mappedBytes() : 0);
  }

  std::unique_ptr<Model> model;
  friend class KvCacheWrap;
};
Napi::FunctionReference ModelWrap::ctor;

// new KvCache(model, nCtx, f16)
KvCacheWrap::KvCacheWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KvCacheWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ModelWrap::ctor.Value()))
    throw Napi::TypeError::New(env, "new KvCache(model, nCtx, f16)");
  Model* m = ModelWrap::Unwrap(info[0].As<Napi::Object>())->get(env);
  try {
    cache = std::make_unique<KvCache>(m->config(), int_arg(info, 1, "nCtx"), info[2].ToBoolean().Value());
  } catch (const ModelError& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// --- Module functions --------------------------------------------------------------------------

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  set_pool_threads(int_arg(info, 0, "threads"));
  return Napi::Number::New(info.Env(), pool().size());
}
Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool().size()); }
Napi::Value Isa(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), kernel_isa()); }

// { typeId: { name, blockElems, blockBytes, partner } } for every supported type.
Napi::Value TypeTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (int t = 0; t < T_COUNT; t++) {
    const TypeTraits* tr = type_traits(t);
    if (!tr) continue;
    Napi::Object row = Napi::Object::New(env);
    row.Set("name", tr->name);
    row.Set("blockElems", tr->blockElems);
    row.Set("blockBytes", tr->blockBytes);
    row.Set("partner", (int)tr->dotPartner);
    row.Set("hasDot", tr->dot != nullptr);
    out.Set(std::to_string(t), row);
  }
  return out;
}

// testDot(type, weights: Uint8Array, rows, cols, x: Float32Array, simd: boolean) -> Float32Array(rows)
// The activation is quantized with the matching (generic or SIMD) converter, then each row dotted.
Napi::Value TestDot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int type = int_arg(info, 0, "type");
  const TypeTraits* tr = type_traits(type);
  if (!tr || !tr->dot) throw Napi::Error::New(env, "unsupported type " + std::to_string(type));
  if (info.Length() < 6 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "weights must be a Uint8Array");
  Napi::Uint8Array w = info[1].As<Napi::Uint8Array>();
  const int rows = int_arg(info, 2, "rows"), cols = int_arg(info, 3, "cols");
  Napi::Float32Array x = f32_arg(info, 4, (size_t)cols, "x");
  const bool simd = info[5].ToBoolean().Value();
  if (cols % tr->blockElems != 0) throw Napi::RangeError::New(env, "cols must be a multiple of the block size");
  const size_t rb = row_bytes(tr, cols);
  if (w.ByteLength() < rb * (size_t)rows) throw Napi::RangeError::New(env, "weights too short");
  const TypeTraits* pt = type_traits(tr->dotPartner);
  std::vector<uint8_t> xq(row_bytes(pt, cols) + 64);
  (simd ? pt->fromFloat : pt->fromFloatGeneric)(x.Data(), xq.data(), cols);
  Napi::Float32Array out = Napi::Float32Array::New(env, rows);
  for (int r = 0; r < rows; r++) (simd ? tr->dot : tr->dotGeneric)(cols, &out[r], w.Data() + rb * r, xq.data());
  return out;
}

// dequantize(type, bytes: Uint8Array, n) -> Float32Array(n)
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int type = int_arg(info, 0, "type");
  const TypeTraits* tr = type_traits(type);
  if (!tr) throw Napi::Error::New(env, "unsupported type " + std::to_string(type));
  if (info.Length() < 3 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "bytes must be a Uint8Array");
  Napi::Uint8Array b = info[1].As<Napi::Uint8Array>();
  const int n = int_arg(info, 2, "n");
  if (n % tr->blockElems != 0 || b.ByteLength() < row_bytes(tr, n)) throw Napi::RangeError::New(env, "bad length");
  Napi::Float32Array out = Napi::Float32Array::New(env, n);
  tr->toFloat(b.Data(), out.Data(), n);
  return out;
}

// matmul(type, weights, rows, cols, x: Float32Array (n × cols), n) -> Float32Array(n × rows), threaded.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int type = int_arg(info, 0, "type");
  const TypeTraits* tr = type_traits(type);
  if (!tr || !tr->dot) throw Napi::Error::New(env, "unsupported type " + std::to_string(type));
  if (info.Length() < 6 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "weights must be a Uint8Array");
  Napi::Uint8Array w = info[1].As<Napi::Uint8Array>();
  const int rows = int_arg(info, 2, "rows"), cols = int_arg(info, 3, "cols"), n = int_arg(info, 5, "n");
  Napi::Float32Array x = f32_arg(info, 4, (size_t)cols * n, "x");
  if (cols % tr->blockElems != 0 || w.ByteLength() < row_bytes(tr, cols) * (size_t)rows)
    throw Napi::RangeError::New(env, "bad weight shape");
  Tensor t;
  t.data = w.Data();
  t.type = type;
  t.tr = tr;
  t.ne0 = cols;
  t.ne1 = rows;
  t.rowBytes = row_bytes(tr, cols);
  const bool packIt = info.Length() > 6 && info[6].ToBoolean().Value();
  // benchReps > 0: run that many times and return the fastest wall time in ms instead of the result.
  const int benchReps = info.Length() > 7 && info[7].IsNumber() ? info[7].As<Napi::Number>().Int32Value() : 0;
  if (packIt) pack_tensor(t);
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)rows * n);
  double best = 1e30;
  try {
    for (int rep = 0; rep < std::max(1, benchReps); rep++) {
      const auto t0 = std::chrono::steady_clock::now();
      matmul(t, x.Data(), n, out.Data(), rows, false);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  } catch (...) {
    free_packed(t);
    throw;
  }
  free_packed(t);
  if (benchReps > 0) return Napi::Number::New(env, best);
  return out;
}

Napi::Value BlockSizes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("q4_0", (double)sizeof(block_q4_0));
  o.Set("q4_1", (double)sizeof(block_q4_1));
  o.Set("q5_0", (double)sizeof(block_q5_0));
  o.Set("q5_1", (double)sizeof(block_q5_1));
  o.Set("q8_0", (double)sizeof(block_q8_0));
  o.Set("q8_1", (double)sizeof(block_q8_1));
  o.Set("q4_K", (double)sizeof(block_q4_K));
  o.Set("q5_K", (double)sizeof(block_q5_K));
  o.Set("q6_K", (double)sizeof(block_q6_K));
  o.Set("q8_K", (double)sizeof(block_q8_K));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_kernels();
  ModelWrap::Init(env, exports);
  KvCacheWrap::Init(env, exports);
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("isa", Napi::Function::New(env, Isa));
  exports.Set("typeTable", Napi::Function::New(env, TypeTable));
  exports.Set("testDot", Napi::Function::New(env, TestDot));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("blockSizes", Napi::Function::New(env, BlockSizes));
  return exports;
}

}  // namespace

NODE_API_MODULE(skein_native, Init)
