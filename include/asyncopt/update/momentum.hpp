// Momentum: the exponential moving average form and classic heavy-ball / Nesterov.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt::update {

/// Momentum as an exponential moving average of the gradients:
/// m <- beta * m + (1 - beta) * g;  w <- w - lr * m.
/// The form in which asynchronous SGD's implicit momentum is analysed and compensated
/// (Mitliagkas, Zhang, Hadjis and Re, "Asynchrony begets momentum", 2016).
struct MomentumCorrection {
  /// Step size lr, positive and finite; multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.01;
  /// Decay beta of the moving average of the gradients, in [0, 1) (0: plain Sgd).
  double beta = 0.9;

  /// Number of per-parameter state slots the rule keeps (1: the moving average m).
  static constexpr std::size_t state_slots = 1;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;   ///< Step size of this push: `learning_rate * lr_scale`.
    Scalar beta;            ///< Decay of the moving average.
    Scalar one_minus_beta;  ///< `1 - beta`, precomputed.

    /// Updates one element (or SIMD batch) in place: `m = beta * m + (1 - beta) * g`
    /// (`m` is `state[0]`), then `w -= lr * m`.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state) const {
      V& m = state[0];
      m = V(beta) * m + V(one_minus_beta) * g;
      w -= V(learning_rate) * m;
    }
  };

  /// Returns the coefficients of the update described by `info` (the learning rate scaled by
  /// UpdateInfo::lr_scale) as a Step; does not modify the rule, so workers may call it
  /// concurrently.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(beta),
            static_cast<Scalar>(1.0 - beta)};
  }

  /// Throws std::invalid_argument unless `learning_rate` is positive and finite and `beta` is
  /// in [0, 1).
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("MomentumCorrection", learning_rate, precision);
    detail::require_unit("MomentumCorrection", "beta", beta, precision);
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
  /// Step size lr, positive and finite; multiplied by UpdateInfo::lr_scale on every push.
  double learning_rate = 0.01;
  /// Momentum mu, in (-1, 1); negative values are allowed (see validate()).
  double momentum = 0.9;
  /// Use Nesterov's look-ahead update instead of the heavy-ball one.
  bool nesterov = false;
  /// Keep the learning rate inside the velocity (v <- mu * v + lr * g, w <- w - v).
  bool lr_in_velocity = false;
  /// With `lr_in_velocity`, rescale the velocity by UpdateInfo::lr_ratio (lr_new / lr_old) when
  /// the learning rate changes; ignored otherwise.
  bool momentum_correction = true;

  /// Number of per-parameter state slots the rule keeps (1: the velocity v).
  static constexpr std::size_t state_slots = 1;

  /// The per-element formula with this push's coefficients folded in. `V` is a scalar or a
  /// SIMD batch; the same code runs on both.
  template <class Scalar>
  struct Formula {
    Scalar learning_rate;  ///< Step size of this push: `learning_rate * lr_scale`.
    /// Momentum mu: decays the velocity in the classic form and weights the Nesterov
    /// look-ahead in both forms.
    Scalar momentum;
    /// Decay of the velocity when `lr_in_velocity`: mu, times lr_new / lr_old under
    /// momentum correction.
    Scalar velocity_decay;
    bool nesterov;        ///< Whether to apply the Nesterov update.
    bool lr_in_velocity;  ///< Whether the velocity carries the learning rate.

    /// Updates one element (or SIMD batch) in place, with `v` = `state[0]`. Classic form:
    /// `v = mu * v + g`, then `w -= lr * v` (or `w -= lr * (g + mu * v)` for Nesterov).
    /// With `lr_in_velocity`: `v = velocity_decay * v + lr * g`, then `w -= v` (or
    /// `w -= lr * g + mu * v` for Nesterov).
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

  /// Returns the coefficients of the update described by `info` (the learning rate scaled by
  /// UpdateInfo::lr_scale, and with `lr_in_velocity` and `momentum_correction` the velocity
  /// decay scaled by UpdateInfo::lr_ratio) as a Step; does not modify the rule, so workers may
  /// call it concurrently.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    const double decay =
        lr_in_velocity && momentum_correction ? momentum * info.lr_ratio : momentum;
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(momentum),
            static_cast<Scalar>(decay), nesterov, lr_in_velocity};
  }

  /// Throws std::invalid_argument unless `learning_rate` is positive and finite and
  /// `momentum` is in (-1, 1).
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    detail::require_learning_rate("HeavyBall", learning_rate, precision);
    // Negative momentum is allowed: with many asynchronous workers the implicit momentum of
    // staleness can make the best explicit momentum negative (Mitliagkas et al. 2016).
    detail::require(momentum > -1.0 && momentum < 1.0, "HeavyBall", "momentum", "in (-1, 1)",
                    momentum);
    detail::require_rounded(std::abs(precision.round(momentum)) < 1.0, "HeavyBall", "momentum",
                            momentum, precision, "in (-1, 1)");
  }
};

}  // namespace asyncopt::update
