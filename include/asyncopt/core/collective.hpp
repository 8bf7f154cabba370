// The collective seam under the round policies: what a round needs from the processes of a
// job (sum a buffer over all of them, broadcast, barrier, rank and size), as a concept, the
// model for a job of one process, and a type-erased reference the policies' guards hold.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace asyncopt {

/// The operations across the processes of a job that a round policy (Synchronous, LocalSgd)
/// uses for the cross-process part of a round, after combining the workers of its own
/// process:
/// - `rank()` and `size()`: this process's number in the job and how many there are;
/// - `all_reduce_sum(values)` for spans of float and of double: every process's `values`,
///   of the same length everywhere, becomes the element-wise sum over the processes, the
///   same bits on every process;
/// - `broadcast(values, root)` for spans of float and of double: every process's `values`
///   becomes those of process `root`;
/// - `barrier()`: returns once every process has called it.
/// Every process calls the same operations in the same order. collective::InProcess is the
/// model for a job of one process; the MPI plug-in's mpi::Communicator is the one over MPI.
///
/// A collective may also offer `round_closed()`, which the round policies call on every
/// process after each round of the job has been applied (while this process's workers wait
/// in it or have left): a round boundary, where the MPI transport writes its checkpoints.
///
/// And it may offer `all_gather(mine, all, sizes)`: every process's bytes `mine` (of any
/// length, empty included) end up in `all` on every process, concatenated in rank order, with
/// `sizes[p]` the length of process p's (the collective resizes both). A round whose messages
/// are compressed sends them this way; without it, such a round is refused.
template <class C>
concept Collective = requires(C& c, std::span<float> f, std::span<double> d, std::size_t root) {
  { c.rank() } -> std::convertible_to<std::size_t>;
  { c.size() } -> std::convertible_to<std::size_t>;
  c.all_reduce_sum(f);
  c.all_reduce_sum(d);
  c.broadcast(f, root);
  c.broadcast(d, root);
  c.barrier();
};

namespace collective {

/// A job of one process: every operation leaves its arguments as they are.
struct InProcess {
  /// 0.
  [[nodiscard]] static constexpr std::size_t rank() noexcept { return 0; }
  /// 1.
  [[nodiscard]] static constexpr std::size_t size() noexcept { return 1; }
  /// The sum over one process: nothing changes.
  template <class Scalar>
  static constexpr void all_reduce_sum(std::span<Scalar> /*values*/) noexcept {}
  /// The root's values are these already.
  template <class Scalar>
  static constexpr void broadcast(std::span<Scalar> /*values*/, std::size_t /*root*/) noexcept {}
  /// Nobody to wait for.
  static constexpr void barrier() noexcept {}
  /// This process's bytes are all there are.
  static void all_gather(std::span<const std::byte> mine, std::vector<std::byte>& all,
                         std::vector<std::uint64_t>& sizes) {
    all.assign(mine.begin(), mine.end());
    sizes.assign(1, mine.size());
  }
};

/// A reference to a Collective, whatever its type, which a round policy's guard holds: one
/// indirect call per operation, which a round (one per many gradient computations) does not
/// feel. A default-constructed Ref refers to InProcess. The referenced collective must
/// outlive every Ref to it.
class Ref {
 public:
  /// Refers to a job of one process (collective::InProcess).
  Ref() noexcept = default;

  /// Refers to `collective`, which must outlive this Ref. (A Ref is copied, not referred to.)
  template <Collective C>
  requires(!std::same_as<std::remove_cv_t<C>, Ref>) explicit Ref(C& collective) noexcept
      : self_(&collective),
        rank_(collective.rank()),
        size_(collective.size()),
        sum_float_([](void* s, std::span<float> v) { static_cast<C*>(s)->all_reduce_sum(v); }),
        sum_double_([](void* s, std::span<double> v) { static_cast<C*>(s)->all_reduce_sum(v); }),
        broadcast_float_([](void* s, std::span<float> v, std::size_t root) {
          static_cast<C*>(s)->broadcast(v, root);
        }),
        broadcast_double_([](void* s, std::span<double> v, std::size_t root) {
          static_cast<C*>(s)->broadcast(v, root);
        }),
        barrier_([](void* s) { static_cast<C*>(s)->barrier(); }),
        round_closed_([](void* s) {
          if constexpr (requires(C & c) { c.round_closed(); }) {
            static_cast<C*>(s)->round_closed();
          }
        }) {
    if constexpr (requires(C & c, std::span<const std::byte> mine, std::vector<std::byte> & all,
                           std::vector<std::uint64_t> & sizes) {
                    c.all_gather(mine, all, sizes);
                  }) {
      gather_ = [](void* s, std::span<const std::byte> mine, std::vector<std::byte>& all,
                   std::vector<std::uint64_t>& sizes) {
        static_cast<C*>(s)->all_gather(mine, all, sizes);
      };
    } else {
      gather_ = nullptr;
    }
  }

  /// This process's number in the job.
  [[nodiscard]] std::size_t rank() const noexcept { return rank_; }
  /// The number of processes in the job.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Sums `values` over the processes, in place.
  void all_reduce_sum(std::span<float> values) const { sum_float_(self_, values); }
  /// Sums `values` over the processes, in place.
  void all_reduce_sum(std::span<double> values) const { sum_double_(self_, values); }
  /// Every process's `values` becomes process `root`'s.
  void broadcast(std::span<float> values, std::size_t root) const {
    broadcast_float_(self_, values, root);
  }
  /// Every process's `values` becomes process `root`'s.
  void broadcast(std::span<double> values, std::size_t root) const {
    broadcast_double_(self_, values, root);
  }
  /// Returns once every process has called it.
  void barrier() const { barrier_(self_); }
  /// A round of the job has been applied: calls the collective's round_closed() when it has
  /// one.
  void round_closed() const { round_closed_(self_); }
  /// Whether the collective offers all_gather().
  [[nodiscard]] bool gathers() const noexcept { return gather_ != nullptr; }
  /// Every process's bytes, concatenated in rank order, with their lengths (see
  /// Collective). Throws std::logic_error when the collective does not offer it.
  void all_gather(std::span<const std::byte> mine, std::vector<std::byte>& all,
                  std::vector<std::uint64_t>& sizes) const {
    if (gather_ == nullptr) {
      throw std::logic_error("asyncopt: this collective has no all_gather()");
    }
    gather_(self_, mine, all, sizes);
  }

 private:
  void* self_ = nullptr;
  std::size_t rank_ = 0;
  std::size_t size_ = 1;
  void (*sum_float_)(void*, std::span<float>) = [](void*, std::span<float>) {};
  void (*sum_double_)(void*, std::span<double>) = [](void*, std::span<double>) {};
  void (*broadcast_float_)(void*, std::span<float>, std::size_t) = [](void*, std::span<float>,
                                                                      std::size_t) {};
  void (*broadcast_double_)(void*, std::span<double>, std::size_t) = [](void*, std::span<double>,
                                                                        std::size_t) {};
  void (*barrier_)(void*) = [](void*) {};
  void (*round_closed_)(void*) = [](void*) {};
  // A job of one process gathers its own bytes (InProcess::all_gather).
  void (*gather_)(void*, std::span<const std::byte>, std::vector<std::byte>&,
                  std::vector<std::uint64_t>&) =
      [](void*, std::span<const std::byte> mine, std::vector<std::byte>& all,
         std::vector<std::uint64_t>& sizes) { InProcess::all_gather(mine, all, sizes); };
};

/// The sum of `mine` over the processes ranked before this one in `across` (collective: every
/// process calls it): where this process's share starts, as its first worker's id in the job.
inline std::size_t offset(const Ref& across, std::size_t mine) {
  if (across.size() <= 1) {
    return 0;
  }
  std::vector<double> counts(across.size(), 0.0);
  counts[across.rank()] = static_cast<double>(mine);
  across.all_reduce_sum(std::span<double>(counts));
  double before = 0.0;
  for (std::size_t p = 0; p < across.rank(); ++p) {
    before += counts[p];
  }
  return static_cast<std::size_t>(before);
}

/// The sum of `mine` over the processes of `across` (collective: every process calls it): the
/// job's number of workers when each process gives its own.
inline std::size_t total(const Ref& across, std::size_t mine) {
  if (across.size() <= 1) {
    return mine;
  }
  std::array<double, 1> sum = {static_cast<double>(mine)};
  across.all_reduce_sum(std::span<double>(sum));
  return static_cast<std::size_t>(sum[0]);
}

static_assert(Collective<InProcess>);
static_assert(Collective<Ref>);

}  // namespace collective
}  // namespace asyncopt
