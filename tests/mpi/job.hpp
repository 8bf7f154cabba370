// What the MPI tests and bench_mpi share: the planted least-squares problem they train on
// (the same on every process), and a check that every process holds the same values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <utility>

#include <Eigen/Dense>

#include <asyncopt/mpi/mpi.hpp>
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

/// FNV-1a over the bytes of `values`.
inline std::uint64_t checksum(std::span<const float> values) {
  std::uint64_t h = 1469598103934665603ULL;
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (std::size_t i = 0; i < values.size_bytes(); ++i) {
    h = (h ^ bytes[i]) * 1099511628211ULL;
  }
  return h;
}

/// Whether `value` is the same on every process of MPI_COMM_WORLD (collective).
inline bool same_everywhere(std::uint64_t value) {
  std::uint64_t low = value;
  std::uint64_t high = value;
  MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return low == high;
}

}  // namespace mpi_tests
