// An objective without a gradient.
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

struct LossOnly {
  [[nodiscard]] std::size_t dimension() const { return 2; }
  [[nodiscard]] std::size_t num_examples() const { return 4; }
  [[nodiscard]] double loss(std::span<const float> /*w*/) const { return 0.0; }
};

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree> optimizer;
  std::vector<float> w(2);
  const auto report = optimizer.optimize(LossOnly{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
