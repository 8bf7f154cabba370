// A rule whose formula branches on a value, which a batch holds one per lane. Under LockFree
// the kernels run the formula on scalars only; the optimizer compiles it for batches anyway.
#include <array>
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "quadratic.hpp"

struct SignSgd {
  double learning_rate = 0.1;
  static constexpr std::size_t state_slots = 0;
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;
    template <class V>
    void operator()(V& w, const V& g, std::array<V, 0>& /*state*/) const {
      if (g > 0) {
        w -= V(learning_rate);
      } else {
        w += V(learning_rate);
      }
    }
  };
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }
  void validate() const {}
};

int main() {
  const asyncopt::AsyncOptimizer<float, SignSgd, asyncopt::consistency::LockFree> optimizer(
      SignSgd{.learning_rate = 0.5});
  std::vector<float> w(2);
  const auto report = optimizer.optimize(Quadratic{}, std::span<float>(w), {.epochs = 1});
  return static_cast<int>(report.epochs);
}
