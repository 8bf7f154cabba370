// The linear-model objectives: gradients against finite differences, closed forms, the
// sparse gradient against the dense one, input validation and numerical stability.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <catch2/catch.hpp>

#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/objective/objective.hpp>

#include "support/same_bits.hpp"

namespace {

using asyncopt::SparseGradient;
using asyncopt::objective::LeastSquares;
using asyncopt::objective::LogisticRegression;
using asyncopt::objective::Options;
using asyncopt::objective::SoftmaxRegression;

template <class T>
using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColumnMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using Sparse = Eigen::SparseMatrix<T, Eigen::RowMajor>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// ---- Which concepts each type models ---------------------------------------------------------

template <template <class> class Objective, class T>
constexpr bool models_as_intended() {
  return asyncopt::Objective<Objective<Dense<T>>, T> &&
         !asyncopt::SparseObjective<Objective<Dense<T>>, T> &&
         asyncopt::Objective<Objective<ColumnMajor<T>>, T> &&
         !asyncopt::SparseObjective<Objective<ColumnMajor<T>>, T> &&
         asyncopt::SparseObjective<Objective<Sparse<T>>, T>;
}

static_assert(models_as_intended<LeastSquares, float>());
static_assert(models_as_intended<LeastSquares, double>());
static_assert(models_as_intended<LogisticRegression, float>());
static_assert(models_as_intended<LogisticRegression, double>());
static_assert(models_as_intended<SoftmaxRegression, float>());
static_assert(models_as_intended<SoftmaxRegression, double>());
// Parameters are in the data's scalar type.
static_assert(!asyncopt::Objective<LeastSquares<Dense<float>>, double>);
static_assert(!asyncopt::Objective<SoftmaxRegression<Sparse<double>>, float>);

// The public bases, and the data they accept.
using asyncopt::objective::DataMatrix;
using asyncopt::objective::ModelData;
using asyncopt::objective::SingleOutputModel;
static_assert(DataMatrix<Dense<float>> && DataMatrix<ColumnMajor<double>> &&
              DataMatrix<Sparse<float>> && DataMatrix<Sparse<double>>);
static_assert(!DataMatrix<Eigen::SparseMatrix<double>> && !DataMatrix<Dense<int>> &&
              !DataMatrix<Vec<double>>);
static_assert(std::is_base_of_v<SingleOutputModel<Dense<float>, asyncopt::objective::SquaredLoss>,
                                LeastSquares<Dense<float>>>);
static_assert(
    std::is_base_of_v<SingleOutputModel<Sparse<double>, asyncopt::objective::LogisticLoss>,
                      LogisticRegression<Sparse<double>>>);
static_assert(std::is_base_of_v<ModelData<Sparse<double>, Eigen::VectorXi>,
                                SoftmaxRegression<Sparse<double>>>);

// ---- A small problem shared by the tests -----------------------------------------------------

enum class Kind { least_squares, logistic, softmax };
constexpr int classes = 3;
constexpr Eigen::Index rows = 12;
constexpr Eigen::Index features = 7;
constexpr Eigen::Index zero_row = 5;

struct Problem {
  Dense<double> x;        // about half zeros, and row `zero_row` entirely zero
  Vec<double> target;     // least squares
  Vec<double> binary;     // logistic
  Eigen::VectorXi label;  // softmax
};

Problem make_problem() {
  std::mt19937 rng(20240611);
  std::uniform_real_distribution<double> value(-1.5, 1.5);
  std::bernoulli_distribution present(0.5);
  Problem p{Dense<double>::Zero(rows, features), Vec<double>(rows), Vec<double>(rows),
            Eigen::VectorXi(rows)};
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < features; ++j) {
      if (i != zero_row && present(rng)) {
        p.x(i, j) = value(rng);
      }
    }
    p.target[i] = value(rng);
    p.binary[i] = static_cast<double>(i % 2);
    p.label[i] = static_cast<int>(i % classes);
  }
  return p;
}

const Problem& problem() {
  static const Problem p = make_problem();
  return p;
}

std::vector<std::size_t> all_rows() {
  std::vector<std::size_t> r(static_cast<std::size_t>(rows));
  std::iota(r.begin(), r.end(), std::size_t{0});
  return r;
}

template <class Matrix>
constexpr bool is_sparse = std::is_base_of_v<Eigen::SparseMatrixBase<Matrix>, Matrix>;

template <class Matrix>
Matrix convert(const Dense<double>& x) {
  using T = typename Matrix::Scalar;
  if constexpr (is_sparse<Matrix>) {
    Matrix s = x.cast<T>().sparseView();
    s.makeCompressed();
    return s;
  } else {
    return Matrix(x.cast<T>());
  }
}

template <class V>
V select(const V& v, std::span<const std::size_t> ids) {
  V out(static_cast<Eigen::Index>(ids.size()), v.cols());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    out.row(static_cast<Eigen::Index>(k)) = v.row(static_cast<Eigen::Index>(ids[k]));
  }
  return out;
}

/// The problem's objective of the given kind over the examples `ids` (repeats allowed).
template <Kind kind, class Matrix>
auto make(std::span<const std::size_t> ids, Options options) {
  using T = typename Matrix::Scalar;
  const Problem& p = problem();
  Matrix x = convert<Matrix>(select(p.x, ids));
  if constexpr (kind == Kind::least_squares) {
    return LeastSquares<Matrix>(std::move(x), select(p.target, ids).cast<T>(), options);
  } else if constexpr (kind == Kind::logistic) {
    return LogisticRegression<Matrix>(std::move(x), select(p.binary, ids).cast<T>(), options);
  } else {
    return SoftmaxRegression<Matrix>(std::move(x), select(p.label, ids), classes, options);
  }
}

/// Parameters in T, spread enough that logistic and softmax are away from their flat regions.
template <class T>
std::vector<T> random_parameters(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> value(-0.8, 0.8);
  std::vector<T> w(n);
  for (auto& v : w) {
    v = static_cast<T>(value(rng));
  }
  return w;
}

template <class To, class From>
std::vector<To> cast(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

/// (f(w + h e_j) - f(w - h e_j)) / 2h for every j, on a double objective.
template <class F>
std::vector<double> central_difference(const F& f, std::vector<double> w) {
  constexpr double h = 1e-6;
  std::vector<double> g(w.size());
  for (std::size_t j = 0; j < w.size(); ++j) {
    const double saved = w[j];
    w[j] = saved + h;
    const double up = f.loss(w);
    w[j] = saved - h;
    const double down = f.loss(w);
    w[j] = saved;
    g[j] = (up - down) / (2 * h);
  }
  return g;
}

/// Relative-or-absolute tolerance of a gradient computed in T against a double reference.
template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 2e-5 : 1e-7;

template <class A, class B>
void require_close(const A& actual, const B& expected, double tol) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t j = 0; j < actual.size(); ++j) {
    INFO("coordinate " << j);
    const double a = static_cast<double>(actual[j]);
    const double e = static_cast<double>(expected[j]);
    REQUIRE(std::abs(a - e) <= tol * (1.0 + std::abs(e)));
  }
}

template <class F>
void for_each_kind(F&& f) {
  f(std::integral_constant<Kind, Kind::least_squares>{});
  f(std::integral_constant<Kind, Kind::logistic>{});
  f(std::integral_constant<Kind, Kind::softmax>{});
}

const char* name(Kind kind) {
  switch (kind) {
    case Kind::least_squares:
      return "least squares";
    case Kind::logistic:
      return "logistic";
    case Kind::softmax:
      return "softmax";
  }
  return "";
}

// ---- Gradient against a finite difference of the loss ----------------------------------------

/// The batch gradient of the objective over all examples equals a central difference of the
/// loss of the objective built from the batch's rows alone (repeats included).
template <Kind kind, class Matrix>
void check_gradient_against_finite_difference() {
  using T = typename Matrix::Scalar;
  const std::vector<std::size_t> batch{3, static_cast<std::size_t>(zero_row), 0, 3, 9};
  for (const bool intercept : {true, false}) {
    for (const double l2 : {0.0, 0.3}) {
      INFO(name(kind) << (is_sparse<Matrix> ? ", sparse" : ", dense") << ", intercept " << intercept
                      << ", l2 " << l2);
      const Options options{.l2 = l2, .intercept = intercept};
      const auto f = make<kind, Matrix>(all_rows(), options);
      const auto reference = make<kind, Dense<double>>(batch, options);
      REQUIRE(f.dimension() == reference.dimension());
      const auto w = random_parameters<T>(f.dimension(), 11);
      // Overwritten, not accumulated into.
      std::vector<T> grad(f.dimension(), std::numeric_limits<T>::quiet_NaN());
      f.gradient(w, batch, grad);
      require_close(grad, central_difference(reference, cast<double>(w)), tolerance<T>);
    }
  }
}

TEMPLATE_TEST_CASE("least-squares gradient equals a central difference of the batch loss", "",
                   float, double) {
  check_gradient_against_finite_difference<Kind::least_squares, Dense<TestType>>();
  check_gradient_against_finite_difference<Kind::least_squares, Sparse<TestType>>();
  check_gradient_against_finite_difference<Kind::least_squares, ColumnMajor<TestType>>();
}

TEMPLATE_TEST_CASE("logistic gradient equals a central difference of the batch loss", "", float,
                   double) {
  check_gradient_against_finite_difference<Kind::logistic, Dense<TestType>>();
  check_gradient_against_finite_difference<Kind::logistic, Sparse<TestType>>();
  check_gradient_against_finite_difference<Kind::logistic, ColumnMajor<TestType>>();
}

TEMPLATE_TEST_CASE("softmax gradient equals a central difference of the batch loss", "", float,
                   double) {
  check_gradient_against_finite_difference<Kind::softmax, Dense<TestType>>();
  check_gradient_against_finite_difference<Kind::softmax, Sparse<TestType>>();
  check_gradient_against_finite_difference<Kind::softmax, ColumnMajor<TestType>>();
}

// ---- Hessian-vector products against a finite difference of the gradient ---------------------

/// H v of the objective over a batch equals (grad(w + h v) - grad(w - h v)) / 2h of the double
/// objective built from the batch's rows alone (repeats included): an independent check of
/// the curvature, since the reference only evaluates gradients.
template <Kind kind, class Matrix>
void check_hessian_vector_against_finite_difference() {
  using T = typename Matrix::Scalar;
  const std::vector<std::size_t> batch{3, static_cast<std::size_t>(zero_row), 0, 3, 9};
  for (const bool intercept : {true, false}) {
    for (const double l2 : {0.0, 0.3}) {
      INFO(name(kind) << (is_sparse<Matrix> ? ", sparse" : ", dense") << ", intercept " << intercept
                      << ", l2 " << l2);
      const Options options{.l2 = l2, .intercept = intercept};
      const auto f = make<kind, Matrix>(all_rows(), options);
      const auto reference = make<kind, Dense<double>>(batch, options);
      const auto w = random_parameters<T>(f.dimension(), 11);
      const auto v = random_parameters<T>(f.dimension(), 12);
      std::vector<T> hv(f.dimension(), std::numeric_limits<T>::quiet_NaN());
      f.hessian_vector(w, batch, v, hv);

      constexpr double h = 1e-5;
      std::vector<double> up = cast<double>(w);
      std::vector<double> down = up;
      for (std::size_t j = 0; j < up.size(); ++j) {
        up[j] += h * static_cast<double>(v[j]);
        down[j] -= h * static_cast<double>(v[j]);
      }
      std::vector<std::size_t> every(reference.num_examples());
      std::iota(every.begin(), every.end(), std::size_t{0});
      std::vector<double> g_up(f.dimension());
      std::vector<double> g_down(f.dimension());
      reference.gradient(up, every, g_up);
      reference.gradient(down, every, g_down);
      std::vector<double> expected(f.dimension());
      for (std::size_t j = 0; j < expected.size(); ++j) {
        expected[j] = (g_up[j] - g_down[j]) / (2 * h);
      }
      require_close(hv, expected, std::is_same_v<T, float> ? 2e-5 : 1e-7);
    }
  }
}

TEMPLATE_TEST_CASE("Hessian-vector products equal a central difference of the gradient", "", float,
                   double) {
  check_hessian_vector_against_finite_difference<Kind::least_squares, Dense<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::least_squares, Sparse<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::logistic, Dense<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::logistic, Sparse<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::softmax, Dense<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::softmax, Sparse<TestType>>();
  check_hessian_vector_against_finite_difference<Kind::softmax, ColumnMajor<TestType>>();
}

// Least squares' Hessian is (1/|B|) X_B^T X_B + l2 (on the weights), with a column of ones
// for the intercept: its product with v, written out.
TEST_CASE("the least-squares Hessian-vector product equals X^T X v / |B| + l2 v") {
  const std::vector<std::size_t> batch{1, 4, 7};
  const auto f = make<Kind::least_squares, Dense<double>>(all_rows(), {.l2 = 0.5});
  const auto w = random_parameters<double>(f.dimension(), 3);
  const auto v = random_parameters<double>(f.dimension(), 4);
  const Eigen::Index d = f.data().cols();
  Eigen::MatrixXd x(3, d + 1);
  for (Eigen::Index r = 0; r < 3; ++r) {
    x.row(r).head(d) = f.data().row(static_cast<Eigen::Index>(batch[r]));
    x(r, d) = 1.0;
  }
  const Eigen::Map<const Eigen::VectorXd> vv(v.data(), d + 1);
  Eigen::VectorXd expected = x.transpose() * (x * vv) / 3.0;
  expected.head(d) += 0.5 * vv.head(d);
  std::vector<double> hv(f.dimension());
  f.hessian_vector(w, batch, v, hv);
  require_close(hv, std::vector<double>(expected.begin(), expected.end()), 1e-12);
}

// ---- The loss itself --------------------------------------------------------------------------

TEST_CASE("least-squares loss at a known w equals a hand computation") {
  Dense<double> x(2, 2);
  x << 1, 2, 3, 4;
  Vec<double> y(2);
  y << 1, 2;
  const LeastSquares<Dense<double>> f(x, y, {.l2 = 0.1});
  const std::vector<double> w{0.5, -1.0, 0.25};
  // Residuals -2.25 and -4.25; the bias is not penalised.
  const double expected = 0.5 * (2.25 * 2.25 + 4.25 * 4.25) / 2 + 0.5 * 0.1 * (0.25 + 1.0);
  REQUIRE(f.loss(w) == Approx(expected).epsilon(1e-15));

  const LeastSquares<Sparse<float>> g(x.cast<float>().sparseView(), y.cast<float>(), {.l2 = 0.1});
  REQUIRE(g.loss(cast<float>(w)) == Approx(expected).epsilon(1e-7));
}

TEMPLATE_TEST_CASE("logistic loss at w = 0 is log 2", "", float, double) {
  using T = TestType;
  const auto f = make<Kind::logistic, Dense<T>>(all_rows(), {.l2 = 0.5});
  const auto g = make<Kind::logistic, Sparse<T>>(all_rows(), {.l2 = 0.5, .intercept = false});
  REQUIRE(f.loss(std::vector<T>(f.dimension(), T(0))) == Approx(std::log(2.0)).epsilon(1e-12));
  REQUIRE(g.loss(std::vector<T>(g.dimension(), T(0))) == Approx(std::log(2.0)).epsilon(1e-12));
}

TEMPLATE_TEST_CASE("softmax loss at W = 0 is log K", "", float, double) {
  using T = TestType;
  const auto f = make<Kind::softmax, Dense<T>>(all_rows(), {.l2 = 0.5});
  const auto g = make<Kind::softmax, Sparse<T>>(all_rows(), {.intercept = false});
  REQUIRE(f.loss(std::vector<T>(f.dimension(), T(0))) ==
          Approx(std::log(double{classes})).epsilon(1e-7));
  REQUIRE(g.loss(std::vector<T>(g.dimension(), T(0))) ==
          Approx(std::log(double{classes})).epsilon(1e-7));
}

TEST_CASE("loss at a random w equals a direct evaluation of the formula") {
  const Problem& p = problem();
  const Options options{.l2 = 0.3};
  const double n = static_cast<double>(rows);

  const auto ls = make<Kind::least_squares, Sparse<double>>(all_rows(), options);
  const auto w = random_parameters<double>(ls.dimension(), 5);
  const Eigen::Map<const Vec<double>> wv(w.data(), features);
  double expected = 0;
  for (Eigen::Index i = 0; i < rows; ++i) {
    const double r = p.x.row(i).dot(wv) + w.back() - p.target[i];
    expected += 0.5 * r * r / n;
  }
  expected += 0.5 * options.l2 * wv.squaredNorm();
  REQUIRE(ls.loss(w) == Approx(expected).epsilon(1e-13));

  const auto logistic = make<Kind::logistic, Dense<double>>(all_rows(), options);
  expected = 0;
  for (Eigen::Index i = 0; i < rows; ++i) {
    const double z = p.x.row(i).dot(wv) + w.back();
    const double s = 2 * p.binary[i] - 1;
    expected += std::log(1 + std::exp(-s * z)) / n;
  }
  expected += 0.5 * options.l2 * wv.squaredNorm();
  REQUIRE(logistic.loss(w) == Approx(expected).epsilon(1e-13));

  const auto softmax = make<Kind::softmax, Dense<double>>(all_rows(), options);
  const auto v = random_parameters<double>(softmax.dimension(), 6);
  const Eigen::Map<const Dense<double>> weights(v.data(), classes, features);
  expected = 0;
  for (Eigen::Index i = 0; i < rows; ++i) {
    double sum = 0;
    double own = 0;
    for (int k = 0; k < classes; ++k) {
      const double z =
          weights.row(k).dot(p.x.row(i)) + v[static_cast<std::size_t>(classes * features + k)];
      sum += std::exp(z);
      own = k == p.label[i] ? z : own;
    }
    expected += (std::log(sum) - own) / n;
  }
  expected += 0.5 * options.l2 * weights.squaredNorm();
  REQUIRE(softmax.loss(v) == Approx(expected).epsilon(1e-13));
}

// ---- Dense and sparse data agree --------------------------------------------------------------

TEMPLATE_TEST_CASE("dense, column-major and sparse data give the same loss and gradient", "", float,
                   double) {
  using T = TestType;
  const std::vector<std::size_t> batch{1, 4, 4, 10};
  for_each_kind([&](auto kind_constant) {
    constexpr Kind kind = decltype(kind_constant)::value;
    for (const bool intercept : {true, false}) {
      INFO(name(kind) << ", intercept " << intercept);
      const Options options{.l2 = 0.2, .intercept = intercept};
      const auto dense = make<kind, Dense<T>>(all_rows(), options);
      const auto column_major = make<kind, ColumnMajor<T>>(all_rows(), options);
      const auto sparse = make<kind, Sparse<T>>(all_rows(), options);
      const auto w = random_parameters<T>(dense.dimension(), 3);
      REQUIRE(sparse.loss(w) == Approx(dense.loss(w)).epsilon(tolerance<T>));
      REQUIRE(column_major.loss(w) == Approx(dense.loss(w)).epsilon(tolerance<T>));
      std::vector<T> a(dense.dimension());
      std::vector<T> b(dense.dimension());
      std::vector<T> c(dense.dimension());
      dense.gradient(w, batch, a);
      sparse.gradient(w, batch, b);
      column_major.gradient(w, batch, c);
      require_close(b, a, tolerance<T>);
      require_close(c, a, tolerance<T>);
    }
  });
}

// ---- The sparse gradient ------------------------------------------------------------------------

/// The indices a batch must touch, computed from the dense copy of the data.
std::vector<std::size_t> expected_indices(Kind kind, std::span<const std::size_t> batch,
                                          bool intercept) {
  std::vector<std::size_t> columns;
  for (Eigen::Index j = 0; j < features; ++j) {
    const bool touched = std::any_of(batch.begin(), batch.end(), [&](std::size_t i) {
      return problem().x(static_cast<Eigen::Index>(i), j) != 0.0;
    });
    if (touched) {
      columns.push_back(static_cast<std::size_t>(j));
    }
  }
  const auto d = static_cast<std::size_t>(features);
  const std::size_t blocks = kind == Kind::softmax ? std::size_t{classes} : 1;
  std::vector<std::size_t> out;
  for (std::size_t k = 0; k < blocks; ++k) {
    for (const std::size_t j : columns) {
      out.push_back(k * d + j);
    }
  }
  if (intercept) {
    for (std::size_t k = 0; k < blocks; ++k) {
      out.push_back(blocks * d + k);
    }
  }
  return out;
}

/// sparse_gradient agrees with gradient() on the touched coordinates; elsewhere gradient() is
/// l2 * w (zero when l2 = 0), so scattering the sparse form reproduces it when l2 = 0.
template <Kind kind, class T>
void check_sparse_gradient(double l2) {
  const std::vector<std::vector<std::size_t>> batches{
      {4}, {3, 5, 0, 3, 9}, {static_cast<std::size_t>(zero_row)}, all_rows(), {11, 2}};
  for (const bool intercept : {true, false}) {
    const auto f = make<kind, Sparse<T>>(all_rows(), {.l2 = l2, .intercept = intercept});
    const auto w = random_parameters<T>(f.dimension(), 17);
    SparseGradient<T> g;
    g.push_back(12345, T(7));  // stale content that sparse_gradient must clear
    for (const auto& batch : batches) {
      INFO(name(kind) << ", l2 " << l2 << ", intercept " << intercept << ", batch of "
                      << batch.size() << " starting at " << batch.front());
      std::vector<T> dense(f.dimension());
      f.gradient(w, batch, dense);
      f.sparse_gradient(w, batch, g);

      REQUIRE(g.index.size() == g.value.size());
      REQUIRE(std::adjacent_find(g.index.begin(), g.index.end(), std::greater_equal<>{}) ==
              g.index.end());
      REQUIRE(g.index == expected_indices(kind, batch, intercept));

      std::vector<T> scattered(f.dimension(), T(0));
      std::vector<bool> touched(f.dimension(), false);
      for (std::size_t t = 0; t < g.size(); ++t) {
        scattered[g.index[t]] = g.value[t];
        touched[g.index[t]] = true;
      }
      for (std::size_t j = 0; j < f.dimension(); ++j) {
        if (!touched[j]) {
          // The Hogwild! convention: the regulariser only where the batch has data.
          scattered[j] = static_cast<T>(l2) * w[j];
        }
      }
      require_close(scattered, dense, tolerance<T>);
    }
  }
}

TEMPLATE_TEST_CASE("sparse_gradient scattered equals gradient() when l2 = 0, indices increasing",
                   "", float, double) {
  check_sparse_gradient<Kind::least_squares, TestType>(0.0);
  check_sparse_gradient<Kind::logistic, TestType>(0.0);
  check_sparse_gradient<Kind::softmax, TestType>(0.0);
}

TEMPLATE_TEST_CASE("with l2 > 0 sparse_gradient equals gradient() on the touched coordinates", "",
                   float, double) {
  check_sparse_gradient<Kind::least_squares, TestType>(0.25);
  check_sparse_gradient<Kind::logistic, TestType>(0.25);
  check_sparse_gradient<Kind::softmax, TestType>(0.25);
}

TEST_CASE("a batch of an all-zero row without intercept touches nothing") {
  const std::vector<std::size_t> batch{static_cast<std::size_t>(zero_row)};
  const auto f = make<Kind::softmax, Sparse<double>>(all_rows(), {.l2 = 1, .intercept = false});
  SparseGradient<double> g;
  g.push_back(0, 1.0);
  f.sparse_gradient(random_parameters<double>(f.dimension(), 1), batch, g);
  REQUIRE(g.empty());
}

// ---- Validation ---------------------------------------------------------------------------------

#define ASYNCOPT_REQUIRE_INVALID(expression, text)          \
  do {                                                      \
    REQUIRE_THROWS_AS(expression, std::invalid_argument);   \
    REQUIRE_THROWS_WITH(expression, Catch::Contains(text)); \
  } while (false)

TEMPLATE_TEST_CASE("malformed constructor arguments raise std::invalid_argument", "", Dense<double>,
                   Sparse<float>) {
  using Matrix = TestType;
  using T = typename Matrix::Scalar;
  const Matrix x = convert<Matrix>(problem().x);
  const Vec<T> y = problem().target.cast<T>();
  const Vec<T> binary = problem().binary.cast<T>();
  const Eigen::VectorXi label = problem().label;
  const Vec<T> short_labels = y.head(3);
  const Matrix empty(0, features);
  const Matrix no_features(rows, 0);

  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Matrix>(x, short_labels), "3 labels for 12 examples");
  ASYNCOPT_REQUIRE_INVALID(LogisticRegression<Matrix>(x, short_labels), "3 labels for 12");
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(x, label.head(3), classes), "3 labels");
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Matrix>(empty, Vec<T>()),
                           "LeastSquares: the data is empty");
  ASYNCOPT_REQUIRE_INVALID(LogisticRegression<Matrix>(no_features, binary),
                           "data is empty (12 x 0)");
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(empty, Eigen::VectorXi(), 2), "data is empty");
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Matrix>(x, y, {.l2 = -1}), "options.l2 must be finite");
  ASYNCOPT_REQUIRE_INVALID(
      SoftmaxRegression<Matrix>(x, label, classes, {.l2 = std::numeric_limits<double>::infinity()}),
      "options.l2");

  Vec<T> nan_target = y;
  nan_target[2] = std::numeric_limits<T>::quiet_NaN();
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Matrix>(x, nan_target), "label at row 2 is not finite");

  Vec<T> half = binary;
  half[2] = T(0.5);
  ASYNCOPT_REQUIRE_INVALID(LogisticRegression<Matrix>(x, half),
                           "LogisticRegression: the label at row 2 is 0.5; labels must be 0 or 1");
  Vec<T> minus_one = binary;
  minus_one[7] = T(-1);
  ASYNCOPT_REQUIRE_INVALID(LogisticRegression<Matrix>(x, minus_one), "label at row 7 is -1");

  Eigen::VectorXi too_big = label;
  too_big[4] = classes;
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(x, too_big, classes),
                           "label at row 4 is 3; labels must be in [0, 3)");
  Eigen::VectorXi negative = label;
  negative[0] = -1;
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(x, negative, classes), "row 0 is -1");
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(x, label, 0), "classes must be positive");
}

TEMPLATE_TEST_CASE("non-finite features are refused at construction with their row and column", "",
                   Dense<float>, ColumnMajor<double>, Sparse<float>, Sparse<double>) {
  using Matrix = TestType;
  using T = typename Matrix::Scalar;
  const Vec<T> y = problem().target.cast<T>();
  const Vec<T> binary = problem().binary.cast<T>();
  const Eigen::VectorXi label = problem().label;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  // The planted bad value is the only one; finding it needs a scan past every row before it.
  Dense<double> with_nan = problem().x;
  with_nan(9, 2) = nan;
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Matrix>(convert<Matrix>(with_nan), y),
                           "LeastSquares: the feature at row 9, column 2 is nan; features must "
                           "be finite");
  Dense<double> with_inf = problem().x;
  with_inf(4, 0) = -inf;
  ASYNCOPT_REQUIRE_INVALID(LogisticRegression<Matrix>(convert<Matrix>(with_inf), binary),
                           "LogisticRegression: the feature at row 4, column 0 is -inf");
  ASYNCOPT_REQUIRE_INVALID(SoftmaxRegression<Matrix>(convert<Matrix>(with_inf), label, classes),
                           "SoftmaxRegression: the feature at row 4, column 0 is -inf");
  // The same data, finite, is accepted.
  CHECK(LeastSquares<Matrix>(convert<Matrix>(problem().x), y).dimension() ==
        static_cast<std::size_t>(features + 1));
}

TEST_CASE("an L2 weight the objective's scalar cannot represent is refused, naming the type") {
  const Vec<float> yf = problem().target.cast<float>();
  const Vec<double> yd = problem().target;
  const Dense<float> xf = problem().x.cast<float>();
  const Dense<double> xd = problem().x;
  // 1e300 is a valid double but inf as a float: every gradient would be non-finite.
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Dense<float>>(xf, yf, {.l2 = 1e300}),
                           "LeastSquares: options.l2 is 1e+300, which is inf in float");
  // 1e-50 would silently become 0 in float.
  ASYNCOPT_REQUIRE_INVALID(
      SoftmaxRegression<Dense<float>>(xf, problem().label, classes, {.l2 = 1e-50}),
      "options.l2 is 1e-50, which is 0 in float");
  CHECK(LeastSquares<Dense<double>>(xd, yd, {.l2 = 1e300}).options().l2 == 1e300);
  CHECK(LeastSquares<Dense<float>>(xf, yf, {.l2 = 0.0}).options().l2 == 0.0);
}

TEST_CASE("sparse data with unsorted column indices is rejected") {
  Dense<double> dense(2, 3);
  dense << 1, 0, 2, 0, 3, 0;
  Sparse<double> x = dense.sparseView();
  x.makeCompressed();
  // Row 0 now lists column 2 before column 0, as raw arrays filled by hand might.
  std::swap(x.innerIndexPtr()[0], x.innerIndexPtr()[1]);
  ASYNCOPT_REQUIRE_INVALID(LeastSquares<Sparse<double>>(x, Vec<double>::Zero(2)),
                           "LeastSquares: row 0 has unsorted or repeated column indices");
}

/// Every method rejects a wrong-sized w, grad, an empty batch or an unknown example, and
/// leaves its output as it was.
template <Kind kind, class Matrix>
void check_method_validation() {
  using T = typename Matrix::Scalar;
  INFO(name(kind) << (is_sparse<Matrix> ? ", sparse" : ", dense"));
  const auto f = make<kind, Matrix>(all_rows(), {.l2 = 0.1});
  const std::size_t n = f.dimension();
  const auto w = random_parameters<T>(n, 2);
  const auto short_w = random_parameters<T>(n - 1, 2);
  const std::vector<std::size_t> batch{0, 1};
  const std::vector<std::size_t> empty_batch;
  const std::vector<std::size_t> outside{0, static_cast<std::size_t>(rows)};
  std::vector<T> grad(n, T(42));
  std::vector<T> long_grad(n + 1, T(42));
  const auto untouched = [&] {
    return std::all_of(grad.begin(), grad.end(), [](T v) { return v == T(42); }) &&
           std::all_of(long_grad.begin(), long_grad.end(), [](T v) { return v == T(42); });
  };
  const std::string expected_w =
      "w has " + std::to_string(n - 1) + " entries, expected " + std::to_string(n);

  ASYNCOPT_REQUIRE_INVALID(static_cast<void>(f.loss(short_w)), "::loss: " + expected_w);
  ASYNCOPT_REQUIRE_INVALID(f.gradient(short_w, batch, grad), "::gradient: " + expected_w);
  ASYNCOPT_REQUIRE_INVALID(f.gradient(w, batch, long_grad), "grad has " + std::to_string(n + 1));
  ASYNCOPT_REQUIRE_INVALID(f.gradient(w, empty_batch, grad), "the batch is empty");
  ASYNCOPT_REQUIRE_INVALID(f.gradient(w, outside, grad),
                           "batch id 12 is out of range (12 examples)");
  REQUIRE(untouched());

  if constexpr (kind != Kind::least_squares) {
    ASYNCOPT_REQUIRE_INVALID(static_cast<void>(f.accuracy(short_w)), "::accuracy: " + expected_w);
    ASYNCOPT_REQUIRE_INVALID(static_cast<void>(f.predict(short_w, 0)), "::predict: " + expected_w);
    ASYNCOPT_REQUIRE_INVALID(static_cast<void>(f.predict(w, rows)), "row 12 is out of range");
  }

  if constexpr (is_sparse<Matrix>) {
    SparseGradient<T> g;
    g.push_back(3, T(1));
    g.push_back(5, T(2));
    const auto before = g;
    ASYNCOPT_REQUIRE_INVALID(f.sparse_gradient(short_w, batch, g),
                             "::sparse_gradient: " + expected_w);
    ASYNCOPT_REQUIRE_INVALID(f.sparse_gradient(w, empty_batch, g), "the batch is empty");
    ASYNCOPT_REQUIRE_INVALID(f.sparse_gradient(w, outside, g), "batch id 12 is out of range");
    REQUIRE(g.index == before.index);
    REQUIRE(g.value == before.value);
  }
}

TEST_CASE("wrong sizes, empty batches and unknown examples raise and leave outputs untouched") {
  for_each_kind([](auto kind_constant) {
    constexpr Kind kind = decltype(kind_constant)::value;
    check_method_validation<kind, Dense<double>>();
    check_method_validation<kind, Sparse<float>>();
  });
}

TEST_CASE("error messages name the objective and the method") {
  const auto f = make<Kind::logistic, Sparse<double>>(all_rows(), {});
  std::vector<double> grad(f.dimension());
  const std::vector<std::size_t> batch;
  REQUIRE_THROWS_WITH(f.gradient(std::vector<double>(f.dimension()), batch, grad),
                      Catch::StartsWith("LogisticRegression::gradient: "));
  const auto g = make<Kind::softmax, Dense<float>>(all_rows(), {});
  REQUIRE_THROWS_WITH(g.loss(std::vector<float>(1)),
                      Catch::StartsWith("SoftmaxRegression::loss: "));
}

// ---- touched_gradient: the sparse gradient on indices touched() wrote ---------------------------

/// The parameters at `index`, packed, as a worker's pull_values gives them.
template <class T>
std::vector<T> packed(const std::vector<T>& w, const std::vector<std::size_t>& index) {
  std::vector<T> out;
  out.reserve(index.size());
  for (const std::size_t i : index) {
    out.push_back(w[i]);
  }
  return out;
}

static_assert(asyncopt::TouchedGradient<LogisticRegression<Sparse<float>>, float>);
static_assert(asyncopt::TouchedGradient<LeastSquares<Sparse<double>>, double>);
static_assert(!asyncopt::TouchedGradient<LogisticRegression<Dense<float>>, float>);
static_assert(!asyncopt::TouchedGradient<SoftmaxRegression<Sparse<float>>, float>);
static_assert(asyncopt::PrefetchingObjective<LogisticRegression<Sparse<float>>>);
static_assert(asyncopt::PrefetchingObjective<SoftmaxRegression<Dense<double>>>);

template <Kind kind, class T>
void check_touched_gradient() {
  const std::vector<std::vector<std::size_t>> batches{
      {4}, {3, 5, 0, 3, 9}, {static_cast<std::size_t>(zero_row)}, all_rows(), {11, 2}};
  for (const bool intercept : {true, false}) {
    const auto f = make<kind, Sparse<T>>(all_rows(), {.l2 = 0.25, .intercept = intercept});
    const auto w = random_parameters<T>(f.dimension(), 23);
    for (const auto& batch : batches) {
      INFO(name(kind) << ", intercept " << intercept << ", batch of " << batch.size()
                      << " starting at " << batch.front());
      SparseGradient<T> expected;
      f.sparse_gradient(w, batch, expected);

      SparseGradient<T> g;
      g.value.assign(3, T(9));  // stale values that touched_gradient must replace
      f.touched(batch, g.index);
      REQUIRE(g.index == expected.index);
      f.touched_gradient(packed(w, g.index), batch, g);
      REQUIRE(g.index == expected.index);
      REQUIRE(g.value == expected.value);  // the same arithmetic: bit for bit

      // A superset: an index the batch does not touch gets the L2 term alone.
      std::vector<std::size_t> extra;
      for (std::size_t j = 0; j < static_cast<std::size_t>(features); ++j) {
        if (!std::binary_search(expected.index.begin(), expected.index.end(), j)) {
          extra.push_back(j);
        }
      }
      if (!extra.empty()) {
        const std::size_t j = extra.front();
        g.index = expected.index;
        g.index.insert(std::lower_bound(g.index.begin(), g.index.end(), j), j);
        f.touched_gradient(packed(w, g.index), batch, g);
        for (std::size_t t = 0; t < g.size(); ++t) {
          if (g.index[t] == j) {
            REQUIRE(g.value[t] == static_cast<T>(0.25) * w[j]);
          } else {
            const auto at =
                std::lower_bound(expected.index.begin(), expected.index.end(), g.index[t]) -
                expected.index.begin();
            REQUIRE(g.value[t] == expected.value[static_cast<std::size_t>(at)]);
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("touched_gradient on touched()'s indices equals sparse_gradient", "", float,
                   double) {
  check_touched_gradient<Kind::least_squares, TestType>();
  check_touched_gradient<Kind::logistic, TestType>();
}

// Rows longer than the eight lanes a row's margin is summed in, so that each lane holds
// several terms: every sparse path must sum them alike, bit for bit (signed zeros included).
template <class T, class Model>
void check_long_rows() {
  constexpr Eigen::Index n_rows = 6;
  constexpr Eigen::Index n_features = 60;
  std::mt19937 rng(77);
  std::uniform_real_distribution<double> value(-1.5, 1.5);
  std::bernoulli_distribution present(0.6);
  Dense<double> x = Dense<double>::Zero(n_rows, n_features);
  Vec<T> y(n_rows);
  for (Eigen::Index i = 0; i < n_rows; ++i) {
    for (Eigen::Index j = 0; j < n_features; ++j) {
      if (i != 2 && present(rng)) {  // row 2 stays empty
        x(i, j) = value(rng);
      }
    }
    y[i] = static_cast<T>(i % 2);
  }
  x(4, 7) = -1.0;  // with w = 0 below, its term is -0 in row 4
  for (const double l2 : {0.0, 0.25}) {
    for (const bool intercept : {true, false}) {
      const Model f(convert<Sparse<T>>(x), y, {.l2 = l2, .intercept = intercept});
      for (const bool zeros : {false, true}) {
        auto w = random_parameters<T>(f.dimension(), 31);
        if (zeros) {
          std::fill(w.begin(), w.end(), T(0));
        }
        for (std::size_t id = 0; id < static_cast<std::size_t>(n_rows); ++id) {
          INFO("l2 " << l2 << ", intercept " << intercept << ", zero weights " << zeros << ", row "
                     << id);
          const std::vector<std::size_t> batch{id};
          SparseGradient<T> expected;
          f.sparse_gradient(w, batch, expected);
          auto bits = [](const std::vector<T>& v) {
            std::vector<unsigned char> b(v.size() * sizeof(T));
            if (!b.empty()) {  // memcpy takes no null pointer, even for 0 bytes
              std::memcpy(b.data(), v.data(), b.size());
            }
            return b;
          };
          SparseGradient<T> exact;
          f.touched(batch, exact.index);
          REQUIRE(exact.index == expected.index);
          f.touched_gradient(packed(w, exact.index), batch, exact);
          REQUIRE(bits(exact.value) == bits(expected.value));
          // A superset list takes the general path; on the batch's indices it agrees.
          SparseGradient<T> superset;
          superset.index = expected.index;
          const auto spare = static_cast<std::size_t>(
              std::find_if(expected.index.begin(), expected.index.end(),
                           [k = std::size_t{0}](std::size_t i) mutable { return i != k++; }) -
              expected.index.begin());
          superset.index.insert(superset.index.begin() + static_cast<std::ptrdiff_t>(spare), spare);
          f.touched_gradient(packed(w, superset.index), batch, superset);
          superset.value.erase(superset.value.begin() + static_cast<std::ptrdiff_t>(spare));
          REQUIRE(bits(superset.value) == bits(expected.value));
          // And the dense gradient, summed in the row's order, agrees to rounding.
          std::vector<T> dense(f.dimension());
          f.gradient(w, batch, dense);
          for (std::size_t k = 0; k < expected.size(); ++k) {
            REQUIRE(static_cast<double>(expected.value[k]) ==
                    Approx(static_cast<double>(dense[expected.index[k]])).margin(1e-5));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("rows longer than the lanes give the same bits on every sparse path", "", float,
                   double) {
  check_long_rows<TestType, LogisticRegression<Sparse<TestType>>>();
  check_long_rows<TestType, LeastSquares<Sparse<TestType>>>();
}

TEST_CASE("touched_gradient refuses indices touched() would not write, naming what is wrong") {
  const auto f = make<Kind::logistic, Sparse<double>>(all_rows(), {.l2 = 0.1});
  const auto w = random_parameters<double>(f.dimension(), 5);
  const std::vector<std::size_t> batch{3, 4};
  SparseGradient<double> good;
  f.touched(batch, good.index);
  REQUIRE(good.index.size() >= 3);
  const auto bias = static_cast<std::size_t>(features);

  auto fails_with = [&](const std::vector<std::size_t>& index, const std::string& text) {
    SparseGradient<double> g;
    g.index = index;
    const std::vector<double> values(index.size(), 0.5);
    ASYNCOPT_REQUIRE_INVALID(f.touched_gradient(values, batch, g),
                             "LogisticRegression::touched_gradient: " + text);
    REQUIRE(g.index == index);  // the indices are left as they were
  };
  SECTION("unsorted") {
    auto index = good.index;
    std::swap(index[0], index[1]);
    fails_with(index, "g.index: indices must be strictly increasing (index");
  }
  SECTION("repeated") {
    auto index = good.index;
    index.insert(index.begin(), index.front());
    fails_with(index, "g.index: indices must be strictly increasing (index");
  }
  SECTION("out of range") {
    auto index = good.index;
    index.push_back(bias + 1);
    fails_with(index, "g.index: index 8 is out of range for 8 parameters");
  }
  SECTION("without the bias") {
    auto index = good.index;
    index.pop_back();
    fails_with(index, "g.index must end with the bias, 7");
  }
  SECTION("empty") {
    fails_with({}, "g.index must end with the bias, 7");
  }
  SECTION("a feature of the batch missing") {
    auto index = good.index;
    index.erase(index.begin());
    fails_with(index, "g.index lacks a feature of row");
  }
  SECTION("a wrong batch") {
    ASYNCOPT_REQUIRE_INVALID(
        f.touched_gradient(packed(w, good.index), std::vector<std::size_t>{12}, good),
        "batch id 12 is out of range");
  }
  SECTION("values of another length") {
    auto values = packed(w, good.index);
    values.pop_back();
    ASYNCOPT_REQUIRE_INVALID(f.touched_gradient(values, batch, good),
                             "w_touched has " + std::to_string(values.size()) +
                                 " entries, expected " + std::to_string(good.index.size()));
  }
}

TEST_CASE("touched_gradient without an intercept refuses a list that lacks a feature") {
  const auto f = make<Kind::least_squares, Sparse<float>>(all_rows(), {.intercept = false});
  const auto w = random_parameters<float>(f.dimension(), 6);
  const std::vector<std::size_t> batch{2};
  SparseGradient<float> g;
  f.touched(batch, g.index);
  REQUIRE_FALSE(g.index.empty());
  const auto full = g.index;
  g.index.pop_back();
  ASYNCOPT_REQUIRE_INVALID(f.touched_gradient(packed(w, g.index), batch, g),
                           "LeastSquares::touched_gradient: g.index lacks a feature of row 2");
  g.index.clear();
  ASYNCOPT_REQUIRE_INVALID(f.touched_gradient(std::vector<float>(), batch, g),
                           "g.index lacks a feature of row 2");
  g.index = full;
  f.touched_gradient(packed(w, g.index), batch, g);
  SparseGradient<float> expected;
  f.sparse_gradient(w, batch, expected);
  CHECK(g.value == expected.value);
}

// Prefetching has no result to check: this runs it on ids in and out of range, which the
// AddressSanitizer build would report if it read outside the data.
TEST_CASE("prefetch changes nothing and skips ids out of range") {
  const auto f = make<Kind::logistic, Sparse<double>>(all_rows(), {.l2 = 0.1});
  const auto w = random_parameters<double>(f.dimension(), 8);
  const double before = f.loss(w);
  const std::vector<std::size_t> ids{0, 11, 12, std::numeric_limits<std::size_t>::max()};
  for (const std::size_t ahead : {1, 2}) {
    f.prefetch(ids, ahead);
    f.prefetch(std::span<const std::size_t>(), ahead);
    const auto dense = make<Kind::softmax, Dense<float>>(all_rows(), {});
    dense.prefetch(ids, ahead);
  }
  REQUIRE(f.loss(w) == before);
}

// ---- Numerical stability ------------------------------------------------------------------------

TEMPLATE_TEST_CASE("logistic loss and gradient are finite and exact at |z| = 1000", "", float,
                   double) {
  using T = TestType;
  Dense<T> x(1, 1);
  x << T(1);
  for (const double y : {0.0, 1.0}) {
    for (const double z : {1000.0, -1000.0}) {
      INFO("y " << y << ", z " << z);
      const LogisticRegression<Dense<T>> f(x, Vec<T>::Constant(1, static_cast<T>(y)),
                                           {.intercept = false});
      const std::vector<T> w{static_cast<T>(z)};
      const bool right = (z > 0) == (y > 0.5);
      const double loss = f.loss(w);
      REQUIRE(std::isfinite(loss));
      // log(1 + e^-1000) is 0 in double; a wrong prediction costs |z|.
      REQUIRE(loss == Approx(right ? 0.0 : 1000.0).margin(1e-12));
      std::vector<T> grad(1);
      f.gradient(w, std::vector<std::size_t>{0}, grad);
      REQUIRE(std::isfinite(grad[0]));
      REQUIRE(grad[0] == Approx((z > 0 ? 1.0 : 0.0) - y).margin(1e-12));
    }
  }
}

TEMPLATE_TEST_CASE("softmax loss and gradient are finite with logits near 1000", "", float,
                   double) {
  using T = TestType;
  Dense<T> x(2, 1);
  x << T(1), T(1);
  Eigen::VectorXi label(2);
  label << 0, 2;
  const SoftmaxRegression<Dense<T>> f(x, label, 3);
  // Logits 1000, 999, 998 for both examples (weights 500, 499, 498 plus biases 500).
  const std::vector<T> w{T(500), T(499), T(498), T(500), T(500), T(500)};
  const double normaliser = 1 + std::exp(-1.0) + std::exp(-2.0);
  const double expected = (std::log(normaliser) + (std::log(normaliser) + 2)) / 2;
  REQUIRE(std::isfinite(f.loss(w)));
  REQUIRE(f.loss(w) == Approx(expected).epsilon(1e-6));

  std::vector<T> grad(f.dimension());
  f.gradient(w, std::vector<std::size_t>{0, 1}, grad);
  const double p[] = {1 / normaliser, std::exp(-1.0) / normaliser, std::exp(-2.0) / normaliser};
  // Each bias's gradient is the mean of p - e_y over the two examples; x = 1 makes the
  // weights' the same.
  const std::vector<double> bias{p[0] - 0.5, p[1], p[2] - 0.5};
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("class " << k);
    REQUIRE(std::isfinite(grad[k]));
    REQUIRE(grad[k] == Approx(bias[k]).margin(1e-6));
    REQUIRE(grad[3 + k] == Approx(bias[k]).margin(1e-6));
  }
}

// ---- Predictions and accessors ------------------------------------------------------------------

TEST_CASE("logistic accuracy counts predictions on the right side of probability 0.5") {
  Dense<double> x(4, 1);
  x << 1, 2, -1, -3;
  Vec<double> y(4);
  y << 1, 0, 0, 0;
  const LogisticRegression<Dense<double>> f(x, y);
  const std::vector<double> w{1.0, 0.0};
  REQUIRE(f.predict(w, 0) == 1);
  REQUIRE(f.predict(w, 1) == 1);
  REQUIRE(f.predict(w, 2) == 0);
  REQUIRE(f.accuracy(w) == Approx(0.75));
  // The bias moves the threshold: z = x - 1.5 classifies only row 1 as 1.
  REQUIRE(f.accuracy(std::vector<double>{1.0, -1.5}) == Approx(0.5));
}

TEST_CASE("softmax predicts the largest logit, the lowest class on ties") {
  Dense<double> x(3, 2);
  x << 1, 0, 0, 1, 1, 1;
  Eigen::VectorXi label(3);
  label << 0, 1, 1;
  const SoftmaxRegression<Sparse<double>> f(x.sparseView(), label, 2, {.intercept = false});
  const std::vector<double> w{1, 0, 0, 1};  // class 0 reads feature 0, class 1 feature 1
  REQUIRE(f.predict(w, 0) == 0);
  REQUIRE(f.predict(w, 1) == 1);
  REQUIRE(f.predict(w, 2) == 0);
  REQUIRE(f.accuracy(w) == Approx(2.0 / 3.0));
}

TEST_CASE("objectives own their data and report their shape") {
  Dense<double> x = problem().x;
  Eigen::VectorXi label = problem().label;
  const SoftmaxRegression<Dense<double>> f(std::move(x), std::move(label), classes,
                                           {.l2 = 0.5, .intercept = true});
  REQUIRE(f.data() == problem().x);
  REQUIRE(f.labels() == problem().label);
  REQUIRE(f.options().l2 == 0.5);
  REQUIRE(f.classes() == classes);
  REQUIRE(f.num_examples() == static_cast<std::size_t>(rows));
  REQUIRE(f.dimension() == static_cast<std::size_t>(classes * (features + 1)));

  const auto g = make<Kind::least_squares, Sparse<float>>(all_rows(), {.intercept = false});
  REQUIRE(g.dimension() == static_cast<std::size_t>(features));
  REQUIRE_FALSE(g.options().intercept);
}

// An objective of one's own over the public base: (z - y)^2, twice least squares' loss.
struct DoubledSquaredLoss {
  static double value(double z, double y) { return (z - y) * (z - y); }
  static double slope(double z, double y) { return 2.0 * (z - y); }
};

template <class Matrix>
class DoubledLeastSquares : public SingleOutputModel<Matrix, DoubledSquaredLoss> {
 public:
  DoubledLeastSquares(Matrix data, typename DoubledLeastSquares::Labels labels, Options options)
      : SingleOutputModel<Matrix, DoubledSquaredLoss>("DoubledLeastSquares", std::move(data),
                                                      std::move(labels), options) {}
};

TEST_CASE("an objective derived from SingleOutputModel runs its own loss through the kernels") {
  const Options options{.l2 = 0.0, .intercept = true};
  const DoubledLeastSquares<Sparse<double>> f(problem().x.sparseView(), problem().target, options);
  const LeastSquares<Sparse<double>> g(problem().x.sparseView(), problem().target, options);
  static_assert(asyncopt::SparseObjective<DoubledLeastSquares<Sparse<double>>, double>);
  const std::vector<double> w(g.dimension(), 0.25);
  const std::vector<std::size_t> batch{0, 3, 7};
  std::vector<double> doubled(f.dimension());
  std::vector<double> single(g.dimension());
  f.gradient(w, batch, doubled);
  g.gradient(w, batch, single);
  for (std::size_t k = 0; k < single.size(); ++k) {
    REQUIRE(doubled[k] == Approx(2.0 * single[k]));
  }
  REQUIRE(f.loss(w) == Approx(2.0 * g.loss(w)));
  const std::vector<std::size_t> empty_batch;
  REQUIRE_THROWS_WITH(f.gradient(w, empty_batch, doubled),
                      "DoubledLeastSquares::gradient: the batch is empty");
}

// ---- Concurrency --------------------------------------------------------------------------------

TEST_CASE("concurrent gradient calls on one objective agree with serial ones") {
  const auto f = make<Kind::softmax, Sparse<double>>(all_rows(), {.l2 = 0.1});
  const auto w = random_parameters<double>(f.dimension(), 9);
  constexpr std::size_t threads = 4;
  constexpr std::size_t steps = 200;
  const auto batch_of = [](std::size_t t, std::size_t s) {
    return std::vector<std::size_t>{(t + s) % 12, (3 * t + s) % 12, (t * s) % 12};
  };
  std::vector<std::vector<double>> dense(threads);
  std::vector<std::vector<double>> sparse(threads);
  {
    std::vector<std::jthread> pool;
    for (std::size_t t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<double> grad(f.dimension());
        SparseGradient<double> g;
        for (std::size_t s = 0; s < steps; ++s) {
          const auto batch = batch_of(t, s);
          f.gradient(w, batch, grad);
          f.sparse_gradient(w, batch, g);
        }
        dense[t] = grad;
        sparse[t] = g.value;
      });
    }
  }
  for (std::size_t t = 0; t < threads; ++t) {
    const auto batch = batch_of(t, steps - 1);
    std::vector<double> grad(f.dimension());
    SparseGradient<double> g;
    f.gradient(w, batch, grad);
    f.sparse_gradient(w, batch, g);
    REQUIRE(dense[t] == grad);
    REQUIRE(sparse[t] == g.value);
  }
}

}  // namespace

TEST_CASE("dense gradients and losses have the same bits wherever the buffers lie") {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  Dense<float> x(40, 37);
  Vec<float> targets(40);
  Eigen::VectorXi labels(40);
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      x(i, j) = normal(rng);
    }
    targets[i] = normal(rng) > 0.0f ? 1.0f : 0.0f;
    labels[i] = static_cast<int>(i % 7);
  }
  std::vector<std::size_t> batch(33);
  std::iota(batch.begin(), batch.end(), std::size_t{2});
  const Options options{.l2 = 1e-3, .intercept = true};
  auto check = [&](const auto& f) {
    std::vector<float> w(f.dimension());
    for (std::size_t j = 0; j < w.size(); ++j) {
      w[j] = 0.01f * static_cast<float>(static_cast<int>(j % 23) - 11);
    }
    asyncopt::test::require_same_bits_at_every_offset(f, w, batch);
  };
  check(LeastSquares<Dense<float>>(x, targets, options));
  check(LogisticRegression<Dense<float>>(x, targets, options));
  check(SoftmaxRegression<Dense<float>>(x, labels, 7, options));
}
