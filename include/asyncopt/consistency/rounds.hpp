// Rounds: the barrier shared by the policies that move all workers forward together, and
// the sum over the job of the workers' rows they close a round with. Internal to those
// policies.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <utility>
#include <vector>

#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/pairwise.hpp>

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

  /// Whether worker `id` takes part (has not left, or has joined again). Only the thread
  /// acting for worker `id` may ask: its leave() and join() are the only writers of that
  /// entry, so no lock is needed.
  [[nodiscard]] bool live(std::size_t id) const noexcept { return live_[id] != 0; }

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

/// A worker's contribution to a round: where its n values are, and a buffer holding them
/// that the round may sum into (the guard's own row for the worker, or the worker's gradient
/// buffer when its push allows it), or null when the round must not write them.
template <class Scalar>
struct Contribution {
  /// The worker's n values.
  const Scalar* values = nullptr;
  /// The same values where the round may overwrite them; null: nowhere.
  Scalar* scratch = nullptr;
};

/// The sum over the job of a round's contributions, which the round divides by the count it
/// returns (in the update's pass, or while copying the mean out). `source(k)` is worker k's
/// Contribution; `rows` are the guard's rows, row k at rows + k * stride with stride >= n + 1,
/// and `spare` has n + 1 values. This process's contributions are summed in worker order, in
/// the pairwise tree of PairwiseSum (so the mean of 2^k equal contributions is exact), into
/// the first contributor's scratch (or its row), which then goes across the processes once,
/// as an all-reduce of n + 1 values, the last being this process's count: in place when the
/// sum is in a row (which has that room: a row, or a worker's gradient buffer lent by the
/// guard), else after moving the sum to `spare`. Every process makes that same call whatever
/// its workers pushed, as a collective requires. So the sum depends neither on the order in
/// which workers arrived nor on which process computes it, and every process reduces the
/// same way. A process with no contribution (an empty `contributed`) adds zeros and a count
/// of 0. Returns where the sum is, and the job's count of contributions (0: nobody
/// contributed, and the sum is all zero).
template <class Scalar, class Source>
std::pair<Scalar*, std::size_t> sum_round(Source&& source,
                                          std::span<const unsigned char> contributed, Scalar* rows,
                                          std::size_t stride, std::size_t n, Scalar* spare,
                                          const collective::Ref& across) {
  asyncopt::detail::PairwiseSum<Scalar> pairwise(n);
  Scalar* first_row = nullptr;
  for (std::size_t k = 0; k < contributed.size(); ++k) {
    if (contributed[k] == 0) {
      continue;
    }
    const Contribution<Scalar> c = source(k);
    Scalar* const row = rows + k * stride;
    if (first_row == nullptr) {
      first_row = row;
    }
    pairwise.add(c.values, c.scratch != nullptr ? c.scratch : row);
  }
  const std::size_t count = pairwise.count();
  Scalar* sum = pairwise.finish();
  bool room = sum == first_row;  // whether sum[n] may hold the count
  if (sum == nullptr) {
    sum = spare;
    room = true;
    std::fill(sum, sum + n, Scalar{0});
  }
  if (across.size() <= 1) {
    return {sum, count};
  }
  if (!room) {
    std::copy(sum, sum + n, spare);
    sum = spare;
  }
  sum[n] = static_cast<Scalar>(count);
  across.all_reduce_sum(std::span<Scalar>(sum, n + 1));
  return {sum, static_cast<std::size_t>(sum[n])};
}

/// The private replicas of a policy whose workers step on their own copy of the parameters
/// and meet in averaging rounds every `period` steps (LocalSgd, Scaffold): per worker a row
/// of `stride` >= n + 1 values, the first n its replica (the rest is the policy's, for what
/// it sends at a round, with the count last), and the rounds. The policy's `close` turns
/// the contributed rows into the shared parameters; every replica then restarts from them.
template <class Scalar>
class Replicas {
 public:
  /// For n parameters, rows of `stride` values and `workers` workers, averaging every
  /// `period` steps; every worker starts live.
  Replicas(std::size_t n, std::size_t stride, std::size_t workers, std::uint64_t period)
      : n_(n),
        stride_(stride),
        period_(period),
        rows_(stride * workers),
        changed_(workers, 0),
        rounds_(workers) {}

  /// Worker `id`'s replica, for its pushes to update with no lock (one thread uses a worker
  /// id at a time); it then holds steps not yet averaged.
  [[nodiscard]] std::span<Scalar> replica(std::size_t id) noexcept {
    changed_[id] = 1;
    return {row(id), n_};
  }

  /// The same, for its pulls to read.
  [[nodiscard]] std::span<const Scalar> replica(std::size_t id) const noexcept {
    return {rows_.data() + id * stride_, n_};
  }

  /// Worker k's row.
  [[nodiscard]] Scalar* row(std::size_t k) noexcept { return rows_.data() + k * stride_; }

  /// Worker `id` finished step `clock`: every period-th one, waits for the other live
  /// workers, the round's closer calling `close(contributed)` under the rounds' lock, and
  /// restarts from `shared` (read under `mutex`). Returns the seconds spent waiting.
  template <class Close>
  double clock(std::size_t id, std::uint64_t clock, std::span<const Scalar> shared,
               std::shared_mutex& mutex, Close&& close) {
    if (clock % period_ != 0) {
      return 0.0;
    }
    const double waited = rounds_.arrive(id, close);
    restart(id, shared, mutex);
    return waited;
  }

  /// Worker `id` stops: its steps not yet averaged go into the round in progress, which
  /// `close` closes when this completes it.
  template <class Close>
  void leave(std::size_t id, Close&& close) {
    rounds_.leave(id, changed_[id] != 0, close);
  }

  /// Worker `id` takes part again, from `shared`. If it left steps in a round that is still
  /// open, waits until the other live workers close it.
  void join(std::size_t id, std::span<const Scalar> shared, std::shared_mutex& mutex) {
    rounds_.join(id);
    restart(id, shared, mutex);
  }

 private:
  void restart(std::size_t id, std::span<const Scalar> shared, std::shared_mutex& mutex) {
    const std::shared_lock lock(mutex);
    std::copy(shared.begin(), shared.end(), row(id));
    changed_[id] = 0;
  }

  std::size_t n_;
  std::size_t stride_;
  std::uint64_t period_;
  std::vector<Scalar> rows_;
  // Per worker, touched only by the thread that uses the worker id (and by a round's closer
  // while that worker waits or has left).
  std::vector<unsigned char> changed_;  // pushed to since the last average
  Rounds rounds_;
};

}  // namespace asyncopt::consistency::detail
