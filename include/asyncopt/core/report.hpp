// What optimize() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace asyncopt {

/// Why optimize() stopped.
enum class StopReason {
  epochs,       ///< Options::epochs epochs ran.
  tolerance,    ///< The full loss changed by at most Options::tolerance over an epoch.
  target_loss,  ///< The full loss fell to Options::target_loss or below.
  time,         ///< Options::max_seconds of wall time ran out.
  callback,     ///< An epoch callback returned false.
  diverged,     ///< The full loss after an epoch was NaN or infinite.
  all_rejected  ///< An epoch pushed gradients but every one was rejected as non-finite, so
                ///< the parameters did not change and the next epoch would do the same.
};

/// The name of `reason` as a short lowercase phrase: "epochs", "tolerance", "target loss",
/// "time", "callback", "diverged" or "all gradients rejected"; "unknown" for a value
/// outside the enumeration.
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
    case StopReason::all_rejected:
      return "all gradients rejected";
  }
  return "unknown";
}

/// Counters a store keeps about the pushes it received.
struct StoreStats {
  /// Staleness values up to this bound get a bucket each; larger ones share the last bucket
  /// (max_staleness() stays exact), so the histogram never grows in the push path.
  static constexpr std::size_t staleness_buckets = 1024;

  /// Updates applied to the parameters: one per accepted push, or one per round when the
  /// consistency policy combines a round's pushes into a single update (Synchronous).
  std::uint64_t updates = 0;
  /// Pushes rejected whole because their gradient held NaN or Inf; they changed nothing and
  /// are not counted in `updates`.
  std::uint64_t rejected = 0;
  /// staleness[tau]: the number of applied gradients whose staleness was tau (the last of
  /// staleness_buckets entries counts every tau >= staleness_buckets - 1). Trailing empty
  /// buckets are trimmed.
  std::vector<std::uint64_t> staleness;
  /// Sum of the staleness of all applied gradients, in updates (the staleness of a gradient
  /// is the number of updates applied between the pull it was computed from and its push).
  std::uint64_t staleness_sum = 0;
  /// Largest staleness of any applied gradient, in updates; 0 when none was applied.
  std::uint64_t staleness_max = 0;
  /// Wall time in seconds that workers spent blocked by the consistency policy (at a
  /// bounded-staleness gate, or waiting for a round to complete under Synchronous or
  /// LocalSgd), summed over workers. Under transport::Simulated: 0 in its delay mode, and
  /// simulated seconds at the gate in its timed mode.
  double wait_seconds = 0.0;
  /// Bytes that the rounds handed to the collective across processes (the MPI transport),
  /// summed over the processes: each all-reduce counts its buffer once per process. What a
  /// ring all-reduce puts on the wire is about twice that. 0 within one process.
  std::uint64_t collective_bytes = 0;
  /// Wall time in seconds that the rounds spent in the collective across processes, summed
  /// over the processes (waiting for the slowest one included). 0 within one process.
  double collective_seconds = 0.0;
  /// Bytes of the messages a round policy's compression stage encoded (Synchronous or
  /// LocalSgd with `compression`), headers included; 0 without compression.
  std::uint64_t compressed_bytes = 0;
  /// Bytes the same messages take uncompressed (n values of Scalar each): the ratio
  /// compressed_bytes / uncompressed_bytes is what compression saved.
  std::uint64_t uncompressed_bytes = 0;

  /// Counts one applied gradient; `staleness` must have staleness_buckets entries.
  void record(std::uint64_t tau) noexcept {
    ++updates;
    ++staleness[tau < staleness_buckets ? tau : staleness_buckets - 1];
    staleness_sum += tau;
    staleness_max = tau > staleness_max ? tau : staleness_max;
  }

  /// Adds `other`'s counters to these: sums `updates`, `rejected`, `staleness_sum`,
  /// `wait_seconds`, `collective_bytes`, `collective_seconds`, `compressed_bytes`,
  /// `uncompressed_bytes` and the histogram bucket by bucket
  /// (growing it if `other`'s is longer), keeps the larger `staleness_max`, then trims trailing
  /// empty buckets. May allocate.
  void merge(const StoreStats& other) {
    updates += other.updates;
    rejected += other.rejected;
    staleness_sum += other.staleness_sum;
    wait_seconds += other.wait_seconds;
    collective_bytes += other.collective_bytes;
    collective_seconds += other.collective_seconds;
    compressed_bytes += other.compressed_bytes;
    uncompressed_bytes += other.uncompressed_bytes;
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

  /// Mean staleness of the applied gradients, in updates (`staleness_sum / updates`); 0
  /// when no gradient was applied.
  [[nodiscard]] double mean_staleness() const noexcept {
    return updates == 0 ? 0.0 : static_cast<double>(staleness_sum) / static_cast<double>(updates);
  }

  /// Largest staleness of any applied gradient, in updates (`staleness_max`); 0 when none
  /// was applied.
  [[nodiscard]] std::uint64_t max_staleness() const noexcept { return staleness_max; }
};

/// The outcome of optimize(): the loss trace and what happened along the way.
struct Report : StoreStats {
  /// The full objective (the loss over all examples): loss[0] before the first step,
  /// loss[e] after epoch e, so it holds `epochs + 1` values. Empty when
  /// Options::evaluate_loss is false.
  std::vector<double> loss;
  /// Epochs run, counting the last one even when it was partial because the time limit
  /// stopped the workers mid-epoch.
  std::size_t epochs = 0;
  /// Examples whose gradients were computed and pushed, summed over workers and epochs
  /// (each example counts once per step it was part of, whether or not the push was
  /// rejected).
  std::uint64_t examples = 0;
  /// Wall time of the whole optimize() call in seconds, setup and loss evaluations
  /// included.
  double seconds = 0.0;
  /// Wall time in seconds spent in the workers' loops, summed over epochs (not over
  /// workers); loss evaluations and callbacks excluded.
  double training_seconds = 0.0;
  /// Why the run stopped.
  StopReason stop = StopReason::epochs;

  /// The last entry of `loss`: the full objective after the last epoch run. NaN when
  /// `loss` is empty (Options::evaluate_loss was false).
  [[nodiscard]] double final_loss() const noexcept {
    return loss.empty() ? std::numeric_limits<double>::quiet_NaN() : loss.back();
  }
  /// Applied updates per second of training time (`updates / training_seconds`); 0 when
  /// no training time was measured.
  [[nodiscard]] double updates_per_second() const noexcept {
    return training_seconds > 0.0 ? static_cast<double>(updates) / training_seconds : 0.0;
  }
};

}  // namespace asyncopt
