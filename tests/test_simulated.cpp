// The staleness simulator: exact delays, reproducible runs.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/least_squares.hpp>

using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::transport::SharedMemory;
using asyncopt::transport::Simulated;
using asyncopt::update::Sgd;
namespace delay = asyncopt::delay;

namespace {

using Dense = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A small least-squares problem with a fixed, arbitrary design.
asyncopt::objective::LeastSquares<Dense> problem() {
  constexpr Eigen::Index n = 120;
  constexpr Eigen::Index d = 7;
  Dense x(n, d);
  Eigen::VectorXd y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index j = 0; j < d; ++j) {
      x(i, j) = std::sin(static_cast<double>(3 * i + 7 * j + 1));
    }
    y[i] = std::cos(static_cast<double>(i));
  }
  return {x, y, {.l2 = 0.0, .intercept = true}};
}

template <class Transport>
std::vector<double> train(const Transport& transport, std::size_t workers, std::uint64_t seed,
                          asyncopt::Report* report = nullptr) {
  const auto f = problem();
  const asyncopt::AsyncOptimizer<double, Sgd, Locked, Transport> opt(Sgd{.learning_rate = 0.05},
                                                                     Locked{}, transport);
  std::vector<double> w(f.dimension(), 0.0);
  const auto r = opt.optimize(f, std::span<double>(w),
                              {.workers = workers, .batch_size = 3, .epochs = 4, .seed = seed});
  if (report != nullptr) {
    *report = r;
  }
  return w;
}

}  // namespace

TEST_CASE("Simulated with tau = 0 equals sequential SGD bit for bit") {
  // Sequential SGD: one worker on shared memory, the same shuffles and the same kernels.
  const auto sequential = train(SharedMemory{}, 1, 5);
  const auto simulated = train(Simulated{.delay = delay::fixed(0)}, 1, 5);
  REQUIRE(simulated == sequential);
  REQUIRE(train(Simulated{.delay = delay::fixed(0)}, 1, 6) != sequential);
}

TEST_CASE("two Simulated runs with the same seed are identical, other seeds differ") {
  const Simulated random{.delay = delay::uniform(0, 6), .seed = 11};
  asyncopt::Report first;
  asyncopt::Report second;
  const auto a = train(random, 4, 3, &first);
  const auto b = train(random, 4, 3, &second);
  REQUIRE(a == b);
  REQUIRE(first.loss == second.loss);
  REQUIRE(first.staleness == second.staleness);
  Simulated other = random;
  other.seed = 12;
  REQUIRE(train(other, 4, 3) != a);
}

TEST_CASE("a fixed delay makes every gradient exactly tau updates old") {
  for (const std::uint64_t tau : {1, 3, 8}) {
    INFO("tau = " << tau);
    asyncopt::Report r;
    (void)train(Simulated{.delay = delay::fixed(tau)}, 2, 1, &r);
    // The first tau updates cannot be older than the run.
    std::vector<std::uint64_t> expected(tau + 1, 1);
    expected[tau] = r.updates - tau;
    REQUIRE(r.staleness == expected);
    REQUIRE(r.max_staleness() == tau);
  }
}

TEST_CASE("a pull hands out the parameters as they were tau updates ago") {
  std::vector<double> w(2, 0.0);
  const asyncopt::AsyncOptimizer<double, Sgd, LockFree, Simulated> opt(
      Sgd{.learning_rate = 1.0}, LockFree{}, Simulated{.delay = delay::fixed(2)});
  auto store = opt.attach(w, 1);
  auto h = store->worker(0);
  const std::vector<double> g = {1.0, -1.0};
  std::vector<double> seen(2);
  for (int k = 0; k < 6; ++k) {
    h.pull(seen);
    // After k updates w = (-k, k); the pull sees the state of update max(0, k - 2).
    const double expected = static_cast<double>(k < 2 ? 0 : k - 2);
    REQUIRE(seen[0] == -expected);
    REQUIRE(seen[1] == expected);
    REQUIRE(h.push(std::span<const double>(g)).staleness ==
            static_cast<std::uint64_t>(k - expected));
  }
}

TEST_CASE("uniform and geometric delays have the distribution they name") {
  asyncopt::Xoshiro256 rng(3);
  const auto geometric = delay::geometric(0.25);  // mean (1 - p) / p = 3
  const auto uniform = delay::uniform(2, 6);      // mean 4
  constexpr int draws = 200000;
  double geometric_sum = 0.0;
  double uniform_sum = 0.0;
  for (int i = 0; i < draws; ++i) {
    geometric_sum += static_cast<double>(geometric.draw(rng));
    const auto u = uniform.draw(rng);
    REQUIRE(u >= 2);
    REQUIRE(u <= 6);
    uniform_sum += static_cast<double>(u);
  }
  // Standard errors: sqrt(12 / 200000) = 0.008 and sqrt(2 / 200000) = 0.003.
  REQUIRE(geometric_sum / draws == Approx(3.0).margin(0.05));
  REQUIRE(uniform_sum / draws == Approx(4.0).margin(0.02));
}

TEST_CASE("impossible delays are refused with a clear error") {
  std::vector<double> w(2, 0.0);
  auto attach = [&](const Simulated& s) {
    const asyncopt::AsyncOptimizer<double, Sgd, Locked, Simulated> opt(Sgd{}, Locked{}, s);
    return opt.attach(w, 1);
  };
  REQUIRE_THROWS_WITH(attach(Simulated{.delay = delay::uniform(5, 2)}),
                      Catch::Contains("uniform(a, b) needs a <= b"));
  REQUIRE_THROWS_WITH(attach(Simulated{.delay = delay::geometric(0.0)}),
                      Catch::Contains("geometric(p) needs p in (0, 1]"));
  REQUIRE_THROWS_WITH(attach(Simulated{.history = 0}), Catch::Contains("history"));
}

TEST_CASE("delay compensation in the simulator reads the stale parameters it was computed at") {
  // With lambda = 0 DC-ASGD is SGD; with lambda > 0 under a delay it must differ, which it
  // only can if w_seen (the stale pull) differs from the live parameters.
  const auto f = problem();
  auto run = [&](double lambda) {
    const asyncopt::AsyncOptimizer<double, asyncopt::update::DelayCompensated, Locked, Simulated>
        opt(asyncopt::update::DelayCompensated{.learning_rate = 0.05, .lambda = lambda}, Locked{},
            Simulated{.delay = delay::fixed(4)});
    std::vector<double> w(f.dimension(), 0.0);
    (void)opt.optimize(f, std::span<double>(w), {.workers = 2, .batch_size = 3, .epochs = 2});
    return w;
  };
  const auto sgd_like = run(0.0);
  const auto simulated_sgd = [&] {
    const asyncopt::AsyncOptimizer<double, Sgd, Locked, Simulated> opt(
        Sgd{.learning_rate = 0.05}, Locked{}, Simulated{.delay = delay::fixed(4)});
    std::vector<double> w(f.dimension(), 0.0);
    (void)opt.optimize(f, std::span<double>(w), {.workers = 2, .batch_size = 3, .epochs = 2});
    return w;
  }();
  REQUIRE(sgd_like == simulated_sgd);
  REQUIRE(run(2.0) != sgd_like);
}

namespace {

// One worker step as the timed tests record it: the version its pull saw, the parameter it
// read, and whether its worker had steps left.
struct Recorded {
  std::uint64_t seen = 0;
  double pulled = 0.0;
  double at = 0.0;  // the store's simulated time
};

// Two workers on one parameter, each pushing the gradient `g` for `steps` steps, under the
// timed schedule of `transport`; returns what every step's pull saw, per worker, and the
// store's statistics and simulated time.
template <class Rule, class Policy>
auto timed_run(const Rule& rule, const Policy& policy, const Simulated& transport,
               std::uint64_t steps, double g) {
  using Opt = asyncopt::AsyncOptimizer<double, Rule, Policy, Simulated>;
  const Opt opt(rule, policy, transport);
  std::vector<double> w(1, 0.0);
  auto store = opt.attach(std::span<double>(w), 2);
  std::vector<typename Opt::store_type::Worker> handles;
  handles.push_back(store->worker(0));
  handles.push_back(store->worker(1));
  std::vector<std::vector<Recorded>> seen(2);
  // As the optimizer's workers do, the call that makes a worker's last step returns false.
  store->run(2, [&](std::size_t id) {
    std::vector<double> local(1);
    handles[id].pull(std::span<double>(local));
    seen[id].push_back(
        {.seen = handles[id].seen_version(), .pulled = local[0], .at = store->simulated_seconds()});
    const std::vector<double> gradient(1, g);
    REQUIRE(handles[id].push(std::span<const double>(gradient)).applied);
    handles[id].clock();
    if (seen[id].size() == steps) {
      handles[id].leave();
      return false;
    }
    return true;
  });
  struct Out {
    std::vector<std::vector<Recorded>> seen;
    asyncopt::StoreStats stats;
    double seconds = 0.0;
    double w = 0.0;
  };
  return Out{seen, store->stats(), store->simulated_seconds(), w[0]};
}

// Worker 0's steps take 1 s; worker 1's take 1 s, and 3 s every second step (steps 1, 3).
const Simulated straggling{
    .step_time = asyncopt::timing::Straggler{.step = 1.0, .worker = 1, .every = 2, .extra = 2.0}};

std::vector<double> starts(const std::vector<Recorded>& steps) {
  std::vector<double> out;
  out.reserve(steps.size());
  for (const Recorded& r : steps) {
    out.push_back(r.at);
  }
  return out;
}

std::vector<std::uint64_t> versions(const std::vector<Recorded>& steps) {
  std::vector<std::uint64_t> out;
  out.reserve(steps.size());
  for (const Recorded& r : steps) {
    out.push_back(r.seen);
  }
  return out;
}

}  // namespace

TEST_CASE("timed mode: pulls read the parameters at the step's start, pushes land at its end") {
  // Worker 0 runs [0,1] [1,2] [2,3] [3,4]; worker 1 runs [0,1] [1,4] [4,5] [5,8]. Landings,
  // ties by worker id: t=1 w0 w1, t=2 w0, t=3 w0, t=4 w0 w1, t=5 w1, t=8 w1, so the versions
  // at the starts are 0 2 3 4 (worker 0) and 0 2 6 7 (worker 1); worker 1's slow first step
  // lands after 3 of worker 0's: staleness 3.
  const auto out = timed_run(Sgd{.learning_rate = 1.0}, Locked{}, straggling, 4, 1.0);
  REQUIRE(versions(out.seen[0]) == std::vector<std::uint64_t>{0, 2, 3, 4});
  REQUIRE(versions(out.seen[1]) == std::vector<std::uint64_t>{0, 2, 6, 7});
  REQUIRE(starts(out.seen[0]) == std::vector<double>{0, 1, 2, 3});
  REQUIRE(starts(out.seen[1]) == std::vector<double>{0, 1, 4, 5});
  for (const auto& worker : out.seen) {
    for (const Recorded& r : worker) {
      REQUIRE(r.pulled == -static_cast<double>(r.seen));  // each update subtracts 1
    }
  }
  REQUIRE(out.w == -8.0);
  REQUIRE(out.stats.updates == 8);
  REQUIRE(out.stats.max_staleness() == 3);
  REQUIRE(out.stats.staleness_sum == 1 + 3);  // w1's first and second steps
  REQUIRE(out.stats.wait_seconds == 0.0);
  REQUIRE(out.seconds == 8.0);
}

TEST_CASE("timed mode under bounded staleness: the gate holds fast workers back") {
  using Ssp = asyncopt::consistency::BoundedStaleness<Locked>;
  SECTION("s = 0: bulk synchronous") {
    // Both run [0,1]; then w0 [1,2] and w1 [1,4]; w0 waits from 2 to 4; both [4,5]; then
    // w0 [5,6], its last step, and w1 [5,8]. Worker 1 never waits.
    const auto out = timed_run(Sgd{.learning_rate = 1.0}, Ssp{.staleness = 0}, straggling, 4, 1.0);
    REQUIRE(versions(out.seen[0]) == std::vector<std::uint64_t>{0, 2, 4, 6});
    REQUIRE(versions(out.seen[1]) == std::vector<std::uint64_t>{0, 2, 4, 6});
    REQUIRE(starts(out.seen[0]) == std::vector<double>{0, 1, 4, 5});
    REQUIRE(out.stats.max_staleness() == 1);
    REQUIRE(out.stats.wait_seconds == 2.0);
    REQUIRE(out.seconds == 8.0);
    REQUIRE(out.w == -8.0);
  }
  SECTION("s = 1: one clock ahead at most") {
    // w0 may start step c once w1 has ended c - 1: w0 [0,1] [1,2] [2,3]; its 4th step needs
    // w1 at 2, which ends its [1,4] at 4: w0 waits 1 s, runs [4,5] and leaves. w1: [0,1]
    // [1,4] [4,5] [5,8].
    const auto out = timed_run(Sgd{.learning_rate = 1.0}, Ssp{.staleness = 1}, straggling, 4, 1.0);
    REQUIRE(versions(out.seen[0]) == std::vector<std::uint64_t>{0, 2, 3, 5});
    REQUIRE(versions(out.seen[1]) == std::vector<std::uint64_t>{0, 2, 5, 7});
    REQUIRE(out.stats.wait_seconds == 1.0);
    REQUIRE(out.stats.max_staleness() == 2);
  }
  SECTION("unbounded: as without a gate") {
    const auto gated =
        timed_run(Sgd{.learning_rate = 1.0}, Ssp{.staleness = Ssp::unbounded}, straggling, 4, 1.0);
    const auto free = timed_run(Sgd{.learning_rate = 1.0}, Locked{}, straggling, 4, 1.0);
    REQUIRE(versions(gated.seen[0]) == versions(free.seen[0]));
    REQUIRE(versions(gated.seen[1]) == versions(free.seen[1]));
    REQUIRE(gated.stats.wait_seconds == 0.0);
  }
}

TEST_CASE("timed mode: delay compensation reads the parameters of the step's pull") {
  // The straggling schedule's landings with the versions their pulls saw, applied by hand:
  // w <- w - lr (g + lambda g^2 (w - w_seen)), w_seen the parameter after `seen` updates.
  const double lr = 0.1;
  const double lambda = 0.5;
  const double g = 2.0;
  const auto out =
      timed_run(asyncopt::update::DelayCompensated{.learning_rate = lr, .lambda = lambda}, Locked{},
                straggling, 4, g);
  const std::vector<std::uint64_t> landing_seen = {0, 0, 2, 3, 4, 2, 6, 7};
  std::vector<double> history = {0.0};
  for (const std::uint64_t seen : landing_seen) {
    const double w = history.back();
    history.push_back(w - lr * (g + lambda * g * g * (w - history[seen])));
  }
  REQUIRE(out.w == Approx(history.back()).epsilon(1e-15));
  REQUIRE(out.seen[1][2].pulled == Approx(history[6]).epsilon(1e-15));
  REQUIRE(history.back() != Approx(-lr * g * 8));  // the compensation mattered
}

TEST_CASE("timed mode with one worker is sequential SGD, and runs repeat exactly") {
  const auto sequential = train(SharedMemory{}, 1, 5);
  const Simulated timed{.step_time = asyncopt::timing::Straggler{.step = 0.5}};
  REQUIRE(train(timed, 1, 5) == sequential);
  asyncopt::Report first;
  asyncopt::Report second;
  const Simulated straggler{
      .step_time = asyncopt::timing::Straggler{.step = 1.0, .worker = 2, .every = 3, .extra = 4.0}};
  const auto a = train(straggler, 3, 7, &first);
  const auto b = train(straggler, 3, 7, &second);
  REQUIRE(a == b);
  REQUIRE(first.staleness == second.staleness);
  // Three equal workers land 0, 1 and 2 updates stale. With the straggler, worker 2's third
  // step runs from t = 2 to t = 7 while workers 0 and 1 land 5 steps each: staleness 10.
  asyncopt::Report equal;
  (void)train(Simulated{.step_time = asyncopt::timing::Straggler{.step = 1.0}}, 3, 7, &equal);
  REQUIRE(equal.max_staleness() == 2);
  REQUIRE(first.max_staleness() >= 10);
}

TEST_CASE("timed mode refuses a delay distribution and impossible step times") {
  const auto f = problem();
  auto attempt = [&](const Simulated& transport) {
    const asyncopt::AsyncOptimizer<double, Sgd, Locked, Simulated> opt(Sgd{.learning_rate = 0.05},
                                                                       Locked{}, transport);
    std::vector<double> w(f.dimension(), 0.0);
    (void)opt.optimize(f, std::span<double>(w), {.workers = 2, .batch_size = 3, .epochs = 1});
  };
  REQUIRE_THROWS_AS(
      attempt(Simulated{.delay = delay::fixed(2), .step_time = asyncopt::timing::Straggler{}}),
      std::invalid_argument);
  REQUIRE_THROWS_WITH(
      attempt(Simulated{.delay = delay::fixed(2), .step_time = asyncopt::timing::Straggler{}}),
      Catch::Contains("not both"));
  REQUIRE_THROWS_WITH(
      attempt(Simulated{.step_time = [](std::size_t, std::uint64_t) { return -1.0; }}),
      Catch::Contains("finite, non-negative"));
}

TEST_CASE("timed mode: a last step whose push is rejected still takes its time") {
  using Opt = asyncopt::AsyncOptimizer<double, Sgd, Locked, Simulated>;
  const Opt opt(Sgd{.learning_rate = 1.0}, Locked{},
                Simulated{.step_time = asyncopt::timing::Straggler{.step = 2.0}});
  std::vector<double> w(1, 0.0);
  auto store = opt.attach(std::span<double>(w), 1);
  auto handle = store->worker(0);
  int calls = 0;
  store->run(1, [&](std::size_t) {
    std::vector<double> local(1);
    handle.pull(std::span<double>(local));
    const double g = ++calls < 3 ? 1.0 : std::nan("");
    const std::vector<double> gradient(1, g);
    (void)handle.push(std::span<const double>(gradient));
    return calls < 3;
  });
  REQUIRE(calls == 3);
  REQUIRE(store->simulated_seconds() == 6.0);  // three steps of 2 s
  REQUIRE(store->stats().updates == 2);
  REQUIRE(store->stats().rejected == 1);
  REQUIRE(w[0] == -2.0);
}
