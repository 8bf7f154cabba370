// GIANT: one round against Newton's step where the local Hessians agree, against the closed
// form (I - mean(H_k^-1) H) of the error where they differ, and against synchronous gradient
// descent on logistic regression.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/objective.hpp>
#include <asyncopt/solver/giant.hpp>

using asyncopt::Giant;

namespace {

using Dense = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LeastSquares = asyncopt::objective::LeastSquares<Dense>;
using Logistic = asyncopt::objective::LogisticRegression<Dense>;

Dense normal_matrix(Eigen::Index rows, Eigen::Index cols, std::mt19937& rng, double spread) {
  std::normal_distribution<double> normal(0.0, spread);
  Dense x(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) {
      x(i, j) = normal(rng);
    }
  }
  return x;
}

// The weights' and the bias's Hessian of mean 0.5 (x.w + b - y)^2 + 0.5 l2 |w|^2 over `x`.
Eigen::MatrixXd least_squares_hessian(const Dense& x, double l2) {
  Eigen::MatrixXd a(x.rows(), x.cols() + 1);
  a.leftCols(x.cols()) = x;
  a.col(x.cols()).setOnes();
  Eigen::MatrixXd h = a.transpose() * a / static_cast<double>(x.rows());
  h.topLeftCorner(x.cols(), x.cols()).diagonal().array() += l2;
  return h;
}

// The optimum of the whole least-squares objective with penalty l2: H w = A^T y / N.
Eigen::VectorXd least_squares_optimum(const LeastSquares& f, double l2) {
  const Dense& x = f.data();
  Eigen::MatrixXd a(x.rows(), x.cols() + 1);
  a.leftCols(x.cols()) = x;
  a.col(x.cols()).setOnes();
  const Eigen::VectorXd rhs = a.transpose() * f.labels() / static_cast<double>(x.rows());
  return least_squares_hessian(x, l2).ldlt().solve(rhs);
}

double max_abs(const Eigen::VectorXd& v) {
  return v.cwiseAbs().maxCoeff();
}

}  // namespace

// Every shard has the same rows (different targets): every H_k is H, so each worker's
// direction is H^{-1} g and one round with exact solves is Newton's step, which lands on a
// quadratic's optimum.
TEST_CASE("GIANT reaches a quadratic's optimum in one round when the local Hessians agree") {
  constexpr Eigen::Index d = 6;
  constexpr Eigen::Index per_shard = 40;
  std::mt19937 rng(3);
  const Dense block = normal_matrix(per_shard, d, rng, 1.0);
  for (const std::size_t workers : {1, 2, 4}) {
    INFO("workers = " << workers);
    Dense x(per_shard * static_cast<Eigen::Index>(workers), d);
    for (std::size_t k = 0; k < workers; ++k) {
      x.middleRows(static_cast<Eigen::Index>(k) * per_shard, per_shard) = block;
    }
    std::normal_distribution<double> normal;
    Eigen::VectorXd y(x.rows());
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      y[i] = normal(rng);
    }
    const LeastSquares f(x, y, {.l2 = 0.1});
    const Eigen::VectorXd optimum = least_squares_optimum(f, 0.1);
    std::vector<double> w(d + 1, 0.5);
    const auto report = asyncopt::giant(
        f, std::span<double>(w),
        Giant{.workers = workers, .rounds = 1, .cg_iterations = 50, .cg_tolerance = 1e-14});
    CHECK(report.rounds == 1);
    const Eigen::Map<const Eigen::VectorXd> got(w.data(), d + 1);
    INFO("max |w - w*| = " << max_abs(got - optimum));
    CHECK(max_abs(got - optimum) <= 1e-10);
    CHECK(report.hessian_vector_products > 0);
    CHECK(report.loss.size() == 2);
    CHECK(report.loss[1] < report.loss[0]);
  }
}

// Shards of different rows: g = H e (e = w - w*, H the mean of the H_k), the direction is
// mean_k(H_k^{-1}) g, so the error after one round is (I - mean_k(H_k^{-1}) H) e: computed
// here with dense inverses, independently of the solver's conjugate gradients.
TEST_CASE("one GIANT round maps the error by I - mean(H_k^-1) H on heterogeneous shards") {
  constexpr Eigen::Index d = 5;
  constexpr Eigen::Index per_shard = 30;
  constexpr std::size_t workers = 3;
  std::mt19937 rng(5);
  Dense x(per_shard * workers, d);
  for (std::size_t k = 0; k < workers; ++k) {
    // Each shard with its own scale of features: the local Hessians differ.
    x.middleRows(static_cast<Eigen::Index>(k) * per_shard, per_shard) =
        normal_matrix(per_shard, d, rng, 0.5 + static_cast<double>(k));
  }
  std::normal_distribution<double> normal;
  Eigen::VectorXd y(x.rows());
  for (Eigen::Index i = 0; i < y.size(); ++i) {
    y[i] = normal(rng);
  }
  const LeastSquares f(x, y, {.l2 = 0.05});
  const Eigen::VectorXd optimum = least_squares_optimum(f, 0.05);
  const Eigen::MatrixXd h = least_squares_hessian(x, 0.05);
  Eigen::MatrixXd mean_inverse = Eigen::MatrixXd::Zero(d + 1, d + 1);
  for (std::size_t k = 0; k < workers; ++k) {
    const Dense shard = x.middleRows(static_cast<Eigen::Index>(k) * per_shard, per_shard);
    mean_inverse += least_squares_hessian(shard, 0.05).inverse() / static_cast<double>(workers);
  }
  std::vector<double> w = {1.0, -2.0, 0.5, 3.0, -1.0, 0.25};
  const Eigen::VectorXd error = Eigen::Map<const Eigen::VectorXd>(w.data(), d + 1) - optimum;
  const Eigen::VectorXd expected =
      optimum + (Eigen::MatrixXd::Identity(d + 1, d + 1) - mean_inverse * h) * error;
  (void)asyncopt::giant(
      f, std::span<double>(w),
      Giant{.workers = workers, .rounds = 1, .cg_iterations = 50, .cg_tolerance = 1e-14});
  const Eigen::Map<const Eigen::VectorXd> got(w.data(), d + 1);
  INFO("max |w - expected| = " << max_abs(got - expected));
  CHECK(max_abs(got - expected) <= 1e-10);
  // The round moved far from a Newton step: the shards' Hessians do differ.
  CHECK(max_abs(got - optimum) > 1e-3);
}

namespace {

// Logistic regression with labels from a planted model, and its optimum's loss by Newton's
// method on the dense Hessian (independent of the library's Hessian-vector products).
struct LogisticProblem {
  Logistic f;
  double optimum_loss = 0.0;
};

LogisticProblem logistic_problem() {
  constexpr Eigen::Index n = 2000;
  constexpr Eigen::Index d = 10;
  std::mt19937 rng(7);
  const Dense x = normal_matrix(n, d, rng, 1.0);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  Eigen::VectorXd truth(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    truth[j] = normal(rng);
  }
  Eigen::VectorXd y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    y[i] = uniform(rng) < 1.0 / (1.0 + std::exp(-x.row(i).dot(truth))) ? 1.0 : 0.0;
  }
  Logistic f(x, y, {.l2 = 1e-3});
  Eigen::VectorXd w = Eigen::VectorXd::Zero(d + 1);
  Eigen::MatrixXd a(n, d + 1);
  a.leftCols(d) = x;
  a.col(d).setOnes();
  for (int it = 0; it < 30; ++it) {
    const Eigen::VectorXd z = a * w;
    const Eigen::VectorXd p = (1.0 + (-z.array()).exp()).inverse().matrix();
    Eigen::VectorXd grad = a.transpose() * (p - y) / static_cast<double>(n);
    grad.head(d) += 1e-3 * w.head(d);
    const Eigen::VectorXd curvature = (p.array() * (1.0 - p.array())).matrix();
    Eigen::MatrixXd hess = a.transpose() * curvature.asDiagonal() * a / static_cast<double>(n);
    hess.topLeftCorner(d, d).diagonal().array() += 1e-3;
    w -= hess.ldlt().solve(grad);
  }
  const std::vector<double> best(w.data(), w.data() + w.size());
  const double optimum_loss = f.loss(best);
  return {std::move(f), optimum_loss};
}

}  // namespace

// The paper's claim in miniature: GIANT reaches the optimum's loss to 1e-8 in a handful of
// rounds; synchronous gradient descent (each round one full-gradient step, the workers
// summing their shards' gradients) at the step 1/L is still far from it after as many.
TEST_CASE("GIANT reaches logistic regression's optimum in fewer rounds than gradient descent") {
  const LogisticProblem problem = logistic_problem();
  const Logistic& f = problem.f;
  constexpr std::size_t workers = 4;
  std::vector<double> w(f.dimension(), 0.0);
  const auto report = asyncopt::giant(f, std::span<double>(w),
                                      Giant{.workers = workers,
                                            .rounds = 30,
                                            .gradient_tolerance = 1e-12,
                                            .cg_iterations = 30,
                                            .cg_tolerance = 1e-10,
                                            .line_search = true});
  std::size_t rounds = 0;
  while (rounds < report.loss.size() && report.loss[rounds] - problem.optimum_loss > 1e-8) {
    ++rounds;
  }
  INFO("GIANT: " << rounds << " rounds to 1e-8, final gap "
                 << report.loss.back() - problem.optimum_loss);
  REQUIRE(rounds < report.loss.size());
  CHECK(rounds <= 10);
  CHECK(std::abs(report.loss.back() - problem.optimum_loss) <= 1e-8);

  // Gradient descent through the library's synchronous rounds: every worker's batch is its
  // whole shard, so one round is one step along the full gradient, at 1/L, L bounding the
  // Hessian (the features' largest eigenvalue over 4, plus l2).
  const Eigen::Index d = f.data().cols();
  Eigen::MatrixXd a(f.data().rows(), d + 1);
  a.leftCols(d) = f.data();
  a.col(d).setOnes();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(a.transpose() * a /
                                                             static_cast<double>(a.rows()));
  const double lipschitz = eigen.eigenvalues().maxCoeff() / 4.0 + 1e-3;
  std::vector<double> descent(f.dimension(), 0.0);
  const auto gd =
      asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Synchronous>(
          asyncopt::update::Sgd{.learning_rate = 1.0 / lipschitz})
          .optimize(f, std::span<double>(descent),
                    {.workers = workers,
                     .batch_size = f.num_examples() / workers,
                     .epochs = std::max<std::size_t>(rounds, 1)});
  CHECK(gd.updates == std::max<std::size_t>(rounds, 1));
  INFO("gradient descent after as many rounds: gap " << gd.loss.back() - problem.optimum_loss);
  CHECK(gd.loss.back() - problem.optimum_loss > 1e-4);
}

TEST_CASE("GIANT refuses bad options and a parameter vector of the wrong size") {
  const LogisticProblem problem = logistic_problem();
  std::vector<double> w(problem.f.dimension(), 0.0);
  const auto refuse = [&](const Giant& options, const std::string& message) {
    CHECK_THROWS_WITH(asyncopt::giant(problem.f, std::span<double>(w), options), message);
  };
  refuse(Giant{.workers = 0}, "asyncopt: Giant::workers must be at least 1");
  refuse(Giant{.rounds = 0}, "asyncopt: Giant::rounds must be at least 1");
  refuse(Giant{.cg_iterations = 0}, "asyncopt: Giant::cg_iterations must be at least 1");
  refuse(Giant{.cg_tolerance = -1.0},
         "asyncopt: Giant::cg_tolerance must be finite and non-negative, got -1.000000");
  refuse(Giant{.step = 0.0}, "asyncopt: Giant::step must be finite and positive, got 0.000000");
  CHECK(w == std::vector<double>(problem.f.dimension(), 0.0));
  std::vector<double> short_w(3, 0.0);
  CHECK_THROWS_WITH(asyncopt::giant(problem.f, std::span<double>(short_w), Giant{}),
                    "asyncopt: giant() got 3 parameters for an objective of dimension 11");
}
