// The hooks a store calls on a consistency policy's guard, with their defaults in one place:
// a store never asks what kind of guard it holds, and a guard offers only the hooks it needs.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/store.hpp>
#include <asyncopt/kernels/access.hpp>

/// The uniform hook set of consistency guards. Each hook calls the guard's member of that
/// name when it has one and otherwise does what a guard without it means: no gate, no clock,
/// nothing to do on leave or join, pushes applied at once to the shared parameters. Stores
/// call these, never the guard's members directly.
namespace asyncopt::hooks {

/// Whether the guard turns a round's pushes into one update (a CombiningGuard: Synchronous).
template <class G, class Scalar>
inline constexpr bool combines_rounds = CombiningGuard<G, Scalar>;

/// Whether the guard gives every worker a private replica (a ReplicatingGuard: LocalSgd).
template <class G, class Scalar>
inline constexpr bool replicates = ReplicatingGuard<G, Scalar>;

/// Whether the guard corrects every gradient before the rule applies it (Scaffold's control
/// variates): `correct(id, gradient)` and `correct(id, index, values)` return worker `id`'s
/// corrected dense gradient, which the store then pushes in its place.
template <class G, class Scalar>
inline constexpr bool corrects = requires(G& g, std::span<const Scalar> values,
                                          std::span<const std::size_t> index) {
  { g.correct(std::size_t{0}, values) } -> std::same_as<std::span<const Scalar>>;
  { g.correct(std::size_t{0}, index, values) } -> std::same_as<std::span<const Scalar>>;
};

/// Whether a live worker may read the shared parameters where they are between its pull and
/// its push, because the guard writes them only when a round that waits for that push closes
/// (Synchronous): a pull needs no copy.
template <class G>
inline constexpr bool stable_until_push = requires {
  requires !G::writes_between_pushes;
};

/// Whether the guard lends each worker a buffer for its dense gradients (`lend(id)`, n
/// values), which a push in place then hands over with no copy (Synchronous: the worker's
/// row, with room for the round's count after it).
template <class G, class Scalar>
inline constexpr bool lends_rows = requires(G& g) {
  { g.lend(std::size_t{0}) } -> std::same_as<std::span<Scalar>>;
};

/// Whether the guard has a gate before pulls (`wait_to_read`: bounded staleness).
template <class G>
inline constexpr bool has_gate = requires(G& g) {
  g.wait_to_read(std::size_t{0}, std::uint64_t{0});
};

/// Whether policy P's guard G takes part in rounds across processes: it is constructed as
/// `G(policy, n, workers, across)` with a collective::Ref `across`, and has
/// `idle_round(...)` for the rounds in which no worker of its process takes part (see
/// idle_round below).
template <class G, class P, class Scalar>
inline constexpr bool crosses_processes =
    std::constructible_from<G, const P&, std::size_t, std::size_t, collective::Ref> &&
    ((ReplicatingGuard<G, Scalar> &&
      requires(G & g, std::span<Scalar> shared) {
        { g.idle_round(shared) } -> std::convertible_to<bool>;
      }) ||
     (CombiningGuard<G, Scalar> &&
      requires(G & g, void (*commit)(std::span<const Scalar>, std::size_t)) {
        { g.idle_round(commit) } -> std::convertible_to<bool>;
      }));

/// How many copies of the rule's state a store keeps: one per worker for a replicating guard,
/// else one.
template <class G, class Scalar>
[[nodiscard]] constexpr std::size_t state_blocks(std::size_t workers) noexcept {
  return replicates<G, Scalar> ? workers : 1;
}

/// Which copy of the rule's state worker `id`'s pushes update.
template <class G, class Scalar>
[[nodiscard]] constexpr std::size_t state_block(std::size_t id) noexcept {
  return replicates<G, Scalar> ? id : 0;
}

/// Before a pull by worker `id` at `clock`: waits at the guard's gate if it has one. Returns
/// the seconds waited.
template <class G>
double wait_to_read(G& guard, std::size_t id, std::uint64_t clock) {
  if constexpr (has_gate<G>) {
    return guard.wait_to_read(id, clock);
  } else {
    return 0.0;
  }
}

/// Whether a pull by worker `id` at `clock` would pass the gate without waiting: for stores
/// that serve remote workers and must never block.
template <class G>
[[nodiscard]] bool may_read(const G& guard, std::size_t id, std::uint64_t clock) noexcept {
  if constexpr (requires { guard.lead(id, clock) <= guard.staleness_bound(); }) {
    return guard.lead(id, clock) <= guard.staleness_bound();
  } else {
    return true;
  }
}

/// A dense pull by worker `id`: dst <- its replica, or the n `shared` parameters through the
/// guard's read().
template <class G, class Scalar>
void read(G& guard, std::size_t id, std::span<const Scalar> shared, Scalar* dst) {
  if constexpr (replicates<G, Scalar>) {
    const std::span<const Scalar> mine = std::as_const(guard).replica(id);
    std::copy(mine.begin(), mine.end(), dst);
  } else {
    guard.read(shared.data(), dst);
  }
}

/// A pull of the entries of `index` by worker `id`: calls apply(access, src, k_begin, k_end)
/// over runs of entries, `src` being the parameters to read them from (the replica or
/// `shared`), through the guard's read_sparse() or, for a guard without one, its
/// write_sparse(), whose ranges and access are as safe for reading.
template <class G, class Scalar, class F>
void read_sparse(G& guard, std::size_t id, std::span<const std::size_t> index,
                 std::span<const Scalar> shared, F&& apply) {
  auto from_shared = [&](auto access, std::size_t begin, std::size_t end) {
    apply(access, shared.data(), begin, end);
  };
  if constexpr (replicates<G, Scalar>) {
    apply(kernels::PlainAccess{}, std::as_const(guard).replica(id).data(), std::size_t{0},
          index.size());
  } else if constexpr (requires { guard.read_sparse(index, from_shared); }) {
    guard.read_sparse(index, from_shared);
  } else {
    guard.write_sparse(index, from_shared);
  }
}

/// A round's `commit` as a combining guard receives it: `commit(sum, count)` applies the
/// mean, and `messages()` says what the round sends (RoundMessages), which a policy that
/// honours it (sends_momenta_v) asks before it sums.
template <class Apply, class Messages>
struct RoundCommit {
  Apply& apply;           ///< apply(sum, count).
  Messages& messages_of;  ///< What the round sends.

  /// Applies the mean of `count` gradients whose sum is `sum`.
  template <class Sum>
  void operator()(Sum sum, std::size_t count) const {
    apply(sum, count);
  }
  /// What the round sends.
  [[nodiscard]] auto messages() const { return messages_of(); }
};

/// Where and when worker `id`'s push is applied. `contribute(slot)` writes the worker's dense
/// gradient into a round's slot (for a combining guard); `apply(range_guard, w, state_block,
/// combined, count, local)` applies an update: the worker's own gradient when `combined` is
/// null, else the mean of a round's `count` dense gradients, whose sum `combined` holds, to
/// the parameters `w` under `range_guard` (write_dense / write_sparse), with the state copy
/// `state_block`; `local` says `w` is the worker's replica. Returns the seconds spent
/// waiting for a round. `messages()` says what a round sends (RoundMessages).
template <class G, class Scalar, class Contribute, class Apply, class Messages>
double push(G& guard, std::size_t id, std::span<Scalar> shared, Contribute&& contribute,
            Apply&& apply, Messages&& messages) {
  if constexpr (replicates<G, Scalar>) {
    apply(store::Exclusive{.n = shared.size()}, guard.replica(id).data(), id,
          static_cast<const Scalar*>(nullptr), std::size_t{1}, true);
    return 0.0;
  } else if constexpr (combines_rounds<G, Scalar>) {
    auto commit = [&](std::span<const Scalar> sum, std::size_t count) {
      apply(guard, shared.data(), std::size_t{0}, sum.data(), count, false);
    };
    return guard.combine(id, contribute, RoundCommit<decltype(commit), Messages>{commit, messages});
  } else {
    apply(guard, shared.data(), std::size_t{0}, static_cast<const Scalar*>(nullptr), std::size_t{1},
          false);
    return 0.0;
  }
}

/// Worker `id` finished a step and is now at `clock`. Returns the seconds spent waiting (for
/// an averaging round).
template <class G, class Scalar>
double clock(G& guard, std::size_t id, std::uint64_t clock, std::span<Scalar> shared) {
  if constexpr (replicates<G, Scalar>) {
    return guard.clock(id, clock, shared);
  } else if constexpr (requires { guard.clock(id, clock); }) {
    guard.clock(id, clock);
  }
  return 0.0;
}

/// Worker `id` holds nobody back until it joins again.
template <class G, class Scalar>
void leave(G& guard, std::size_t id, std::span<Scalar> shared) {
  if constexpr (replicates<G, Scalar>) {
    guard.leave(id, shared);
  } else if constexpr (requires { guard.leave(id); }) {
    guard.leave(id);
  }
}

/// Worker `id` takes part again, at `clock`.
template <class G, class Scalar>
void join(G& guard, std::size_t id, std::uint64_t clock, std::span<const Scalar> shared) {
  if constexpr (replicates<G, Scalar>) {
    guard.join(id, clock, shared);
  } else if constexpr (requires { guard.join(id, clock); }) {
    guard.join(id, clock);
  }
}

/// Bytes of the messages a guard's compression stage encoded and of the same messages
/// uncompressed; {0, 0} for a guard without one.
template <class G>
std::pair<std::uint64_t, std::uint64_t> compression_bytes(const G& guard) noexcept {
  if constexpr (requires { guard.compression_bytes(); }) {
    return guard.compression_bytes();
  } else {
    return {0, 0};
  }
}

/// One round of the job that no worker of this process takes part in, because they have all
/// left: a process whose shard is done keeps taking part in the other processes' rounds, with
/// nothing to contribute, until none contributes. `commit(sum, count)` applies the mean of a
/// combining guard's `count` gradients as apply() does in push(); a replicating guard writes
/// the mean model into `shared` itself. Returns whether any process contributed (false also for a
/// guard that does not move in rounds). Call it only while no worker of this process pulls or
/// pushes.
template <class G, class Scalar, class Commit>
bool idle_round(G& guard, std::span<Scalar> shared, Commit&& commit) {
  if constexpr (replicates<G, Scalar>) {
    return guard.idle_round(shared);
  } else if constexpr (combines_rounds<G, Scalar>) {
    return guard.idle_round(commit);
  } else {
    return false;
  }
}

}  // namespace asyncopt::hooks
