// Least squares through the packaged headers: the known solution must come back.
#include <cmath>
#include <cstdio>
#include <span>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objectives.hpp>

#if defined(TEST_PACKAGE_ZMQ)
#include <zmq.hpp>
#endif

int main() {
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Matrix x(64, 2);
  Eigen::VectorXd y(64);
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    x(i, 0) = std::sin(0.3 * static_cast<double>(i));
    x(i, 1) = std::cos(0.7 * static_cast<double>(i));
    y[i] = 2.0 * x(i, 0) - 1.0 * x(i, 1);
  }
  const asyncopt::objective::LeastSquares<Matrix> f(x, y, {.intercept = false});
  const asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Locked> opt(
      asyncopt::update::Sgd{.learning_rate = 0.1});
  std::vector<double> w(2, 0.0);
  const auto report =
      opt.optimize(f, std::span<double>(w), {.workers = 1, .epochs = 200, .seed = 1});
  std::printf("asyncopt %d.%d.%d: w = (%.4f, %.4f) after %llu updates\n", ASYNCOPT_VERSION_MAJOR,
              ASYNCOPT_VERSION_MINOR, ASYNCOPT_VERSION_PATCH, w[0], w[1],
              static_cast<unsigned long long>(report.updates));
#if defined(TEST_PACKAGE_ZMQ)
  const auto [major, minor, patch] = zmq::version();
  std::printf("with zmq: libzmq %d.%d.%d\n", major, minor, patch);
#endif
  return std::abs(w[0] - 2.0) < 1e-3 && std::abs(w[1] + 1.0) < 1e-3 ? 0 : 1;
}
