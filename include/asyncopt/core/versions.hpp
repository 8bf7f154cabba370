// The counters a concurrent store keeps: the sequence of updates, the workers' clocks and
// statistics, and which worker ids have a live handle.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/store.hpp>

namespace asyncopt::store {

/// The sequence of updates of a store that several threads push to at once. A push takes
/// its place with take() (the staleness counts every update that started after the
/// worker's pull) and counts as completed when its Ticket goes, even by an exception, so
/// that pulls never wait for an update that will not come.
class Versions {
 public:
  /// Counts one update as completed when destroyed.
  class Ticket {
   public:
    /// The update's place in the sequence (0 for the first).
    [[nodiscard]] std::uint64_t slot() const noexcept { return slot_; }
    /// The updates that started after `seen` completed ones (the version a pull saw) and
    /// before this one: its staleness, never underestimated.
    [[nodiscard]] std::uint64_t staleness(std::uint64_t seen) const noexcept {
      return slot_ >= seen ? slot_ - seen : 0;
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket(Ticket&&) = delete;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() { completed_.fetch_add(1, std::memory_order_release); }

   private:
    friend class Versions;
    Ticket(std::atomic<std::uint64_t>& completed, std::uint64_t slot) noexcept
        : completed_(completed), slot_(slot) {}
    std::atomic<std::uint64_t>& completed_;
    std::uint64_t slot_;
  };

  /// Takes the next place in the sequence.
  [[nodiscard]] Ticket take() noexcept {
    return {completed_, started_.fetch_add(1, std::memory_order_acq_rel)};
  }
  /// Updates completed so far: what a pull sees.
  [[nodiscard]] std::uint64_t completed() const noexcept {
    return completed_.load(std::memory_order_acquire);
  }
  /// Sets both counters, as when resuming from a checkpoint; only while nobody pushes.
  void restore(std::uint64_t version) noexcept {
    started_.store(version, std::memory_order_relaxed);
    completed_.store(version, std::memory_order_release);
  }

 private:
  alignas(cache_line) std::atomic<std::uint64_t> started_{0};
  alignas(cache_line) std::atomic<std::uint64_t> completed_{0};
};

/// One worker's counters: its statistics (written by the thread that uses the worker id) and
/// its clock, on a cache line of their own.
struct alignas(cache_line) Counters {
  /// Pushes applied, rejected and their staleness; time spent waiting.
  StoreStats stats = empty_stats();
  /// Steps the worker has finished.
  std::atomic<std::uint64_t> clock{0};
};

/// Which worker ids have a live handle: each has at most one at a time.
class Claims {
 public:
  /// No id claimed, for `workers` workers.
  explicit Claims(std::size_t workers) : claimed_(std::make_unique<std::atomic<bool>[]>(workers)) {}

  /// Claims `id`; throws std::logic_error while it has a live handle.
  void claim(std::size_t id) {
    if (claimed_[id].exchange(true, std::memory_order_acq_rel)) {
      throw std::logic_error("asyncopt: worker " + std::to_string(id) +
                             " already has a handle; each worker id has one at a time");
    }
  }
  /// Frees `id` for a new handle.
  void release(std::size_t id) noexcept { claimed_[id].store(false, std::memory_order_release); }

 private:
  std::unique_ptr<std::atomic<bool>[]> claimed_;
};

}  // namespace asyncopt::store
