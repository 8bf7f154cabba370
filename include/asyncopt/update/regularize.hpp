// Weight decay and gradient clipping around any rule.
#pragma once

#include <cstddef>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/step.hpp>
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
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};
  double decay = 1e-4;

  static constexpr std::size_t state_slots = inner_type::state_slots;
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  template <class Scalar>
  struct Map {
    Scalar decay;
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& w) const {
      return g + V(decay) * w;
    }
  };

  template <class Scalar>
  [[nodiscard]] auto step(const StepInfo& info) const {
    return detail::mapped(inner.template step<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(decay)});
  }

  void validate() const {
    inner.validate();
    detail::require_non_negative("WeightDecay", "decay", decay);
  }
};

/// Clips every gradient element to [-limit, limit] before the wrapped rule sees it.
template <class Inner>
struct ClipByValue {
  static_assert(UpdateRule<Inner>,
                "asyncopt: ClipByValue<Inner> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};
  double limit = 1.0;

  static constexpr std::size_t state_slots = inner_type::state_slots;
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  template <class Scalar>
  struct Map {
    Scalar limit;
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& /*w*/) const {
      return math::clamp_abs(g, V(limit));
    }
  };

  template <class Scalar>
  [[nodiscard]] auto step(const StepInfo& info) const {
    return detail::mapped(inner.template step<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(limit)});
  }

  void validate() const {
    inner.validate();
    detail::require_positive("ClipByValue", "limit", limit);
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
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};
  double max_norm = 1.0;

  static constexpr std::size_t state_slots = inner_type::state_slots;
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  static constexpr bool needs_gradient_norm = true;

  template <class Scalar>
  struct Map {
    Scalar scale;
    template <class V>
    ASYNCOPT_HD V operator()(const V& g, const V& /*w*/) const {
      return V(scale) * g;
    }
  };

  template <class Scalar>
  [[nodiscard]] auto step(const StepInfo& info) const {
    const double scale = info.gradient_norm > max_norm ? max_norm / info.gradient_norm : 1.0;
    return detail::mapped(inner.template step<Scalar>(info),
                          Map<Scalar>{static_cast<Scalar>(scale)});
  }

  void validate() const {
    inner.validate();
    detail::require_positive("ClipByNorm", "max_norm", max_norm);
  }
};

}  // namespace asyncopt::update
