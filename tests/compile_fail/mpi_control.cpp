// The same with Synchronous compiles: the harness can pass for the MPI plug-in's headers.
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/mpi/mpi.hpp>

#include "quadratic.hpp"

int main(int argc, char** argv) {
  const asyncopt::mpi::Environment mpi(argc, argv);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::Synchronous,
                           asyncopt::transport::Mpi>
      optimizer;
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
