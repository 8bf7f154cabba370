// What optimize() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace asyncopt {

/// Why optimize() stopped.
enum class StopReason { epochs, tolerance, target_loss, time, callback };

[[nodiscard]] constexpr std::string_view to_string(StopReason reason) noexcept {
  switch (reason) {
    case StopReason::epochs:
      return "epochs";
    case StopReason::tolerance:
      return "tolerance";
    case StopReason::target_loss:
      return "target loss";
    case StopReason::time:
      return "time";
    case StopReason::callback:
      return "callback";
  }
  return "unknown";
}

/// Counters a store keeps about the pushes it received.
struct StoreStats {
  /// Gradients applied.
  std::uint64_t updates = 0;
  /// Gradients rejected whole because they held NaN or Inf.
  std::uint64_t rejected = 0;
  /// staleness[tau]: the number of applied gradients whose staleness was tau.
  std::vector<std::uint64_t> staleness;

  void merge(const StoreStats& other) {
    updates += other.updates;
    rejected += other.rejected;
    if (staleness.size() < other.staleness.size()) {
      staleness.resize(other.staleness.size(), 0);
    }
    for (std::size_t tau = 0; tau < other.staleness.size(); ++tau) {
      staleness[tau] += other.staleness[tau];
    }
  }

  [[nodiscard]] double mean_staleness() const noexcept {
    std::uint64_t count = 0;
    double sum = 0.0;
    for (std::size_t tau = 0; tau < staleness.size(); ++tau) {
      count += staleness[tau];
      sum += static_cast<double>(tau) * static_cast<double>(staleness[tau]);
    }
    return count == 0 ? 0.0 : sum / static_cast<double>(count);
  }

  [[nodiscard]] std::uint64_t max_staleness() const noexcept {
    for (std::size_t tau = staleness.size(); tau > 0; --tau) {
      if (staleness[tau - 1] != 0) {
        return tau - 1;
      }
    }
    return 0;
  }
};

/// The outcome of optimize(): the loss trace and what happened along the way.
struct Report : StoreStats {
  /// loss[0] is the full objective before the first step, loss[e] after epoch e. Empty when
  /// Options::evaluate_loss is false.
  std::vector<double> loss;
  /// Epochs run; the last may be partial when the time limit stopped the run.
  std::size_t epochs = 0;
  /// Examples whose gradients were computed.
  std::uint64_t examples = 0;
  /// Wall time of the whole call, loss evaluations included.
  double seconds = 0.0;
  /// Wall time spent in the workers' loops (loss evaluations excluded).
  double training_seconds = 0.0;
  StopReason stop = StopReason::epochs;

  [[nodiscard]] double final_loss() const noexcept {
    return loss.empty() ? std::numeric_limits<double>::quiet_NaN() : loss.back();
  }
  /// Applied updates per second of training time.
  [[nodiscard]] double updates_per_second() const noexcept {
    return training_seconds > 0.0 ? static_cast<double>(updates) / training_seconds : 0.0;
  }
};

}  // namespace asyncopt
