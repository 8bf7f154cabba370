// A rule whose formula calls std::sqrt, which takes scalars only. Under Locked the kernels
// run the formula on SIMD batches.
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

struct AdaGradLike {
  double learning_rate = 0.1;
  static constexpr std::size_t state_slots = 1;
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;
    template <class V>
    void operator()(V& w, const V& g, std::array<V, 1>& state) const {
      V& sum = state[0];
      sum += g * g;
      w -= V(learning_rate) * g / std::sqrt(sum + V(1));
    }
  };
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }
  void validate() const {}
};

int main() {
  const asyncopt::AsyncOptimizer<float, AdaGradLike, asyncopt::consistency::Locked> optimizer(
      AdaGradLike{.learning_rate = 0.5});
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
