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
