// Delay-compensated asynchronous SGD (DC-ASGD).
#pragma once

#include <array>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/math.hpp>

namespace asyncopt::update {

/// DC-ASGD with a constant lambda (Zheng et al., "Asynchronous Stochastic Gradient Descent
/// with Delay Compensation", ICML 2017): w <- w - lr * (g + lambda * g * g * (w - w_seen)),
/// where w_seen are the parameters the worker computed g at. g * g approximates the Hessian's
/// diagonal, so the term corrects g for the updates applied since the worker's pull. With
/// lambda = 0 it is Sgd. Tune lambda: for a mini-batch mean gradient g * g is small, and on
/// logistic regression with batches of 32 (experiment E2) a useful lambda was in the
/// thousands, while the default changed the loss by less than 1e-4.
struct DelayCompensated {
  /// Step size lr, positive and finite; multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.01;
  /// Weight of the delay-compensation term, finite and non-negative (0: plain Sgd).
  double lambda = 0.04;

  /// Number of per-parameter state slots the rule keeps (0: stateless).
  static constexpr std::size_t state_slots = 0;
  /// The rule reads w_seen, so the store passes it to the step and the transport must
  /// provide it.
  static constexpr bool needs_w_seen = true;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    /// The step takes w_seen as its fourth argument.
    static constexpr bool needs_w_seen = true;
    Scalar learning_rate;  ///< Step size of this push: `learning_rate * lr_scale`.
    Scalar lambda;         ///< Weight of the delay-compensation term.

    /// Updates one element (or SIMD batch) in place:
    /// `w -= lr * (g + lambda * g * g * (w - w_seen))`; `state` is empty.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 0>& /*state*/,
                                const V& w_seen) const {
      w -= V(learning_rate) * (g + V(lambda) * g * g * (w - w_seen));
    }
  };

  /// Returns the coefficients of the update described by `info` (the learning rate scaled by
  /// UpdateInfo::lr_scale) as a Step; does not modify the rule, so workers may call it
  /// concurrently.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(lambda)};
  }

  /// Throws std::invalid_argument unless `learning_rate` is positive and finite and `lambda`
  /// is finite and non-negative.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("DelayCompensated", learning_rate, precision);
    detail::require_non_negative("DelayCompensated", "lambda", lambda, precision);
  }
};

/// DC-ASGD with adaptive lambda (Zheng et al. 2017, DC-ASGD-a): per parameter,
/// ms <- m * ms + (1 - m) * g * g and lambda = lambda0 / sqrt(ms + epsilon), so the
/// compensation is scaled by the gradient's running magnitude.
struct AdaptiveDelayCompensated {
  /// Step size lr, positive and finite; multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.01;
  /// Base weight lambda0 of the compensation term, finite and non-negative (0: plain Sgd).
  double lambda0 = 2.0;
  /// Decay m of the running mean square of the gradient, in [0, 1).
  double mean_square_decay = 0.95;
  /// Added to the mean square before its square root, positive and finite.
  double epsilon = 1e-7;

  /// Number of per-parameter state slots the rule keeps (1: the mean square ms).
  static constexpr std::size_t state_slots = 1;
  /// The rule reads w_seen, so the store passes it to the step and the transport must
  /// provide it.
  static constexpr bool needs_w_seen = true;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    /// The step takes w_seen as its fourth argument.
    static constexpr bool needs_w_seen = true;
    Scalar learning_rate;    ///< Step size of this push: `learning_rate * lr_scale`.
    Scalar lambda0;          ///< Base weight of the compensation term.
    Scalar decay;            ///< Decay m of the mean square.
    Scalar one_minus_decay;  ///< `1 - m`, precomputed.
    Scalar epsilon;          ///< Added to the mean square before its square root.

    /// Updates one element (or SIMD batch) in place: `ms = m * ms + (1 - m) * g * g`
    /// (`ms` is `state[0]`), `lambda = lambda0 / sqrt(ms + epsilon)`, then
    /// `w -= lr * (g + lambda * g * g * (w - w_seen))`.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state, const V& w_seen) const {
      V& ms = state[0];
      const V g2 = g * g;
      ms = V(decay) * ms + V(one_minus_decay) * g2;
      const V lambda = V(lambda0) / math::sqrt(ms + V(epsilon));
      w -= V(learning_rate) * (g + lambda * g2 * (w - w_seen));
    }
  };

  /// Returns the coefficients of the update described by `info` (the learning rate scaled by
  /// UpdateInfo::lr_scale) as a Step; does not modify the rule, so workers may call it
  /// concurrently.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(lambda0),
            static_cast<Scalar>(mean_square_decay), static_cast<Scalar>(1.0 - mean_square_decay),
            static_cast<Scalar>(epsilon)};
  }

  /// Throws std::invalid_argument unless `learning_rate` and `epsilon` are positive and
  /// finite, `lambda0` is finite and non-negative and `mean_square_decay` is in [0, 1).
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("AdaptiveDelayCompensated", learning_rate, precision);
    detail::require_non_negative("AdaptiveDelayCompensated", "lambda0", lambda0, precision);
    detail::require_unit("AdaptiveDelayCompensated", "mean_square_decay", mean_square_decay,
                         precision);
    detail::require_positive("AdaptiveDelayCompensated", "epsilon", epsilon, precision);
  }
};

}  // namespace asyncopt::update
