// The multilayer perceptron: its gradient against a central difference of the loss and
// against a separate, example-by-example implementation; training that a linear model cannot
// match; and malformed shapes refused.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/objective.hpp>

#include "support/same_bits.hpp"

using asyncopt::objective::Activation;
using asyncopt::objective::Mlp;
using asyncopt::objective::MlpShape;

namespace {

template <class T>
using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int classes = 3;

// 12 examples of 5 standard-normal features, labels 0..2.
template <class T>
std::pair<Dense<T>, Eigen::VectorXi> small_data() {
  std::mt19937 rng(2);
  std::normal_distribution<double> normal;
  Dense<T> x(12, 5);
  Eigen::VectorXi y(12);
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      x(i, j) = static_cast<T>(normal(rng));
    }
    y[i] = static_cast<int>(i % classes);
  }
  return {x, y};
}

// The same network, written example by example with plain loops: the mean cross-entropy of
// the batch plus the L2 term, and its gradient by back-propagation, in double.
struct Reference {
  std::vector<std::size_t> widths;  // input, hidden..., classes
  bool relu;
  bool intercept;
  double l2;

  [[nodiscard]] double act(double z) const { return relu ? std::max(0.0, z) : std::tanh(z); }
  [[nodiscard]] double slope(double a) const { return relu ? (a > 0.0 ? 1.0 : 0.0) : 1.0 - a * a; }

  // Returns the loss and adds its gradient into `grad`.
  double run(const std::vector<double>& w, const Dense<double>& x, const Eigen::VectorXi& y,
             const std::vector<std::size_t>& batch, std::vector<double>& grad) const {
    std::fill(grad.begin(), grad.end(), 0.0);
    const std::size_t layers = widths.size() - 1;
    std::vector<std::size_t> offset(layers);  // where layer l's weights start
    std::size_t at = 0;
    for (std::size_t l = 0; l < layers; ++l) {
      offset[l] = at;
      at += widths[l + 1] * widths[l] + (intercept ? widths[l + 1] : 0);
    }
    auto weight = [&](std::size_t l, std::size_t o, std::size_t i) {
      return offset[l] + o * widths[l] + i;
    };
    auto bias = [&](std::size_t l, std::size_t o) {
      return offset[l] + widths[l + 1] * widths[l] + o;
    };
    double loss = 0.0;
    const double scale = 1.0 / static_cast<double>(batch.size());
    for (const std::size_t e : batch) {
      std::vector<std::vector<double>> a(layers + 1);
      a[0].assign(x.row(static_cast<Eigen::Index>(e)).data(),
                  x.row(static_cast<Eigen::Index>(e)).data() + widths[0]);
      for (std::size_t l = 0; l < layers; ++l) {
        a[l + 1].assign(widths[l + 1], 0.0);
        for (std::size_t o = 0; o < widths[l + 1]; ++o) {
          double z = intercept ? w[bias(l, o)] : 0.0;
          for (std::size_t i = 0; i < widths[l]; ++i) {
            z += w[weight(l, o, i)] * a[l][i];
          }
          a[l + 1][o] = l + 1 < layers ? act(z) : z;
        }
      }
      const std::vector<double>& z = a[layers];
      const double top = *std::max_element(z.begin(), z.end());
      double total = 0.0;
      for (const double v : z) {
        total += std::exp(v - top);
      }
      const auto label = static_cast<std::size_t>(y[static_cast<Eigen::Index>(e)]);
      loss += scale * (top + std::log(total) - z[label]);
      std::vector<double> delta(z.size());
      for (std::size_t k = 0; k < z.size(); ++k) {
        delta[k] = scale * (std::exp(z[k] - top) / total - (k == label ? 1.0 : 0.0));
      }
      for (std::size_t l = layers; l-- > 0;) {
        std::vector<double> below(widths[l], 0.0);
        for (std::size_t o = 0; o < widths[l + 1]; ++o) {
          for (std::size_t i = 0; i < widths[l]; ++i) {
            grad[weight(l, o, i)] += delta[o] * a[l][i];
            below[i] += delta[o] * w[weight(l, o, i)];
          }
          if (intercept) {
            grad[bias(l, o)] += delta[o];
          }
        }
        for (std::size_t i = 0; i < widths[l]; ++i) {
          below[i] *= slope(a[l][i]);
        }
        delta = std::move(below);
      }
    }
    for (std::size_t l = 0; l < layers; ++l) {
      for (std::size_t k = 0; k < widths[l + 1] * widths[l]; ++k) {
        const double v = w[offset[l] + k];
        loss += 0.5 * l2 * v * v;
        grad[offset[l] + k] += l2 * v;
      }
    }
    return loss;
  }
};

struct Case {
  std::vector<std::size_t> hidden;
  Activation activation;
  bool intercept;
  double l2;
};

const std::vector<Case> cases = {
    {{4}, Activation::relu, true, 0.0},     {{4}, Activation::tanh, true, 0.2},
    {{4, 3}, Activation::relu, true, 0.1},  {{4, 3}, Activation::tanh, false, 0.0},
    {{6, 2}, Activation::tanh, true, 0.05},
};

}  // namespace

TEMPLATE_TEST_CASE("the MLP's gradient and loss equal an example-by-example reference", "", float,
                   double) {
  using T = TestType;
  const auto [x, y] = small_data<T>();
  const Dense<double> xd = x.template cast<double>();
  for (const Case& c : cases) {
    INFO("hidden " << c.hidden.size() << " layers, tanh " << (c.activation == Activation::tanh)
                   << ", intercept " << c.intercept << ", l2 " << c.l2);
    const Mlp<Dense<T>> f(x, y, classes, MlpShape{.hidden = c.hidden, .activation = c.activation},
                          {.l2 = c.l2, .intercept = c.intercept});
    std::vector<std::size_t> widths = {5};
    widths.insert(widths.end(), c.hidden.begin(), c.hidden.end());
    widths.push_back(classes);
    const Reference reference{widths, c.activation == Activation::relu, c.intercept, c.l2};
    const std::vector<T> w = f.initial_parameters(9);
    const std::vector<double> wd(w.begin(), w.end());
    const std::vector<std::size_t> batch = {3, 0, 11, 3, 7};
    std::vector<double> expected(f.dimension());
    reference.run(wd, xd, y, batch, expected);
    std::vector<T> grad(f.dimension(), std::numeric_limits<T>::quiet_NaN());
    f.gradient(w, batch, grad);
    const double tolerance = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    for (std::size_t j = 0; j < grad.size(); ++j) {
      INFO("parameter " << j);
      REQUIRE(std::abs(static_cast<double>(grad[j]) - expected[j]) <=
              tolerance * (1.0 + std::abs(expected[j])));
    }
    std::vector<std::size_t> all(12);
    std::iota(all.begin(), all.end(), std::size_t{0});
    std::vector<double> ignored(f.dimension());
    const double loss = reference.run(wd, xd, y, all, ignored);
    CHECK(f.loss(w) == Approx(loss).epsilon(std::is_same_v<T, float> ? 1e-5 : 1e-12));
  }
}

TEST_CASE("the MLP's gradient has the same bits wherever the caller's buffers lie") {
  // Wide enough layers that SIMD code runs, and buffers at every float offset of a 64-byte
  // line: a sum whose order followed the alignment would differ in its last bits.
  const auto [x, y] = small_data<float>();
  const Mlp<Dense<float>> f(x, y, classes, MlpShape{.hidden = {40, 24}}, {.l2 = 1e-3});
  const std::vector<float> w = f.initial_parameters(4);
  const std::vector<std::size_t> batch = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  asyncopt::test::require_same_bits_at_every_offset(f, w, batch);
}

// The reference above shares the formulas with the library; a central difference of the
// library's own loss does not.
TEST_CASE("the MLP's gradient equals a central difference of its loss") {
  const auto [x, y] = small_data<double>();
  for (const Case& c : cases) {
    INFO("hidden " << c.hidden.size() << " layers, tanh " << (c.activation == Activation::tanh));
    const Mlp<Dense<double>> f(x, y, classes,
                               MlpShape{.hidden = c.hidden, .activation = c.activation},
                               {.l2 = c.l2, .intercept = c.intercept});
    std::vector<double> w = f.initial_parameters(4);
    std::vector<std::size_t> all(12);
    std::iota(all.begin(), all.end(), std::size_t{0});
    std::vector<double> grad(f.dimension());
    f.gradient(w, all, grad);
    constexpr double h = 1e-6;
    for (std::size_t j = 0; j < w.size(); ++j) {
      const double saved = w[j];
      w[j] = saved + h;
      const double up = f.loss(w);
      w[j] = saved - h;
      const double down = f.loss(w);
      w[j] = saved;
      INFO("parameter " << j);
      REQUIRE(std::abs(grad[j] - (up - down) / (2 * h)) <= 1e-6 * (1.0 + std::abs(grad[j])));
    }
  }
}

// Points in a square, class = whether |x| < 1 (about 31% inside). No linear model separates
// them: softmax regression stays near the majority share of 69%. The MLP, trained by
// optimize() with 4 workers in synchronous rounds (deterministic: the rounds sum in worker
// order, whatever the threads' timing), classifies over 90% of them right.
TEST_CASE("optimize() trains the MLP past what a linear model can reach", "[convergence]") {
  std::mt19937 rng(8);
  std::uniform_real_distribution<double> uniform(-1.6, 1.6);
  Dense<float> x(2000, 2);
  Eigen::VectorXi y(2000);
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    x(i, 0) = static_cast<float>(uniform(rng));
    x(i, 1) = static_cast<float>(uniform(rng));
    y[i] = x.row(i).norm() < 1.0F ? 1 : 0;
  }
  const Mlp<Dense<float>> f(x, y, 2, MlpShape{.hidden = {32}, .activation = Activation::tanh});
  std::vector<float> w = f.initial_parameters(1);
  const auto report =
      asyncopt::AsyncOptimizer<float, asyncopt::update::HeavyBall,
                               asyncopt::consistency::Synchronous>(
          asyncopt::update::HeavyBall{.learning_rate = 0.1, .momentum = 0.9})
          .optimize(f, std::span<float>(w), {.workers = 4, .batch_size = 16, .epochs = 100});
  INFO("loss " << report.loss.front() << " -> " << report.loss.back() << ", accuracy "
               << f.accuracy(w));
  CHECK(f.accuracy(w) > 0.9);

  const asyncopt::objective::SoftmaxRegression<Dense<float>> linear(x, y, 2);
  std::vector<float> v(linear.dimension(), 0.0F);
  (void)asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::Synchronous>(
      asyncopt::update::Sgd{.learning_rate = 0.1})
      .optimize(linear, std::span<float>(v), {.workers = 4, .batch_size = 16, .epochs = 20});
  CHECK(linear.accuracy(v) < 0.75);
}

TEST_CASE("malformed MLP shapes and labels are refused in one sentence") {
  const auto [x, y] = small_data<double>();
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(Mlp<Dense<double>>(x, y, classes, MlpShape{.hidden = {}}),
                    Contains("one or two hidden layers, got 0"));
  CHECK_THROWS_WITH(Mlp<Dense<double>>(x, y, classes, MlpShape{.hidden = {2, 2, 2}}),
                    Contains("one or two hidden layers, got 3"));
  CHECK_THROWS_WITH(Mlp<Dense<double>>(x, y, classes, MlpShape{.hidden = {4, 0}}),
                    Contains("a hidden layer's width must be at least 1"));
  CHECK_THROWS_WITH(Mlp<Dense<double>>(x, y, 2), Contains("the label at row 2 is 2"));
  const Mlp<Dense<double>> f(x, y, classes);
  std::vector<double> w(3);
  CHECK_THROWS_AS(f.loss(w), std::invalid_argument);
  CHECK(f.dimension() == 5 * 128 + 128 + 128 * 3 + 3);
}
