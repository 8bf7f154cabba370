// The MPI plug-in's collective: MPI started and stopped with the program (Environment) and
// an MPI communicator as an asyncopt::Collective (Communicator), on MPI's C API.
#pragma once

// MPI's C API only: without these, mpi.h declares the deprecated C++ bindings as well, which
// need a library that asyncopt::mpi (MPI::MPI_C) does not link.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mpi.h>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <climits>

#include <asyncopt/core/collective.hpp>

namespace asyncopt::mpi {

namespace detail {

/// Throws std::runtime_error naming `what` and MPI's message when `code` is not MPI_SUCCESS.
inline void check(int code, const char* what) {
  if (code == MPI_SUCCESS) {
    return;
  }
  char message[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, message, &length) != MPI_SUCCESS) {
    length = 0;
  }
  throw std::runtime_error(std::string("asyncopt: ") + what +
                           " failed: " + std::string(message, static_cast<std::size_t>(length)));
}

/// The MPI datatype of float or double.
template <class Scalar>
MPI_Datatype datatype() noexcept {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "asyncopt: the MPI collective carries float or double");
  if constexpr (std::is_same_v<Scalar, float>) {
    return MPI_FLOAT;
  } else {
    return MPI_DOUBLE;
  }
}

/// MPI counts are int: larger buffers go in pieces of this many elements.
inline constexpr std::size_t max_count = std::size_t{1} << 30;

}  // namespace detail

/// MPI for the life of the program: starts it (MPI_Init_thread, asking for
/// MPI_THREAD_SERIALIZED, since the worker thread that closes a round calls the collective)
/// unless it is running already, and finalizes it at the end. When the Environment is
/// destroyed by an exception that is leaving main, it aborts the whole job instead
/// (MPI_Abort), so that the other processes do not wait for this one forever.
class Environment {
 public:
  /// Starts MPI with the program's arguments, unless it is running already (then this
  /// Environment neither starts nor finalizes it). Throws std::runtime_error when MPI cannot
  /// give MPI_THREAD_SERIALIZED.
  Environment(int& argc, char**& argv) { start(&argc, &argv); }
  /// Starts MPI without the program's arguments.
  Environment() { start(nullptr, nullptr); }

  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  Environment(Environment&&) = delete;
  Environment& operator=(Environment&&) = delete;

  /// Finalizes MPI if this Environment started it; aborts the job instead while an
  /// exception is propagating.
  ~Environment() {
    if (!owner_) {
      return;
    }
    if (std::uncaught_exceptions() > 0) {
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
  }

  /// Ends every process of the job with exit status `code` (MPI_Abort): for an error on one
  /// process that the others cannot know of.
  [[noreturn]] static void abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::terminate();  // MPI_Abort does not return; in case it does
  }

 private:
  void start(int* argc, char*** argv) {
    int initialized = 0;
    detail::check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (initialized != 0) {
      return;
    }
    int provided = MPI_THREAD_SINGLE;
    detail::check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED) {
      MPI_Finalize();
      throw std::runtime_error(
          "asyncopt: this MPI library does not support MPI_THREAD_SERIALIZED, which the MPI "
          "transport's worker threads need");
    }
    owner_ = true;
  }

  bool owner_ = false;
};

/// An MPI communicator as an asyncopt::Collective: all-reduce sum (MPI_Allreduce in place,
/// whose built-in algorithms give the same bits on every process), broadcast, barrier, rank
/// and size. Holds the handle only: the communicator must outlive it. Every operation
/// throws std::runtime_error with MPI's message when MPI returns an error (with the default
/// error handler, MPI aborts the job first).
class Communicator {
 public:
  /// The communicator `comm` (MPI_COMM_WORLD by default); MPI must be running.
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialized = 0;
    detail::check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (initialized == 0) {
      throw std::logic_error(
          "asyncopt: MPI is not running; create an asyncopt::mpi::Environment (or call "
          "MPI_Init_thread) at the start of main");
    }
    int rank = 0;
    int size = 0;
    detail::check(MPI_Comm_rank(comm_, &rank), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size), "MPI_Comm_size");
    rank_ = static_cast<std::size_t>(rank);
    size_ = static_cast<std::size_t>(size);
  }

  /// The MPI handle.
  [[nodiscard]] MPI_Comm handle() const noexcept { return comm_; }
  /// This process's rank in the communicator.
  [[nodiscard]] std::size_t rank() const noexcept { return rank_; }
  /// The number of processes in the communicator.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// Sums `values` over the processes, in place (MPI_Allreduce with MPI_SUM).
  template <class Scalar>
  void all_reduce_sum(std::span<Scalar> values) const {
    for (std::size_t at = 0; at < values.size(); at += detail::max_count) {
      const std::size_t count = std::min(detail::max_count, values.size() - at);
      detail::check(MPI_Allreduce(MPI_IN_PLACE, values.data() + at, static_cast<int>(count),
                                  detail::datatype<Scalar>(), MPI_SUM, comm_),
                    "MPI_Allreduce");
    }
  }

  /// Every process's `values` becomes those of process `root` (MPI_Bcast).
  template <class Scalar>
  void broadcast(std::span<Scalar> values, std::size_t root) const {
    for (std::size_t at = 0; at < values.size(); at += detail::max_count) {
      const std::size_t count = std::min(detail::max_count, values.size() - at);
      detail::check(MPI_Bcast(values.data() + at, static_cast<int>(count),
                              detail::datatype<Scalar>(), static_cast<int>(root), comm_),
                    "MPI_Bcast");
    }
  }

  /// Returns once every process has called it (MPI_Barrier).
  void barrier() const { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }

  /// Every process's bytes `mine`, concatenated in rank order into `all` on every process,
  /// `sizes[p]` bytes from process p (MPI_Allgather of the lengths, then MPI_Allgatherv).
  /// Throws std::length_error when the job's total passes MPI's int counts.
  void all_gather(std::span<const std::byte> mine, std::vector<std::byte>& all,
                  std::vector<std::uint64_t>& sizes) const {
    const auto length = static_cast<std::uint64_t>(mine.size());
    sizes.resize(size_);
    detail::check(MPI_Allgather(&length, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, comm_),
                  "MPI_Allgather");
    std::vector<int> counts(size_);
    std::vector<int> offsets(size_);
    std::uint64_t total = 0;
    for (std::size_t p = 0; p < size_; ++p) {
      if (sizes[p] > detail::max_count || total > detail::max_count) {
        throw std::length_error("asyncopt: an all-gather of " + std::to_string(total + sizes[p]) +
                                " bytes passes MPI's int counts");
      }
      counts[p] = static_cast<int>(sizes[p]);
      offsets[p] = static_cast<int>(total);
      total += sizes[p];
    }
    if (total > detail::max_count) {
      throw std::length_error("asyncopt: an all-gather of " + std::to_string(total) +
                              " bytes passes MPI's int counts");
    }
    all.resize(total);
    detail::check(MPI_Allgatherv(mine.data(), static_cast<int>(length), MPI_BYTE, all.data(),
                                 counts.data(), offsets.data(), MPI_BYTE, comm_),
                  "MPI_Allgatherv");
  }

 private:
  MPI_Comm comm_;
  std::size_t rank_ = 0;
  std::size_t size_ = 1;
};

static_assert(Collective<Communicator>);

/// A collective that counts what passes through it: the bytes of the buffers handed to its
/// all-reduces and broadcasts, and the wall time spent in them; and that passes the round
/// policies' round boundaries (round_closed()) on to an observer. The MPI transport's rounds
/// use it, so that the Report tells what the rounds cost and checkpoints fall on round
/// boundaries.
template <Collective C>
class Counted {
 public:
  /// Counts the operations on `inner`, which must outlive it.
  explicit Counted(C& inner) noexcept : inner_(&inner) {}

  /// As the inner collective's.
  [[nodiscard]] std::size_t rank() const noexcept { return inner_->rank(); }
  /// As the inner collective's.
  [[nodiscard]] std::size_t size() const noexcept { return inner_->size(); }
  /// The inner all-reduce, counted.
  template <class Scalar>
  void all_reduce_sum(std::span<Scalar> values) {
    timed(values.size_bytes(), [&] { inner_->all_reduce_sum(values); });
  }
  /// The inner broadcast, counted.
  template <class Scalar>
  void broadcast(std::span<Scalar> values, std::size_t root) {
    timed(values.size_bytes(), [&] { inner_->broadcast(values, root); });
  }
  /// The inner barrier, timed.
  void barrier() {
    timed(0, [&] { inner_->barrier(); });
  }
  /// The inner all-gather, counted (this process's bytes), where the inner collective has one.
  void all_gather(std::span<const std::byte> mine, std::vector<std::byte>& all,
                  std::vector<std::uint64_t>& sizes) requires requires(C& c) {
    c.all_gather(mine, all, sizes);
  }
  {
    timed(mine.size(), [&] { inner_->all_gather(mine, all, sizes); });
  }

  /// Calls `observer()` at every round_closed() from now on (nothing when empty).
  void on_round_closed(std::function<void()> observer) { observer_ = std::move(observer); }
  /// A round policy applied a round of the job: tells the observer.
  void round_closed() {
    if (observer_) {
      observer_();
    }
  }

  /// Bytes handed to all-reduces and broadcasts so far.
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  /// Seconds spent in operations so far.
  [[nodiscard]] double seconds() const noexcept { return seconds_; }

 private:
  template <class F>
  void timed(std::size_t bytes, F&& operation) {
    const auto start = std::chrono::steady_clock::now();
    operation();
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bytes_ += bytes;
  }

  C* inner_;
  std::function<void()> observer_;
  std::uint64_t bytes_ = 0;
  double seconds_ = 0.0;
};

}  // namespace asyncopt::mpi
