// Adam, applied by the store (distributed Adam).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/step.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/math.hpp>

namespace asyncopt::update {

/// Adam (Kingma and Ba, ICLR 2015) applied by the store to every pushed gradient:
/// m <- b1 * m + (1 - b1) * g;  v <- b2 * v + (1 - b2) * g * g;
/// w <- w - lr_t * m / (sqrt(v) + epsilon),  lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t),
/// where t counts the updates the store has applied (its version + 1).
struct Adam {
  double learning_rate = 0.001;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;

  static constexpr std::size_t state_slots = 2;

  template <class Scalar>
  struct Step {
    Scalar learning_rate;  // bias correction folded in
    Scalar beta1;
    Scalar one_minus_beta1;
    Scalar beta2;
    Scalar one_minus_beta2;
    Scalar epsilon;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 2>& state) const {
      V& m = state[0];
      V& v = state[1];
      m = V(beta1) * m + V(one_minus_beta1) * g;
      v = V(beta2) * v + V(one_minus_beta2) * g * g;
      w -= V(learning_rate) * m / (math::sqrt(v) + V(epsilon));
    }
  };

  template <class Scalar>
  [[nodiscard]] Step<Scalar> step(const StepInfo& info) const noexcept {
    const double t = static_cast<double>(info.version) + 1.0;
    const double corrected = learning_rate * info.lr_scale * std::sqrt(1.0 - std::pow(beta2, t)) /
                             (1.0 - std::pow(beta1, t));
    return {static_cast<Scalar>(corrected),   static_cast<Scalar>(beta1),
            static_cast<Scalar>(1.0 - beta1), static_cast<Scalar>(beta2),
            static_cast<Scalar>(1.0 - beta2), static_cast<Scalar>(epsilon)};
  }

  void validate() const {
    detail::require_learning_rate("Adam", learning_rate);
    detail::require_unit("Adam", "beta1", beta1);
    detail::require_unit("Adam", "beta2", beta2);
    detail::require_positive("Adam", "epsilon", epsilon);
  }
};

}  // namespace asyncopt::update
