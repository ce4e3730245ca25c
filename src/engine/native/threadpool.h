// A persistent pool: the caller is thread 0, workers 1..n-1. Workers spin briefly after a task
// (the next op of the same token usually follows within microseconds), then sleep on a condition
// variable so an idle runner does not burn a core. Past a few hundred pauses every waiter yields
// its core between checks: on a busy machine the thread it waits for may need that core (decode
// at 2 threads under load 8 on 2 cores went from ~8 to ~13 tok/s); on an idle one yield returns
// at once.
//
// Every task drains a shared counter (ChunkCounter, run_matmuls), so whichever threads are running
// do all the work: on an oversubscribed machine a descheduled worker costs nothing.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace skein {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int ith, int nth);

  explicit ThreadPool(int nThreads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return nThreads_; }
  // Runs fn(ctx, ith, nth) on every thread and returns when all have finished. Not reentrant.
  void run(TaskFn fn, void* ctx);

  template <typename F>
  void run(F& f) {
    run([](void* c, int ith, int nth) { (*(F*)c)(ith, nth); }, &f);
  }

 private:
  void workerLoop(int ith);

  const int nThreads_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  // (generation << 32) | CLOSED bit | number of workers inside the current task. A worker joins only
  // while its generation's task is open; the caller closes the task once the work is drained and
  // waits only for workers that joined — never for one the OS has not scheduled yet.
  std::atomic<uint64_t> gate_{0};
  uint64_t lastGeneration_ = 0;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
};

// Hands out [start, end) ranges of size `chunk` from a shared counter until `total` is covered.
struct ChunkCounter {
  std::atomic<int64_t> next{0};
  bool take(int64_t total, int64_t chunk, int64_t* start, int64_t* end) {
    const int64_t s = next.fetch_add(chunk, std::memory_order_relaxed);
    if (s >= total) return false;
    *start = s;
    *end = s + chunk < total ? s + chunk : total;
    return true;
  }
};

ThreadPool& pool();
// Replaces the global pool; n <= 0 means one thread per core.
void set_pool_threads(int n);
int default_threads();

}  // namespace skein
