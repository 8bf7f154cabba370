// Microbenchmarks of the dense update kernels against the machine's memory bandwidth.
//
// Names are kernel/<rule>/<type>/<n> and baseline/<name>/<type>/<n>. Every benchmark sets
// bytes_per_second from the bytes its update must move: each array the update reads or
// writes counts once per pass (Sgd 3 arrays, momentum 5, DC 4, adaptive DC 6, Adam 7), the
// way STREAM counts its triad (3 arrays). `bench/report kernels` runs this binary and turns
// its JSON into the CHECK lines, docs/results/kernels.md and docs/results/kernels.png.
//
// One thread. Each benchmark writes every element of its arrays before timing (first touch
// on the first use of the memory) and holds no memory afterwards but the one block that all
// benchmarks share (see Block), so that peak memory is that of the largest case alone. Values
// stay finite and normal (no subnormals) for any number of iterations.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/update/adam.hpp>
#include <asyncopt/update/delay_compensated.hpp>
#include <asyncopt/update/momentum.hpp>
#include <asyncopt/update/sgd.hpp>

namespace {

namespace update = asyncopt::update;

// The lengths every benchmark runs at: in L1/L2, in L2, in L3, and far beyond every cache.
constexpr std::array<std::int64_t, 4> lengths = {std::int64_t{1} << 12, std::int64_t{1} << 16,
                                                 std::int64_t{1} << 20, std::int64_t{1} << 26};

template <class T>
constexpr std::string_view type_name = std::is_same_v<T, float> ? "float" : "double";

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

// The memory every benchmark's arrays live in: one block, aligned to 2 MiB and (on Linux)
// offered transparent huge pages, that grows to the largest benchmark's need (Adam or
// adaptive DC on 64Mi doubles: 4 arrays, 2 GiB) and is kept until the program ends. Fresh
// pages for each benchmark instead made the operating system zero about 200 GB over a full
// run (108 s of system time in a 250 s run); one block also gives every benchmark the same
// pages, so that their placement and TLB reach are alike. One Arrays uses it at a time.
class Block {
 public:
  static Block& instance() {
    static Block block;
    return block;
  }

  std::byte* acquire(std::size_t bytes) {
    if (in_use_) {
      throw std::logic_error("Block: two Arrays alive at once");
    }
    if (bytes > bytes_) {
      std::free(data_);
      data_ = nullptr;
      bytes_ = 0;
      constexpr std::size_t huge_page = std::size_t{2} << 20;
      const std::size_t rounded = (bytes + huge_page - 1) / huge_page * huge_page;
      data_ = static_cast<std::byte*>(std::aligned_alloc(huge_page, rounded));
      if (data_ == nullptr) {
        throw std::bad_alloc();
      }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      // Advice only: where transparent huge pages are off, the block keeps 4 KiB pages.
      static_cast<void>(madvise(data_, rounded, MADV_HUGEPAGE));
#endif
      bytes_ = rounded;
    }
    in_use_ = true;
    return data_;
  }
  void release() {
    in_use_ = false;
  }

  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

 private:
  Block() = default;
  ~Block() {
    std::free(data_);
  }

  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
  bool in_use_ = false;
};

// `count` arrays of n values for one benchmark, in Block. Array k starts k * 320 bytes past a
// 4 KiB boundary, so every array is 64-byte aligned and no two arrays share their offset
// within a 4 KiB page: loads and stores to different arrays then never alias in the store
// buffer's 4 KiB address check, which would slow the in-cache sizes for reasons unrelated to
// the kernel. The caller writes every element before timing.
template <class T>
class Arrays {
 public:
  Arrays(std::size_t count, std::size_t n) : count_(count), n_(n) {
    if (count > pointers_.size()) {
      throw std::length_error("Arrays: too many arrays");
    }
    constexpr std::size_t page = 4096;
    const std::size_t stride = (n * sizeof(T) + page - 1) / page * page + page;
    std::byte* const block = Block::instance().acquire(count * stride);
    for (std::size_t k = 0; k < count; ++k) {
      pointers_[k] = reinterpret_cast<T*>(block + k * stride + k * 320);
    }
  }
  Arrays(const Arrays&) = delete;
  Arrays& operator=(const Arrays&) = delete;
  ~Arrays() { Block::instance().release(); }

  [[nodiscard]] T* operator[](std::size_t k) const { return pointers_[k]; }
  [[nodiscard]] std::size_t count() const { return count_; }
  [[nodiscard]] std::size_t size() const { return n_; }

 private:
  std::size_t count_;
  std::size_t n_;
  std::array<T*, 8> pointers_{};
};

// Values that keep every rule finite and away from subnormals for any number of iterations:
// parameters near 1, gradients in [0.25, 0.75), positive state, w_seen slightly behind w.
template <class T>
T parameter_value(std::size_t i) {
  return static_cast<T>(1.0 + static_cast<double>(i % 61) / 61.0);
}
template <class T>
T gradient_value(std::size_t i) {
  return static_cast<T>(0.25 + 0.5 * static_cast<double>(i % 97) / 97.0);
}

template <class T, class Value>
void fill(T* p, std::size_t n, Value value) {
  for (std::size_t i = 0; i < n; ++i) {
    p[i] = value(i);
  }
}
template <class T>
void fill_constant(T* p, std::size_t n, T value) {
  for (std::size_t i = 0; i < n; ++i) {
    p[i] = value;
  }
}

// ---------------------------------------------------------------------------------------------
// The rules: how many arrays each moves, its hyper-parameters, and its Eigen expression
// ---------------------------------------------------------------------------------------------

template <class Rule>
constexpr bool reads_w_seen = [] {
  if constexpr (requires { Rule::needs_w_seen; }) {
    return static_cast<bool>(Rule::needs_w_seen);
  } else {
    return false;
  }
}();

// Arrays one update moves: w read and written, g read, each state slot read and written,
// w_seen read. Array order in Arrays: w, g, state..., w_seen.
template <class Rule>
constexpr std::size_t arrays_moved = 3 + 2 * Rule::state_slots + (reads_w_seen<Rule> ? 1 : 0);

template <class Rule>
constexpr std::size_t arrays_allocated = 2 + Rule::state_slots + (reads_w_seen<Rule> ? 1 : 0);

template <class T>
using Vector = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVector = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// The Eigen views a rule's expression works on.
template <class T, std::size_t Slots>
struct EigenOperands {
  Vector<T> w;
  ConstVector<T> g;
  std::array<Vector<T>, Slots> state;
  ConstVector<T> w_seen;
};

template <class Rule>
struct RuleBench;

template <>
struct RuleBench<update::Sgd> {
  static constexpr std::string_view name = "sgd";
  static update::Sgd rule() { return {.learning_rate = 1e-4}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 0>& a) {
    a.w -= s.learning_rate * a.g;
  }
};

template <>
struct RuleBench<update::MomentumCorrection> {
  static constexpr std::string_view name = "momentum_correction";
  static update::MomentumCorrection rule() { return {.learning_rate = 1e-4, .beta = 0.9}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 1>& a) {
    auto& m = a.state[0];
    m = s.beta * m + s.one_minus_beta * a.g;
    a.w -= s.learning_rate * m;
  }
};

template <>
struct RuleBench<update::HeavyBall> {
  static constexpr std::string_view name = "heavy_ball";
  static update::HeavyBall rule() { return {.learning_rate = 1e-4, .momentum = 0.9}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 1>& a) {
    auto& v = a.state[0];
    v = s.momentum * v + a.g;
    a.w -= s.learning_rate * v;
  }
};

template <>
struct RuleBench<update::DelayCompensated> {
  static constexpr std::string_view name = "delay_compensated";
  static update::DelayCompensated rule() { return {.learning_rate = 1e-4, .lambda = 0.04}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 0>& a) {
    a.w -= s.learning_rate * (a.g + s.lambda * a.g * a.g * (a.w - a.w_seen));
  }
};

template <>
struct RuleBench<update::AdaptiveDelayCompensated> {
  static constexpr std::string_view name = "adaptive_delay_compensated";
  static update::AdaptiveDelayCompensated rule() { return {.learning_rate = 1e-4}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 1>& a) {
    auto& ms = a.state[0];
    ms = s.decay * ms + s.one_minus_decay * a.g.square();
    a.w -= s.learning_rate *
           (a.g + (s.lambda0 / (ms + s.epsilon).sqrt()) * a.g.square() * (a.w - a.w_seen));
  }
};

template <>
struct RuleBench<update::Adam> {
  static constexpr std::string_view name = "adam";
  static update::Adam rule() { return {.learning_rate = 1e-4}; }
  template <class T, class Formula>
  static void eigen(const Formula& s, EigenOperands<T, 2>& a) {
    auto& m = a.state[0];
    auto& v = a.state[1];
    m = s.beta1 * m + s.one_minus_beta1 * a.g;
    v = s.beta2 * v + s.one_minus_beta2 * a.g.square();
    a.w -= s.learning_rate * m / (v.sqrt() + s.epsilon);
  }
};

// A rule's arrays with every element written: w, g, state (small and positive), w_seen.
template <class Rule, class T>
class RuleArrays : public Arrays<T> {
 public:
  explicit RuleArrays(std::size_t n) : Arrays<T>(arrays_allocated<Rule>, n) {
    const Arrays<T>& a = *this;
    fill(a[0], n, parameter_value<T>);
    fill(a[1], n, gradient_value<T>);
    for (std::size_t k = 0; k < Rule::state_slots; ++k) {
      fill_constant(a[2 + k], n, static_cast<T>(0.1));
    }
    if constexpr (reads_w_seen<Rule>) {
      T* w_seen = a[2 + Rule::state_slots];
      for (std::size_t i = 0; i < n; ++i) {
        w_seen[i] = parameter_value<T>(i) - static_cast<T>(1e-3);
      }
    }
  }
};

template <class Rule, class T>
asyncopt::kernels::DenseOperands<T, Rule::state_slots> kernel_operands(const Arrays<T>& a) {
  asyncopt::kernels::DenseOperands<T, Rule::state_slots> op{.w = a[0], .g = a[1]};
  for (std::size_t k = 0; k < Rule::state_slots; ++k) {
    op.state[k] = a[2 + k];
  }
  if constexpr (reads_w_seen<Rule>) {
    op.w_seen = a[2 + Rule::state_slots];
  }
  return op;
}

// Set when a benchmark ends with a non-finite value in its arrays; main then fails, so that
// the smoke test catches hyper-parameters or start values that blow up.
bool found_non_finite = false;

// Ends a benchmark: bytes_per_second from the arrays the update must move, and a check on a
// sample of every array (about a thousand values each, outside the timed loop) that the
// iterations kept the values finite.
template <class T>
void finish(benchmark::State& state, const Arrays<T>& a, std::size_t arrays) {
  const std::size_t n = a.size();
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(arrays * n * sizeof(T)));
  const std::size_t stride = std::max<std::size_t>(1, n / 1024);
  for (std::size_t k = 0; k < a.count(); ++k) {
    for (std::size_t i = 0; i < n; i += stride) {
      if (!std::isfinite(a[k][i]) || !std::isfinite(a[k][n - 1])) {
        state.SkipWithError("an array holds a non-finite value after the timed loop");
        found_non_finite = true;
        return;
      }
    }
  }
}

// Each measured pass is a separate, non-inlined function so that its loop can be found and read
// in the disassembly (objdump -d --no-show-raw-insn bench_kernels | c++filt).

// ---------------------------------------------------------------------------------------------
// kernel/<rule>: the library's kernel, PlainAccess (the path a Locked store takes)
// ---------------------------------------------------------------------------------------------

template <class Rule, class T>
[[gnu::noinline]] void kernel_pass(const Rule& rule,
                                   const asyncopt::kernels::DenseOperands<T, Rule::state_slots>& op,
                                   std::size_t n, std::uint64_t version) {
  const auto formula =
      rule.template formula<T>(asyncopt::UpdateInfo{.staleness = 0, .version = version});
  asyncopt::kernels::apply_dense<asyncopt::kernels::PlainAccess>(formula, op, 0, n);
}

template <class Rule, class T>
void bm_kernel(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Rule rule = RuleBench<Rule>::rule();
  const RuleArrays<Rule, T> a(n);
  const auto op = kernel_operands<Rule, T>(a);
  std::uint64_t version = 0;
  for (auto _ : state) {
    kernel_pass<Rule, T>(rule, op, n, version++);
    benchmark::ClobberMemory();
  }
  finish(state, a, arrays_moved<Rule>);
}

// ---------------------------------------------------------------------------------------------
// baseline/eigen_<rule>: the rule written as Eigen array expressions over Eigen::Map, the way a
// user of Eigen would write it (momentum as two statements), with the kernel's coefficients
// ---------------------------------------------------------------------------------------------

template <class Rule, class T, std::size_t... k>
EigenOperands<T, Rule::state_slots> eigen_operands(const Arrays<T>& a, std::size_t n,
                                                   std::index_sequence<k...> /*slots*/) {
  const auto size = static_cast<Eigen::Index>(n);
  // Rules without w_seen never read it; they get a view of g there.
  const T* w_seen = reads_w_seen<Rule> ? a[2 + Rule::state_slots] : a[1];
  return {.w = Vector<T>(a[0], size),
          .g = ConstVector<T>(a[1], size),
          .state = {Vector<T>(a[2 + k], size)...},
          .w_seen = ConstVector<T>(w_seen, size)};
}

template <class Rule, class T>
[[gnu::noinline]] void eigen_pass(const Rule& rule, const Arrays<T>& a, std::size_t n,
                                  std::uint64_t version) {
  const auto formula =
      rule.template formula<T>(asyncopt::UpdateInfo{.staleness = 0, .version = version});
  auto operands = eigen_operands<Rule, T>(a, n, std::make_index_sequence<Rule::state_slots>{});
  RuleBench<Rule>::template eigen<T>(formula, operands);
}

template <class Rule, class T>
void bm_eigen(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Rule rule = RuleBench<Rule>::rule();
  const RuleArrays<Rule, T> a(n);
  std::uint64_t version = 0;
  for (auto _ : state) {
    eigen_pass<Rule, T>(rule, a, n, version++);
    benchmark::ClobberMemory();
  }
  finish(state, a, arrays_moved<Rule>);
}

// ---------------------------------------------------------------------------------------------
// baseline/triad: STREAM's triad a = b + s * c, counted as 3 arrays as STREAM counts it (the
// store's write-allocate read of `a` is not counted)
// ---------------------------------------------------------------------------------------------

template <class T>
[[gnu::noinline]] void triad_pass(T* __restrict a, const T* __restrict b, const T* __restrict c,
                                  T s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = b[i] + s * c[i];
  }
}

template <class T>
void bm_triad(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Arrays<T> a(3, n);
  fill_constant(a[0], n, T{0});
  fill(a[1], n, parameter_value<T>);
  fill(a[2], n, gradient_value<T>);
  for (auto _ : state) {
    triad_pass<T>(a[0], a[1], a[2], static_cast<T>(3), n);
    benchmark::ClobberMemory();
  }
  finish(state, a, 3);
}

// ---------------------------------------------------------------------------------------------
// baseline/scalar_sgd: w -= lr * g as a loop the compiler is told not to vectorize (GCC: the
// function is compiled with -fno-tree-vectorize; Clang: a loop pragma), one element per
// instruction
// ---------------------------------------------------------------------------------------------

template <class T>
#if defined(__clang__)
[[gnu::noinline]]
#else
[[gnu::noinline, gnu::optimize("no-tree-vectorize")]]
#endif
void scalar_sgd_pass(T* __restrict w, const T* __restrict g, T learning_rate, std::size_t n) {
#if defined(__clang__)
#pragma clang loop vectorize(disable) interleave(disable)
#endif
  for (std::size_t i = 0; i < n; ++i) {
    w[i] -= learning_rate * g[i];
  }
}

template <class T>
void bm_scalar_sgd(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const RuleArrays<update::Sgd, T> a(n);
  for (auto _ : state) {
    scalar_sgd_pass<T>(a[0], a[1], static_cast<T>(1e-4), n);
    benchmark::ClobberMemory();
  }
  finish(state, a, 3);
}

// ---------------------------------------------------------------------------------------------
// baseline/two_pass_<momentum rule>: the velocity pass, then the iterate pass, as two plain
// loops (what an expression-template library evaluates). Counted with the 5 arrays the
// update must move, like the fused kernel, although the two passes move 6.
// ---------------------------------------------------------------------------------------------

template <class T>
[[gnu::noinline]] void two_pass_momentum_correction_pass(
    const update::MomentumCorrection::Formula<T>& s, T* __restrict w, const T* __restrict g,
    T* __restrict m, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    m[i] = s.beta * m[i] + s.one_minus_beta * g[i];
  }
  for (std::size_t i = 0; i < n; ++i) {
    w[i] -= s.learning_rate * m[i];
  }
}

template <class T>
[[gnu::noinline]] void two_pass_heavy_ball_pass(const update::HeavyBall::Formula<T>& s,
                                                T* __restrict w, const T* __restrict g,
                                                T* __restrict v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = s.momentum * v[i] + g[i];
  }
  for (std::size_t i = 0; i < n; ++i) {
    w[i] -= s.learning_rate * v[i];
  }
}

template <class Rule, class T>
void bm_two_pass(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const Rule rule = RuleBench<Rule>::rule();
  const RuleArrays<Rule, T> a(n);
  std::uint64_t version = 0;
  for (auto _ : state) {
    const auto formula =
        rule.template formula<T>(asyncopt::UpdateInfo{.staleness = 0, .version = version++});
    if constexpr (std::is_same_v<Rule, update::MomentumCorrection>) {
      two_pass_momentum_correction_pass<T>(formula, a[0], a[1], a[2], n);
    } else {
      two_pass_heavy_ball_pass<T>(formula, a[0], a[1], a[2], n);
    }
    benchmark::ClobberMemory();
  }
  finish(state, a, arrays_moved<Rule>);
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

void add(const std::string& name, void (*function)(benchmark::State&)) {
  auto* b = benchmark::RegisterBenchmark(name.c_str(), function);
  for (const std::int64_t n : lengths) {
    b->Arg(n);
  }
}

template <class T>
std::string suffix() {
  return "/" + std::string(type_name<T>);
}

template <class Rule, class T>
void add_rule() {
  const std::string rule(RuleBench<Rule>::name);
  add("kernel/" + rule + suffix<T>(), &bm_kernel<Rule, T>);
  add("baseline/eigen_" + rule + suffix<T>(), &bm_eigen<Rule, T>);
}

template <class T>
void add_all() {
  add("baseline/triad" + suffix<T>(), &bm_triad<T>);
  add("baseline/scalar_sgd" + suffix<T>(), &bm_scalar_sgd<T>);
  add_rule<update::Sgd, T>();
  add_rule<update::MomentumCorrection, T>();
  add_rule<update::HeavyBall, T>();
  add("baseline/two_pass_momentum_correction" + suffix<T>(),
      &bm_two_pass<update::MomentumCorrection, T>);
  add("baseline/two_pass_heavy_ball" + suffix<T>(), &bm_two_pass<update::HeavyBall, T>);
  add_rule<update::DelayCompensated, T>();
  add_rule<update::AdaptiveDelayCompensated, T>();
  add_rule<update::Adam, T>();
}

}  // namespace

int main(int argc, char** argv) {
  add_all<float>();
  add_all<double>();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return found_non_finite ? 1 : 0;
}
