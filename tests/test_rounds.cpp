// Synchronous SGD and local SGD: closed forms of a round, local SGD with period 1 against
// synchronous SGD, independent references for longer periods, convergence, and no hang
// when a worker leaves or throws.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include <Eigen/Dense>
#include <Eigen/SparseCore>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/objective.hpp>

using asyncopt::Options;
using asyncopt::consistency::LocalSgd;
using asyncopt::consistency::Locked;
using asyncopt::consistency::Synchronous;
using asyncopt::update::HeavyBall;
using asyncopt::update::Sgd;

namespace {

using Dense = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LeastSquares = asyncopt::objective::LeastSquares<Dense>;

// y = X w* + noise with X standard normal: a least-squares problem and its optimum.
struct Problem {
  LeastSquares f;
  Eigen::VectorXd optimum;
};

Problem planted(Eigen::Index n, Eigen::Index d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Dense x(n, d);
  Eigen::VectorXd y(n);
  Eigen::VectorXd w_star(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    w_star[j] = normal(rng);
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index j = 0; j < d; ++j) {
      x(i, j) = normal(rng);
    }
    y[i] = x.row(i).dot(w_star) + 0.01 * normal(rng);
  }
  Eigen::VectorXd optimum = (x.transpose() * x).ldlt().solve(x.transpose() * y);
  return {LeastSquares(std::move(x), std::move(y), {.l2 = 0.0, .intercept = false}),
          std::move(optimum)};
}

double max_abs_difference(std::span<const double> a, std::span<const double> b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

// Runs body(id) on one thread per worker.
template <class Body>
void on_threads(std::size_t workers, Body body) {
  std::vector<std::jthread> threads;
  for (std::size_t id = 0; id < workers; ++id) {
    threads.emplace_back([&body, id] { body(id); });
  }
}

}  // namespace

TEST_CASE("a synchronous round applies the mean of the workers' gradients once") {
  constexpr std::size_t workers = 4;
  constexpr double lr = 0.5;
  const asyncopt::AsyncOptimizer<double, Sgd, Synchronous> opt(Sgd{.learning_rate = lr});
  std::vector<double> w = {1.0, -2.0, 3.0};
  const std::vector<double> start = w;
  auto store = opt.attach(std::span<double>(w), workers);
  // Worker k pushes g_k = (k, 2k, -k) densely, except worker 3, which pushes the same
  // gradient as a sparse one, and worker 2, which lets the round sum in its buffer.
  std::vector<asyncopt::PushResult> results(workers);
  on_threads(workers, [&](std::size_t id) {
    auto handle = store->worker(id);
    std::vector<double> seen(3);
    handle.pull(seen);
    const auto k = static_cast<double>(id);
    std::vector<double> g = {k, 2.0 * k, -k};
    if (id == 3) {
      const std::vector<std::size_t> index = {0, 1, 2};
      results[id] = handle.push(index, g);
    } else if (id == 2) {
      results[id] = handle.push_in_place(g);
    } else {
      results[id] = handle.push(g);
    }
    handle.clock();
  });
  // mean over k = 0..3 of (k, 2k, -k) = (1.5, 3, -1.5).
  CHECK(w[0] == start[0] - lr * 1.5);
  CHECK(w[1] == start[1] - lr * 3.0);
  CHECK(w[2] == start[2] + lr * 1.5);
  const auto stats = store->stats();
  CHECK(stats.updates == 1);
  CHECK(stats.staleness_max == 0);
  for (const auto& r : results) {
    CHECK(r.applied);
    CHECK(r.staleness == 0);
  }
}

TEST_CASE("a synchronous step may read the parameters in place and use the store's buffer") {
  // Workers 0 and 2 read with pull_view() and compute in gradient_buffer(); 1 and 3 copy
  // with pull() and push their own buffers. The rounds sum in worker order either way, so
  // the result equals an all-copying run bit for bit. g_k = w - c_k with c_k = (k, -k, 2k).
  constexpr std::size_t workers = 4;
  constexpr std::size_t rounds = 20;
  constexpr std::size_t n = 3;
  using Opt = asyncopt::AsyncOptimizer<double, HeavyBall, Synchronous>;
  const Opt opt(HeavyBall{.learning_rate = 0.1, .momentum = 0.5});
  auto run = [&](bool in_place) {
    std::vector<double> w = {1.0, -2.0, 3.0};
    auto store = opt.attach(std::span<double>(w), workers);
    on_threads(workers, [&](std::size_t id) {
      auto handle = store->worker(id);
      std::vector<double> pulled(n);
      std::vector<double> own(n);
      const auto k = static_cast<double>(id);
      const std::array<double, n> c = {k, -k, 2.0 * k};
      for (std::size_t r = 0; r < rounds; ++r) {
        if (in_place && id % 2 == 0) {
          const std::span<const double> view = handle.pull_view();
          CHECK(view.data() == w.data());
          const std::span<double> g = handle.gradient_buffer();
          CHECK(g.size() == n);
          for (std::size_t i = 0; i < n; ++i) {
            g[i] = view[i] - c[i];
          }
          CHECK(handle.push_in_place(g).applied);
        } else {
          handle.pull(std::span<double>(pulled));
          for (std::size_t i = 0; i < n; ++i) {
            own[i] = pulled[i] - c[i];
          }
          CHECK(handle.push(std::span<const double>(own)).applied);
        }
        handle.clock();
      }
    });
    CHECK(store->stats().updates == rounds);
    return w;
  };
  const std::vector<double> copying = run(false);
  const std::vector<double> viewing = run(true);
  CHECK(viewing == copying);
  // Every round moves w towards the mean of the c_k, (1.5, -1.5, 3).
  const std::vector<double> mean = {1.5, -1.5, 3.0};
  CHECK(max_abs_difference(viewing, mean) < 0.05);
}

TEST_CASE("pull_view() by a worker that has left is refused until it joins") {
  // Rounds no longer wait for a worker that left, so its view could change under it.
  const asyncopt::AsyncOptimizer<double, Sgd, Synchronous> opt(Sgd{.learning_rate = 0.5});
  std::vector<double> w = {1.0, 2.0};
  auto store = opt.attach(std::span<double>(w), 2);
  auto other = store->worker(1);
  other.leave();
  auto h = store->worker(0);
  CHECK(h.pull_view().data() == w.data());
  h.leave();
  CHECK_THROWS_WITH(h.pull_view(), Catch::Contains("has left") && Catch::Contains("join()"));
  h.join();
  const std::span<const double> view = h.pull_view();
  CHECK(std::vector<double>(view.begin(), view.end()) == w);
  const std::span<double> g = h.gradient_buffer();
  g[0] = 2.0;
  g[1] = -2.0;
  CHECK(h.push_in_place(g).applied);  // the round has worker 0 alone
  CHECK(w == std::vector<double>{0.0, 3.0});
}

TEST_CASE("synchronous SGD with one worker is sequential SGD, bit for bit") {
  const Problem p = planted(300, 6, 3);
  const Options options{.workers = 1, .batch_size = 5, .epochs = 3, .seed = 9};
  std::vector<double> sync(6, 0.0);
  std::vector<double> locked(6, 0.0);
  const auto r1 = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
                      .optimize(p.f, std::span<double>(sync), options);
  const auto r2 = asyncopt::AsyncOptimizer<double, Sgd, Locked>(Sgd{.learning_rate = 0.05})
                      .optimize(p.f, std::span<double>(locked), options);
  CHECK(r1.updates == r2.updates);
  CHECK(sync == locked);
}

// The exact statement: the mean of (w - lr g_k) is w - lr * mean(g_k). The two sides round
// differently, so they agree to a few ulps per step rather than bit for bit.
TEST_CASE("local SGD with period 1 equals synchronous SGD") {
  const Problem p = planted(1000, 8, 4);
  for (const std::size_t workers : {2, 3, 4}) {
    INFO("workers = " << workers);
    const Options options{.workers = workers, .batch_size = 7, .epochs = 3, .seed = 5};
    std::vector<double> sync(8, 0.0);
    std::vector<double> local(8, 0.0);
    const auto rs = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
                        .optimize(p.f, std::span<double>(sync), options);
    const auto rl = asyncopt::AsyncOptimizer<double, Sgd, LocalSgd>(Sgd{.learning_rate = 0.05},
                                                                    LocalSgd{.period = 1})
                        .optimize(p.f, std::span<double>(local), options);
    // Synchronous counts rounds (the longest shard's steps); local SGD counts every
    // worker's steps.
    std::uint64_t rounds = 0;
    std::uint64_t steps = 0;
    for (std::size_t k = 0; k < workers; ++k) {
      const std::uint64_t shard = (k + 1) * 1000 / workers - k * 1000 / workers;
      rounds = std::max<std::uint64_t>(rounds, (shard + 6) / 7);
      steps += (shard + 6) / 7;
    }
    CHECK(rs.updates == 3 * rounds);
    CHECK(rl.updates == 3 * steps);
    INFO("max |sync - local| = " << max_abs_difference(sync, local));
    CHECK(max_abs_difference(sync, local) <= 1e-12);
    // Both differ from the start by far more than that.
    CHECK(std::abs(sync[0]) > 0.1);
  }
}

// Each worker minimizes (w - c_k)^2 / 2 on its replica: w <- w - lr (w - c_k), with the
// replicas averaged every `period` steps. The reference below runs the same recurrence
// directly, one scalar per worker.
TEST_CASE("local SGD averages the replicas every period steps and when workers leave") {
  constexpr std::size_t workers = 3;
  constexpr double lr = 0.1;
  const std::vector<double> centre = {1.0, -4.0, 10.0};
  // Worker k takes steps[k] steps: the shorter ones leave early with unaveraged steps.
  const std::vector<std::uint64_t> steps = {9, 7, 9};
  for (const std::uint64_t period : {1, 2, 4, 100}) {
    INFO("period = " << period);
    // The reference: rounds close at multiples of the period among the workers still
    // running; a worker that stops with unaveraged steps joins the next round.
    std::vector<double> reference(workers, 0.5);
    double shared = 0.5;
    const std::uint64_t longest = *std::max_element(steps.begin(), steps.end());
    std::vector<char> pending(workers, 0);
    for (std::uint64_t t = 1; t <= longest; ++t) {
      for (std::size_t k = 0; k < workers; ++k) {
        if (t <= steps[k]) {
          reference[k] -= lr * (reference[k] - centre[k]);
          pending[k] = t % period != 0 ? 1 : 0;
        }
      }
      // Who takes part in a round closed at step t: workers at a multiple of the period,
      // plus those that stopped earlier with unaveraged steps.
      bool closes = false;
      for (std::size_t k = 0; k < workers; ++k) {
        closes = closes || (t <= steps[k] && t % period == 0);
      }
      const bool last = t == longest;
      if (closes || last) {
        double sum = 0.0;
        int count = 0;
        for (std::size_t k = 0; k < workers; ++k) {
          const bool here = t <= steps[k] && (t % period == 0 || (last && pending[k] != 0));
          if (here || (t > steps[k] && pending[k] != 0)) {
            sum += reference[k];
            ++count;
          }
        }
        if (count > 0) {
          shared = sum / count;
        }
        for (std::size_t k = 0; k < workers; ++k) {
          if (t > steps[k] && pending[k] != 0) {
            pending[k] = 0;  // its contribution is in
          }
          if (t <= steps[k] && t % period == 0) {
            reference[k] = shared;
          }
        }
      }
    }

    const asyncopt::AsyncOptimizer<double, Sgd, LocalSgd> opt(Sgd{.learning_rate = lr},
                                                              LocalSgd{.period = period});
    std::vector<double> w = {0.5};
    auto store = opt.attach(std::span<double>(w), workers);
    std::vector<std::uint64_t> max_staleness(workers, 0);
    on_threads(workers, [&](std::size_t id) {
      auto handle = store->worker(id);
      std::vector<double> mine(1);
      for (std::uint64_t t = 0; t < steps[id]; ++t) {
        handle.pull(mine);
        const std::vector<double> g = {mine[0] - centre[id]};
        max_staleness[id] = std::max(max_staleness[id], handle.push(g).staleness);
        handle.clock();
      }
      handle.leave();
    });
    CHECK(*std::max_element(max_staleness.begin(), max_staleness.end()) == 0);
    INFO("local SGD " << w[0] << ", reference " << shared);
    CHECK(std::abs(w[0] - shared) <= 1e-12);
    CHECK(store->stats().updates == 9 + 7 + 9);
  }
}

TEST_CASE("a local SGD push not yet clocked reaches the shared parameters when leaving") {
  const asyncopt::AsyncOptimizer<double, Sgd, LocalSgd> opt(Sgd{.learning_rate = 0.5},
                                                            LocalSgd{.period = 4});
  std::vector<double> w = {0.0};
  auto store = opt.attach(std::span<double>(w), 1);
  auto handle = store->worker(0);
  std::vector<double> seen(1);
  handle.pull(seen);
  const std::vector<double> g = {1.0};
  handle.push(g);
  handle.leave();
  CHECK(w[0] == -0.5);
}

// Adam's first step moves every parameter by exactly its learning rate; each replica has
// its own moments and its own step count, so that holds for every worker.
TEST_CASE("local SGD gives each replica its own step count, as Adam's bias correction needs") {
  constexpr std::size_t workers = 4;
  const asyncopt::update::Adam adam{.learning_rate = 0.1};
  const asyncopt::AsyncOptimizer<double, asyncopt::update::Adam, LocalSgd> opt(
      adam, LocalSgd{.period = 100});
  std::vector<double> w = {0.0};
  auto store = opt.attach(std::span<double>(w), workers);
  on_threads(workers, [&](std::size_t id) {
    auto handle = store->worker(id);
    std::vector<double> seen(1);
    handle.pull(seen);
    const std::vector<double> g = {1.0};
    handle.push(g);
    handle.clock();
  });
  INFO("w = " << w[0]);
  // Up to epsilon's effect (~1e-7 here); a shared step count would be off by over 1e-2.
  CHECK(std::abs(w[0] + 0.1) <= 1e-6);
}

TEST_CASE("local SGD with one worker is sequential SGD, momentum included, bit for bit") {
  const Problem p = planted(300, 6, 6);
  const Options options{.workers = 1, .batch_size = 4, .epochs = 2, .seed = 2};
  const HeavyBall rule{.learning_rate = 0.02, .momentum = 0.9};
  std::vector<double> local(6, 0.0);
  std::vector<double> locked(6, 0.0);
  (void)asyncopt::AsyncOptimizer<double, HeavyBall, LocalSgd>(rule, LocalSgd{.period = 3})
      .optimize(p.f, std::span<double>(local), options);
  (void)asyncopt::AsyncOptimizer<double, HeavyBall, Locked>(rule).optimize(
      p.f, std::span<double>(locked), options);
  CHECK(local == locked);
}

namespace {

// Every worker sees the same data: each step's gradient is the full-batch gradient of `f`,
// whatever the batch, and there are `examples` examples to shard.
struct SameData {
  const LeastSquares* f;
  std::vector<std::size_t> all;
  std::size_t examples;

  [[nodiscard]] std::size_t dimension() const { return f->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return examples; }
  [[nodiscard]] double loss(std::span<const double> w) const { return f->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> /*batch*/,
                std::span<double> grad) const {
    f->gradient(w, all, grad);
  }
};

}  // namespace

// Local Adam: every replica runs Adam with its own moments and step count, and the models are
// averaged every H steps. On identical data the replicas stay equal, and the round's pairwise
// sum of 2^k equal replicas divided by their count is the replica itself, so local Adam is
// serial Adam bit for bit. (Summed one after another, 8 equal values already round.)
TEST_CASE("local Adam on identical data is serial Adam, bit for bit, with 2, 4 and 8 workers") {
  const Problem p = planted(64, 6, 9);
  std::vector<std::size_t> all(64);
  std::iota(all.begin(), all.end(), std::size_t{0});
  constexpr std::size_t steps = 10;  // per worker and epoch; rounds every 3, and at the end
  const asyncopt::update::Adam adam{.learning_rate = 0.05};
  const Options serial_options{.workers = 1, .batch_size = 1, .epochs = 4, .seed = 1};
  std::vector<double> serial(6, 0.0);
  (void)asyncopt::AsyncOptimizer<double, asyncopt::update::Adam, Locked>(adam).optimize(
      SameData{&p.f, all, steps}, std::span<double>(serial), serial_options);
  for (const std::size_t workers : {1, 2, 4, 8}) {
    INFO("workers = " << workers);
    Options options = serial_options;
    options.workers = workers;
    std::vector<double> local(6, 0.0);
    const auto r =
        asyncopt::AsyncOptimizer<double, asyncopt::update::Adam, LocalSgd>(adam,
                                                                           LocalSgd{.period = 3})
            .optimize(SameData{&p.f, all, workers * steps}, std::span<double>(local), options);
    CHECK(r.updates == 4 * workers * steps);
    CHECK(local == serial);
  }
  CHECK(max_abs_difference(serial, std::vector<double>(6, 0.0)) > 0.1);
}

// Tolerance as for the asynchronous policies: constant-step SGD settles in a ball whose
// radius scales with lr * noise^2, far below 2e-3 here.
TEST_CASE("synchronous and local SGD converge to the normal-equations optimum", "[convergence]") {
  const Problem p = planted(800, 12, 7);
  for (const std::size_t workers : {1, 2, 4}) {
    INFO("workers = " << workers);
    const Options options{.workers = workers, .batch_size = 4, .epochs = 60};
    std::vector<double> sync(12, 0.0);
    std::vector<double> local(12, 0.0);
    const auto rs = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
                        .optimize(p.f, std::span<double>(sync), options);
    const auto rl = asyncopt::AsyncOptimizer<double, Sgd, LocalSgd>(Sgd{.learning_rate = 0.02},
                                                                    LocalSgd{.period = 8})
                        .optimize(p.f, std::span<double>(local), options);
    std::vector<double> optimum(p.optimum.data(), p.optimum.data() + p.optimum.size());
    INFO("synchronous: " << max_abs_difference(sync, optimum)
                         << ", local: " << max_abs_difference(local, optimum));
    CHECK(max_abs_difference(sync, optimum) < 2e-3);
    CHECK(max_abs_difference(local, optimum) < 2e-3);
    CHECK(rs.staleness_max == 0);
    CHECK(rl.staleness_max == 0);
    CHECK(rs.updates == 60U * ((800U / workers + 3U) / 4U));
  }
}

namespace {

// Throws on its first gradient; each later one takes a little while.
struct Throwing {
  std::atomic<int>* calls;
  [[nodiscard]] static std::size_t dimension() { return 2; }
  [[nodiscard]] static std::size_t num_examples() { return 4000; }
  [[nodiscard]] static double loss(std::span<const double> /*w*/) { return 1.0; }
  void gradient(std::span<const double> /*w*/, std::span<const std::size_t> /*batch*/,
                std::span<double> grad) const {
    if (calls->fetch_add(1) == 0) {
      throw std::runtime_error("the first gradient is broken");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
    grad[0] = grad[1] = 0.0;
  }
};

template <class Policy>
void check_thrower_does_not_hang(const Policy& policy) {
  const asyncopt::AsyncOptimizer<double, Sgd, Policy> opt(Sgd{.learning_rate = 0.1}, policy);
  std::vector<double> w(2, 0.0);
  std::atomic<int> calls{0};
  REQUIRE_THROWS_WITH(opt.optimize(Throwing{&calls}, std::span<double>(w),
                                   {.workers = 4, .batch_size = 1, .epochs = 2}),
                      "the first gradient is broken");
  INFO("gradients computed: " << calls.load());
  CHECK(calls.load() < 4000);
}

}  // namespace

TEST_CASE("a worker that throws does not hang the others in a round") {
  SECTION("synchronous") {
    check_thrower_does_not_hang(Synchronous{});
  }
  SECTION("local SGD") {
    check_thrower_does_not_hang(LocalSgd{.period = 4});
  }
}

TEST_CASE("a worker id that takes no part leaves when its handle is dropped") {
  const asyncopt::AsyncOptimizer<double, Sgd, Synchronous> opt(Sgd{.learning_rate = 1.0});
  std::vector<double> w = {0.0};
  auto store = opt.attach(std::span<double>(w), 2);
  { auto unused = store->worker(1); }
  auto handle = store->worker(0);
  std::vector<double> seen(1);
  handle.pull(seen);
  const std::vector<double> g = {2.0};
  // Alone in the round: it closes at once.
  CHECK(handle.push(g).applied);
  CHECK(w[0] == -2.0);
}

TEST_CASE("a new handle of a worker id whose handle was dropped takes part again") {
  const asyncopt::AsyncOptimizer<double, Sgd, Synchronous> opt(Sgd{.learning_rate = 1.0});
  std::vector<double> w = {0.0};
  auto store = opt.attach(std::span<double>(w), 2);
  { auto first = store->worker(1); }
  // Worker 1 is back: the round waits for both and applies the mean once.
  std::vector<decltype(store->worker(0))> handles;
  handles.push_back(store->worker(0));
  handles.push_back(store->worker(1));
  on_threads(2, [&](std::size_t id) {
    auto& handle = handles[id];
    std::vector<double> seen(1);
    handle.pull(seen);
    const std::vector<double> g = {id == 0 ? 2.0 : 4.0};
    handle.push(g);
  });
  CHECK(store->stats().updates == 1);
  CHECK(w[0] == -3.0);
}

TEST_CASE("a local SGD period of zero is refused and leaves the parameters untouched") {
  const Problem p = planted(50, 3, 8);
  std::vector<double> w = {1.0, 2.0, 3.0};
  const asyncopt::AsyncOptimizer<double, Sgd, LocalSgd> opt(Sgd{.learning_rate = 0.1},
                                                            LocalSgd{.period = 0});
  REQUIRE_THROWS_WITH(opt.optimize(p.f, std::span<double>(w), {.workers = 2}),
                      "asyncopt: LocalSgd::period must be at least 1");
  CHECK(w == std::vector<double>{1.0, 2.0, 3.0});
}

namespace {

namespace compress = asyncopt::compress;

// The messages of an epoch: every worker's steps over its slice of `examples`.
std::uint64_t messages_per_epoch(std::size_t examples, std::size_t workers, std::size_t batch) {
  std::uint64_t steps = 0;
  for (std::size_t k = 0; k < workers; ++k) {
    const std::size_t shard = (k + 1) * examples / workers - k * examples / workers;
    steps += (shard + batch - 1) / batch;
  }
  return steps;
}

}  // namespace

TEST_CASE("compressed synchronous rounds: identity and top-k with k = n train bit for bit") {
  const Problem p = planted(600, 10, 11);
  const Options options{.workers = 3, .batch_size = 8, .epochs = 2, .seed = 4};
  std::vector<double> plain(10, 0.0);
  std::vector<double> identity(10, 0.0);
  std::vector<double> top_all(10, 0.0);
  const auto r0 = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
                      .optimize(p.f, std::span<double>(plain), options);
  const auto r1 = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(
                      Sgd{.learning_rate = 0.05},
                      Synchronous{.compression = compress::Config{.codec = compress::Identity{}}})
                      .optimize(p.f, std::span<double>(identity), options);
  const auto r2 =
      asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(
          Sgd{.learning_rate = 0.05},
          Synchronous{.compression = compress::Config{.codec = compress::TopK{.k = 10}}})
          .optimize(p.f, std::span<double>(top_all), options);
  CHECK(identity == plain);
  CHECK(top_all == plain);
  CHECK(r0.compressed_bytes == 0);
  const std::uint64_t messages = 2 * messages_per_epoch(600, 3, 8);
  CHECK(r1.uncompressed_bytes == messages * 10 * sizeof(double));
  CHECK(r1.compressed_bytes == messages * (compress::header_bytes + 10 * sizeof(double)));
  // top-k: its count, then 4-byte indices and the values.
  CHECK(r2.compressed_bytes == messages * (compress::header_bytes + 8 + 10 * (4 + sizeof(double))));
}

TEST_CASE("compressed synchronous rounds: DIANA with the identity codec is synchronous SGD") {
  const Problem p = planted(600, 10, 12);
  const Options options{.workers = 4, .batch_size = 6, .epochs = 2, .seed = 5};
  std::vector<double> plain(10, 0.0);
  std::vector<double> diana(10, 0.0);
  (void)asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
      .optimize(p.f, std::span<double>(plain), options);
  (void)asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(
      Sgd{.learning_rate = 0.05},
      Synchronous{.compression = compress::Config{.codec = compress::Identity{},
                                                  .memory = {.feedback = compress::Feedback::diana,
                                                             .alpha = 0.5}}})
      .optimize(p.f, std::span<double>(diana), options);
  INFO("max |plain - diana| = " << max_abs_difference(plain, diana));
  CHECK(max_abs_difference(plain, diana) <= 1e-12);
  CHECK(std::abs(plain[0]) > 0.1);
}

TEST_CASE("compressed rounds with error feedback converge to the optimum", "[convergence]") {
  const Problem p = planted(800, 12, 7);
  const Options options{.workers = 4, .batch_size = 4, .epochs = 80};
  const compress::Config top_quarter{.codec = compress::TopK{.k = 3},
                                     .memory = {.feedback = compress::Feedback::error_feedback}};
  std::vector<double> sync(12, 0.0);
  std::vector<double> local(12, 0.0);
  const auto rs = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(
                      Sgd{.learning_rate = 0.05}, Synchronous{.compression = top_quarter})
                      .optimize(p.f, std::span<double>(sync), options);
  const auto rl = asyncopt::AsyncOptimizer<double, Sgd, LocalSgd>(
                      Sgd{.learning_rate = 0.02}, LocalSgd{.period = 8, .compression = top_quarter})
                      .optimize(p.f, std::span<double>(local), options);
  std::vector<double> optimum(p.optimum.data(), p.optimum.data() + p.optimum.size());
  INFO("synchronous: " << max_abs_difference(sync, optimum)
                       << ", local: " << max_abs_difference(local, optimum));
  CHECK(max_abs_difference(sync, optimum) < 2e-3);
  CHECK(max_abs_difference(local, optimum) < 2e-3);
  // 3 of 12 values and their indices, against 12 values.
  const double ratio =
      static_cast<double>(rs.compressed_bytes) / static_cast<double>(rs.uncompressed_bytes);
  CHECK(ratio == Approx((compress::header_bytes + 8 + 3 * 12.0) / (12 * 8.0)));
  CHECK(rl.uncompressed_bytes > 0);
  CHECK(rl.compressed_bytes * (12 * 8) ==
        rl.uncompressed_bytes * (compress::header_bytes + 8 + 3 * 12));
}

TEST_CASE("local SGD with the identity codec averages as without compression, to rounding") {
  const Problem p = planted(700, 9, 13);
  const Options options{.workers = 3, .batch_size = 5, .epochs = 3, .seed = 6};
  std::vector<double> plain(9, 0.0);
  std::vector<double> identity(9, 0.0);
  (void)asyncopt::AsyncOptimizer<double, Sgd, LocalSgd>(Sgd{.learning_rate = 0.05},
                                                        LocalSgd{.period = 4})
      .optimize(p.f, std::span<double>(plain), options);
  const auto r =
      asyncopt::AsyncOptimizer<double, Sgd, LocalSgd>(
          Sgd{.learning_rate = 0.05}, LocalSgd{.period = 4, .compression = compress::Config{}})
          .optimize(p.f, std::span<double>(identity), options);
  INFO("max |plain - identity| = " << max_abs_difference(plain, identity));
  CHECK(max_abs_difference(plain, identity) <= 1e-12);
  CHECK(std::abs(plain[0]) > 0.1);
  CHECK(r.compressed_bytes == r.uncompressed_bytes / (9 * 8) * (compress::header_bytes + 9 * 8));
  CHECK(r.uncompressed_bytes > 0);
}

TEST_CASE("a compression stage with bad options is refused in one sentence") {
  using Catch::Matchers::Contains;
  using Opt = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>;
  const Problem p = planted(50, 4, 14);
  std::vector<double> w(4, 0.0);
  auto run = [&](compress::Config config) {
    (void)Opt(Sgd{.learning_rate = 0.1}, Synchronous{.compression = std::move(config)})
        .optimize(p.f, std::span<double>(w), {.workers = 2, .epochs = 1});
  };
  CHECK_THROWS_WITH(run({.codec = compress::TopK{}}), Contains("set k > 0 or a fraction"));
  CHECK_THROWS_WITH(run({.codec = compress::Qsgd{.levels = 0}}),
                    Contains("levels must be in 1..127"));
  CHECK_THROWS_WITH(run({.codec = compress::Sign{},
                         .memory = {.feedback = compress::Feedback::diana, .alpha = 0.1}}),
                    Contains("DIANA needs an unbiased codec") && Contains("sign"));
  CHECK_THROWS_WITH(run({.codec = compress::RandomK{.k = 1},
                         .memory = {.feedback = compress::Feedback::diana, .alpha = 0.5}}),
                    Contains("DIANA's alpha must be in [0, 1 / (omega + 1)] = [0, 0.25"));
  CHECK(w == std::vector<double>(4, 0.0));  // nothing ran
}

namespace {

// Two processes that cannot gather: every operation does nothing.
struct NoGather {
  [[nodiscard]] static std::size_t rank() { return 0; }
  [[nodiscard]] static std::size_t size() { return 2; }
  template <class Scalar>
  static void all_reduce_sum(std::span<Scalar> /*values*/) {}
  template <class Scalar>
  static void broadcast(std::span<Scalar> /*values*/, std::size_t /*root*/) {}
  static void barrier() {}
};

}  // namespace

namespace {

// A second process that contributes exactly what this one does: every sum doubles, and a
// gather returns this process's bytes twice. It counts what went through it.
struct Twin {
  std::size_t gathers = 0;
  std::vector<std::size_t> reduced;  // the length of each all-reduce
  [[nodiscard]] static std::size_t rank() { return 0; }
  [[nodiscard]] static std::size_t size() { return 2; }
  template <class Scalar>
  void all_reduce_sum(std::span<Scalar> values) {
    reduced.push_back(values.size());
    for (Scalar& v : values) {
      v += v;
    }
  }
  template <class Scalar>
  static void broadcast(std::span<Scalar> /*values*/, std::size_t /*root*/) {}
  static void barrier() {}
  void all_gather(std::span<const std::byte> mine, std::vector<std::byte>& all,
                  std::vector<std::uint64_t>& sizes) {
    ++gathers;
    all.assign(mine.begin(), mine.end());
    all.insert(all.end(), mine.begin(), mine.end());
    sizes.assign(2, mine.size());
  }
};

}  // namespace

TEST_CASE("across processes, messages that keep the same positions ride an all-reduce") {
  const std::vector<double> g = {1.0, -2.0, 3.0, 0.5, -0.25, 4.0, 8.0, -1.0, 2.0, 6.0};
  auto round = [&](const compress::Config& config, Twin& twin) {
    const asyncopt::collective::Ref across(twin);
    Synchronous::Guard<double> guard(Synchronous{.compression = config}, g.size(), 1, across);
    std::vector<double> sum;
    std::size_t count = 0;
    (void)guard.combine(
        0, [&](std::span<double> slot) { std::copy(g.begin(), g.end(), slot.begin()); },
        [&](std::span<const double> s, std::size_t c) {
          sum.assign(s.begin(), s.end());
          count = c;
        });
    CHECK(count == 2);
    return sum;
  };
  // What one message of worker 0 in round 0 decodes to, twice.
  auto twice = [&](const compress::Config& config) {
    compress::Payload payload;
    compress::AnyCodec codec = config.codec;
    codec.encode(std::span<const double>(g), {.round = 0, .worker = 0}, payload);
    std::vector<double> decoded(g.size());
    codec.decode(std::span<const std::byte>(payload), {.round = 0, .worker = 0},
                 std::span<double>(decoded));
    for (double& v : decoded) {
      v += v;
    }
    return decoded;
  };
  SECTION("random-k with shared indices: its k values and the count") {
    const compress::Config config{.codec = compress::RandomK{.k = 3, .seed = 2}};
    Twin twin;
    CHECK(round(config, twin) == twice(config));
    CHECK(twin.gathers == 0);
    REQUIRE(twin.reduced.size() == 3);  // the workers' offsets, the stages' check, the round
    CHECK(twin.reduced.back() == 4);
  }
  SECTION("the identity codec: the values and the count") {
    const compress::Config config{.codec = compress::Identity{}};
    Twin twin;
    CHECK(round(config, twin) == twice(config));
    CHECK(twin.gathers == 0);
    CHECK(twin.reduced.back() == g.size() + 1);
  }
  SECTION("random-k with each worker's own indices, top-k, and DIANA are gathered") {
    for (const compress::Config& config :
         {compress::Config{.codec = compress::RandomK{.k = 3, .seed = 2, .shared = false}},
          compress::Config{.codec = compress::TopK{.k = 3}},
          compress::Config{.codec = compress::Identity{},
          .memory = {.feedback = compress::Feedback::diana, .alpha = 0.5}}}) {
      Twin twin;
      const std::vector<double> sum = round(config, twin);
      CHECK(twin.gathers == 1);
      CHECK(twin.reduced.size() == 2);  // the workers' offsets and the stages' check only
      if (config.memory.feedback != compress::Feedback::diana) {
        CHECK(sum == twice(config));
      }
    }
  }
}

namespace {

// A second process whose stage is `theirs`: it adds its share to every all-reduce (its one
// worker to the workers' count, its stage's fingerprint pieces to the stages' check).
struct Stranger {
  compress::Config theirs;
  [[nodiscard]] static std::size_t rank() { return 0; }
  [[nodiscard]] static std::size_t size() { return 2; }
  template <class Scalar>
  void all_reduce_sum(std::span<Scalar> values) {
    if (values.size() == 7) {  // the stages' check: three pieces and their squares, and 1
      const std::uint64_t fingerprint = compress::fingerprint(theirs);
      for (std::size_t k = 0; k < 3; ++k) {
        const auto piece = static_cast<Scalar>((fingerprint >> (20 * k)) & 0xfffffU);
        values[2 * k] += piece;
        values[2 * k + 1] += piece * piece;
      }
      values[6] += 1;
    } else {
      values[1] += 1;  // the workers' count of process 1
    }
  }
  template <class Scalar>
  static void broadcast(std::span<Scalar> /*values*/, std::size_t /*root*/) {}
  static void barrier() {}
  static void all_gather(std::span<const std::byte> /*mine*/, std::vector<std::byte>& /*all*/,
                         std::vector<std::uint64_t>& /*sizes*/) {}
};

}  // namespace

TEST_CASE("the processes of a job must run the same compression stage") {
  using Catch::Matchers::Contains;
  const compress::Config top{.codec = compress::TopK{.k = 2}};
  const compress::Config other{.codec = compress::TopK{.k = 3}};
  Stranger same{top};
  CHECK_NOTHROW(Synchronous::Guard<double>(Synchronous{.compression = top}, 8, 1,
                                           asyncopt::collective::Ref(same)));
  Stranger different{other};
  CHECK_THROWS_WITH(Synchronous::Guard<double>(Synchronous{.compression = top}, 8, 1,
                                               asyncopt::collective::Ref(different)),
                    Contains("the processes of the job run different compression stages; this "
                             "one runs top-k(k=2, fraction=0), no memory"));
  CHECK_THROWS_WITH(LocalSgd::Guard<double>(LocalSgd{.period = 2, .compression = top}, 8, 1,
                                            asyncopt::collective::Ref(different)),
                    Contains("the processes of the job run different compression stages"));
}

TEST_CASE("compressed rounds across processes need a collective that gathers") {
  using Catch::Matchers::Contains;
  NoGather two;
  const asyncopt::collective::Ref across(two);
  CHECK_FALSE(across.gathers());
  const asyncopt::compress::Config top{.codec = asyncopt::compress::TopK{.k = 1}};
  CHECK_THROWS_WITH(Synchronous::Guard<double>(Synchronous{.compression = top}, 4, 2, across),
                    Contains("Synchronous::compression across processes needs a collective with "
                             "all_gather()"));
  CHECK_THROWS_WITH(
      LocalSgd::Guard<double>(LocalSgd{.period = 2, .compression = top}, 4, 2, across),
      Contains("LocalSgd::compression across processes needs a collective with all_gather()"));
  // Without compression the same collective is fine, and so are messages summed as they
  // travel, which it all-reduces; one process always gathers.
  CHECK_NOTHROW(Synchronous::Guard<double>(Synchronous{}, 4, 2, across));
  const asyncopt::compress::Config summed{.codec = asyncopt::compress::RandomK{.k = 1}};
  CHECK_NOTHROW(Synchronous::Guard<double>(Synchronous{.compression = summed}, 4, 2, across));
  CHECK_NOTHROW(
      LocalSgd::Guard<double>(LocalSgd{.period = 2, .compression = summed}, 4, 2, across));
  CHECK(asyncopt::collective::Ref().gathers());
}

namespace {

using asyncopt::update::Adam;
using asyncopt::update::OneBitAdam;

// Worker k's least-squares objective 0.5 * |A_k w - b_k|^2 over d parameters: workers with
// different data, full gradients (no sampling), so that a sequential reference can follow
// a run step by step.
struct Heterogeneous {
  std::size_t workers;
  std::size_t d;
  std::vector<std::vector<double>> a;  // per worker, rows x d, row-major
  std::vector<std::vector<double>> b;  // per worker, rows
  static constexpr std::size_t rows = 12;

  // With `same`, every worker has worker 0's data.
  Heterogeneous(std::size_t worker_count, std::size_t dimension, unsigned seed, bool same = false)
      : workers(worker_count), d(dimension), a(worker_count), b(worker_count) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    for (std::size_t k = 0; k < workers; ++k) {
      if (same && k > 0) {
        a[k] = a[0];
        b[k] = b[0];
        continue;
      }
      for (std::size_t i = 0; i < rows * d; ++i) {
        a[k].push_back(normal(rng));
      }
      for (std::size_t i = 0; i < rows; ++i) {
        b[k].push_back(normal(rng) + static_cast<double>(k));  // a different optimum each
      }
    }
  }

  // g = A_k^T (A_k w - b_k).
  void gradient(std::size_t k, std::span<const double> w, std::span<double> g) const {
    std::fill(g.begin(), g.end(), 0.0);
    for (std::size_t i = 0; i < rows; ++i) {
      double r = -b[k][i];
      for (std::size_t j = 0; j < d; ++j) {
        r += a[k][i * d + j] * w[j];
      }
      for (std::size_t j = 0; j < d; ++j) {
        g[j] += a[k][i * d + j] * r;
      }
    }
  }
};

// `steps` synchronous rounds of the library: every worker pulls, pushes its full gradient.
template <class Rule>
asyncopt::StoreStats run_rounds(const Heterogeneous& p, const Rule& rule, const Synchronous& sync,
                                std::size_t steps, std::vector<double>& w) {
  const asyncopt::AsyncOptimizer<double, Rule, Synchronous> opt(rule, sync);
  auto store = opt.attach(std::span<double>(w), p.workers);
  on_threads(p.workers, [&](std::size_t id) {
    auto handle = store->worker(id);
    std::vector<double> seen(p.d);
    std::vector<double> g(p.d);
    for (std::size_t t = 0; t < steps; ++t) {
      handle.pull(seen);
      p.gradient(id, seen, g);
      (void)handle.push(g);
      handle.clock();
    }
  });
  return store->stats();
}

// 1-bit Adam as Tang et al. (2021) write it, sequentially, in double: Adam over the mean
// gradient for `freeze` steps; then each worker's momentum b1 * m + (1 - b1) * g_k plus its
// error goes out as sign(.) times its mean magnitude, the error keeps the rest, m is the
// mean of what was sent, and w moves by lr_t * m / (sqrt(v) + eps) with v frozen.
std::vector<double> one_bit_adam_reference(const Heterogeneous& p, const Adam& adam,
                                           std::size_t freeze, std::size_t steps) {
  const std::size_t d = p.d;
  std::vector<double> w(d, 0.0);
  std::vector<double> m(d, 0.0);
  std::vector<double> v(d, 0.0);
  std::vector<std::vector<double>> error(p.workers, std::vector<double>(d, 0.0));
  std::vector<double> g(d);
  for (std::size_t t = 0; t < steps; ++t) {
    std::vector<double> mean(d, 0.0);
    for (std::size_t k = 0; k < p.workers; ++k) {
      p.gradient(k, w, g);
      if (t < freeze) {
        for (std::size_t j = 0; j < d; ++j) {
          mean[j] += g[j];
        }
        continue;
      }
      std::vector<double> x(d);
      double l1 = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        x[j] = adam.beta1 * m[j] + (1.0 - adam.beta1) * g[j] + error[k][j];
        l1 += std::abs(x[j]);
      }
      const double scale = l1 / static_cast<double>(d);
      for (std::size_t j = 0; j < d; ++j) {
        const double sent = std::signbit(x[j]) ? -scale : scale;
        error[k][j] = x[j] - sent;
        mean[j] += sent;
      }
    }
    const auto n = static_cast<double>(p.workers);
    const double step = static_cast<double>(t) + 1.0;
    if (t < freeze) {
      const double lr = adam.learning_rate * std::sqrt(1.0 - std::pow(adam.beta2, step)) /
                        (1.0 - std::pow(adam.beta1, step));
      for (std::size_t j = 0; j < d; ++j) {
        const double gj = mean[j] / n;
        m[j] = adam.beta1 * m[j] + (1.0 - adam.beta1) * gj;
        v[j] = adam.beta2 * v[j] + (1.0 - adam.beta2) * gj * gj;
        w[j] -= lr * m[j] / (std::sqrt(v[j]) + adam.epsilon);
      }
    } else {
      const double lr = adam.learning_rate *
                        std::sqrt(1.0 - std::pow(adam.beta2, static_cast<double>(freeze))) /
                        (1.0 - std::pow(adam.beta1, step));
      for (std::size_t j = 0; j < d; ++j) {
        m[j] = mean[j] / n;
        w[j] -= lr * m[j] / (std::sqrt(v[j]) + adam.epsilon);
      }
    }
  }
  return w;
}

const compress::Config one_bit{.codec = compress::Sign{},
                               .memory = {.feedback = compress::Feedback::error_feedback}};

}  // namespace

TEST_CASE("1-bit Adam with the freeze step at infinity is synchronous Adam, bit for bit") {
  const Heterogeneous p(4, 10, 21);
  const Adam adam{.learning_rate = 0.05};
  std::vector<double> plain(p.d, 0.0);
  std::vector<double> never(p.d, 0.0);
  (void)run_rounds(p, adam, Synchronous{}, 40, plain);
  const auto stats =
      run_rounds(p, OneBitAdam{.adam = adam, .freeze = std::numeric_limits<std::uint64_t>::max()},
                 Synchronous{.compression = one_bit}, 40, never);
  CHECK(never == plain);
  CHECK(std::abs(plain[0]) > 0.05);
  // Every message went uncompressed.
  CHECK(stats.uncompressed_bytes == std::uint64_t{40} * 4 * p.d * sizeof(double));
  CHECK(stats.compressed_bytes == stats.uncompressed_bytes);

  // The same through optimize(), sampled minibatches included.
  const Problem q = planted(400, 8, 22);
  const Options options{.workers = 3, .batch_size = 8, .epochs = 2, .seed = 6};
  std::vector<double> a(8, 0.0);
  std::vector<double> b(8, 0.0);
  (void)asyncopt::AsyncOptimizer<double, Adam, Synchronous>(adam).optimize(
      q.f, std::span<double>(a), options);
  (void)asyncopt::AsyncOptimizer<double, OneBitAdam, Synchronous>(
      OneBitAdam{.adam = adam, .freeze = std::numeric_limits<std::uint64_t>::max()},
      Synchronous{.compression = one_bit})
      .optimize(q.f, std::span<double>(b), options);
  CHECK(a == b);
}

TEST_CASE("1-bit Adam follows the paper's algorithm: warm-up, then sign-compressed momenta") {
  const Heterogeneous p(4, 11, 23);
  const Adam adam{.learning_rate = 0.02};
  constexpr std::size_t freeze = 12;
  constexpr std::size_t steps = 60;
  const std::vector<double> expected = one_bit_adam_reference(p, adam, freeze, steps);
  std::vector<double> w(p.d, 0.0);
  const auto stats = run_rounds(p, OneBitAdam{.adam = adam, .freeze = freeze},
                                Synchronous{.compression = one_bit}, steps, w);
  INFO("max |library - reference| = " << max_abs_difference(w, expected));
  CHECK(max_abs_difference(w, expected) <= 1e-9);
  CHECK(std::abs(expected[0] - one_bit_adam_reference(p, adam, steps, steps)[0]) > 1e-3);
  // The warm-up's messages whole; afterwards a header, the scale and 11 bits each.
  const std::uint64_t raw = steps * p.workers * p.d * sizeof(double);
  const std::uint64_t warm = freeze * p.workers * p.d * sizeof(double);
  CHECK(stats.uncompressed_bytes == raw);
  CHECK(stats.compressed_bytes ==
        warm + (steps - freeze) * p.workers * (compress::header_bytes + sizeof(double) + 2));
  // Without compression the momenta are averaged exactly: Adam with v frozen.
  std::vector<double> exact(p.d, 0.0);
  (void)run_rounds(p, OneBitAdam{.adam = adam, .freeze = freeze}, Synchronous{}, steps, exact);
  CHECK(max_abs_difference(exact, expected) > 1e-6);
  CHECK(max_abs_difference(exact, expected) < 0.5);
}

TEST_CASE("1-bit Adam converges: exactly on equal data, near the optimum on different data",
          "[convergence]") {
  auto optimum_of = [](const Heterogeneous& p) {
    // The optimum of the sum: (sum A_k^T A_k) w = sum A_k^T b_k.
    Eigen::MatrixXd h = Eigen::MatrixXd::Zero(6, 6);
    Eigen::VectorXd r = Eigen::VectorXd::Zero(6);
    for (std::size_t k = 0; k < p.workers; ++k) {
      const Eigen::Map<const Eigen::Matrix<double, Heterogeneous::rows, 6, Eigen::RowMajor>> a(
          p.a[k].data());
      const Eigen::Map<const Eigen::Matrix<double, Heterogeneous::rows, 1>> b(p.b[k].data());
      h += a.transpose() * a;
      r += a.transpose() * b;
    }
    const Eigen::VectorXd w = h.ldlt().solve(r);
    return std::vector<double>(w.data(), w.data() + w.size());
  };
  auto distance = [&](const Heterogeneous& p, double lr, std::size_t steps) {
    std::vector<double> w(p.d, 0.0);
    (void)run_rounds(p, OneBitAdam{.adam = {.learning_rate = lr}, .freeze = 200},
                     Synchronous{.compression = one_bit}, steps, w);
    return max_abs_difference(w, optimum_of(p));
  };
  // Workers with the same data: their momenta vanish at the optimum, and so does the
  // compression error.
  const Heterogeneous same(4, 6, 24, true);
  const double exact = distance(same, 0.01, 3000);
  INFO("same data: " << exact);
  CHECK(exact < 1e-10);
  // Workers with different data: each worker's momentum stays away from 0 at the optimum,
  // so the signs jitter around it, by an amount that shrinks with the step size.
  const Heterogeneous different(4, 6, 24);
  const double coarse = distance(different, 0.01, 6000);
  const double fine = distance(different, 0.001, 6000);
  INFO("different data: " << coarse << " at lr 0.01, " << fine << " at lr 0.001");
  CHECK(coarse < 0.1);
  CHECK(fine < 0.01);
  CHECK(fine < coarse / 3.0);
}

TEST_CASE("1-bit Adam refuses a freeze step of 0 in one sentence") {
  using Catch::Matchers::Contains;
  std::vector<double> w(3, 0.0);
  auto attach = [&] {
    const asyncopt::AsyncOptimizer<double, OneBitAdam, Synchronous> opt(OneBitAdam{.freeze = 0});
    (void)opt.attach(std::span<double>(w), 2);
  };
  CHECK_THROWS_WITH(attach(), Contains("OneBitAdam::freeze must be at least 1, got 0"));
}

// ---------------------------------------------------------------------------------------
// SCAFFOLD

using asyncopt::consistency::Scaffold;

// The exact statement: with one local step, the mean model delta is -lr times the mean of
// g_k - c_k + c, and c is the mean of the c_k, so x moves by -lr * mean(g_k): synchronous
// SGD, to rounding (the mean is of the replicas' steps).
TEST_CASE("SCAFFOLD with period 1 is synchronous SGD") {
  const Problem p = planted(1000, 8, 4);
  for (const std::size_t workers : {2, 3, 4}) {
    INFO("workers = " << workers);
    const Options options{.workers = workers, .batch_size = 7, .epochs = 3, .seed = 5};
    std::vector<double> sync(8, 0.0);
    std::vector<double> scaffold(8, 0.0);
    const auto rs = asyncopt::AsyncOptimizer<double, Sgd, Synchronous>(Sgd{.learning_rate = 0.05})
                        .optimize(p.f, std::span<double>(sync), options);
    CHECK(rs.staleness_max == 0);
    const auto r = asyncopt::AsyncOptimizer<double, Sgd, Scaffold>(Sgd{.learning_rate = 0.05},
                                                                   Scaffold{.period = 1})
                       .optimize(p.f, std::span<double>(scaffold), options);
    CHECK(r.updates == 3 * messages_per_epoch(1000, workers, 7));
    CHECK(r.staleness_max == 0);
    INFO("max |sync - scaffold| = " << max_abs_difference(sync, scaffold));
    CHECK(max_abs_difference(sync, scaffold) <= 1e-12);
    CHECK(std::abs(sync[0]) > 0.1);
  }
}

namespace {

// Worker 0 minimizes f1 = sum_j (x_j - 1)^2 / 2, worker 1 f2 = sum_j 5 (x_j + 1)^2: the sum
// is least at x* = -9/11 in every coordinate. `rounds` rounds of `period` local steps each,
// run through the store's worker handles on two threads.
template <class Rule, class Policy>
std::vector<double> two_quadratics(const Rule& rule, const Policy& policy, std::size_t rounds,
                                   std::uint64_t period) {
  constexpr std::size_t dimension = 3;
  constexpr std::array<double, 2> curvature = {1.0, 10.0};
  constexpr std::array<double, 2> centre = {1.0, -1.0};
  const asyncopt::AsyncOptimizer<double, Rule, Policy> opt(rule, policy);
  std::vector<double> w = {0.0, 0.5, -2.0};
  auto store = opt.attach(std::span<double>(w), 2);
  on_threads(2, [&](std::size_t id) {
    auto handle = store->worker(id);
    std::vector<double> x(dimension);
    std::vector<double> g(dimension);
    for (std::uint64_t t = 0; t < rounds * period; ++t) {
      handle.pull(x);
      for (std::size_t j = 0; j < dimension; ++j) {
        g[j] = curvature[id] * (x[j] - centre[id]);
      }
      handle.push(g);
      handle.clock();
    }
    handle.leave();
  });
  return w;
}

double max_distance(std::span<const double> w, double target) {
  double m = 0.0;
  for (const double v : w) {
    m = std::max(m, std::abs(v - target));
  }
  return m;
}

}  // namespace

// Karimireddy et al.'s point: local steps on heterogeneous data drift towards each worker's
// own optimum. Local SGD's rounds contract to the fixed point of x <- mean_i(r_i x +
// (1 - r_i) b_i), r_i = (1 - lr a_i)^K, not to x*; SCAFFOLD's corrected steps reach x*.
TEST_CASE("on heterogeneous quadratics local SGD stalls at its drift and SCAFFOLD reaches x*") {
  constexpr double lr = 0.05;
  constexpr std::uint64_t period = 10;
  const double r1 = std::pow(1.0 - lr * 1.0, static_cast<double>(period));
  const double r2 = std::pow(1.0 - lr * 10.0, static_cast<double>(period));
  const double drift = (1.0 * (1.0 - r1) + -1.0 * (1.0 - r2)) / ((1.0 - r1) + (1.0 - r2));
  REQUIRE(std::abs(drift - -0.426884) < 1e-6);
  constexpr double optimum = -9.0 / 11.0;

  const std::vector<double> local =
      two_quadratics(Sgd{.learning_rate = lr}, LocalSgd{.period = period}, 100, period);
  INFO("local SGD: " << local[0] << " " << local[1] << " " << local[2]);
  CHECK(max_distance(local, drift) <= 1e-12);
  CHECK(max_distance(local, optimum) > 0.39);

  const std::vector<double> scaffold =
      two_quadratics(Sgd{.learning_rate = lr}, Scaffold{.period = period}, 100, period);
  INFO("SCAFFOLD: " << scaffold[0] << " " << scaffold[1] << " " << scaffold[2]);
  CHECK(max_distance(scaffold, optimum) <= 1e-12);

  // Any rule is the local solver: heavy-ball momentum (its velocity kept per worker across
  // rounds) on the corrected gradients reaches x* too; local SGD with it still drifts.
  const std::vector<double> momentum = two_quadratics(
      HeavyBall{.learning_rate = lr, .momentum = 0.5}, Scaffold{.period = period}, 100, period);
  INFO("SCAFFOLD with momentum: " << momentum[0] << " " << momentum[1] << " " << momentum[2]);
  CHECK(max_distance(momentum, optimum) <= 1e-12);
  const std::vector<double> local_momentum = two_quadratics(
      HeavyBall{.learning_rate = lr, .momentum = 0.5}, LocalSgd{.period = period}, 100, period);
  CHECK(max_distance(local_momentum, optimum) > 0.1);
}

// The round's arithmetic on the guard itself, against the definitions: c_k+ is the mean of
// worker k's gradients of the round, c the mean of every c_k (over all N = 3 workers, one of
// which never steps), x moves by lr_g times the mean model delta of those that stepped.
// Worker 2 leaves at once, worker 1 takes two steps and leaves, worker 0 takes three and
// closes the round.
TEST_CASE("a SCAFFOLD round follows the paper's option II, and c stays the mean of the c_k") {
  constexpr std::size_t n = 4;
  const Scaffold policy{.period = 3, .global_learning_rate = 0.5};
  Scaffold::Guard<double> guard(policy, n, 3);
  std::vector<double> shared = {1.0, -2.0, 0.25, 3.0};
  guard.join(0, 0, shared);
  guard.join(1, 0, shared);
  guard.join(2, 0, shared);
  guard.leave(2, shared);  // no steps: not a contribution

  // Worker k's step t: gradient g = (k + 1) * (t + 1) * (i + 1) / 8 in coordinate i, the
  // replica moved by -0.1 times the corrected gradient (as Sgd would), sums kept here.
  const auto gradient = [](std::size_t k, std::size_t t, std::size_t i) {
    return static_cast<double>((k + 1) * (t + 1) * (i + 1)) / 8.0;
  };
  std::array<std::vector<double>, 2> sums = {std::vector<double>(n, 0.0),
                                             std::vector<double>(n, 0.0)};
  const auto step = [&](std::size_t k, std::size_t t) {
    std::vector<double> g(n);
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = gradient(k, t, i);
      sums[k][i] += g[i];
    }
    const std::span<const double> corrected = guard.correct(k, g);
    // The control variates are still zero: the correction changes nothing yet.
    CHECK(std::vector<double>(corrected.begin(), corrected.end()) == g);
    const std::span<double> replica = guard.replica(k);
    for (std::size_t i = 0; i < n; ++i) {
      replica[i] -= 0.1 * corrected[i];
    }
  };
  step(1, 0);
  step(1, 1);
  const std::vector<double> y1(guard.replica(1).begin(), guard.replica(1).end());
  guard.leave(1, shared);  // its steps wait for the round
  for (std::size_t t = 0; t < 3; ++t) {
    step(0, t);
    if (t < 2) {
      CHECK(guard.clock(0, t + 1, shared) == 0.0);
    }
  }
  const std::vector<double> y0(guard.replica(0).begin(), guard.replica(0).end());
  const std::vector<double> x0 = shared;
  guard.clock(0, 3, shared);  // closes the round

  for (std::size_t i = 0; i < n; ++i) {
    INFO("coordinate " << i);
    const double c0 = sums[0][i] / 3.0;
    const double c1 = sums[1][i] / 2.0;
    CHECK(guard.control(0)[i] == c0);
    CHECK(guard.control(1)[i] == c1);
    CHECK(guard.control(2)[i] == 0.0);
    CHECK(guard.control()[i] == Approx((c0 + c1 + 0.0) / 3.0).epsilon(1e-15));
    const double moved = 0.5 * (((y0[i] - x0[i]) + (y1[i] - x0[i])) / 2.0);
    CHECK(shared[i] == Approx(x0[i] + moved).epsilon(1e-15));
    CHECK(guard.replica(0)[i] == shared[i]);  // worker 0 restarts from x
  }

  // The next step is corrected by c - c_0, and a sparse gradient gives the same bits as
  // the dense gradient that is zero elsewhere.
  const std::vector<std::size_t> index = {1, 3};
  const std::vector<double> values = {0.75, -1.5};
  const std::vector<double> dense = {0.0, 0.75, 0.0, -1.5};
  const std::span<const double> from_dense = guard.correct(0, dense);
  const std::vector<double> corrected_dense(from_dense.begin(), from_dense.end());
  const std::span<const double> from_sparse = guard.correct(0, index, values);
  const std::vector<double> corrected_sparse(from_sparse.begin(), from_sparse.end());
  CHECK(corrected_sparse == corrected_dense);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(corrected_dense[i] == (dense[i] - guard.control(0)[i]) + guard.control()[i]);
  }
}

// Through the store: a sparse push is the dense corrected step, bit for bit.
TEST_CASE("a sparse push under SCAFFOLD is the dense push of the same gradient, bit for bit") {
  const asyncopt::AsyncOptimizer<double, HeavyBall, Scaffold> opt(
      HeavyBall{.learning_rate = 0.1, .momentum = 0.9}, Scaffold{.period = 2});
  std::vector<double> sparse_w = {1.0, 2.0, 3.0, 4.0, 5.0};
  std::vector<double> dense_w = sparse_w;
  auto sparse_store = opt.attach(std::span<double>(sparse_w), 1);
  auto dense_store = opt.attach(std::span<double>(dense_w), 1);
  {
    auto sparse_handle = sparse_store->worker(0);
    auto dense_handle = dense_store->worker(0);
    std::vector<double> a(5);
    std::vector<double> b(5);
    for (std::size_t t = 0; t < 7; ++t) {
      sparse_handle.pull(a);
      dense_handle.pull(b);
      REQUIRE(a == b);
      const std::vector<std::size_t> index = {t % 5, 4};
      const std::vector<double> values = {a[t % 5] - 0.5, 0.25 * a[4]};
      std::vector<double> g(5, 0.0);
      g[t % 5] = values[0];
      g[4] += values[1];
      if (t % 5 == 4) {
        continue;  // one index twice: not a valid list
      }
      sparse_handle.push(index, values);
      dense_handle.push(g);
      sparse_handle.clock();
      dense_handle.clock();
    }
  }
  CHECK(sparse_w == dense_w);
  CHECK(sparse_w != std::vector<double>{1.0, 2.0, 3.0, 4.0, 5.0});
}

TEST_CASE("SCAFFOLD with bad options is refused in one sentence") {
  const Problem p = planted(50, 3, 8);
  std::vector<double> w = {1.0, 2.0, 3.0};
  const auto refuse = [&](const Scaffold& policy, const std::string& message) {
    const asyncopt::AsyncOptimizer<double, Sgd, Scaffold> opt(Sgd{.learning_rate = 0.1}, policy);
    REQUIRE_THROWS_WITH(opt.optimize(p.f, std::span<double>(w), {.workers = 2}), message);
    CHECK(w == std::vector<double>{1.0, 2.0, 3.0});
  };
  refuse(Scaffold{.period = 0}, "asyncopt: Scaffold::period must be at least 1");
  refuse(Scaffold{.global_learning_rate = 0.0},
         "asyncopt: Scaffold::global_learning_rate must be finite and positive, got 0.000000");
  refuse(Scaffold{.global_learning_rate = std::numeric_limits<double>::quiet_NaN()},
         "asyncopt: Scaffold::global_learning_rate must be finite and positive, got nan");
}

TEST_CASE("SCAFFOLD converges to the normal-equations optimum", "[convergence]") {
  const Problem p = planted(800, 12, 7);
  for (const std::size_t workers : {1, 2, 4}) {
    INFO("workers = " << workers);
    std::vector<double> w(12, 0.0);
    const auto r = asyncopt::AsyncOptimizer<double, Sgd, Scaffold>(Sgd{.learning_rate = 0.02},
                                                                   Scaffold{.period = 8})
                       .optimize(p.f, std::span<double>(w),
                                 {.workers = workers, .batch_size = 4, .epochs = 60});
    std::vector<double> optimum(p.optimum.data(), p.optimum.data() + p.optimum.size());
    INFO("SCAFFOLD: " << max_abs_difference(w, optimum));
    CHECK(max_abs_difference(w, optimum) < 2e-3);
    CHECK(r.updates == 60U * messages_per_epoch(800, workers, 4));
  }
}

// A corrected push is dense, so a rule that reads the parameters a gradient was computed at
// (delay compensation) needs them all: optimize() pulls every parameter under Scaffold even
// for a sparse objective, instead of failing on the first push.
TEST_CASE("SCAFFOLD with delay compensation trains a sparse objective") {
  using Sparse = Eigen::SparseMatrix<double, Eigen::RowMajor>;
  std::mt19937 rng(6);
  std::uniform_int_distribution<int> column(0, 19);
  std::normal_distribution<double> normal;
  std::vector<Eigen::Triplet<double>> entries;
  Eigen::VectorXd y(400);
  for (int i = 0; i < 400; ++i) {
    double margin = 0.0;
    for (int k = 0; k < 3; ++k) {
      const int j = column(rng);
      const double v = normal(rng);
      entries.emplace_back(i, j, v);
      margin += (j % 2 == 0 ? 1.0 : -1.0) * v;
    }
    y[i] = margin > 0.0 ? 1.0 : 0.0;
  }
  Sparse x(400, 20);
  x.setFromTriplets(entries.begin(), entries.end());
  const asyncopt::objective::LogisticRegression<Sparse> f(std::move(x), std::move(y));
  std::vector<double> w(f.dimension(), 0.0);
  const auto r =
      asyncopt::AsyncOptimizer<double, asyncopt::update::DelayCompensated, Scaffold>(
          asyncopt::update::DelayCompensated{.learning_rate = 0.5}, Scaffold{.period = 4})
          .optimize(f, std::span<double>(w), {.workers = 2, .batch_size = 4, .epochs = 5});
  CHECK(r.rejected == 0);
  CHECK(r.loss.back() < 0.5 * r.loss.front());
}

TEST_CASE("a worker that throws does not hang SCAFFOLD's rounds") {
  check_thrower_does_not_hang(Scaffold{.period = 3});
}
