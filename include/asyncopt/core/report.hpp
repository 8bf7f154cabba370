// What optimize() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace asyncopt {

/// Why optimize() stopped.
enum class StopReason { epochs, tolerance, target_loss, time, callback, diverged };

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
    case StopReason::diverged:
      return "diverged";
  }
  return "unknown";
}

/// Counters a store keeps about the pushes it received.
struct StoreStats {
  /// Staleness values up to this bound get a bucket each; larger ones share the last bucket
  /// (max_staleness() stays exact), so the histogram never grows in the push path.
  static constexpr std::size_t staleness_buckets = 1024;

  /// Gradients applied.
  std::uint64_t updates = 0;
  /// Gradients rejected whole because they held NaN or Inf.
  std::uint64_t rejected = 0;
  /// staleness[tau]: the number of applied gradients whose staleness was tau (the last of
  /// staleness_buckets entries counts every tau >= staleness_buckets - 1). Trailing empty
  /// buckets are trimmed.
  std::vector<std::uint64_t> staleness;
  /// Sum and maximum of the staleness of the applied gradients.
  std::uint64_t staleness_sum = 0;
  std::uint64_t staleness_max = 0;
  /// Seconds workers spent waiting at the consistency policy's gate (bounded staleness),
  /// summed over workers.
  double wait_seconds = 0.0;

  /// Counts one applied gradient; `staleness` must have staleness_buckets entries.
  void record(std::uint64_t tau) noexcept {
    ++updates;
    ++staleness[tau < staleness_buckets ? tau : staleness_buckets - 1];
    staleness_sum += tau;
    staleness_max = tau > staleness_max ? tau : staleness_max;
  }

  void merge(const StoreStats& other) {
    updates += other.updates;
    rejected += other.rejected;
    staleness_sum += other.staleness_sum;
    wait_seconds += other.wait_seconds;
    staleness_max = other.staleness_max > staleness_max ? other.staleness_max : staleness_max;
    if (staleness.size() < other.staleness.size()) {
      staleness.resize(other.staleness.size(), 0);
    }
    for (std::size_t tau = 0; tau < other.staleness.size(); ++tau) {
      staleness[tau] += other.staleness[tau];
    }
    while (!staleness.empty() && staleness.back() == 0) {
      staleness.pop_back();
    }
  }

  [[nodiscard]] double mean_staleness() const noexcept {
    return updates == 0 ? 0.0 : static_cast<double>(staleness_sum) / static_cast<double>(updates);
  }

  [[nodiscard]] std::uint64_t max_staleness() const noexcept { return staleness_max; }
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
