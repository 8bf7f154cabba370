// The planted least-squares problem the MPI tests train on: the same on every process.
#pragma once

#include <random>
#include <utility>

#include <Eigen/Dense>

#include <asyncopt/objective/objective.hpp>

namespace mpi_tests {

using Dense = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LeastSquares = asyncopt::objective::LeastSquares<Dense>;

/// y = X w* + noise with X standard normal, from `seed` alone.
inline LeastSquares planted(Eigen::Index n, Eigen::Index d, unsigned seed, bool intercept = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Dense x(n, d);
  Eigen::VectorXf y(n);
  Eigen::VectorXf w_star(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    w_star[j] = normal(rng);
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index j = 0; j < d; ++j) {
      x(i, j) = normal(rng);
    }
    y[i] = x.row(i).dot(w_star) + 0.01F * normal(rng);
  }
  return LeastSquares(std::move(x), std::move(y), {.l2 = 0.0, .intercept = intercept});
}

}  // namespace mpi_tests
