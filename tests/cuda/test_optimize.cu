// optimize() on the device store: the same AsyncOptimizer type with transport::CudaDevice in
// the Transport slot, a host objective, and the result mirrored back into the caller's array.
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/objective/least_squares.hpp>

TEST_CASE("optimize() fits least squares with the parameters on the device", "[cuda]") {
  constexpr Eigen::Index rows = 2000;
  constexpr Eigen::Index d = 20;
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Matrix a(rows, d);
  Eigen::VectorXd solution(d);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < d; ++j) {
      a(i, j) = normal(rng);
    }
  }
  for (Eigen::Index j = 0; j < d; ++j) {
    solution(j) = normal(rng);
  }
  const Eigen::VectorXd b = a * solution;
  const asyncopt::objective::LeastSquares<Matrix> objective(a, b, {.l2 = 0.0, .intercept = false});

  using Opt =
      asyncopt::AsyncOptimizer<double, asyncopt::update::MomentumCorrection,
                               asyncopt::consistency::Locked, asyncopt::transport::CudaDevice>;
  Opt opt({.learning_rate = 0.02, .beta = 0.5}, {.stripes = 2, .min_stripe_elements = 8});
  std::vector<double> params(static_cast<std::size_t>(d), 0.0);
  const asyncopt::Report report =
      opt.optimize(objective, params, {.workers = 2, .batch_size = 8, .epochs = 20});
  double error = 0.0;
  for (Eigen::Index j = 0; j < d; ++j) {
    const double e = params[static_cast<std::size_t>(j)] - solution(j);
    error += e * e;
  }
  INFO("distance to the solution " << std::sqrt(error) << ", final loss " << report.loss.back());
  CHECK(std::sqrt(error) < 1e-3 * solution.norm());
  CHECK(report.updates > 0);
  CHECK(report.rejected == 0);
  CHECK(report.loss.back() < 1e-6 * report.loss.front());
}
