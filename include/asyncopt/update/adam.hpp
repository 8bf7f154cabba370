// Adam, applied by the store (distributed Adam).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/math.hpp>

namespace asyncopt::update {

/// Adam (Kingma and Ba, ICLR 2015) applied by the store to every pushed gradient:
/// m <- b1 * m + (1 - b1) * g;  v <- b2 * v + (1 - b2) * g * g;
/// w <- w - lr_t * m / (sqrt(v) + epsilon),  lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t),
/// where t counts the updates the store has applied (its version + 1).
struct Adam {
  /// Step size lr, positive and finite; multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.001;
  /// Decay b1 of the first-moment (mean) estimate m, in [0, 1).
  double beta1 = 0.9;
  /// Decay b2 of the second-moment (uncentred variance) estimate v, in [0, 1).
  double beta2 = 0.999;
  /// Added to sqrt(v), positive and finite. As v is not bias-corrected, this is the
  /// epsilon-hat of the paper's reformulation (sec. 2): it acts as epsilon / sqrt(1 - b2^t)
  /// added to sqrt(v-hat) in the bias-corrected form, the same once b2^t is negligible.
  double epsilon = 1e-8;

  /// Number of per-parameter state slots the rule keeps (2: the moments m and v).
  static constexpr std::size_t state_slots = 2;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    /// lr_t: `learning_rate * lr_scale` with the bias correction folded in.
    Scalar learning_rate;
    Scalar beta1;            ///< Decay of the first moment.
    Scalar one_minus_beta1;  ///< `1 - beta1`, precomputed.
    Scalar beta2;            ///< Decay of the second moment.
    Scalar one_minus_beta2;  ///< `1 - beta2`, precomputed.
    Scalar epsilon;          ///< Added to sqrt(v).

    /// Updates one element (or SIMD batch) in place, with `m` = `state[0]` and `v` =
    /// `state[1]`: `m = b1 * m + (1 - b1) * g`, `v = b2 * v + (1 - b2) * g * g`, then
    /// `w -= lr_t * m / (sqrt(v) + epsilon)`.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 2>& state) const {
      V& m = state[0];
      V& v = state[1];
      m = V(beta1) * m + V(one_minus_beta1) * g;
      v = V(beta2) * v + V(one_minus_beta2) * g * g;
      w -= V(learning_rate) * m / (math::sqrt(v) + V(epsilon));
    }
  };

  /// Returns the coefficients of the update described by `info` as a Step, with
  /// t = UpdateInfo::version + 1 and lr_t = lr * lr_scale * sqrt(1 - b2^t) / (1 - b1^t); does
  /// not modify the rule, so workers may call it concurrently.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    const double t = static_cast<double>(info.version) + 1.0;
    const double corrected = learning_rate * info.lr_scale * std::sqrt(1.0 - std::pow(beta2, t)) /
                             (1.0 - std::pow(beta1, t));
    return {static_cast<Scalar>(corrected),   static_cast<Scalar>(beta1),
            static_cast<Scalar>(1.0 - beta1), static_cast<Scalar>(beta2),
            static_cast<Scalar>(1.0 - beta2), static_cast<Scalar>(epsilon)};
  }

  /// Throws std::invalid_argument unless `learning_rate` and `epsilon` are positive and
  /// finite and `beta1` and `beta2` are in [0, 1).
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("Adam", learning_rate, precision);
    detail::require_unit("Adam", "beta1", beta1, precision);
    detail::require_unit("Adam", "beta2", beta2, precision);
    detail::require_positive("Adam", "epsilon", epsilon, precision);
  }
};

}  // namespace asyncopt::update
