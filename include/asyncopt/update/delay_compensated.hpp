// Delay-compensated asynchronous SGD (DC-ASGD).
#pragma once

#include <array>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/step.hpp>
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
  double learning_rate = 0.01;
  double lambda = 0.04;

  static constexpr std::size_t state_slots = 0;
  static constexpr bool needs_w_seen = true;

  template <class Scalar>
  struct Step {
    static constexpr bool needs_w_seen = true;
    Scalar learning_rate;
    Scalar lambda;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 0>& /*state*/,
                                const V& w_seen) const {
      w -= V(learning_rate) * (g + V(lambda) * g * g * (w - w_seen));
    }
  };

  template <class Scalar>
  [[nodiscard]] Step<Scalar> step(const StepInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(lambda)};
  }

  void validate() const {
    detail::require_learning_rate("DelayCompensated", learning_rate);
    detail::require_non_negative("DelayCompensated", "lambda", lambda);
  }
};

/// DC-ASGD with adaptive lambda (Zheng et al. 2017, DC-ASGD-a): per parameter,
/// ms <- m * ms + (1 - m) * g * g and lambda = lambda0 / sqrt(ms + epsilon), so the
/// compensation is scaled by the gradient's running magnitude.
struct AdaptiveDelayCompensated {
  double learning_rate = 0.01;
  double lambda0 = 2.0;
  double mean_square_decay = 0.95;
  double epsilon = 1e-7;

  static constexpr std::size_t state_slots = 1;
  static constexpr bool needs_w_seen = true;

  template <class Scalar>
  struct Step {
    static constexpr bool needs_w_seen = true;
    Scalar learning_rate;
    Scalar lambda0;
    Scalar decay;
    Scalar one_minus_decay;
    Scalar epsilon;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state, const V& w_seen) const {
      V& ms = state[0];
      const V g2 = g * g;
      ms = V(decay) * ms + V(one_minus_decay) * g2;
      const V lambda = V(lambda0) / math::sqrt(ms + V(epsilon));
      w -= V(learning_rate) * (g + lambda * g2 * (w - w_seen));
    }
  };

  template <class Scalar>
  [[nodiscard]] Step<Scalar> step(const StepInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(lambda0),
            static_cast<Scalar>(mean_square_decay), static_cast<Scalar>(1.0 - mean_square_decay),
            static_cast<Scalar>(epsilon)};
  }

  void validate() const {
    detail::require_learning_rate("AdaptiveDelayCompensated", learning_rate);
    detail::require_non_negative("AdaptiveDelayCompensated", "lambda0", lambda0);
    detail::require_unit("AdaptiveDelayCompensated", "mean_square_decay", mean_square_decay);
    detail::require_positive("AdaptiveDelayCompensated", "epsilon", epsilon);
  }
};

}  // namespace asyncopt::update
