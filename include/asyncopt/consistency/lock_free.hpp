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
  /// Does nothing: the policy has no options.
  void validate() const noexcept {}

  /// The runtime side for n parameters: it holds no lock. Pulls and pushes run at once, with
  /// every element read and written through kernels::RelaxedAccess.
  template <class Scalar>
  class Guard {
   public:
    /// A guard for n parameters; the number of workers does not matter.
    Guard(const LockFree& /*policy*/, std::size_t n, std::size_t /*workers*/) : n_(n) {}

    /// dst <- src, the n parameters of a pull, element by element with relaxed atomic loads.
    void read(const Scalar* src, Scalar* dst) const noexcept {
      kernels::copy<kernels::RelaxedAccess>(src, dst, 0, n_);
    }

    /// A sparse pull of the entries of `index` (strictly increasing): apply(access, 0, size).
    template <class F>
    void read_sparse(std::span<const std::size_t> index, F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, index.size());
    }

    /// A dense push: calls apply(RelaxedAccess{}, 0, n) once, with no lock.
    template <class F>
    void write_dense(F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, n_);
    }

    /// A sparse push of the entries of the strictly increasing `index`: calls
    /// apply(RelaxedAccess{}, 0, index.size()) once, with no lock.
    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) const {
      apply(kernels::RelaxedAccess{}, std::size_t{0}, index.size());
    }

   private:
    std::size_t n_;
  };
};

}  // namespace asyncopt::consistency
