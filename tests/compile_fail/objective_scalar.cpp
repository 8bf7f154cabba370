// A float optimizer given an objective and parameters of double.
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

struct Quadratic {
  [[nodiscard]] std::size_t dimension() const { return 2; }
  [[nodiscard]] std::size_t num_examples() const { return 4; }
  [[nodiscard]] double loss(std::span<const double> w) const {
    return 0.5 * (w[0] * w[0] + w[1] * w[1]);
  }
  void gradient(std::span<const double> w, std::span<const std::size_t> /*batch*/,
                std::span<double> grad) const {
    grad[0] = w[0];
    grad[1] = w[1];
  }
};

int main() {
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree>
      optimizer;
  std::vector<double> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<double>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
