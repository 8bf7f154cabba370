// Scaling of the sparse Hogwild! path: samples (examples) per second of one epoch of SGD
// with 1 and 2 workers, through the library and through hand-written loops, and a dense
// control.
//
// Sparse workload: logistic regression with an intercept and L2 = 1e-4 on the touched
// weights, float, batch 1, learning rate 0.5, one epoch over generate_rcv1_like<float>
// (300,000 rows by default, 47,236 features, about 74 non-zeros per row). Benchmarks:
//
//   sparse/serial/1           one thread, plain loads and stores, no library code: the
//                             speed-up baseline
//   sparse/serial_prefetch/1  the same, asking for the next example's row before each step
//                             (as optimize() does through the objective's prefetch())
//   sparse/plain/<k>          the same algorithm on k std::jthreads, each over its slice of
//                             the shuffled ids, w read and written only through relaxed
//                             std::atomic_ref<float>: a hand-written Hogwild!
//   sparse/plain_prefetch/<k> the same, asking for the next example's row before each step
//   sparse/lock_free/<k>      AsyncOptimizer<float, Sgd, LockFree>::optimize with k workers
//   sparse/locked_striped/<k> the same with Locked{} (a mutex per stripe)
//   sparse/locked_one/<k>     the same with Locked{.stripes = 1} (one global lock)
//   sparse/handle/<k>         LockFree through the worker handles (touched, then step():
//                             pull, touched_gradient, push, clock in one call) in a
//                             hand-written loop, without prefetching
//   sparse/handle_prefetch/<k> the same, calling the objective's prefetch() with the next
//                             example first: optimize()'s step without its bookkeeping
//   sparse/handle_lean/<k>    the store calls of sparse/handle with the objective's calls
//                             replaced by a direct loop over the row: what the objective adds
//   sparse/handle_timed/<k>   sparse/handle_prefetch with step() taken apart into its calls and
//                             a time stamp between them
//
// Dense control: softmax regression on the first 20,000 Fashion-MNIST training images
// (7,850 parameters), batch 8, learning rate 0.1, L2 = 1e-4, one epoch:
//
//   dense/lock_free/<k>, dense/locked_striped/<k>
//
// Every benchmark runs a fixed number of epochs (iterations) per repetition, each epoch
// shuffling its ids afresh (the shuffle is part of the epoch, as in optimize()), and
// reports items_per_second in examples per second of wall time. The parameters are reset
// to zero before each epoch (a few microseconds, inside the timing for every variant alike).
//
// Before each measurement (each repetition) the program samples /proc/stat for a moment and
// records every core's busy fraction as counters cpu<k>_busy and busy_max, so that the report
// can flag measurements that started while other work held a core; with
// --idle_wait_seconds=S it first waits up to S seconds for every core to be idle.
//
// Before the benchmarks run, the program checks that the hand-written loops compute what the
// library computes: with one thread and the library's own shuffle of epoch 1, the serial
// loop, the plain loop and the handle loops must end where optimize() with LockFree and one
// worker ends (up to rounding). A mismatch (or a non-finite result in any benchmark) makes it
// exit 1.
//
// Flags besides Google Benchmark's: --sparse_examples=N (default 300000),
// --dense_examples=N (default 20000; 0 skips the dense control), --load_sample_seconds=S
// (default 0.3; 0 skips the sampling), --idle_wait_seconds=S (default 0).

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <benchmark/benchmark.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/random.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/synthetic.hpp>
#include <asyncopt/objective/logistic.hpp>
#include <asyncopt/objective/softmax.hpp>
#include <asyncopt/optimizer.hpp>
#include <asyncopt/update/sgd.hpp>

namespace {

using SparseMatrix = Eigen::SparseMatrix<float, Eigen::RowMajor>;
using DenseMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Logistic = asyncopt::objective::LogisticRegression<SparseMatrix>;
using Softmax = asyncopt::objective::SoftmaxRegression<DenseMatrix>;

constexpr double sparse_learning_rate = 0.5;
constexpr double dense_learning_rate = 0.1;
constexpr double l2 = 1e-4;
constexpr std::size_t dense_batch = 8;
constexpr std::int64_t epochs_per_repetition = 3;

struct Settings {
  std::size_t sparse_examples = 300'000;
  std::size_t dense_examples = 20'000;
  double load_sample_seconds = 0.3;
  double idle_wait_seconds = 0.0;
};
Settings settings;

// Set when a benchmark ends with a wrong or non-finite result; main then exits 1.
bool failed = false;

// ---------------------------------------------------------------------------------------------
// Load: each core's busy fraction over a short window, from /proc/stat
// ---------------------------------------------------------------------------------------------

struct CpuTime {
  unsigned long long busy = 0;
  unsigned long long total = 0;
};

// (busy, total) jiffies of each cpu<k> line; empty where /proc/stat cannot be read.
std::vector<CpuTime> read_cpu_times() {
  std::vector<CpuTime> times;
  std::ifstream stat("/proc/stat");
  std::string line;
  while (std::getline(stat, line)) {
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] == ' ') {
      continue;
    }
    const char* p = line.data() + line.find(' ');
    const char* const end = line.data() + line.size();
    CpuTime t;
    for (int field = 0; field < 8; ++field) {
      while (p < end && *p == ' ') {
        ++p;
      }
      unsigned long long v = 0;
      const auto result = std::from_chars(p, end, v);
      p = result.ptr;
      t.total += v;
      if (field != 3 && field != 4) {  // idle and iowait
        t.busy += v;
      }
    }
    times.push_back(t);
  }
  return times;
}

// Each core's busy fraction over one sampling window.
std::vector<double> sample_busy(double seconds) {
  const std::vector<CpuTime> before = read_cpu_times();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const std::vector<CpuTime> after = read_cpu_times();
  std::vector<double> busy(std::min(before.size(), after.size()));
  for (std::size_t k = 0; k < busy.size(); ++k) {
    const auto total = static_cast<double>(after[k].total - before[k].total);
    busy[k] = total > 0.0 ? static_cast<double>(after[k].busy - before[k].busy) / total : 0.0;
  }
  return busy;
}

// A core at least this busy before a measurement makes it suspect (as in bench/report).
constexpr double busy_threshold = 0.10;

// Samples the load before the timed loop and records every core's busy fraction as counters.
// While a core is busy it samples again, for at most --idle_wait_seconds, so that a burst of
// other work can pass; `idle_wait` records how long that took.
void record_load(benchmark::State& state) {
  if (settings.load_sample_seconds <= 0.0) {
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<double> busy;
  double busy_max = 0.0;
  for (;;) {
    busy = sample_busy(settings.load_sample_seconds);
    busy_max = busy.empty() ? 0.0 : *std::max_element(busy.begin(), busy.end());
    const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
    if (busy_max < busy_threshold || waited.count() >= settings.idle_wait_seconds) {
      break;
    }
  }
  for (std::size_t k = 0; k < busy.size(); ++k) {
    state.counters["cpu" + std::to_string(k) + "_busy"] = busy[k];
  }
  state.counters["busy_max"] = busy_max;
  state.counters["idle_wait"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() -
      settings.load_sample_seconds;
}

// ---------------------------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------------------------

const Logistic& sparse_objective() {
  static const Logistic f = [] {
    auto data = asyncopt::io::generate_rcv1_like<float>({.examples = settings.sparse_examples});
    return Logistic(std::move(data.data), std::move(data.labels), {.l2 = l2, .intercept = true});
  }();
  return f;
}

// The first dense_examples Fashion-MNIST training images, or nothing when the files are
// missing (the dense benchmarks then report an error and are skipped).
const std::optional<Softmax>& dense_objective() {
  static const std::optional<Softmax> f = []() -> std::optional<Softmax> {
    try {
      auto data = asyncopt::io::load_fashion_mnist<float>();
      const auto rows = static_cast<Eigen::Index>(
          std::min<std::size_t>(settings.dense_examples, data.train.labels.size()));
      DenseMatrix x = data.train.images.topRows(rows);
      Eigen::VectorXi y = data.train.labels.head(rows);
      return Softmax(std::move(x), std::move(y), asyncopt::io::FashionMnist<float>::classes,
                     {.l2 = l2, .intercept = true});
    } catch (const std::exception& error) {
      std::fprintf(stderr, "dense control skipped: %s\n", error.what());
      return std::nullopt;
    }
  }();
  return f;
}

// ---------------------------------------------------------------------------------------------
// The hand-written loops: no library code, raw arrays of the objective's own matrix
// ---------------------------------------------------------------------------------------------

// The CSR arrays of the sparse data and its labels.
struct Rows {
  const int* outer;
  const int* inner;
  const float* value;
  const float* label;
  std::size_t features;

  explicit Rows(const Logistic& f)
      : outer(f.data().outerIndexPtr()),
        inner(f.data().innerIndexPtr()),
        value(f.data().valuePtr()),
        label(f.labels().data()),
        features(f.num_features()) {}
};

// d/dz of log(1 + exp(-s z)) for a label y in {0, 1}: sigmoid(z) - y, in double, with exp
// taken only of a non-positive number.
inline float logistic_slope(float z, float y) {
  const double zd = z;
  double p = 0.0;
  if (zd >= 0.0) {
    p = 1.0 / (1.0 + std::exp(-zd));
  } else {
    const double e = std::exp(zd);
    p = e / (1.0 + e);
  }
  return static_cast<float>(p - static_cast<double>(y));
}

// A Fisher-Yates shuffle of 0..n-1 driven by SplitMix64, with Lemire's multiply-shift for
// the bounded draw (its bias, at most n / 2^64, does not matter to a benchmark).
void shuffled_ids(std::vector<std::size_t>& ids, std::uint64_t seed) {
  std::iota(ids.begin(), ids.end(), std::size_t{0});
  std::uint64_t state = seed;
  for (std::size_t i = ids.size(); i > 1; --i) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
    z ^= z >> 31U;
    __extension__ using Wide = unsigned __int128;
    const auto j = static_cast<std::size_t>((static_cast<Wide>(z) * i) >> 64U);
    std::swap(ids[i - 1], ids[j]);
  }
}

// Asks the cache for what the step after next and the next step read, as the library's
// objectives do in optimize(): example ids[n + 2]'s row offsets and label, and example
// ids[n + 1]'s column ids and values (its offsets asked for a step earlier), one request per
// 64-byte line (16 four-byte entries). Always inlined: GCC deletes a call to a function whose
// only effect is __builtin_prefetch.
ASYNCOPT_ALWAYS_INLINE void prefetch_ahead(const Rows& rows, std::span<const std::size_t> ids,
                                           std::size_t n) {
  if (n + 2 < ids.size()) {
    ASYNCOPT_PREFETCH(rows.outer + ids[n + 2]);
    ASYNCOPT_PREFETCH(rows.label + ids[n + 2]);
  }
  if (n + 1 < ids.size()) {
    const std::size_t id = ids[n + 1];
    const int begin = rows.outer[id];
    const int end = rows.outer[id + 1];
    for (int j = begin; j < end; j += 16) {
      ASYNCOPT_PREFETCH(rows.inner + j);
      ASYNCOPT_PREFETCH(rows.value + j);
    }
    if (end > begin) {
      ASYNCOPT_PREFETCH(rows.inner + end - 1);
      ASYNCOPT_PREFETCH(rows.value + end - 1);
    }
  }
}

// How a hand-written loop reads and writes w: plain loads and stores (one thread only), or
// relaxed std::atomic_ref<float> operations, safe on several threads at once (Hogwild!).
struct PlainMemory {
  static float load(const float* p) { return *p; }
  static void store(float* p, float v) { *p = v; }
};
struct RelaxedMemory {
  static float load(float* p) { return std::atomic_ref<float>(*p).load(std::memory_order_relaxed); }
  static void store(float* p, float v) {
    std::atomic_ref<float>(*p).store(v, std::memory_order_relaxed);
  }
};

// One SGD step per id: w[j] -= lr (c x_ij + l2 w[j]) on the row's entries, b -= lr c, with c
// the logistic slope at x_i . w + b, every access to w through Memory. Parameters [w..., b].
// With Prefetch, each step first asks for the coming rows, as optimize() does.
template <class Memory, bool Prefetch>
[[gnu::noinline]] void sgd_pass(const Rows& rows, std::span<const std::size_t> ids, float* w) {
  const auto lr = static_cast<float>(sparse_learning_rate);
  const auto decay = static_cast<float>(l2);
  float* const bias = w + rows.features;
  for (std::size_t n = 0; n < ids.size(); ++n) {
    const std::size_t id = ids[n];
    if (Prefetch) {
      prefetch_ahead(rows, ids, n);
    }
    const int begin = rows.outer[id];
    const int end = rows.outer[id + 1];
    float z = 0.0f;
    for (int k = begin; k < end; ++k) {
      z += rows.value[k] * Memory::load(w + rows.inner[k]);
    }
    z += Memory::load(bias);
    const float c = logistic_slope(z, rows.label[id]);
    for (int k = begin; k < end; ++k) {
      float* const wj = w + rows.inner[k];
      const float v = Memory::load(wj);
      Memory::store(wj, v - lr * (c * rows.value[k] + decay * v));
    }
    Memory::store(bias, Memory::load(bias) - lr * c);
  }
}

// The serial loop: plain memory, one thread.
template <bool Prefetch>
void serial_pass(const Rows& rows, std::span<const std::size_t> ids, float* w) {
  sgd_pass<PlainMemory, Prefetch>(rows, ids, w);
}

// Thread t of `threads` takes the t-th contiguous slice of the ids, as optimize() does.
template <bool Prefetch>
void hogwild_epoch(const Rows& rows, std::span<const std::size_t> ids, float* w,
                   std::size_t threads) {
  std::vector<std::jthread> pool;
  pool.reserve(threads);
  const std::size_t n = ids.size();
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&rows, ids, w, n, t, threads] {
      sgd_pass<RelaxedMemory, Prefetch>(
          rows, ids.subspan(t * n / threads, (t + 1) * n / threads - t * n / threads), w);
    });
  }
}

// The library's worker handles on a LockFree store, in a hand-written loop of the calls
// optimize() makes per step (touched, then step(): pull, touched_gradient, push and clock in
// one call) without its bookkeeping (stop flag, time limit, leave and join, the step
// function). With `prefetch`, each step first calls the objective's prefetch() with the next
// example, as optimize() does.
template <class Store>
void handle_pass(const Logistic& f, Store& store, std::size_t id, std::span<const std::size_t> ids,
                 bool prefetch) {
  auto handle = store.worker(id);
  std::vector<float> local;  // the pulled values, packed
  asyncopt::SparseGradient<float> gradient;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    if (prefetch) {
      // As optimize() does: the row of the example after next, then the next one's contents.
      if (k + 1 < ids.size()) {
        f.prefetch(ids.subspan(k + 1, 1), 1);
      }
      if (k + 2 < ids.size()) {
        f.prefetch(ids.subspan(k + 2, 1), 2);
      }
    }
    const std::span<const std::size_t> batch(ids.data() + k, 1);
    f.touched(batch, gradient.index);
    local.resize(gradient.index.size());
    handle.step(std::span<const std::size_t>(gradient.index), std::span<float>(local),
                [&](std::span<const float> pulled) {
                  f.touched_gradient(pulled, batch, gradient);
                  return gradient.values();
                });
  }
}

// The same store calls (pull, push, clock) with the objective's touched() and
// touched_gradient() replaced by a direct loop over the row: what the store costs by itself.
template <class Store>
void lean_pass(const Rows& rows, Store& store, std::size_t id, std::span<const std::size_t> ids) {
  const auto decay = static_cast<float>(l2);
  auto handle = store.worker(id);
  std::vector<float> local;  // the pulled values, packed
  asyncopt::SparseGradient<float> gradient;
  for (const std::size_t example : ids) {
    const int begin = rows.outer[example];
    const int end = rows.outer[example + 1];
    gradient.clear();
    for (int k = begin; k < end; ++k) {
      gradient.index.push_back(static_cast<std::size_t>(rows.inner[k]));
    }
    gradient.index.push_back(rows.features);
    local.resize(gradient.index.size());
    handle.pull_values(std::span<const std::size_t>(gradient.index), std::span<float>(local));
    const auto entries = static_cast<std::size_t>(end - begin);
    float z = 0.0f;
    for (std::size_t k = 0; k < entries; ++k) {
      z += rows.value[begin + static_cast<int>(k)] * local[k];
    }
    z += local[entries];
    const float c = logistic_slope(z, rows.label[example]);
    for (std::size_t k = 0; k < entries; ++k) {
      gradient.value.push_back(c * rows.value[begin + static_cast<int>(k)] + decay * local[k]);
    }
    gradient.value.push_back(c);
    handle.push(gradient);
    handle.clock();
  }
}

// A cheap timestamp: the time-stamp counter on x86-64, nanoseconds elsewhere. Converted to
// nanoseconds against steady_clock over the whole pass.
inline std::uint64_t tick() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
#endif
}

// Ticks spent in each call of the handle loop, summed over a worker's examples.
struct Breakdown {
  static constexpr std::size_t parts = 6;
  static constexpr std::array<const char*, parts> names = {"prefetch",         "touched", "pull",
                                                           "touched_gradient", "push",    "clock"};
  std::array<std::uint64_t, parts> ticks{};
  std::uint64_t total_ticks = 0;
  double total_ns = 0.0;
};

// The calls handle_pass makes, with step() taken apart into the pull, the gradient, the push
// and the clock that it runs in one call, and a timestamp between them.
template <class Store>
Breakdown timed_handle_pass(const Logistic& f, Store& store, std::size_t id,
                            std::span<const std::size_t> ids) {
  auto handle = store.worker(id);
  std::vector<float> local;  // the pulled values, packed
  asyncopt::SparseGradient<float> gradient;
  Breakdown b;
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t first = tick();
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::span<const std::size_t> batch(ids.data() + k, 1);
    const std::uint64_t t0 = tick();
    if (k + 1 < ids.size()) {
      f.prefetch(ids.subspan(k + 1, 1), 1);
    }
    if (k + 2 < ids.size()) {
      f.prefetch(ids.subspan(k + 2, 1), 2);
    }
    const std::uint64_t t1 = tick();
    f.touched(batch, gradient.index);
    const std::uint64_t t2 = tick();
    local.resize(gradient.index.size());
    handle.pull_values(std::span<const std::size_t>(gradient.index), std::span<float>(local));
    const std::uint64_t t3 = tick();
    f.touched_gradient(std::span<const float>(local), batch, gradient);
    const std::uint64_t t4 = tick();
    handle.push(gradient);
    const std::uint64_t t5 = tick();
    handle.clock();
    const std::uint64_t t6 = tick();
    const std::array<std::uint64_t, Breakdown::parts + 1> t = {t0, t1, t2, t3, t4, t5, t6};
    for (std::size_t p = 0; p < Breakdown::parts; ++p) {
      b.ticks[p] += t[p + 1] - t[p];
    }
  }
  b.total_ticks = tick() - first;
  b.total_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  return b;
}

using LockFreeSgd =
    asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree>;

// Which loop a worker of a handle epoch runs.
enum class HandleLoop { library, prefetch, lean, timed };

// k threads over a LockFree store, thread t on the t-th slice of the ids. Returns the
// breakdowns of a timed epoch (empty otherwise).
std::vector<Breakdown> handle_epoch(const Logistic& f, std::span<const std::size_t> ids,
                                    std::span<float> w, std::size_t workers, HandleLoop loop) {
  const LockFreeSgd opt(asyncopt::update::Sgd{.learning_rate = sparse_learning_rate});
  const auto store = opt.attach(w, workers);
  const Rows rows(f);
  std::vector<Breakdown> breakdowns(loop == HandleLoop::timed ? workers : 0);
  {
    std::vector<std::jthread> pool;
    pool.reserve(workers);
    const std::size_t n = ids.size();
    for (std::size_t t = 0; t < workers; ++t) {
      pool.emplace_back([&, t] {
        const auto slice = ids.subspan(t * n / workers, (t + 1) * n / workers - t * n / workers);
        switch (loop) {
          case HandleLoop::library:
          case HandleLoop::prefetch:
            handle_pass(f, *store, t, slice, loop == HandleLoop::prefetch);
            break;
          case HandleLoop::lean:
            lean_pass(rows, *store, t, slice);
            break;
          case HandleLoop::timed:
            breakdowns[t] = timed_handle_pass(f, *store, t, slice);
            break;
        }
      });
    }
  }
  return breakdowns;
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

bool all_finite(std::span<const float> w) {
  return std::all_of(w.begin(), w.end(), [](float v) { return std::isfinite(v); });
}

void finish(benchmark::State& state, std::span<const float> w, std::size_t examples) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(examples));
  state.counters["examples"] = static_cast<double>(examples);
  if (!all_finite(w)) {
    state.SkipWithError("the parameters are not finite after the epoch");
    failed = true;
  }
}

// Which hand-written loop bm_plain runs.
enum class PlainLoop { serial, serial_prefetch, hogwild, hogwild_prefetch };

// The serial loop, or the plain Hogwild! loop on `threads` threads.
void bm_plain(benchmark::State& state, PlainLoop loop, std::size_t threads) {
  const Logistic& f = sparse_objective();
  const Rows rows(f);
  std::vector<float> w(f.dimension());
  std::vector<std::size_t> ids(f.num_examples());
  std::uint64_t seed = 1;
  record_load(state);
  for (auto _ : state) {
    std::fill(w.begin(), w.end(), 0.0f);
    shuffled_ids(ids, seed++);
    switch (loop) {
      case PlainLoop::serial:
        serial_pass<false>(rows, ids, w.data());
        break;
      case PlainLoop::serial_prefetch:
        serial_pass<true>(rows, ids, w.data());
        break;
      case PlainLoop::hogwild:
        hogwild_epoch<false>(rows, ids, w.data(), threads);
        break;
      case PlainLoop::hogwild_prefetch:
        hogwild_epoch<true>(rows, ids, w.data(), threads);
        break;
    }
    benchmark::ClobberMemory();
  }
  finish(state, w, f.num_examples());
}

void bm_handle(benchmark::State& state, HandleLoop loop, std::size_t workers) {
  const Logistic& f = sparse_objective();
  std::vector<float> w(f.dimension());
  std::vector<std::size_t> ids(f.num_examples());
  std::uint64_t seed = 1;
  std::array<double, Breakdown::parts> ns{};
  double accounted = 0.0;
  double per_worker_ns = 0.0;
  record_load(state);
  for (auto _ : state) {
    std::fill(w.begin(), w.end(), 0.0f);
    shuffled_ids(ids, seed++);
    for (const Breakdown& b : handle_epoch(f, ids, w, workers, loop)) {
      const double ns_per_tick =
          b.total_ticks > 0 ? b.total_ns / static_cast<double>(b.total_ticks) : 0.0;
      for (std::size_t p = 0; p < Breakdown::parts; ++p) {
        ns[p] += static_cast<double>(b.ticks[p]) * ns_per_tick;
        accounted += static_cast<double>(b.ticks[p]) * ns_per_tick;
      }
      per_worker_ns += b.total_ns;
    }
    benchmark::ClobberMemory();
  }
  if (loop == HandleLoop::timed) {
    // Nanoseconds of one worker's time per example it handled.
    const double examples =
        static_cast<double>(state.iterations()) * static_cast<double>(f.num_examples());
    for (std::size_t p = 0; p < Breakdown::parts; ++p) {
      state.counters[std::string("ns_") + Breakdown::names[p]] = ns[p] / examples;
    }
    state.counters["ns_between_calls"] = (per_worker_ns - accounted) / examples;
  }
  finish(state, w, f.num_examples());
}

template <class Policy, class F>
void run_library(benchmark::State& state, const F& f, Policy policy, double learning_rate,
                 std::size_t workers, std::size_t batch_size) {
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy> opt(
      asyncopt::update::Sgd{.learning_rate = learning_rate}, policy);
  std::vector<float> w(f.dimension());
  std::uint64_t seed = 1;
  asyncopt::Report report;
  record_load(state);
  for (auto _ : state) {
    std::fill(w.begin(), w.end(), 0.0f);
    report = opt.optimize(f, std::span<float>(w),
                          {.workers = workers,
                           .batch_size = batch_size,
                           .epochs = 1,
                           .seed = seed++,
                           .evaluate_loss = false});
    benchmark::ClobberMemory();
  }
  if (report.examples != f.num_examples()) {
    state.SkipWithError("optimize() did not visit every example once");
    failed = true;
    return;
  }
  finish(state, w, f.num_examples());
}

template <class Policy>
void bm_sparse_library(benchmark::State& state, Policy policy, std::size_t workers) {
  run_library(state, sparse_objective(), policy, sparse_learning_rate, workers, 1);
}

template <class Policy>
void bm_dense_library(benchmark::State& state, Policy policy, std::size_t workers) {
  const auto& f = dense_objective();
  if (!f) {
    state.SkipWithError("Fashion-MNIST is not available");
    return;
  }
  run_library(state, *f, policy, dense_learning_rate, workers, dense_batch);
}

void register_all() {
  using asyncopt::consistency::Locked;
  using asyncopt::consistency::LockFree;
  auto configure = [](benchmark::internal::Benchmark* b) {
    b->Iterations(epochs_per_repetition)->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  configure(benchmark::RegisterBenchmark("sparse/serial/1", bm_plain, PlainLoop::serial, 1));
  configure(benchmark::RegisterBenchmark("sparse/serial_prefetch/1", bm_plain,
                                         PlainLoop::serial_prefetch, 1));
  for (const std::size_t k : {1, 2}) {
    const std::string workers = std::to_string(k);
    configure(benchmark::RegisterBenchmark(("sparse/plain/" + workers).c_str(), bm_plain,
                                           PlainLoop::hogwild, k));
    configure(benchmark::RegisterBenchmark(("sparse/plain_prefetch/" + workers).c_str(), bm_plain,
                                           PlainLoop::hogwild_prefetch, k));
    configure(benchmark::RegisterBenchmark(("sparse/lock_free/" + workers).c_str(),
                                           bm_sparse_library<LockFree>, LockFree{}, k));
    configure(benchmark::RegisterBenchmark(("sparse/locked_striped/" + workers).c_str(),
                                           bm_sparse_library<Locked>, Locked{}, k));
    configure(benchmark::RegisterBenchmark(("sparse/locked_one/" + workers).c_str(),
                                           bm_sparse_library<Locked>, Locked{.stripes = 1}, k));
    configure(benchmark::RegisterBenchmark(("sparse/handle/" + workers).c_str(), bm_handle,
                                           HandleLoop::library, k));
    configure(benchmark::RegisterBenchmark(("sparse/handle_prefetch/" + workers).c_str(), bm_handle,
                                           HandleLoop::prefetch, k));
    configure(benchmark::RegisterBenchmark(("sparse/handle_lean/" + workers).c_str(), bm_handle,
                                           HandleLoop::lean, k));
    configure(benchmark::RegisterBenchmark(("sparse/handle_timed/" + workers).c_str(), bm_handle,
                                           HandleLoop::timed, k));
  }
  if (settings.dense_examples > 0) {
    for (const std::size_t k : {1, 2}) {
      const std::string workers = std::to_string(k);
      configure(benchmark::RegisterBenchmark(("dense/lock_free/" + workers).c_str(),
                                             bm_dense_library<LockFree>, LockFree{}, k));
      configure(benchmark::RegisterBenchmark(("dense/locked_striped/" + workers).c_str(),
                                             bm_dense_library<Locked>, Locked{}, k));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The check that the hand-written loops do the library's work
// ---------------------------------------------------------------------------------------------

double max_difference(std::span<const float> a, std::span<const float> b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return worst;
}

// With one thread and the library's shuffle of epoch 1, every hand-written loop must end
// where optimize() ends (up to rounding: the compiler may order or fuse operations
// differently).
bool check_equivalence() {
  const Logistic& f = sparse_objective();
  const Rows rows(f);
  constexpr std::uint64_t seed = 11;
  std::vector<float> library(f.dimension(), 0.0f);
  const LockFreeSgd opt(asyncopt::update::Sgd{.learning_rate = sparse_learning_rate});
  static_cast<void>(opt.optimize(
      f, std::span<float>(library),
      {.workers = 1, .batch_size = 1, .epochs = 1, .seed = seed, .evaluate_loss = false}));
  std::vector<std::size_t> ids(f.num_examples());
  asyncopt::random_permutation(ids, asyncopt::epoch_seed(seed, 1));

  double scale = 0.0;
  for (const float v : library) {
    scale = std::max(scale, std::abs(static_cast<double>(v)));
  }
  const double tolerance = 1e-4 * std::max(scale, 1.0);
  bool ok = all_finite(library);
  auto compare = [&](const char* name, std::span<const float> w) {
    const double difference = max_difference(library, w);
    const bool good = all_finite(w) && difference <= tolerance;
    std::fprintf(stderr, "check: %s vs optimize(LockFree, 1 worker): max |w difference| %.3g%s\n",
                 name, difference, good ? "" : "  MISMATCH");
    ok = ok && good;
  };
  std::vector<float> w(f.dimension(), 0.0f);
  serial_pass<false>(rows, ids, w.data());
  compare("serial loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  serial_pass<true>(rows, ids, w.data());
  compare("prefetching serial loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  hogwild_epoch<false>(rows, ids, w.data(), 1);
  compare("plain Hogwild! loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  hogwild_epoch<true>(rows, ids, w.data(), 1);
  compare("prefetching plain Hogwild! loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  static_cast<void>(handle_epoch(f, ids, w, 1, HandleLoop::library));
  compare("handle loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  static_cast<void>(handle_epoch(f, ids, w, 1, HandleLoop::prefetch));
  compare("prefetching handle loop", w);
  std::fill(w.begin(), w.end(), 0.0f);
  static_cast<void>(handle_epoch(f, ids, w, 1, HandleLoop::lean));
  compare("lean handle loop", w);
  std::fprintf(stderr, "check: largest |w| %.3g, tolerance %.3g\n", scale, tolerance);
  return ok;
}

// Removes this program's own flags from argv, leaving Google Benchmark's.
bool parse_flags(int& argc, char** argv) {
  auto value = [](std::string_view arg, std::string_view name) -> std::optional<std::string> {
    if (arg.substr(0, name.size()) == name && arg.size() > name.size() && arg[name.size()] == '=') {
      return std::string(arg.substr(name.size() + 1));
    }
    return std::nullopt;
  };
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    try {
      if (auto v = value(arg, "--sparse_examples")) {
        settings.sparse_examples = std::stoul(*v);
        if (settings.sparse_examples < 2) {
          throw std::invalid_argument("at least 2");
        }
        continue;
      }
      if (auto v = value(arg, "--dense_examples")) {
        settings.dense_examples = std::stoul(*v);
        continue;
      }
      if (auto v = value(arg, "--load_sample_seconds")) {
        settings.load_sample_seconds = std::stod(*v);
        continue;
      }
      if (auto v = value(arg, "--idle_wait_seconds")) {
        settings.idle_wait_seconds = std::stod(*v);
        continue;
      }
    } catch (const std::exception& error) {
      std::fprintf(stderr, "bench_scaling: bad value in %s (%s)\n", argv[i], error.what());
      return false;
    }
    argv[kept++] = argv[i];
  }
  argc = kept;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!parse_flags(argc, argv)) {
    return 2;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 2;
  }
  register_all();
  if (!check_equivalence()) {
    std::fprintf(stderr, "bench_scaling: a hand-written loop does not match the library\n");
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return failed ? 1 : 0;
}
