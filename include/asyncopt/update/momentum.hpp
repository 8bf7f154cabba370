// Momentum: the exponential moving average form and classic heavy-ball / Nesterov.
#pragma once

#include <array>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/step.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt::update {

/// Momentum as an exponential moving average of the gradients:
/// m <- beta * m + (1 - beta) * g;  w <- w - lr * m.
/// The form in which asynchronous SGD's implicit momentum is analysed and compensated
/// (Mitliagkas, Zhang, Hadjis and Re, "Asynchrony begets momentum", 2016).
struct MomentumCorrection {
  double learning_rate = 0.01;
  double beta = 0.9;

  static constexpr std::size_t state_slots = 1;

  template <class Scalar>
  struct Step {
    Scalar learning_rate;
    Scalar beta;
    Scalar one_minus_beta;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state) const {
      V& m = state[0];
      m = V(beta) * m + V(one_minus_beta) * g;
      w -= V(learning_rate) * m;
    }
  };

  template <class Scalar>
  [[nodiscard]] Step<Scalar> step(const StepInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(beta),
            static_cast<Scalar>(1.0 - beta)};
  }

  void validate() const {
    detail::require_learning_rate("MomentumCorrection", learning_rate);
    detail::require_unit("MomentumCorrection", "beta", beta);
  }
};

/// Classic momentum (Polyak 1964), or Nesterov's (Sutskever et al., ICML 2013), with
/// momentum mu in (-1, 1):
///   v <- mu * v + g;  w <- w - lr * v            (heavy ball)
///   v <- mu * v + g;  w <- w - lr * (g + mu * v) (nesterov = true)
/// With `lr_in_velocity` the velocity carries the learning rate, v <- mu * v + lr * g and
/// w <- w - v; then a learning-rate change must rescale v by lr_new / lr_old ("momentum
/// correction", Goyal et al., "Accurate, Large Minibatch SGD", 2017, sec. 2.1), which
/// `momentum_correction` does, making both forms the same iteration for dense pushes under a
/// schedule (Scheduled). Two limits, both measured: a sparse push rescales only the
/// velocities it touches, so coordinates untouched at a learning-rate change drift from the
/// classic form; and factors applied per push (StalenessAware) are not corrected. Use the
/// classic form (lr_in_velocity = false) with sparse pushes or staleness scaling.
struct HeavyBall {
  double learning_rate = 0.01;
  double momentum = 0.9;
  bool nesterov = false;
  bool lr_in_velocity = false;
  bool momentum_correction = true;

  static constexpr std::size_t state_slots = 1;

  template <class Scalar>
  struct Step {
    Scalar learning_rate;
    Scalar momentum;
    Scalar velocity_decay;  // momentum, times lr_new / lr_old under momentum correction
    bool nesterov;
    bool lr_in_velocity;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state) const {
      V& v = state[0];
      if (lr_in_velocity) {
        v = V(velocity_decay) * v + V(learning_rate) * g;
        w -= nesterov ? V(learning_rate) * g + V(momentum) * v : v;
      } else {
        v = V(momentum) * v + g;
        w -= V(learning_rate) * (nesterov ? g + V(momentum) * v : v);
      }
    }
  };

  template <class Scalar>
  [[nodiscard]] Step<Scalar> step(const StepInfo& info) const noexcept {
    const double decay =
        lr_in_velocity && momentum_correction ? momentum * info.lr_ratio : momentum;
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(momentum),
            static_cast<Scalar>(decay), nesterov, lr_in_velocity};
  }

  void validate() const {
    detail::require_learning_rate("HeavyBall", learning_rate);
    // Negative momentum is allowed: with many asynchronous workers the implicit momentum of
    // staleness can make the best explicit momentum negative (Mitliagkas et al. 2016).
    detail::require(momentum > -1.0 && momentum < 1.0, "HeavyBall", "momentum", "in (-1, 1)",
                    momentum);
  }
};

}  // namespace asyncopt::update
