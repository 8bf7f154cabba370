// How optimize() runs: workers, batches and when to stop.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace asyncopt {

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
  }
};

}  // namespace asyncopt
