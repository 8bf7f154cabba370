// Plain stochastic gradient descent.
#pragma once

#include <array>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt::update {

/// Stochastic gradient descent, w <- w - lr * g (Robbins and Monro 1951). Asynchronous
/// and lock-free when composed with consistency::LockFree (Hogwild!, Niu et al. 2011).
struct Sgd {
  /// Step size lr; positive and finite. Multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.01;

  /// Number of per-parameter state slots the rule keeps (0: stateless).
  static constexpr std::size_t state_slots = 0;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;  ///< Effective step size for this push: learning_rate * lr_scale.

    /// Updates one element in place: w <- w - learning_rate * g.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 0>& /*state*/) const {
      w -= V(learning_rate) * g;
    }
  };

  /// Returns the per-element update for one push, with the learning rate scaled by
  /// `info.lr_scale` and converted to `Scalar`. Does not modify the rule.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }

  /// Throws std::invalid_argument unless learning_rate is positive and finite.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("Sgd", learning_rate, precision);
  }
};

}  // namespace asyncopt::update
