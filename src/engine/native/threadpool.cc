#include "threadpool.h"

#include <chrono>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SKEIN_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define SKEIN_PAUSE() __asm__ __volatile__("yield")
#else
#define SKEIN_PAUSE() ((void)0)
#endif

namespace skein {

// How long a worker keeps spinning after its last task before it sleeps. Long enough to span the
// JavaScript between two ops of one token (sampling, the layer loop), short enough to idle cheaply.
static constexpr auto kSpinBeforeSleep = std::chrono::microseconds(1000);

ThreadPool::ThreadPool(int nThreads) : nThreads_(nThreads < 1 ? 1 : nThreads) {
  for (int i = 1; i < nThreads_; i++) workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

// ~10-40 µs of PAUSE on current x86 cores: far above a normal chunk's remainder.
static constexpr uint32_t kSpinsBeforeYield = 256;
static constexpr uint64_t kClosed = 1ull << 31;
static constexpr uint64_t kCountMask = kClosed - 1;

void ThreadPool::run(TaskFn fn, void* ctx) {
  if (nThreads_ == 1) {
    fn(ctx, 0, 1);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  const uint64_t g = ++lastGeneration_;
  gate_.store(g << 32, std::memory_order_release);
  generation_.store(g, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  fn(ctx, 0, nThreads_);
  gate_.fetch_or(kClosed, std::memory_order_acq_rel);
  // A worker still inside the task normally finishes within microseconds. One that the OS
  // preempted mid-chunk (a busy machine) needs a core to finish on: after a short spin, yield
  // ours instead of burning the time slice it could run in.
  uint32_t spins = 0;
  while ((gate_.load(std::memory_order_acquire) & kCountMask) != 0) {
    SKEIN_PAUSE();
    if (++spins > kSpinsBeforeYield) std::this_thread::yield();
  }
}

void ThreadPool::workerLoop(int ith) {
  uint64_t seen = 0;
  for (;;) {
    auto spinStart = std::chrono::steady_clock::now();
    uint32_t spins = 0;
    for (;;) {
      if (generation_.load(std::memory_order_acquire) != seen) break;
      SKEIN_PAUSE();
      // Past a short spin, offer the core to anything runnable (on a busy machine: often the
      // caller, which cannot hand out the next op while this thread holds its core).
      if (spins > kSpinsBeforeYield) std::this_thread::yield();
      if ((++spins & 255) == 0 && std::chrono::steady_clock::now() - spinStart > kSpinBeforeSleep) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    uint64_t v = gate_.load(std::memory_order_acquire);
    bool joined = false;
    while ((v >> 32) == seen && (v & kClosed) == 0) {
      if (gate_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;  // the caller already finished this task alone
    fn_(ctx_, ith, nThreads_);
    gate_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : (int)n;
}

static std::unique_ptr<ThreadPool> g_pool;

ThreadPool& pool() {
  if (!g_pool) g_pool = std::make_unique<ThreadPool>(default_threads());
  return *g_pool;
}

void set_pool_threads(int n) {
  const int want = n <= 0 ? default_threads() : n;
  if (g_pool && g_pool->size() == want) return;
  g_pool.reset();
  g_pool = std::make_unique<ThreadPool>(want);
}

}  // namespace skein
