// Weight decay and gradient clipping around any rule.
#pragma once

#include <cstddef>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/decorator.hpp>
#include <asyncopt/update/math.hpp>

namespace asyncopt::update {

/// L2 weight decay: the wrapped rule sees g + decay * w (Krogh and Hertz, NIPS 1991). The
/// decay acts on the parameters the store holds, fresh at the time of the update.
template <class Inner>
struct WeightDecay {
  static_assert(UpdateRule<Inner>,
                "asyncopt: WeightDecay<Inner> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  static_assert(!sends_momentum_v<Inner>,
                "asyncopt: WeightDecay<Inner> cannot wrap a rule whose rounds send momenta "
                "(OneBitAdam): past its warm-up, its formula receives the round's mean momentum, "
                "not a gradient");
  /// The wrapped update rule's type (`Inner`).
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};  ///< The wrapped update rule, which applies the modified gradient.
  /// Decay coefficient: decay * w is added to every gradient element. Finite and non-negative;
  /// 0 leaves the wrapped rule unchanged.
  double decay = 1e-4;

  /// Number of per-parameter state slots: those of the wrapped rule.
  static constexpr std::size_t state_slots = inner_type::state_slots;
  /// Whether the step takes w_seen as a fourth argument: as the wrapped rule does.
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  /// Whether the store must fill in UpdateInfo::gradient_norm: as the wrapped rule does.
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  /// Adds the decay term to one gradient element.
  template <class Scalar>
  struct Map {
    Scalar decay;  ///< The rule's decay, converted to `Scalar`.
    /// Returns g + decay * w, where `w` is the parameter's current value in the store.
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& w) const {
      return g + V(decay) * w;
    }
  };

  /// Returns the wrapped rule's step for `info`, fed g + decay * w in place of each gradient
  /// element g; called as `s(w, g, state)`, or with a fourth argument w_seen when
  /// needs_w_seen is true.
  template <class Scalar>
  [[nodiscard]] auto formula(const UpdateInfo& info) const {
    return detail::mapped(inner.template formula<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(decay)});
  }

  /// Validates the wrapped rule, then throws std::invalid_argument unless decay is finite and
  /// non-negative.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    update::validate(inner, precision);
    detail::require_non_negative("WeightDecay", "decay", decay, precision);
  }
};

/// Clips every gradient element to [-limit, limit] before the wrapped rule sees it.
template <class Inner>
struct ClipByValue {
  static_assert(UpdateRule<Inner>,
                "asyncopt: ClipByValue<Inner> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  static_assert(!sends_momentum_v<Inner>,
                "asyncopt: ClipByValue<Inner> cannot wrap a rule whose rounds send momenta "
                "(OneBitAdam): past its warm-up, its formula receives the round's mean momentum, "
                "not a gradient");
  /// The wrapped update rule's type (`Inner`).
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};  ///< The wrapped update rule, which applies the modified gradient.
  /// Largest magnitude a gradient element may have after clipping; positive and finite.
  double limit = 1.0;

  /// Number of per-parameter state slots: those of the wrapped rule.
  static constexpr std::size_t state_slots = inner_type::state_slots;
  /// Whether the step takes w_seen as a fourth argument: as the wrapped rule does.
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  /// Whether the store must fill in UpdateInfo::gradient_norm: as the wrapped rule does.
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  /// Clips one gradient element.
  template <class Scalar>
  struct Map {
    Scalar limit;  ///< The rule's limit, converted to `Scalar`.
    /// Returns g clamped to [-limit, limit]; the parameter value is ignored.
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& /*w*/) const {
      return math::clamp_abs(g, V(limit));
    }
  };

  /// Returns the wrapped rule's step for `info`, fed each gradient element clamped to
  /// [-limit, limit]; called as `s(w, g, state)`, or with a fourth argument w_seen when
  /// needs_w_seen is true.
  template <class Scalar>
  [[nodiscard]] auto formula(const UpdateInfo& info) const {
    return detail::mapped(inner.template formula<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(limit)});
  }

  /// Validates the wrapped rule, then throws std::invalid_argument unless limit is positive
  /// and finite.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    update::validate(inner, precision);
    detail::require_positive("ClipByValue", "limit", limit);
    // A limit beyond the scalar's range clips nothing, as asked; one that becomes 0 there
    // would clip every gradient to 0.
    if (precision.round(limit) == 0.0) {
      detail::require_held("ClipByValue", "limit", limit, precision, true);
    }
  }
};

/// Rescales the whole gradient to Euclidean norm at most `max_norm` before the wrapped rule
/// sees it (Pascanu, Mikolov and Bengio, ICML 2013). The store computes the norm of each
/// pushed gradient, one extra read of it, only for rules that ask.
template <class Inner>
struct ClipByNorm {
  static_assert(UpdateRule<Inner>,
                "asyncopt: ClipByNorm<Inner> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  static_assert(!sends_momentum_v<Inner>,
                "asyncopt: ClipByNorm<Inner> cannot wrap a rule whose rounds send momenta "
                "(OneBitAdam): past its warm-up, its formula receives the round's mean momentum, "
                "not a gradient");
  /// The wrapped update rule's type (`Inner`).
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};  ///< The wrapped update rule, which applies the modified gradient.
  /// Largest Euclidean norm of the whole gradient the wrapped rule sees; positive and finite.
  double max_norm = 1.0;

  /// Number of per-parameter state slots: those of the wrapped rule.
  static constexpr std::size_t state_slots = inner_type::state_slots;
  /// Whether the step takes w_seen as a fourth argument: as the wrapped rule does.
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  /// Always true: the store fills in UpdateInfo::gradient_norm, which sets the scale.
  static constexpr bool needs_gradient_norm = true;

  /// Rescales one gradient element.
  template <class Scalar>
  struct Map {
    /// Factor in (0, 1] for this push: max_norm / gradient_norm when the norm exceeds
    /// max_norm, else 1.
    Scalar scale;
    /// Returns scale * g; the parameter value is ignored.
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& /*w*/) const {
      return V(scale) * g;
    }
  };

  /// Returns the wrapped rule's step for `info`, fed each gradient element multiplied by
  /// max_norm / `info.gradient_norm` when that norm exceeds max_norm (unchanged otherwise);
  /// called as `s(w, g, state)`, or with a fourth argument w_seen when needs_w_seen is true.
  template <class Scalar>
  [[nodiscard]] auto formula(const UpdateInfo& info) const {
    const double scale = info.gradient_norm > max_norm ? max_norm / info.gradient_norm : 1.0;
    return detail::mapped(inner.template formula<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(scale)});
  }

  /// Validates the wrapped rule, then throws std::invalid_argument unless max_norm is
  /// positive and finite.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    update::validate(inner, precision);
    // The norm is computed and compared in double: no check in the scalar type.
    detail::require_positive("ClipByNorm", "max_norm", max_norm);
  }
};

}  // namespace asyncopt::update
