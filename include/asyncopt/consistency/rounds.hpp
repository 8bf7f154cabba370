// Rounds: the barrier shared by the policies that move all workers forward together, and
// the mean over the job of the workers' rows they close a round with. Internal to those
// policies.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include <asyncopt/core/collective.hpp>

namespace asyncopt::consistency::detail {

/// A round collects one contribution from every live worker; the worker that completes it
/// (the last to arrive, or a waiter woken because another worker left) closes it by calling
/// `close(contributed)` under the lock, where contributed[k] != 0 for each worker k that
/// contributed. Workers start live. A worker that leaves is no longer waited for; one that
/// joins is waited for from the round in progress on.
class Rounds {
 public:
  explicit Rounds(std::size_t workers) : live_(workers, 1), contributed_(workers, 0) {}

  /// Worker `id` contributes and waits until its round is closed, closing it itself when it
  /// is the one that completes it. Returns the seconds spent waiting.
  template <class Close>
  double arrive(std::size_t id, Close&& close) {
    std::unique_lock lock(mutex_);
    contributed_[id] = 1;
    const std::uint64_t round = round_;
    if (complete()) {
      close_round(close);
      return 0.0;
    }
    const auto start = std::chrono::steady_clock::now();
    while (round_ == round) {
      if (complete()) {
        close_round(close);
        break;
      }
      changed_.wait(lock);
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  /// Worker `id` leaves; the waiters finish a round it completes, with their own close.
  void leave(std::size_t id) {
    const std::lock_guard lock(mutex_);
    live_[id] = 0;
    changed_.notify_all();
  }

  /// Worker `id` leaves, first contributing when `contribute`; a round this completes is
  /// closed here with `close`. Leaving twice does nothing the second time.
  template <class Close>
  void leave(std::size_t id, bool contribute, Close&& close) {
    const std::lock_guard lock(mutex_);
    if (live_[id] == 0) {
      return;
    }
    live_[id] = 0;
    if (contribute) {
      contributed_[id] = 1;
    }
    if (any_contribution() && complete()) {
      close_round(close);
    }
  }

  /// Worker `id` takes part again. If a contribution it made when leaving is still in an
  /// open round, waits for that round to close (the live workers close it), so that one
  /// worker never contributes twice to a round.
  void join(std::size_t id) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return contributed_[id] == 0; });
    live_[id] = 1;
  }

 private:
  [[nodiscard]] bool complete() const noexcept {
    for (std::size_t k = 0; k < live_.size(); ++k) {
      if (live_[k] != 0 && contributed_[k] == 0) {
        return false;
      }
    }
    return true;
  }

  [[nodiscard]] bool any_contribution() const noexcept {
    return std::any_of(contributed_.begin(), contributed_.end(),
                       [](unsigned char c) { return c != 0; });
  }

  // The round is over even if `close` throws: nobody waits for it any longer.
  template <class Close>
  void close_round(Close& close) {
    struct Next {
      Rounds& rounds;
      explicit Next(Rounds& r) noexcept : rounds(r) {}
      Next(const Next&) = delete;
      Next& operator=(const Next&) = delete;
      ~Next() {
        std::fill(rounds.contributed_.begin(), rounds.contributed_.end(), 0);
        ++rounds.round_;
        rounds.changed_.notify_all();
      }
    } next(*this);
    close(std::span<const unsigned char>(contributed_));
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<unsigned char> live_;
  std::vector<unsigned char> contributed_;
  std::uint64_t round_ = 0;
};

/// The mean over the job of the contributing workers' rows: mean[i] = the mean over the
/// contributing workers k of rows[k * n + i], where the workers of this process are summed
/// in worker order and then, across processes, by `across.all_reduce_sum` (each process
/// adding its count of contributions in mean[n]), so the result depends neither on the order
/// in which workers arrived nor on which process computes it. `mean` has n + 1 elements; a
/// process with no contribution (an empty `contributed`) adds zeros and a count of 0.
/// Returns the number of contributions in the job; when it is 0, mean[0, n) is all zero.
template <class Scalar>
std::size_t average_rows(const Scalar* rows, std::size_t n,
                         std::span<const unsigned char> contributed, std::span<Scalar> mean,
                         const collective::Ref& across) {
  Scalar* const dst = mean.data();
  std::size_t count = 0;
  for (std::size_t k = 0; k < contributed.size(); ++k) {
    if (contributed[k] == 0) {
      continue;
    }
    const Scalar* row = rows + k * n;
    if (count == 0) {
      std::copy(row, row + n, dst);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        dst[i] += row[i];
      }
    }
    ++count;
  }
  if (count == 0) {
    std::fill(dst, dst + n, Scalar{0});
  }
  if (across.size() > 1) {
    mean[n] = static_cast<Scalar>(count);
    across.all_reduce_sum(mean);
    count = static_cast<std::size_t>(mean[n]);
  }
  if (count > 1) {
    const auto divisor = static_cast<Scalar>(count);
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] /= divisor;
    }
  }
  return count;
}

}  // namespace asyncopt::consistency::detail
