// Stale synchronous parallel: a bound on how far workers may run ahead of each other.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <type_traits>

#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>

namespace asyncopt::consistency {

/// Bounded staleness, the stale synchronous parallel model (Ho et al., "More Effective
/// Distributed ML via a Stale Synchronous Parallel Parameter Server", NIPS 2013). Each worker
/// has a clock, its count of finished steps; a pull by a worker at clock c waits until every
/// live worker has reached c - staleness. staleness = 0 is bulk synchronous, `unbounded`
/// fully asynchronous. Writes go through `Inner` (Locked or LockFree). A worker that leaves
/// (its shard is done, it threw, or it was stopped) no longer holds anybody back.
template <class Inner = LockFree>
struct BoundedStaleness {
  static_assert(ConsistencyPolicy<Inner> && !coordinates_rounds_v<Inner>,
                "asyncopt: BoundedStaleness<Inner> needs an asynchronous consistency policy as "
                "Inner, such as asyncopt::consistency::LockFree or asyncopt::consistency::Locked");
  /// The policy that guards every read and write: `Inner`, or LockFree when `Inner` is not an
  /// asynchronous policy, so that a wrong `Inner` reports only the static_assert above.
  using inner_type =
      std::conditional_t<ConsistencyPolicy<Inner> && !coordinates_rounds_v<Inner>, Inner, LockFree>;

  /// The value of `staleness` that never blocks a pull: fully asynchronous, as `Inner` alone.
  static constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();

  /// s: how many clocks a worker may be ahead of the slowest live worker.
  std::uint64_t staleness = 0;
  /// The options of the inner policy, which guards the reads and writes themselves.
  inner_type inner{};

  /// Checks the inner policy's options; throws what its validate() throws.
  void validate() const { inner.validate(); }

  /// The runtime side for n parameters and `workers` workers: a clock and a live flag per
  /// worker, and the inner policy's guard. Before a pull, wait_to_read() blocks a worker that
  /// is more than `staleness` clocks ahead of the slowest live worker; the pull and every push
  /// then go through the inner guard unchanged.
  template <class Scalar>
  class Guard {
   public:
    /// Builds the inner guard for n parameters and `workers` workers; every worker starts
    /// live at clock 0. Throws what the inner guard's constructor throws.
    Guard(const BoundedStaleness& policy, std::size_t n, std::size_t workers)
        : staleness_(policy.staleness),
          inner_(policy.inner, n, workers),
          workers_(workers),
          slots_(std::make_unique<Slot[]>(workers)) {}

    /// dst <- src, the n parameters of a pull, through the inner guard.
    void read(const Scalar* src, Scalar* dst) { inner_.read(src, dst); }
    /// A sparse pull of the entries of the strictly increasing `index`, through the inner
    /// guard: present only when the inner guard has read_sparse.
    template <class F>
    void read_sparse(std::span<const std::size_t> index, F&& apply) requires
        requires(typename inner_type::template Guard<Scalar>& inner) {
      inner.read_sparse(index, apply);
    }
    { inner_.read_sparse(index, static_cast<F&&>(apply)); }
    /// A dense push: the inner guard calls apply(access, begin, end) over ranges covering
    /// [0, n).
    template <class F>
    void write_dense(F&& apply) {
      inner_.write_dense(static_cast<F&&>(apply));
    }
    /// A sparse push: the inner guard calls apply(access, k_begin, k_end) over runs of
    /// entries of the strictly increasing `index`.
    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) {
      inner_.write_sparse(index, static_cast<F&&>(apply));
    }

    /// Blocks worker `id`, at clock `clock`, until every live worker has reached
    /// clock - staleness. Returns the seconds it waited.
    double wait_to_read(std::size_t id, std::uint64_t clock) {
      if (staleness_ == unbounded || clock <= staleness_ || ready(id, clock)) {
        return 0.0;
      }
      const auto start = std::chrono::steady_clock::now();
      std::unique_lock lock(mutex_);
      waiters_.fetch_add(1);
      changed_.wait(lock, [&] { return ready(id, clock); });
      waiters_.fetch_sub(1);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }

    /// Worker `id` finished a step and is now at `clock`.
    void clock(std::size_t id, std::uint64_t clock) {
      slots_[id].clock.store(clock);
      notify();
    }

    /// Worker `id` holds nobody back until it joins again.
    void leave(std::size_t id) {
      slots_[id].live.store(false);
      notify();
    }

    /// Worker `id` takes part again, at `clock`.
    void join(std::size_t id, std::uint64_t clock) {
      slots_[id].clock.store(clock, std::memory_order_release);
      slots_[id].live.store(true, std::memory_order_release);
    }

    /// How far worker `id` at `clock` is ahead of the slowest other live worker (0 if none).
    [[nodiscard]] std::uint64_t lead(std::size_t id, std::uint64_t clock) const noexcept {
      std::uint64_t slowest = clock;
      for (std::size_t k = 0; k < workers_; ++k) {
        if (k != id && slots_[k].live.load()) {
          slowest = std::min(slowest, slots_[k].clock.load());
        }
      }
      return clock - slowest;
    }

    /// The policy's `staleness`: how many clocks a worker may be ahead of the slowest live
    /// worker before its pulls wait.
    [[nodiscard]] std::uint64_t staleness_bound() const noexcept { return staleness_; }

   private:
    struct alignas(cache_line) Slot {
      std::atomic<std::uint64_t> clock{0};
      std::atomic<bool> live{true};
    };

    [[nodiscard]] bool ready(std::size_t id, std::uint64_t clock) const noexcept {
      return lead(id, clock) <= staleness_;
    }

    // Wakes the waiters, taking the mutex only when there are any. Clocks, live flags and
    // the waiter count are sequentially consistent: either a waiter's check sees this
    // change, or this load sees the waiter, which then holds the mutex until it sleeps.
    void notify() {
      if (waiters_.load() == 0) {
        return;
      }
      { const std::lock_guard lock(mutex_); }
      changed_.notify_all();
    }

    std::uint64_t staleness_;
    typename inner_type::template Guard<Scalar> inner_;
    std::size_t workers_;
    std::unique_ptr<Slot[]> slots_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::atomic<std::size_t> waiters_{0};
  };
};

}  // namespace asyncopt::consistency
