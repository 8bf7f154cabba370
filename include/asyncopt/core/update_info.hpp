// What the store knows about one push when it applies it.
#pragma once

#include <concepts>
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

/// Whether a rule's rounds send each worker's momentum instead of its gradient, from some
/// update on (`static constexpr bool sends_momentum = true`, with
/// `momentum_round(version)`): 1-bit Adam (update::OneBitAdam). Only a round policy that
/// honours it (`static constexpr bool sends_momenta = true`: consistency::Synchronous) runs
/// such a rule.
template <class T>
inline constexpr bool sends_momentum_v = [] {
  if constexpr (requires { T::sends_momentum; }) {
    return static_cast<bool>(T::sends_momentum);
  } else {
    return false;
  }
}();

/// What a round sends, as the store tells a round policy that honours it (sends_momenta_v)
/// before the round's sum: by default each worker's gradient, through the policy's
/// compression stage. For a rule whose rounds send momenta (sends_momentum_v), its warm-up
/// rounds send gradients uncompressed, and its later rounds each worker k's momentum
/// u_k = beta * m + one_minus_beta * g_k, which the round then sums in place of g_k.
template <class Scalar>
struct RoundMessages {
  /// Whether the round's messages go through the compression stage (when it has one).
  bool compressed = true;
  /// The rule's momentum m (n values, the same on every process), or null: messages are
  /// the gradients.
  const Scalar* momentum = nullptr;
  /// The momentum's decay.
  Scalar beta{0};
  /// 1 - beta, as the rule computes it.
  Scalar one_minus_beta{0};
};

/// What a round's `commit` says the round sends (`commit.messages()`), or the default: each
/// worker's gradient, through the compression stage.
template <class Scalar, class Commit>
[[nodiscard]] RoundMessages<Scalar> round_messages(const Commit& commit) {
  if constexpr (requires { commit.messages(); }) {
    static_assert(std::same_as<decltype(commit.messages()), RoundMessages<Scalar>>,
                  "asyncopt: a round's commit.messages() must return RoundMessages of the "
                  "round's Scalar");
    return commit.messages();
  } else {
    return {};
  }
}

/// Whether a consistency policy's rounds send a rule's momenta when it asks
/// (`static constexpr bool sends_momenta = true`).
template <class T>
inline constexpr bool sends_momenta_v = [] {
  if constexpr (requires { T::sends_momenta; }) {
    return static_cast<bool>(T::sends_momenta);
  } else {
    return false;
  }
}();

}  // namespace asyncopt
