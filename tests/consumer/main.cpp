// Trains least squares (asyncopt::objectives) on synthetic data through the installed
// package and checks that the known solution is recovered; with the zmq or cuda component,
// also calls into the component's dependency through its target, and with mpi takes one
// synchronous step through the MPI transport as a single process (no mpiexec). Exit status 0
// means the package works.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objectives.hpp>

#if defined(ASYNCOPT_CONSUMER_ZMQ)
#include <zmq.hpp>
#endif
#if defined(ASYNCOPT_CONSUMER_CUDA)
#include <cuda_runtime_api.h>
#endif
#if defined(ASYNCOPT_CONSUMER_MPI)
#include <asyncopt/mpi/mpi.hpp>
#endif

namespace {

#if defined(ASYNCOPT_CONSUMER_MPI)
// One round of synchronous SGD across the job's processes (one here): the worker's gradient
// is applied once, when its round closes, to the parameters of every process.
int run_mpi() {
  const asyncopt::mpi::Environment environment;
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::Synchronous,
                                 asyncopt::transport::Mpi>
      opt{asyncopt::update::Sgd{.learning_rate = 0.5f}};
  std::vector<float> w{1.0f, 2.0f, -3.0f};
  auto store = opt.attach(std::span<float>(w), 1);
  auto worker = store->worker(0);
  std::vector<float> seen(w.size());
  worker.pull(std::span<float>(seen));
  const std::vector<float> g{2.0f, -2.0f, 4.0f};
  const asyncopt::PushResult pushed = worker.push(std::span<const float>(g));
  worker.clock();
  std::printf("asyncopt::mpi: %zu process, w = %g %g %g\n", store->processes(),
              static_cast<double>(w[0]), static_cast<double>(w[1]), static_cast<double>(w[2]));
  const std::vector<float> expected{0.0f, 3.0f, -5.0f};
  if (store->processes() != 1 || seen != std::vector<float>{1.0f, 2.0f, -3.0f} || !pushed.applied ||
      w != expected) {
    std::printf("FAILED: one synchronous step through transport::Mpi\n");
    return 1;
  }
  return 0;
}
#endif

int run() {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  constexpr Eigen::Index rows = 200;
  constexpr std::array<float, 5> w_star{1.0f, -2.0f, 0.5f, 3.0f, -1.0f};
  constexpr auto cols = static_cast<Eigen::Index>(w_star.size());

  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix x(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) {
      x(i, j) = normal(rng);
    }
  }
  const Eigen::Map<const Eigen::VectorXf> truth(w_star.data(), cols);
  Eigen::VectorXf y = x * truth;

  const asyncopt::objective::LeastSquares<Matrix> f(std::move(x), std::move(y),
                                                    {.l2 = 0.0, .intercept = false});
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree> opt{
      asyncopt::update::Sgd{.learning_rate = 0.05f}};

  std::vector<float> w(w_star.size(), 0.0f);
  const asyncopt::Report r = opt.optimize(f, std::span<float>(w),
                                          {.workers = 2, .batch_size = 4, .epochs = 50, .seed = 1});

  float max_error = 0.0f;
  std::printf("w =");
  for (std::size_t j = 0; j < w.size(); ++j) {
    std::printf(" %.5f", static_cast<double>(w[j]));
    max_error = std::max(max_error, std::abs(w[j] - w_star[j]));
  }
  std::printf("\nupdates = %llu, max |w - w*| = %.3g\n", static_cast<unsigned long long>(r.updates),
              static_cast<double>(max_error));

  if (!(max_error < 1e-2f)) {
    std::printf("FAILED: the solution w* was not recovered\n");
    return 1;
  }
#if defined(ASYNCOPT_CONSUMER_ZMQ)
  const auto [major, minor, patch] = zmq::version();
  std::printf("asyncopt::zmq: libzmq %d.%d.%d\n", major, minor, patch);
  if (major < 4) {
    std::printf("FAILED: libzmq 4 or later expected\n");
    return 1;
  }
#endif
#if defined(ASYNCOPT_CONSUMER_CUDA)
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess || runtime <= 0) {
    std::printf("FAILED: cudaRuntimeGetVersion\n");
    return 1;
  }
  std::printf("asyncopt::cuda: CUDA runtime %d\n", runtime);
#endif
#if defined(ASYNCOPT_CONSUMER_MPI)
  if (run_mpi() != 0) {
    return 1;
  }
#endif
  std::printf("OK\n");
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAILED: %s\n", e.what());
    return 1;
  }
}
