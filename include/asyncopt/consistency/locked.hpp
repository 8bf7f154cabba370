// Mutual exclusion per stripe of the parameter vector.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>

#include <asyncopt/core/config.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::consistency {

/// Each stripe of the parameter vector has its own mutex: a push or pull of a stripe is
/// atomic, pushes to different stripes run in parallel, and inside a stripe the SIMD kernel
/// runs unhindered. `stripes = 1` is one global lock: every push and pull is atomic.
///
/// A sparse push or pull whose indices reach over `max_sparse_span` stripes' length or more
/// (a scattered row of text-like data reaches over most of the vector) takes the lock of the
/// whole vector once instead, and is atomic as a whole: one lock rather than one per touched
/// stripe, so striping never costs a sparse step more locks than one global lock would.
/// Sparse pushes within a shorter span, and dense ones, keep the stripes' parallelism.
struct Locked {
  /// Upper bound on the number of stripes.
  std::size_t stripes = 64;
  /// A stripe never holds fewer parameters than this (small vectors get fewer stripes):
  /// taking a lock costs about as much as updating a few hundred floats.
  std::size_t min_stripe_elements = 1024;
  /// In stripes: a sparse push or pull whose last index is this many stripes' length or more
  /// past its first locks the whole vector once; a shorter one locks each stripe it touches
  /// (at most max_sparse_span + 1) once. 0: every sparse push or pull locks the whole vector.
  std::size_t max_sparse_span = 2;

  /// Throws std::invalid_argument when `stripes` or `min_stripe_elements` is 0.
  void validate() const {
    if (stripes == 0) {
      throw std::invalid_argument("asyncopt: Locked::stripes must be at least 1");
    }
    if (min_stripe_elements == 0) {
      throw std::invalid_argument("asyncopt: Locked::min_stripe_elements must be at least 1");
    }
  }

  /// The runtime side: the mutexes for a vector of n parameters.
  template <class Scalar>
  class Guard {
   public:
    /// Splits n parameters into at most `stripes` stripes of one size, a multiple of a cache
    /// line of `Scalar`s and at least `min_stripe_elements` where n allows (the last stripe
    /// may be shorter); the number of workers does not matter. Throws std::invalid_argument
    /// when the policy's options are invalid.
    Guard(const Locked& policy, std::size_t n, std::size_t /*workers*/)
        : n_(n),
          stripe_size_(stripe_size_for(policy, n)),
          count_(std::max<std::size_t>(1, (n + stripe_size_ - 1) / stripe_size_)),
          sparse_span_(span_elements(policy.max_sparse_span, stripe_size_)),
          mutexes_(std::make_unique<PaddedMutex[]>(count_)) {}

    /// The number of stripes (and mutexes), at least 1.
    [[nodiscard]] std::size_t stripes() const noexcept { return count_; }
    /// The number of parameters per stripe (the last stripe may hold fewer): stripe s is
    /// [s * stripe_size(), min(n, (s + 1) * stripe_size())).
    [[nodiscard]] std::size_t stripe_size() const noexcept { return stripe_size_; }
    /// The stripe that holds parameter `i`, in [0, stripes()) for i < n.
    [[nodiscard]] std::size_t stripe_of(std::size_t i) const noexcept { return i / stripe_size_; }

    /// dst <- src, stripe by stripe, each under its lock.
    void read(const Scalar* src, Scalar* dst) {
      for_each_stripe([&](std::size_t begin, std::size_t end) {
        kernels::copy<kernels::PlainAccess>(src, dst, begin, end);
      });
    }

    /// A sparse pull of the entries of the strictly increasing `index`: each run of entries in
    /// one stripe under that stripe's lock, as write_sparse.
    template <class F>
    void read_sparse(std::span<const std::size_t> index, F&& apply) {
      write_sparse(index, static_cast<F&&>(apply));
    }

    /// Calls apply(PlainAccess{}, begin, end) for each stripe, under its lock.
    template <class F>
    void write_dense(F&& apply) {
      for_each_stripe(
          [&](std::size_t begin, std::size_t end) { apply(kernels::PlainAccess{}, begin, end); });
    }

    /// Calls apply(PlainAccess{}, k_begin, k_end) for each run of entries of the strictly
    /// increasing `index` that lie in one stripe, under that stripe's lock: only the stripes
    /// the gradient touches are locked. When its indices reach over max_sparse_span stripes'
    /// length or more, calls apply(PlainAccess{}, 0, index.size()) once under the whole
    /// vector's lock.
    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) {
      if (count_ == 1) {
        const std::lock_guard lock(mutexes_[0].mutex);
        apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
        return;
      }
      if (!index.empty() && index.back() - index.front() >= sparse_span_) {
        const std::unique_lock whole = whole_->take();
        apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
        return;
      }
      const Striped striped(*whole_);
      std::size_t k = 0;
      while (k < index.size()) {
        const std::size_t stripe = stripe_of(index[k]);
        const std::size_t stripe_end = (stripe + 1) * stripe_size_;
        std::size_t run_end = k + 1;
        while (run_end < index.size() && index[run_end] < stripe_end) {
          ++run_end;
        }
        const std::lock_guard lock(mutexes_[stripe].mutex);
        apply(kernels::PlainAccess{}, k, run_end);
        k = run_end;
      }
    }

   private:
    // Stripes start on cache-line boundaries of the element index, so two stripes never
    // share a line of w.
    static std::size_t stripe_size_for(const Locked& policy, std::size_t n) {
      policy.validate();
      const std::size_t by_size = std::max<std::size_t>(1, n / policy.min_stripe_elements);
      const std::size_t wanted = std::min(policy.stripes, by_size);
      constexpr std::size_t line = cache_line / sizeof(Scalar);
      const std::size_t size = ((n + wanted - 1) / wanted + line - 1) / line * line;
      return std::max<std::size_t>(size, 1);
    }

    // `stripes` stripes' length in elements, saturating.
    static std::size_t span_elements(std::size_t stripes, std::size_t stripe_size) noexcept {
      return stripes > std::numeric_limits<std::size_t>::max() / stripe_size
                 ? std::numeric_limits<std::size_t>::max()
                 : stripes * stripe_size;
    }

    struct alignas(cache_line) PaddedMutex {
      std::mutex mutex;
    };
    // The whole vector's lock: a sparse access that reaches over many stripes holds `mutex`
    // from when no access through the stripes is under way until it is done. Accesses
    // through the stripes count themselves in and out (`striped`, under `mutex`), and do
    // not start while a whole-vector access waits (`waiting`), so neither kind starves the
    // other; the whole vector's lock costs what one global lock does.
    struct alignas(cache_line) Whole {
      std::mutex mutex;
      std::condition_variable changed;  // `striped` or `waiting` fell to 0
      std::size_t striped = 0;
      std::size_t waiting = 0;
      std::size_t held_back = 0;  // accesses through the stripes waiting to start

      // Locks the whole vector: waits for the accesses through the stripes under way.
      [[nodiscard]] std::unique_lock<std::mutex> take() {
        std::unique_lock lock(mutex);
        if (striped != 0) {
          ++waiting;
          changed.wait(lock, [&] { return striped == 0; });
          if (--waiting == 0 && held_back != 0) {
            changed.notify_all();  // they may start once this access is done
          }
        }
        return lock;
      }
    };

    // An access through the stripes, counted for the whole vector's lock while it lasts.
    class Striped {
     public:
      explicit Striped(Whole& whole) : whole_(whole) {
        std::unique_lock lock(whole_.mutex);
        if (whole_.waiting != 0) {
          ++whole_.held_back;
          whole_.changed.wait(lock, [&] { return whole_.waiting == 0; });
          --whole_.held_back;
        }
        ++whole_.striped;
      }
      Striped(const Striped&) = delete;
      Striped& operator=(const Striped&) = delete;
      ~Striped() {
        const std::lock_guard lock(whole_.mutex);
        if (--whole_.striped == 0 && whole_.waiting != 0) {
          whole_.changed.notify_all();
        }
      }

     private:
      Whole& whole_;
    };

    template <class F>
    void for_each_stripe(F&& body) {
      std::optional<Striped> striped;
      if (count_ > 1) {
        striped.emplace(*whole_);
      }
      for (std::size_t s = 0; s < count_; ++s) {
        const std::size_t begin = s * stripe_size_;
        const std::size_t end = std::min(n_, begin + stripe_size_);
        const std::lock_guard lock(mutexes_[s].mutex);
        body(begin, end);
      }
    }

    std::size_t n_;
    std::size_t stripe_size_;
    std::size_t count_;
    // max_sparse_span stripes' length in elements: a sparse access reaching this far locks
    // the whole vector.
    std::size_t sparse_span_;
    std::unique_ptr<Whole> whole_ = std::make_unique<Whole>();
    std::unique_ptr<PaddedMutex[]> mutexes_;
  };
};

}  // namespace asyncopt::consistency
