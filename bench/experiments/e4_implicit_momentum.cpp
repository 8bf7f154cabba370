// E4: asynchrony begets momentum.
//
// Mitliagkas, Zhang, Hadjis and Re ("Asynchrony begets momentum, with an application to
// deep learning", Allerton 2016) show that K workers taking turns, each gradient K - 1
// updates old, behave like SGD with an implicit momentum of about 1 - 1/K, so the explicit
// momentum that works best shrinks as K grows, down to negative values. This program runs
// heavy-ball SGD for every momentum in a grid with K round-robin workers in the simulator
// (a fixed delay of K - 1) on the same least-squares problem, at the same learning rate and
// number of updates, and reports the best momentum for each K.
//
// Usage: e4_implicit_momentum [CSV]. Prints one CHECK line; exits 1 if it fails.
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/least_squares.hpp>

#include "csv_argument.hpp"

namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LeastSquares = asyncopt::objective::LeastSquares<Matrix>;

// 4000 examples, 50 features with scales from 1 down to 0.1 (condition number 100 of the
// Hessian), a planted solution and label noise 0.1.
LeastSquares problem() {
  constexpr Eigen::Index n = 4000;
  constexpr Eigen::Index d = 50;
  std::mt19937_64 rng(2016);
  std::normal_distribution<double> normal;
  Matrix x(n, d);
  Eigen::VectorXd w_star(d);
  for (Eigen::Index j = 0; j < d; ++j) {
    w_star[j] = normal(rng);
  }
  Eigen::VectorXd y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    double target = 0.0;
    for (Eigen::Index j = 0; j < d; ++j) {
      const double scale = std::pow(0.1, static_cast<double>(j) / static_cast<double>(d - 1));
      x(i, j) = scale * normal(rng);
      target += x(i, j) * w_star[j];
    }
    y[i] = target + 0.1 * normal(rng);
  }
  return {std::move(x), std::move(y), {.l2 = 0.0, .intercept = false}};
}

double final_loss(const LeastSquares& f, double momentum, std::uint64_t workers) {
  using Opt =
      asyncopt::AsyncOptimizer<double, asyncopt::update::HeavyBall, asyncopt::consistency::Locked,
                               asyncopt::transport::Simulated>;
  const Opt opt(
      asyncopt::update::HeavyBall{.learning_rate = 0.02, .momentum = momentum},
      asyncopt::consistency::Locked{},
      asyncopt::transport::Simulated{.delay = asyncopt::delay::fixed(workers - 1), .seed = 7});
  std::vector<double> w(f.dimension(), 0.0);
  const auto report = opt.optimize(f, std::span<double>(w),
                                   {.workers = 1, .batch_size = 8, .epochs = 4, .seed = 3});
  const double loss = report.final_loss();
  return std::isfinite(loss) ? loss : std::numeric_limits<double>::infinity();
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  const std::vector<double> momenta = {-0.3, 0.0, 0.3, 0.6, 0.9};
  const std::vector<std::uint64_t> worker_counts = {1, 2, 4, 8, 16};
  const LeastSquares f = problem();
  if (csv.is_open()) {
    csv << "workers,momentum,final_loss\n";
  }
  std::vector<double> best;
  for (const std::uint64_t k : worker_counts) {
    double best_loss = std::numeric_limits<double>::infinity();
    double best_momentum = momenta.front();
    std::printf("K = %2llu:", static_cast<unsigned long long>(k));
    for (const double mu : momenta) {
      const double loss = final_loss(f, mu, k);
      std::printf("  mu %+.1f -> %.5g", mu, loss);
      if (csv.is_open()) {
        csv << k << ',' << mu << ',' << loss << '\n';
      }
      if (loss < best_loss) {
        best_loss = loss;
        best_momentum = mu;
      }
    }
    std::printf("  | best mu %+.1f\n", best_momentum);
    best.push_back(best_momentum);
  }
  // The criterion: the best momentum is non-increasing in K. Its value is the largest
  // increase of the best momentum from one K to the next (0 when it never increases).
  double largest_increase = 0.0;
  for (std::size_t i = 1; i < best.size(); ++i) {
    largest_increase = std::max(largest_increase, best[i] - best[i - 1]);
  }
  const bool pass = largest_increase <= 0.0;
  std::printf(
      "CHECK E4/best_momentum_non_increasing_in_K: %.1f (goal <= 0) %s  [best mu for K = "
      "1, 2, 4, 8, 16: %+.1f %+.1f %+.1f %+.1f %+.1f]\n",
      largest_increase, pass ? "PASS" : "FAIL", best[0], best[1], best[2], best[3], best[4]);
  return pass ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e4_implicit_momentum: %s\n", e.what());
  return 2;
}
