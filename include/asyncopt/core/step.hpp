// What the store knows about one push when it applies it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace asyncopt {

/// Facts about the update being applied, handed to the rule so that it can scale its
/// coefficients (learning-rate schedules, staleness-aware rates).
struct StepInfo {
  /// Updates applied to the store between the worker's pull and this push (tau).
  std::uint64_t staleness = 0;
  /// This update's position in the store's sequence of updates (0 for the first).
  std::uint64_t version = 0;
  /// The pushing worker.
  std::size_t worker = 0;
};

}  // namespace asyncopt
