// The same shape as the failing cases, well-typed: it must compile, which shows the harness
// can tell a passing build from a failing one.
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree> optimizer;
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
