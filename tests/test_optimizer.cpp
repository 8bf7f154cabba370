// optimize(): convergence for every consistency policy and worker count, the Report, the
// stopping criteria, and validation before anything is touched.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/objective.hpp>

using asyncopt::Options;
using asyncopt::StopReason;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::update::Sgd;

namespace {

template <class Scalar>
using Dense = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using Vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

// y = X w* + noise, with X standard normal.
template <class Scalar>
struct Regression {
  Dense<Scalar> x;
  Vec<Scalar> y;
};

template <class Scalar>
Regression<Scalar> planted_regression(Eigen::Index n, Eigen::Index d, double noise, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Regression<Scalar> r{Dense<Scalar>(n, d), Vec<Scalar>(n)};
  Eigen::VectorXd w_star(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    w_star[j] = normal(rng);
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    double target = 0.0;
    for (Eigen::Index j = 0; j < d; ++j) {
      r.x(i, j) = static_cast<Scalar>(normal(rng));
      target += static_cast<double>(r.x(i, j)) * w_star[j];
    }
    r.y[i] = static_cast<Scalar>(target + noise * normal(rng));
  }
  return r;
}

// The least-squares optimum from the normal equations, solved in double.
template <class Scalar>
Eigen::VectorXd normal_equations(const Regression<Scalar>& r) {
  const Eigen::MatrixXd x = r.x.template cast<double>();
  const Eigen::VectorXd y = r.y.template cast<double>();
  return (x.transpose() * x).ldlt().solve(x.transpose() * y);
}

// Checks the policy with 1, 2 and 4 workers against the closed-form optimum.
template <class Scalar, class Consistency>
void check_least_squares_converges(const Consistency& policy, double tolerance,
                                   Eigen::Index d = 12) {
  const auto data = planted_regression<Scalar>(800, d, 0.01, 11);
  const Eigen::VectorXd optimum = normal_equations(data);
  const asyncopt::objective::LeastSquares<Dense<Scalar>> f(data.x, data.y,
                                                           {.l2 = 0.0, .intercept = false});
  const asyncopt::AsyncOptimizer<Scalar, Sgd, Consistency> opt(Sgd{.learning_rate = 0.02}, policy);
  for (const std::size_t workers : {1, 2, 4}) {
    INFO("workers = " << workers);
    std::vector<Scalar> w(static_cast<std::size_t>(d), Scalar{0});
    const auto report =
        opt.optimize(f, std::span<Scalar>(w), {.workers = workers, .batch_size = 4, .epochs = 40});
    REQUIRE(report.epochs == 40);
    REQUIRE(report.updates == 40U * 200U);
    double error = 0.0;
    for (Eigen::Index j = 0; j < 12; ++j) {
      error = std::max(error,
                       std::abs(static_cast<double>(w[static_cast<std::size_t>(j)]) - optimum[j]));
    }
    INFO("max |w - w_opt| = " << error);
    REQUIRE(error < tolerance);
  }
}

}  // namespace

// The stated tolerance: constant-step SGD settles in a ball around the optimum whose radius
// scales with lr * noise^2; with lr = 0.02 and noise 0.01 it is far below 2e-3.
TEMPLATE_TEST_CASE("least squares converges to the normal-equations optimum under Locked",
                   "[convergence]", float, double) {
  check_least_squares_converges<TestType>(Locked{.stripes = 1}, 2e-3);
}

TEMPLATE_TEST_CASE("least squares converges to the normal-equations optimum under striped Locked",
                   "[convergence]", float, double) {
  const Locked striped{.stripes = 4, .min_stripe_elements = 1};
  // 40 parameters in stripes of 16: three stripes, each with its own lock.
  REQUIRE(Locked::Guard<TestType>(striped, 40, 1).stripes() == 3);
  check_least_squares_converges<TestType>(striped, 2e-3, 40);
}

TEMPLATE_TEST_CASE("least squares converges to the normal-equations optimum under LockFree",
                   "[convergence]", float, double) {
  check_least_squares_converges<TestType>(LockFree{}, 2e-3);
}

TEST_CASE("least squares on sparse data converges through sparse pushes", "[convergence]") {
  const auto data = planted_regression<double>(800, 12, 0.01, 12);
  const Eigen::VectorXd optimum = normal_equations(data);
  using Sparse = Eigen::SparseMatrix<double, Eigen::RowMajor>;
  const Sparse x = data.x.sparseView();
  const asyncopt::objective::LeastSquares<Sparse> f(x, data.y, {.l2 = 0.0, .intercept = false});
  STATIC_REQUIRE(asyncopt::SparseObjective<decltype(f), double>);
  const asyncopt::AsyncOptimizer<double, Sgd, LockFree> opt(Sgd{.learning_rate = 0.02});
  std::vector<double> w(12, 0.0);
  const auto report =
      opt.optimize(f, std::span<double>(w), {.workers = 2, .batch_size = 4, .epochs = 40});
  REQUIRE(report.updates == 40U * 200U);
  for (Eigen::Index j = 0; j < 12; ++j) {
    REQUIRE(std::abs(w[static_cast<std::size_t>(j)] - optimum[j]) < 2e-3);
  }
}

namespace {

// A binary classification set from a planted logistic model.
template <class Scalar>
std::pair<Dense<Scalar>, Vec<Scalar>> planted_classification(Eigen::Index n, Eigen::Index d,
                                                             unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  Dense<Scalar> x(n, d);
  Vec<Scalar> y(n);
  Eigen::VectorXd w_star(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    w_star[j] = normal(rng);
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    double z = 0.5;
    for (Eigen::Index j = 0; j < d; ++j) {
      x(i, j) = static_cast<Scalar>(normal(rng));
      z += static_cast<double>(x(i, j)) * w_star[j];
    }
    y[i] = uniform(rng) < 1.0 / (1.0 + std::exp(-z)) ? Scalar{1} : Scalar{0};
  }
  return {x, y};
}

// The optimum of a smooth, strongly convex objective by full-batch gradient descent in
// double, run until the gradient vanishes: an independent reference for the loss.
template <class F>
double reference_minimum(const F& f, double step, int max_iterations) {
  const std::size_t n = f.dimension();
  std::vector<double> w(n, 0.0);
  std::vector<double> g(n);
  std::vector<std::size_t> all(f.num_examples());
  std::iota(all.begin(), all.end(), std::size_t{0});
  for (int it = 0; it < max_iterations; ++it) {
    f.gradient(std::span<const double>(w), all, std::span<double>(g));
    double norm = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
      w[j] -= step * g[j];
      norm += g[j] * g[j];
    }
    if (std::sqrt(norm) < 1e-10) {
      break;
    }
  }
  return f.loss(std::span<const double>(w));
}

}  // namespace

TEST_CASE("asynchronous logistic regression ends within 1% of the serial optimum's loss",
          "[convergence]") {
  const auto [x, y] = planted_classification<double>(1500, 10, 21);
  using Dense64 = Dense<double>;
  const asyncopt::objective::LogisticRegression<Dense64> exact(x, y, {.l2 = 1e-2});
  const double optimum = reference_minimum(exact, 1.0, 20000);

  const asyncopt::objective::LogisticRegression<Dense<float>> f(x.cast<float>(), y.cast<float>(),
                                                                {.l2 = 1e-2});
  for (const std::size_t workers : {2, 4}) {
    INFO("workers = " << workers);
    const asyncopt::AsyncOptimizer<float, Sgd, LockFree> opt(Sgd{.learning_rate = 0.05});
    std::vector<float> w(f.dimension(), 0.0f);
    const auto report =
        opt.optimize(f, std::span<float>(w), {.workers = workers, .batch_size = 8, .epochs = 30});
    INFO("optimum " << optimum << ", asynchronous " << report.final_loss());
    REQUIRE(report.final_loss() >= optimum * (1.0 - 1e-6));
    REQUIRE(report.final_loss() <= optimum * 1.01);
    REQUIRE(report.loss.size() == 31);
    REQUIRE(report.loss.front() == Approx(std::log(2.0)));
  }
}

namespace {

// Wraps an objective and yields inside every gradient: a slow gradient, so that other workers
// push between a worker's pull and its push even on few cores. It also counts how often each
// example is used.
template <class F>
struct Observed {
  const F* inner;
  std::unique_ptr<std::atomic<int>[]> uses;

  explicit Observed(const F& f)
      : inner(&f), uses(std::make_unique<std::atomic<int>[]>(f.num_examples())) {}
  [[nodiscard]] std::size_t dimension() const { return inner->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return inner->num_examples(); }
  [[nodiscard]] double loss(std::span<const float> w) const { return inner->loss(w); }
  void gradient(std::span<const float> w, std::span<const std::size_t> batch,
                std::span<float> grad) const {
    for (const std::size_t i : batch) {
      uses[i].fetch_add(1, std::memory_order_relaxed);
    }
    std::this_thread::yield();
    inner->gradient(w, batch, grad);
  }
};

}  // namespace

TEST_CASE(
    "one worker sees no staleness, four workers see some, and the histogram counts every "
    "update") {
  const auto data = planted_regression<float>(400, 6, 0.1, 5);
  const asyncopt::objective::LeastSquares<Dense<float>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<float, Sgd, LockFree> opt(Sgd{.learning_rate = 0.01});
  std::vector<float> w(f.dimension(), 0.0f);

  const auto serial =
      opt.optimize(f, std::span<float>(w), {.workers = 1, .batch_size = 3, .epochs = 3});
  REQUIRE(serial.updates == 3U * 134U);
  REQUIRE(serial.staleness == std::vector<std::uint64_t>{serial.updates});
  REQUIRE(serial.max_staleness() == 0);

  // Repeated a few times: which staleness values occur depends on the scheduler, but over
  // thousands of slow steps on four threads some gradient is overtaken.
  std::uint64_t positive = 0;
  for (int attempt = 0; attempt < 5 && positive == 0; ++attempt) {
    const Observed<decltype(f)> slow(f);
    const auto parallel =
        opt.optimize(slow, std::span<float>(w), {.workers = 4, .batch_size = 1, .epochs = 5});
    std::uint64_t total = 0;
    for (const auto count : parallel.staleness) {
      total += count;
    }
    REQUIRE(total == parallel.updates);
    REQUIRE(parallel.updates == 5U * 400U);
    positive = parallel.updates - parallel.staleness[0];
  }
  REQUIRE(positive > 0);
}

TEST_CASE("every example is used exactly once per epoch, across workers") {
  const auto data = planted_regression<float>(1001, 3, 0.1, 6);
  const asyncopt::objective::LeastSquares<Dense<float>> f(data.x, data.y);
  const Observed<decltype(f)> observed(f);
  const asyncopt::AsyncOptimizer<float, Sgd, Locked> opt(Sgd{.learning_rate = 0.01});
  std::vector<float> w(f.dimension(), 0.0f);
  const auto report =
      opt.optimize(observed, std::span<float>(w), {.workers = 3, .batch_size = 7, .epochs = 4});
  REQUIRE(report.examples == 4U * 1001U);
  for (std::size_t i = 0; i < 1001; ++i) {
    REQUIRE(observed.uses[i].load() == 4);
  }
}

TEST_CASE("one worker with the same seed reproduces a run bit for bit, another seed does not") {
  const auto data = planted_regression<double>(300, 5, 0.1, 7);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 0.01});
  auto run = [&](std::uint64_t seed) {
    std::vector<double> w(f.dimension(), 0.0);
    (void)opt.optimize(f, std::span<double>(w),
                       {.workers = 1, .batch_size = 5, .epochs = 2, .seed = seed});
    return w;
  };
  REQUIRE(run(3) == run(3));
  REQUIRE(run(3) != run(4));
}

TEST_CASE("optimize stops on tolerance, target loss, time and callbacks") {
  const auto data = planted_regression<double>(500, 4, 0.0, 8);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, LockFree> opt(Sgd{.learning_rate = 0.05});

  SECTION("tolerance: the loss change over the last epoch is within it") {
    std::vector<double> w(f.dimension(), 0.0);
    const auto r = opt.optimize(f, std::span<double>(w),
                                {.workers = 2, .batch_size = 5, .epochs = 1000, .tolerance = 1e-9});
    REQUIRE(r.stop == StopReason::tolerance);
    REQUIRE(r.epochs < 1000);
    const auto n = r.loss.size();
    REQUIRE(std::abs(r.loss[n - 1] - r.loss[n - 2]) <= 1e-9);
  }
  SECTION("target loss") {
    std::vector<double> w(f.dimension(), 0.0);
    const auto r =
        opt.optimize(f, std::span<double>(w),
                     {.workers = 2, .batch_size = 5, .epochs = 1000, .target_loss = 1e-3});
    REQUIRE(r.stop == StopReason::target_loss);
    REQUIRE(r.final_loss() <= 1e-3);
    REQUIRE(r.loss[r.loss.size() - 2] > 1e-3);
  }
  SECTION("time: no epoch limit, a wall-time limit") {
    std::vector<double> w(f.dimension(), 0.0);
    const auto r = opt.optimize(f, std::span<double>(w),
                                {.workers = 2, .batch_size = 1, .epochs = 0, .max_seconds = 0.2});
    REQUIRE(r.stop == StopReason::time);
    REQUIRE(r.seconds >= 0.2);
    REQUIRE(r.updates > 0);
  }
  SECTION("a callback returning false stops after its epoch; one returning void never does") {
    std::vector<double> w(f.dimension(), 0.0);
    std::vector<std::size_t> seen;
    std::size_t calls = 0;
    const auto r = opt.optimize(
        f, std::span<double>(w), {.workers = 2, .epochs = 10},
        [&](const asyncopt::EpochInfo<double>& e) {
          seen.push_back(e.epoch);
          REQUIRE(e.loss == Approx(f.loss(e.params)));
          return e.epoch < 3;
        },
        [&](const asyncopt::EpochInfo<double>&) { ++calls; });
    REQUIRE(r.stop == StopReason::callback);
    REQUIRE(seen == std::vector<std::size_t>{1, 2, 3});
    REQUIRE(calls == 3);
    REQUIRE(r.epochs == 3);
  }
}

namespace {

// Throws on its first gradient; counts the gradients computed.
struct Throwing {
  std::atomic<int>* calls;
  [[nodiscard]] static std::size_t dimension() { return 2; }
  [[nodiscard]] static std::size_t num_examples() { return 20000; }
  [[nodiscard]] static double loss(std::span<const float> /*w*/) { return 1.0; }
  void gradient(std::span<const float> /*w*/, std::span<const std::size_t> /*batch*/,
                std::span<float> grad) const {
    if (calls->fetch_add(1) == 0) {
      throw std::runtime_error("the first gradient is broken");
    }
    // Slow enough that the others cannot finish their shards while the first exception is
    // being thrown (that can take milliseconds, more under sanitizers).
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    grad[0] = grad[1] = 0.0f;
  }
};

}  // namespace

TEST_CASE("an exception in a worker stops the others and reaches the caller") {
  const asyncopt::AsyncOptimizer<float, Sgd, LockFree> opt(Sgd{.learning_rate = 0.1});
  std::vector<float> w(2, 0.0f);
  std::atomic<int> calls{0};
  REQUIRE_THROWS_WITH(opt.optimize(Throwing{&calls}, std::span<float>(w),
                                   {.workers = 4, .batch_size = 1, .epochs = 3}),
                      "the first gradient is broken");
  // Without the stop, the other workers would finish the epoch: 20000 gradients. With it,
  // each stops at its next step.
  INFO("gradients computed: " << calls.load());
  REQUIRE(calls.load() < 10000);
}

namespace {

// A gradient that takes about a millisecond.
template <class F>
struct Slow {
  const F* inner;
  [[nodiscard]] std::size_t dimension() const { return inner->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return inner->num_examples(); }
  [[nodiscard]] double loss(std::span<const double> w) const { return inner->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    inner->gradient(w, batch, grad);
  }
};

}  // namespace

TEST_CASE("the time limit stops the workers in the middle of an epoch") {
  const auto data = planted_regression<double>(4000, 3, 0.1, 10);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, LockFree> opt(Sgd{.learning_rate = 0.01});
  std::vector<double> w(f.dimension(), 0.0);
  // An epoch is 2000 sleeping steps per worker (at least 2 s); the limit is 0.1 s.
  const auto r = opt.optimize(Slow<decltype(f)>{&f}, std::span<double>(w),
                              {.workers = 2, .batch_size = 1, .epochs = 5, .max_seconds = 0.1});
  REQUIRE(r.stop == StopReason::time);
  REQUIRE(r.epochs == 1);
  REQUIRE(r.examples < 4000);
  REQUIRE(r.updates == r.examples);
}

TEST_CASE("a diverging run stops with StopReason::diverged") {
  const auto data = planted_regression<double>(200, 4, 0.1, 13);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  // Far above 2 / L for this problem: the iterates blow up within an epoch or two.
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 50.0});
  std::vector<double> w(f.dimension(), 0.0);
  const auto r =
      opt.optimize(f, std::span<double>(w), {.workers = 1, .batch_size = 1, .epochs = 100});
  REQUIRE(r.stop == StopReason::diverged);
  REQUIRE(r.epochs < 100);
  REQUIRE_FALSE(std::isfinite(r.final_loss()));
}

namespace {

/// `inner` with a gradient that holds a NaN from example `first_bad` on: every push of
/// such an example is rejected by the store.
template <class F>
struct NanGradient {
  const F* inner;
  std::size_t first_bad = 0;
  [[nodiscard]] std::size_t dimension() const { return inner->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return inner->num_examples(); }
  [[nodiscard]] double loss(std::span<const double> w) const { return inner->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    inner->gradient(w, batch, grad);
    if (std::ranges::any_of(batch, [&](std::size_t id) { return id >= first_bad; })) {
      grad[0] = std::numeric_limits<double>::quiet_NaN();
    }
  }
};

}  // namespace

TEST_CASE("a run whose every gradient is rejected stops after one epoch, saying so") {
  const auto data = planted_regression<double>(100, 3, 0.1, 21);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 0.01});
  std::vector<double> w(f.dimension(), 0.5);
  const auto before = w;
  const auto r = opt.optimize(NanGradient<decltype(f)>{&f}, std::span<double>(w),
                              {.workers = 2, .batch_size = 5, .epochs = 10});
  REQUIRE(r.stop == StopReason::all_rejected);
  REQUIRE(to_string(r.stop) == "all gradients rejected");
  REQUIRE(r.epochs == 1);
  REQUIRE(r.updates == 0);
  REQUIRE(r.rejected == 20);  // 100 examples in batches of 5
  REQUIRE(w == before);
  REQUIRE(std::isfinite(r.final_loss()));
}

TEST_CASE("every consistency policy and transport stops a run whose gradients are all rejected") {
  const auto data = planted_regression<double>(64, 3, 0.1, 23);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const NanGradient<decltype(f)> nan_gradients{&f};
  const Options options{.workers = 2, .batch_size = 4, .epochs = 5};
  auto check = [&](const auto& optimizer) {
    std::vector<double> w(f.dimension(), 0.25);
    const auto before = w;
    const auto r = optimizer.optimize(nan_gradients, std::span<double>(w), options);
    CHECK(r.stop == StopReason::all_rejected);
    CHECK(r.epochs == 1);
    CHECK(r.updates == 0);
    CHECK(r.rejected == 16);  // 64 examples in batches of 4
    CHECK(w == before);
  };
  SECTION("LockFree") {
    check(asyncopt::AsyncOptimizer<double, Sgd, LockFree>(Sgd{.learning_rate = 0.01}));
  }
  SECTION("BoundedStaleness") {
    check(asyncopt::AsyncOptimizer<double, Sgd, asyncopt::consistency::BoundedStaleness<>>(
        Sgd{.learning_rate = 0.01}, {.staleness = 1}));
  }
  SECTION("Synchronous, whose updates count rounds") {
    check(asyncopt::AsyncOptimizer<double, Sgd, asyncopt::consistency::Synchronous>(
        Sgd{.learning_rate = 0.01}));
  }
  SECTION("the simulator") {
    check(asyncopt::AsyncOptimizer<double, Sgd, Locked, asyncopt::transport::Simulated>(
        Sgd{.learning_rate = 0.01}, {},
        asyncopt::transport::Simulated{.delay = asyncopt::delay::fixed(1), .seed = 3}));
  }
}

TEST_CASE("a time limit or a callback that stops the run comes before all_rejected") {
  const auto data = planted_regression<double>(64, 3, 0.1, 24);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 0.01});
  std::vector<double> w(f.dimension(), 0.0);
  const auto r = opt.optimize(NanGradient<decltype(f)>{&f}, std::span<double>(w),
                              {.workers = 1, .batch_size = 4, .epochs = 5},
                              [](const asyncopt::EpochInfo<double>&) { return false; });
  CHECK(r.stop == StopReason::callback);
  CHECK(r.updates == 0);
}

TEST_CASE("a run in which only some gradients are rejected runs its epochs") {
  const auto data = planted_regression<double>(100, 3, 0.1, 22);
  const asyncopt::objective::LeastSquares<Dense<double>> f(data.x, data.y);
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 0.01});
  std::vector<double> w(f.dimension(), 0.0);
  // Examples 90..99 give NaN: the batches holding one are rejected, the others applied.
  const auto r = opt.optimize(NanGradient<decltype(f)>{&f, 90}, std::span<double>(w),
                              {.workers = 1, .batch_size = 1, .epochs = 3});
  REQUIRE(r.stop == StopReason::epochs);
  REQUIRE(r.updates == 270);
  REQUIRE(r.rejected == 30);
}

TEMPLATE_TEST_CASE("every validation error names its cause and leaves the parameters untouched", "",
                   float, double) {
  const auto data = planted_regression<TestType>(50, 3, 0.1, 9);
  const asyncopt::objective::LeastSquares<Dense<TestType>> f(data.x, data.y);  // dimension 4
  const asyncopt::AsyncOptimizer<TestType, Sgd, Locked> opt(Sgd{.learning_rate = 0.1});
  std::vector<TestType> w = {TestType{1}, TestType{2}, TestType{3}, TestType{4}};
  const auto before = w;
  auto fails_with = [&](const auto& optimizer, std::span<TestType> params, const Options& o,
                        const std::string& message) {
    REQUIRE_THROWS_AS(optimizer.optimize(f, params, o), std::invalid_argument);
    REQUIRE_THROWS_WITH(optimizer.optimize(f, params, o), Catch::Contains(message));
    REQUIRE(w == before);
  };
  fails_with(opt, w, {.workers = 0}, "workers must be at least 1");
  fails_with(opt, w, {.batch_size = 0}, "batch_size must be at least 1");
  fails_with(opt, std::span<TestType>(w).first(3), {},
             "the parameter span has 3 elements but the objective's dimension is 4");
  fails_with(opt, w, {.workers = 51}, "workers is 51 but the objective has only 50 examples");
  fails_with(opt, w, {.epochs = 0}, "no other stopping criterion");
  fails_with(opt, w, {.tolerance = -1.0}, "tolerance must be finite and non-negative");
  fails_with(opt, w, {.max_seconds = -2.0}, "max_seconds must be finite and non-negative");
  fails_with(opt, w, {.target_loss = 0.5, .evaluate_loss = false}, "evaluate_loss must be true");
  const asyncopt::AsyncOptimizer<TestType, Sgd, Locked> bad_rate(Sgd{.learning_rate = -0.1});
  fails_with(bad_rate, w, {}, "learning_rate must be positive and finite");
  const asyncopt::AsyncOptimizer<TestType, Sgd, Locked> bad_stripes(Sgd{}, Locked{.stripes = 0});
  fails_with(bad_stripes, w, {}, "stripes must be at least 1");
}
