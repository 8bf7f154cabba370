// STORM's gradient estimator (Options::storm): a = 1 is the rule alone, deterministic
// gradients make it gradient descent, and on a noise model the estimate's error has the
// stationary variance a sigma^2 / (2 - a).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/objective.hpp>

using asyncopt::Options;
using asyncopt::Storm;
using asyncopt::consistency::Locked;
using asyncopt::consistency::Synchronous;
using asyncopt::update::Adam;
using asyncopt::update::Sgd;

namespace {

using Dense = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LeastSquares = asyncopt::objective::LeastSquares<Dense>;

// y = X w* + noise with X standard normal.
LeastSquares planted(Eigen::Index n, Eigen::Index d, unsigned seed) {
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
    y[i] = x.row(i).dot(w_star) + 0.1 * normal(rng);
  }
  return LeastSquares(std::move(x), std::move(y), {.l2 = 0.0, .intercept = false});
}

// Runs `Rule` under `Policy` from zero and returns the parameters.
template <class Rule, class Policy = Locked, class F>
std::vector<double> train(const F& f, const Rule& rule, const Options& options) {
  std::vector<double> w(f.dimension(), 0.0);
  const auto report = asyncopt::AsyncOptimizer<double, Rule, Policy>(rule).optimize(
      f, std::span<double>(w), options);
  CHECK(report.rejected == 0);
  return w;
}

// Every step's gradient is the full-batch gradient, whatever the batch: deterministic.
struct FullBatch {
  const LeastSquares* f;
  std::vector<std::size_t> all;

  [[nodiscard]] std::size_t dimension() const { return f->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return all.size(); }
  [[nodiscard]] double loss(std::span<const double> w) const { return f->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> /*batch*/,
                std::span<double> grad) const {
    f->gradient(w, all, grad);
  }
};

}  // namespace

TEST_CASE("STORM with a = 1 is the rule alone, bit for bit") {
  const LeastSquares f = planted(300, 8, 3);
  Options options{.workers = 1, .batch_size = 5, .epochs = 3, .seed = 7};
  const std::vector<double> sgd = train(f, Sgd{.learning_rate = 0.02}, options);
  const std::vector<double> adam = train(f, Adam{.learning_rate = 0.01}, options);
  Options sync_options = options;
  sync_options.workers = 3;
  const std::vector<double> sync =
      train<Sgd, Synchronous>(f, Sgd{.learning_rate = 0.02}, sync_options);
  options.storm = Storm{.a = 1.0};
  sync_options.storm = Storm{.a = 1.0};
  CHECK(train(f, Sgd{.learning_rate = 0.02}, options) == sgd);
  CHECK(train(f, Adam{.learning_rate = 0.01}, options) == adam);
  CHECK(train<Sgd, Synchronous>(f, Sgd{.learning_rate = 0.02}, sync_options) == sync);
  CHECK(std::abs(sgd[0]) > 0.1);
}

// With g(x; xi) = grad f(x), d_{t-1} = grad f(x_{t-1}) is exactly the gradient computed
// again at x_{t-1}, so the correction is zero and d_t = grad f(x_t): gradient descent.
TEST_CASE("STORM with deterministic gradients is gradient descent, bit for bit") {
  const LeastSquares f = planted(200, 6, 5);
  FullBatch full{&f, std::vector<std::size_t>(200)};
  std::iota(full.all.begin(), full.all.end(), std::size_t{0});
  Options options{.workers = 1, .batch_size = 20, .epochs = 4};
  const std::vector<double> descent = train(full, Sgd{.learning_rate = 0.1}, options);
  for (const double a : {0.05, 0.3, 0.9}) {
    INFO("a = " << a);
    options.storm = Storm{.a = a};
    CHECK(train(full, Sgd{.learning_rate = 0.1}, options) == descent);
  }
  // ... and not what STORM does with stochastic gradients.
  options.storm = Storm{.a = 0.3};
  CHECK(train(f, Sgd{.learning_rate = 0.1}, options) !=
        train(f, Sgd{.learning_rate = 0.1}, Options{.workers = 1, .batch_size = 20, .epochs = 4}));
}

namespace {

// f = 0, and the gradient of example e is sigma z(e, i) in coordinate i, z standard normal
// drawn from (e, i): the same noise wherever the batch is evaluated, as a mini-batch's is.
// The objective remembers the parameters of each step's first gradient (x_t), so that with
// Sgd at learning rate 1 the test can read the pushed estimate d_t = x_t - x_{t+1}.
struct NoiseModel {
  std::size_t n;
  std::size_t examples;
  double sigma;
  mutable std::vector<double> last_step;  // x_t of the latest step
  mutable std::size_t last_example = static_cast<std::size_t>(-1);

  [[nodiscard]] std::size_t dimension() const { return n; }
  [[nodiscard]] std::size_t num_examples() const { return examples; }
  [[nodiscard]] static double loss(std::span<const double> /*w*/) { return 0.0; }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    const std::size_t e = batch[0];
    if (e != last_example) {  // the step's first gradient: at x_t
      last_step.assign(w.begin(), w.end());
      last_example = e;
    }
    std::mt19937_64 rng(0x9e3779b97f4a7c15ULL * (e + 1));
    std::normal_distribution<double> normal;
    for (std::size_t i = 0; i < n; ++i) {
      grad[i] = sigma * normal(rng);
    }
  }
};

}  // namespace

// e_t = d_t - grad f(x_t) = a xi_t + (1 - a) e_{t-1}: an AR(1) process of stationary
// variance a sigma^2 / (2 - a). After 80 steps the start is forgotten ((1 - a)^80 < 1e-7 for
// a >= 0.2); the last step's errors over 4000 independent coordinates estimate the variance
// with a standard error of sqrt(2 / 4000) of it.
TEST_CASE("STORM's estimate has the error variance a sigma^2 / (2 - a) on a noise model") {
  constexpr std::size_t n = 4000;
  constexpr std::size_t steps = 80;
  constexpr double sigma = 0.5;
  for (const double a : {0.2, 0.5, 1.0}) {
    INFO("a = " << a);
    NoiseModel model{.n = n, .examples = steps, .sigma = sigma, .last_step = {}};
    std::vector<double> w(n, 0.0);
    const auto report = asyncopt::AsyncOptimizer<double, Sgd, Locked>(Sgd{.learning_rate = 1.0})
                            .optimize(model, std::span<double>(w),
                                      {.workers = 1,
                                       .batch_size = 1,
                                       .epochs = 1,
                                       .evaluate_loss = false,
                                       .storm = Storm{.a = a}});
    REQUIRE(report.updates == steps);
    double variance = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double error = model.last_step[i] - w[i];  // d_T, and grad f = 0
      variance += error * error;
    }
    variance /= static_cast<double>(n);
    const double expected = a * sigma * sigma / (2.0 - a);
    const double standard_error = expected * std::sqrt(2.0 / static_cast<double>(n));
    INFO("variance " << variance << ", expected " << expected << " +- " << standard_error);
    CHECK(std::abs(variance - expected) <= 3.0 * standard_error);
  }
}

TEST_CASE("a STORM weight of 0, below 0, above 1 or NaN is refused in one sentence") {
  const LeastSquares f = planted(20, 2, 1);
  std::vector<double> w = {1.0, 2.0};
  const asyncopt::AsyncOptimizer<double, Sgd, Locked> opt(Sgd{.learning_rate = 0.1});
  for (const double a : {0.0, -0.5, 1.5, std::nan("")}) {
    INFO("a = " << a);
    CHECK_THROWS_WITH(
        opt.optimize(f, std::span<double>(w), {.workers = 1, .storm = Storm{.a = a}}),
        Catch::Matchers::StartsWith("asyncopt: Options::storm.a must be in (0, 1], got "));
  }
  CHECK(w == std::vector<double>{1.0, 2.0});
}

namespace {

// Least squares whose gradient on example 3 is infinite in its first coordinate.
struct OneBadExample {
  const LeastSquares* f;
  [[nodiscard]] std::size_t dimension() const { return f->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return f->num_examples(); }
  [[nodiscard]] double loss(std::span<const double> w) const { return f->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    f->gradient(w, batch, grad);
    if (std::find(batch.begin(), batch.end(), std::size_t{3}) != batch.end()) {
      grad[0] = std::numeric_limits<double>::infinity();
    }
  }
};

}  // namespace

// The store rejects the estimate the bad batch makes, and the worker does not carry it: its
// next step starts afresh, so only that one push is lost (as without STORM).
TEST_CASE("a rejected STORM estimate is not carried into the next steps") {
  const LeastSquares f = planted(100, 4, 2);
  for (const double a : {0.3, 1.0}) {
    INFO("a = " << a);
    std::vector<double> w(4, 0.0);
    const auto report =
        asyncopt::AsyncOptimizer<double, Sgd, Locked>(Sgd{.learning_rate = 0.05})
            .optimize(OneBadExample{&f}, std::span<double>(w),
                      {.workers = 1, .batch_size = 1, .epochs = 2, .storm = Storm{.a = a}});
    CHECK(report.rejected == 2);  // example 3 once per epoch
    CHECK(report.updates == 198);
    CHECK(report.loss.back() < 0.1 * report.loss.front());
  }
}
