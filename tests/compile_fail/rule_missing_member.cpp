// A user-written rule without validate(), passed to the constructor and run by optimize().
#include <array>
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

struct MyRule {
  double learning_rate = 0.1;
  static constexpr std::size_t state_slots = 0;
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;
    template <class V>
    void operator()(V& w, const V& g, std::array<V, 0>& /*state*/) const {
      w -= V(learning_rate) * g;
    }
  };
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }
};

int main() {
  const asyncopt::AsyncOptimizer<float, MyRule, asyncopt::consistency::LockFree> optimizer(
      MyRule{.learning_rate = 0.5});
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
