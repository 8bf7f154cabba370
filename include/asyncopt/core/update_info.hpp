// What the store knows about one push when it applies it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace asyncopt {

/// Facts about the update being applied, handed to the rule so that it can fold them into
/// its coefficients once per push (schedules, staleness scaling, clipping).
struct UpdateInfo {
  /// Updates applied to the store between the worker's pull and this push (tau).
  std::uint64_t staleness = 0;
  /// This update's position in the store's sequence of updates (0 for the first).
  std::uint64_t version = 0;
  /// The pushing worker.
  std::size_t worker = 0;
  /// Multiplies the rule's learning rate; set by schedules and by staleness-aware scaling.
  double lr_scale = 1.0;
  /// The schedule's factor for this update over that for the previous one: what momentum
  /// correction (Goyal et al. 2017) rescales the velocity by.
  double lr_ratio = 1.0;
  /// Euclidean norm of the whole gradient; filled in only for rules that need it.
  double gradient_norm = 0.0;
};

/// Whether a rule (or its formula) reads w_seen, the parameters the gradient was computed at
/// (`static constexpr bool needs_w_seen = true`).
template <class T>
inline constexpr bool needs_w_seen_v = [] {
  if constexpr (requires { T::needs_w_seen; }) {
    return static_cast<bool>(T::needs_w_seen);
  } else {
    return false;
  }
}();

/// Whether a rule needs UpdateInfo::gradient_norm (`static constexpr bool needs_gradient_norm`).
template <class T>
inline constexpr bool needs_gradient_norm_v = [] {
  if constexpr (requires { T::needs_gradient_norm; }) {
    return static_cast<bool>(T::needs_gradient_norm);
  } else {
    return false;
  }
}();

}  // namespace asyncopt
