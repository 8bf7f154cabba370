// SharedParameters: the reader-writer lock the round-based guards put around the shared
// parameters.
#pragma once

#include <cstddef>
#include <mutex>
#include <shared_mutex>
#include <span>

#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::consistency {

/// The shared parameters of a round-based guard behind a reader-writer lock: pulls read
/// them together, and only the closing of a round writes them. The base of
/// Synchronous::Guard and LocalSgd::Guard, providing the reads and writes a
/// ConsistencyPolicy's guard must offer; every range it hands out is the whole one, with
/// kernels::PlainAccess.
template <class Scalar>
class SharedParameters {
 public:
  /// For n parameters.
  explicit SharedParameters(std::size_t n) : n_(n) {}

  /// Copies the n parameters at `src` to `dst` under a shared lock.
  void read(const Scalar* src, Scalar* dst) const {
    const std::shared_lock lock(params_mutex_);
    kernels::copy<kernels::PlainAccess>(src, dst, 0, n_);
  }

  /// Calls `apply(PlainAccess, 0, index.size())` under a shared lock: a pull of the
  /// parameters at `index`.
  template <class F>
  void read_sparse(std::span<const std::size_t> index, F&& apply) const {
    const std::shared_lock lock(params_mutex_);
    apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
  }

  /// Calls `apply(PlainAccess, 0, n)` under an exclusive lock: a write of every parameter.
  template <class F>
  void write_dense(F&& apply) const {
    const std::unique_lock lock(params_mutex_);
    apply(kernels::PlainAccess{}, std::size_t{0}, n_);
  }

  /// Calls `apply(PlainAccess, 0, index.size())` under an exclusive lock: a write of the
  /// parameters at `index`.
  template <class F>
  void write_sparse(std::span<const std::size_t> index, F&& apply) const {
    const std::unique_lock lock(params_mutex_);
    apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
  }

 protected:
  /// The number of parameters.
  std::size_t n_;
  /// Shared by reads, exclusive for writes; a derived guard takes it to write the shared
  /// parameters itself.
  mutable std::shared_mutex params_mutex_;
};

}  // namespace asyncopt::consistency
