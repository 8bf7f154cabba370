// Learning-rate schedules, and the decorator that applies one to any rule.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/decorator.hpp>

/// Learning-rate schedules: a factor of the update index t (the store's version), which
/// multiplies the rule's learning rate.
namespace asyncopt::schedule {

/// A schedule is a value type with `double operator()(std::uint64_t t) const`, positive and
/// finite for every t, and `validate()`.
template <class S>
concept Schedule = std::copy_constructible<S> && requires(const S& s, std::uint64_t t) {
  { s(t) } -> std::convertible_to<double>;
  s.validate();
};

/// Factor 1.
struct Constant {
  /// Returns 1 for every update index.
  [[nodiscard]] double operator()(std::uint64_t /*t*/) const noexcept { return 1.0; }
  /// Does nothing: the schedule has no parameters.
  void validate() const noexcept {}
};

/// gamma^floor(t / every): step decay.
struct StepDecay {
  std::uint64_t every = 1000;  ///< Updates per period (at least 1); the factor drops after each.
  double gamma = 0.1;          ///< Factor applied once per period, in (0, 1].
  /// Returns gamma^floor(t / every), the factor for update index `t`.
  [[nodiscard]] double operator()(std::uint64_t t) const {
    const std::uint64_t decays = t / every;  // whole periods elapsed
    return std::pow(gamma, static_cast<double>(decays));
  }
  /// Throws std::invalid_argument unless every is at least 1 and gamma is in (0, 1].
  void validate() const {
    update::detail::require(every > 0, "schedule::StepDecay", "every", "at least 1",
                            static_cast<double>(every));
    update::detail::require(gamma > 0.0 && gamma <= 1.0, "schedule::StepDecay", "gamma",
                            "in (0, 1]", gamma);
  }
};

/// gamma^t: exponential decay.
struct Exponential {
  double gamma = 0.9999;  ///< Factor applied once per update, in (0, 1].
  /// Returns gamma^t, the factor for update index `t`.
  [[nodiscard]] double operator()(std::uint64_t t) const {
    return std::pow(gamma, static_cast<double>(t));
  }
  /// Throws std::invalid_argument unless gamma is in (0, 1].
  void validate() const {
    update::detail::require(gamma > 0.0 && gamma <= 1.0, "schedule::Exponential", "gamma",
                            "in (0, 1]", gamma);
  }
};

/// 1 / sqrt(1 + t / scale): inverse square root decay.
struct InverseSqrt {
  double scale = 1000.0;  ///< Updates over which the factor falls to 1/sqrt(2); positive, finite.
  /// Returns 1 / sqrt(1 + t / scale), the factor for update index `t`.
  [[nodiscard]] double operator()(std::uint64_t t) const {
    return 1.0 / std::sqrt(1.0 + static_cast<double>(t) / scale);
  }
  /// Throws std::invalid_argument unless scale is positive and finite.
  void validate() const {
    update::detail::require_positive("schedule::InverseSqrt", "scale", scale);
  }
};

/// Linear warm-up over `steps` updates, from 1/steps to 1, times `then` (Goyal et al.,
/// "Accurate, Large Minibatch SGD", 2017, sec. 2.2).
template <class Then = Constant>
struct LinearWarmup {
  static_assert(Schedule<Then>, "asyncopt: LinearWarmup<Then> needs a schedule as Then");
  std::uint64_t steps = 1000;  ///< Length of the warm-up in updates (at least 1).
  Then then{};                 ///< Schedule multiplied in, during the warm-up and after it.
  /// Returns min(1, (t + 1) / steps) * then(t), the factor for update index `t`.
  [[nodiscard]] double operator()(std::uint64_t t) const {
    const double ramp = std::min(1.0, static_cast<double>(t + 1) / static_cast<double>(steps));
    return ramp * then(t);
  }
  /// Throws std::invalid_argument unless steps is at least 1, then validates `then`.
  void validate() const {
    update::detail::require(steps > 0, "schedule::LinearWarmup", "steps", "at least 1",
                            static_cast<double>(steps));
    then.validate();
  }
};

}  // namespace asyncopt::schedule

namespace asyncopt::update {

/// Any rule with its learning rate multiplied by a schedule of the update index. Also tells
/// the rule the ratio of consecutive factors, for momentum correction (HeavyBall).
template <class Inner, class Schedule = schedule::Constant>
struct Scheduled {
  static_assert(UpdateRule<Inner>,
                "asyncopt: Scheduled<Inner, Schedule> wraps an update rule; Inner must model "
                "asyncopt::UpdateRule, such as asyncopt::update::Sgd");
  static_assert(schedule::Schedule<Schedule>,
                "asyncopt: Scheduled<Inner, Schedule> needs a schedule (a type that models "
                "asyncopt::schedule::Schedule, such as asyncopt::schedule::StepDecay)");
  /// The wrapped update rule's type (`Inner`).
  using inner_type = detail::InnerRule<Inner>;
  /// The schedule's type (`Schedule`).
  using schedule_type =
      std::conditional_t<schedule::Schedule<Schedule>, Schedule, schedule::Constant>;

  inner_type inner{};        ///< The wrapped update rule, run with the scaled learning rate.
  schedule_type schedule{};  ///< Factor of the update index (UpdateInfo::version).

  /// Number of per-parameter state slots: those of the wrapped rule.
  static constexpr std::size_t state_slots = inner_type::state_slots;
  /// Whether the step takes w_seen as a fourth argument: as the wrapped rule does.
  static constexpr bool needs_w_seen = needs_w_seen_v<inner_type>;
  /// Whether the store must fill in UpdateInfo::gradient_norm: as the wrapped rule does.
  static constexpr bool needs_gradient_norm = needs_gradient_norm_v<inner_type>;

  /// Whether the rounds send momenta: as the wrapped rule does (update::OneBitAdam).
  static constexpr bool sends_momentum = sends_momentum_v<inner_type>;

  /// The wrapped rule's momentum_round(version), for a rule whose rounds send momenta.
  [[nodiscard]] auto momentum_round(std::uint64_t version) const noexcept requires sends_momentum {
    return inner.momentum_round(version);
  }

  /// Returns the wrapped rule's step for `info` with UpdateInfo::lr_scale multiplied by
  /// schedule(t) and UpdateInfo::lr_ratio by schedule(t) / schedule(t - 1), t = `info.version`
  /// (the ratio is left unchanged for t = 0).
  template <class Scalar>
  [[nodiscard]] auto formula(UpdateInfo info) const {
    const double now = schedule(info.version);
    const double before = info.version > 0 ? schedule(info.version - 1) : now;
    info.lr_scale *= now;
    info.lr_ratio *= now / before;
    return inner.template formula<Scalar>(info);
  }

  /// Validates the wrapped rule, then the schedule; throws std::invalid_argument on the first
  /// bad hyper-parameter.
  /// Settings are checked as `precision`'s scalar type holds them (see asyncopt::Precision).
  void validate(const Precision& precision = {}) const {
    update::validate(inner, precision);
    schedule.validate();
  }
};

}  // namespace asyncopt::update
