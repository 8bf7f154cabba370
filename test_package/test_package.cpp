// Least squares through the packaged headers: the known solution must come back, and with
// the mpi component also from synchronous SGD over the MPI transport, as one process.
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
#if defined(TEST_PACKAGE_MPI)
#include <asyncopt/mpi/mpi.hpp>
#endif

int main(int argc, char** argv) {
#if defined(TEST_PACKAGE_MPI)
  const asyncopt::mpi::Environment mpi(argc, argv);
#else
  (void)argc;
  (void)argv;
#endif
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
#if defined(TEST_PACKAGE_MPI)
  const asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Synchronous,
                                 asyncopt::transport::Mpi>
      rounds(asyncopt::update::Sgd{.learning_rate = 0.1});
  std::vector<double> w_rounds(2, 0.0);
  const auto rounds_report =
      rounds.optimize(f, std::span<double>(w_rounds), {.workers = 1, .epochs = 200, .seed = 1});
  std::printf("with mpi: w = (%.4f, %.4f) after %llu updates in rounds over transport::Mpi\n",
              w_rounds[0], w_rounds[1], static_cast<unsigned long long>(rounds_report.updates));
  if (!(std::abs(w_rounds[0] - 2.0) < 1e-3 && std::abs(w_rounds[1] + 1.0) < 1e-3)) {
    return 1;
  }
#endif
  return std::abs(w[0] - 2.0) < 1e-3 && std::abs(w[1] + 1.0) < 1e-3 ? 0 : 1;
}
