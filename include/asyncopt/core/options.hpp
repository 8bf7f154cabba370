// How optimize() runs: workers, batches and when to stop.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace asyncopt {

/// STORM's gradient estimator (Cutkosky and Orabona, "Momentum-Based Variance Reduction in
/// Non-Convex SGD", NeurIPS 2019), kept by every worker: at step t, with its batch xi_t,
///
///     d_t = g(x_t; xi_t) + (1 - a) (d_{t-1} - g(x_{t-1}; xi_t)),    d_1 = g(x_1; xi_1),
///
/// two gradients of the same batch, at the parameters the worker pulled now and at those it
/// pulled for its previous step; the worker pushes d_t instead of its gradient, and the rule
/// (any rule) applies it. On a noise model g(x; xi) = grad f(x) + xi (the same xi at both
/// points) the estimate's error is a xi_t + (1 - a) e_{t-1}, of stationary variance
/// a sigma^2 / (2 - a): a = 1 is plain SGD, a smaller a averages the noise over about 1/a
/// steps. The paper ties a to its adaptive step size (a = c eta^2); here a is constant and
/// the rule chooses the step. A step costs two gradients, and steps are dense.
struct Storm {
  /// The weight of the fresh gradient, in (0, 1].
  double a = 0.1;

  /// Throws std::invalid_argument unless 0 < a <= 1.
  void validate() const {
    if (!(a > 0.0 && a <= 1.0)) {
      throw std::invalid_argument("asyncopt: Options::storm.a must be in (0, 1], got " +
                                  std::to_string(a));
    }
  }
};

/// Options of optimize(), set with designated initializers:
/// `{.workers = 4, .batch_size = 64, .epochs = 20}`. Validated before anything starts.
struct Options {
  /// Worker threads (or simulated workers, or remote workers), each on its own shard.
  std::size_t workers = 2;
  /// Examples per gradient.
  std::size_t batch_size = 32;
  /// Passes over the data; 0 means no limit (then set max_seconds or target_loss).
  std::size_t epochs = 10;
  /// Stop when the full loss changes by at most this much over an epoch (0 disables).
  double tolerance = 0.0;
  /// Stop when the full loss falls to this value or below.
  double target_loss = -std::numeric_limits<double>::infinity();
  /// Stop after this much wall time (0 disables); checked by workers after every step.
  double max_seconds = 0.0;
  /// Seed of the per-epoch shuffles.
  std::uint64_t seed = 0x5eed;
  /// Evaluate the full loss before the first epoch and after every epoch. The tolerance
  /// and target_loss criteria need it.
  bool evaluate_loss = true;
  /// Each worker pushes STORM's estimate instead of its gradient (see Storm); none by
  /// default.
  std::optional<Storm> storm{};

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& what) {
      throw std::invalid_argument("asyncopt: Options::" + what);
    };
    if (workers == 0) {
      fail("workers must be at least 1");
    }
    if (batch_size == 0) {
      fail("batch_size must be at least 1");
    }
    if (!(tolerance >= 0.0) || std::isinf(tolerance)) {
      fail("tolerance must be finite and non-negative, got " + std::to_string(tolerance));
    }
    if (std::isnan(target_loss)) {
      fail("target_loss must not be NaN");
    }
    if (!(max_seconds >= 0.0) || std::isinf(max_seconds)) {
      fail("max_seconds must be finite and non-negative, got " + std::to_string(max_seconds));
    }
    const bool uses_loss = tolerance > 0.0 || std::isfinite(target_loss);
    if (uses_loss && !evaluate_loss) {
      fail("evaluate_loss must be true when tolerance or target_loss is set");
    }
    if (epochs == 0 && max_seconds == 0.0 && !uses_loss) {
      fail("epochs is 0 (no limit) but no other stopping criterion is set");
    }
    if (storm) {
      storm->validate();
    }
  }
};

}  // namespace asyncopt
