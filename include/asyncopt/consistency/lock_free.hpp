// Hogwild!: no locks at all.
#pragma once

#include <cstddef>
#include <span>

#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::consistency {

/// Lock-free updates (Hogwild!, Niu, Recht, Re and Wright, NIPS 2011). Every shared element
/// is read and written with relaxed std::atomic_ref operations, so concurrent updates may
/// overwrite each other as in the paper, yet the program has no data race. The per-element
/// atomics keep the loop scalar, so LockFree suits sparse pushes; dense pushes run faster
/// under striped Locked.
struct LockFree {
  void validate() const noexcept {}

  template <class Scalar>
  class Guard {
   public:
    Guard(const LockFree& /*policy*/, std::size_t n, std::size_t /*workers*/) : n_(n) {}

    void read(const Scalar* src, Scalar* dst) const noexcept {
      kernels::copy<kernels::RelaxedAccess>(src, dst, 0, n_);
    }

    /// A sparse pull of the entries of `index` (strictly increasing): apply(access, 0, size).
    template <class F>
    void read_sparse(std::span<const std::size_t> index, F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, index.size());
    }

    template <class F>
    void write_dense(F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, n_);
    }

    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, index.size());
    }

   private:
    std::size_t n_;
  };
};

}  // namespace asyncopt::consistency
