// A rule whose formula is written for the scalar type only, not as a template.
#include <array>
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

struct ScalarSgd {
  double learning_rate = 0.1;
  static constexpr std::size_t state_slots = 0;
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;
    void operator()(Scalar& w, const Scalar& g, std::array<Scalar, 0>& /*state*/) const {
      w -= learning_rate * g;
    }
  };
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }
  void validate() const {}
};

int main() {
  const asyncopt::AsyncOptimizer<float, ScalarSgd, asyncopt::consistency::LockFree> optimizer(
      ScalarSgd{.learning_rate = 0.5});
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
