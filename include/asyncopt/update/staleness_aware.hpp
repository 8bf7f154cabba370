// Staleness-aware learning rate.
#pragma once

#include <algorithm>
#include <cstddef>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/decorator.hpp>

namespace asyncopt::update {

/// Any rule with its learning rate divided by max(1, tau), tau the gradient's staleness
/// (Zhang, Gupta, Lian and Liu, "Staleness-aware Async-SGD for Distributed Deep Learning",
/// IJCAI 2016). At tau <= 1 it is the wrapped rule exactly.
template <class Inner>
struct StalenessAware {
  static_assert(UpdateRule<Inner>,
                "asyncopt: StalenessAware<Inner> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  static_assert(!sends_momentum_v<Inner>,
                "asyncopt: StalenessAware<Inner> cannot wrap a rule whose rounds send momenta "
                "(OneBitAdam): past its warm-up, its formula receives the round's mean momentum, "
                "not a gradient");
  /// The wrapped update rule's type (`Inner`).
  using inner_type = detail::InnerRule<Inner>;

  inner_type inner{};  ///< The wrapped update rule, run with the scaled learning rate.

  /// Number of per-parameter state slots: those of the wrapped rule.
  static constexpr std::size_t state_slots = inner_type::state_slots;
  /// Whether the step takes w_seen as a fourth argument: as the wrapped rule does.
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  /// Whether the store must fill in UpdateInfo::gradient_norm: as the wrapped rule does.
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  /// Returns the wrapped rule's step for `info` with UpdateInfo::lr_scale divided by
  /// `info.staleness` when that exceeds 1.
  template <class Scalar>
  [[nodiscard]] auto formula(UpdateInfo info) const {
    if (info.staleness > 1) {
      info.lr_scale /= static_cast<double>(info.staleness);
    }
    return inner.template formula<Scalar>(info);
  }

  /// Validates the wrapped rule (this decorator has no hyper-parameters of its own).
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const { update::validate(inner, precision); }
};

}  // namespace asyncopt::update
