// A float optimizer given an objective and parameters of double.
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

int main() {
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree>
      optimizer;
  std::vector<double> w(2);
  const auto report =
      optimizer.optimize(BasicQuadratic<double>{}, std::span<double>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
