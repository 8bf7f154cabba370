#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/least_squares.hpp>

int main() {
  // 10,000 examples of y = x . (1, -2, 3, -4, 5), with x standard normal.
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Matrix x = Matrix::NullaryExpr(10000, 5, [&] { return normal(rng); });
  Eigen::VectorXf y = x * Eigen::Vector<float, 5>(1, -2, 3, -4, 5);
  asyncopt::objective::LeastSquares<Matrix> f(std::move(x), std::move(y), {.intercept = false});

  // Hogwild!: lock-free SGD on 4 threads sharing the parameters.
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree> opt(
      asyncopt::update::Sgd{.learning_rate = 0.05});
  std::vector<float> w(f.dimension(), 0.0f);
  asyncopt::Report report = opt.optimize(f, w, {.workers = 4, .batch_size = 8, .epochs = 5});

  std::printf("w = %.3f %.3f %.3f %.3f %.3f; loss %.2e after %llu updates, mean staleness %.2f\n",
              w[0], w[1], w[2], w[3], w[4], report.final_loss(),
              static_cast<unsigned long long>(report.updates), report.mean_staleness());
  std::printf("stopped: %s\n", std::string(asyncopt::to_string(report.stop)).c_str());
  return report.final_loss() < 1e-6 ? 0 : 1;
}
