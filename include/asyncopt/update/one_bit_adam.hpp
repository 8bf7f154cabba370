// 1-bit Adam: Adam whose variance is frozen after a warm-up, after which the rounds send
// each worker's momentum, compressed with error feedback.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/adam.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/math.hpp>

namespace asyncopt::update {

/// 1-bit Adam (Tang, Gan, Awan, Rajbhandari, Li, Lian, Liu, Zhang, He, ICML 2021), for
/// consistency::Synchronous. Its first `freeze` updates (the warm-up) are `adam`'s, bit for
/// bit, over the round's uncompressed mean gradient: a round sends gradients uncompressed
/// whatever the policy's compression stage. From update `freeze` on, the variance v is
/// frozen and each worker k sends its momentum u_k = b1 * m + (1 - b1) * g_k through the
/// compression stage (sign with error feedback is the paper's choice:
/// `compress::Config{.codec = compress::Sign{}, .memory = {.feedback =
/// compress::Feedback::error_feedback}}`). The round's mean of the decoded momenta becomes
/// m, and w <- w - lr_t * m / (sqrt(v) + epsilon) with
/// lr_t = lr * sqrt(1 - b2^freeze) / (1 - b1^t): v's bias correction is frozen with v.
///
/// Every process (and the round's closing worker) holds the same m, so the momenta need no
/// second compression on their way back, unlike the paper's compressed all-reduce: the
/// round decodes every worker's message and averages them exactly (docs/design.md).
/// `freeze` = UINT64_MAX never freezes, and the rule is then `adam` bit for bit.
struct OneBitAdam {
  /// The Adam of the warm-up, whose learning rate, decays and epsilon apply throughout.
  Adam adam{};
  /// Updates (rounds) of the warm-up, at least 1: v is frozen after them.
  std::uint64_t freeze = 1000;

  /// Number of per-parameter state slots (2: the moments m and v).
  static constexpr std::size_t state_slots = 2;
  /// The rounds send momenta from update `freeze` on (see momentum_round()).
  static constexpr bool sends_momentum = true;

  /// The momentum decay b1 when the update at `version` (0 for the first) is past the
  /// warm-up, so that its round sends momenta; nothing during the warm-up.
  [[nodiscard]] std::optional<double> momentum_round(std::uint64_t version) const noexcept {
    if (version < freeze) {
      return std::nullopt;
    }
    return adam.beta1;
  }

  /// The per-element formula: Adam's during the warm-up; afterwards m is the round's mean
  /// momentum, which it receives in place of the gradient, and v stays as it is.
  template <class Scalar>
  struct Formula {
    /// Adam's formula, used during the warm-up.
    Adam::Formula<Scalar> warm_up;
    /// Whether v is frozen: the update's input is the round's mean momentum.
    bool frozen;
    /// lr_t after the warm-up, with v's bias correction frozen.
    Scalar frozen_learning_rate;

    /// Updates one element (or SIMD batch) in place, with `m` = `state[0]` and `v` =
    /// `state[1]`: Adam's step during the warm-up; afterwards `m = u` (the mean momentum)
    /// and `w -= lr_t * m / (sqrt(v) + epsilon)`.
    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& u, std::array<V, 2>& state) const {
      if (!frozen) {
        warm_up(w, u, state);
        return;
      }
      V& m = state[0];
      m = u;
      w -= V(frozen_learning_rate) * m / (math::sqrt(state[1]) + V(warm_up.epsilon));
    }
  };

  /// The coefficients of the update described by `info` (t = UpdateInfo::version + 1);
  /// does not modify the rule.
  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& info) const noexcept {
    const bool frozen = info.version >= freeze;
    double frozen_lr = 0.0;
    if (frozen) {
      const double t = static_cast<double>(info.version) + 1.0;
      frozen_lr = adam.learning_rate * info.lr_scale *
                  std::sqrt(1.0 - std::pow(adam.beta2, static_cast<double>(freeze))) /
                  (1.0 - std::pow(adam.beta1, t));
    }
    return {adam.formula<Scalar>(info), frozen, static_cast<Scalar>(frozen_lr)};
  }

  /// Throws std::invalid_argument for `adam`'s bad settings, or unless `freeze` is at least 1
  /// (v must have seen a gradient before it is frozen).
  void validate(const Precision& precision = {}) const {
    adam.validate(precision);
    detail::require(freeze >= 1, "OneBitAdam", "freeze", "at least 1", static_cast<double>(freeze));
  }
};

}  // namespace asyncopt::update
