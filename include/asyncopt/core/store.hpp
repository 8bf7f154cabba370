// The store protocol every transport follows: what a push returns, the checks on pulls and
// pushes, the parameters a gradient was computed at (w_seen), the rule's state and formula,
// and the guarded write path. Transports build their stores from these pieces.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <asyncopt/core/formula.hpp>
#include <asyncopt/core/precision.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt {

/// What a push did.
struct PushResult {
  /// False when the gradient was rejected (it held NaN or Inf); nothing changed then. A
  /// store that applies updates later (transport::CudaDevice) says true when it queued the
  /// update; the device may still reject it, which StoreStats::rejected then counts.
  bool applied = false;
  /// Updates applied (or queued) between the worker's last pull and this push.
  std::uint64_t staleness = 0;
};

/// The pieces of the store protocol, for the transports (and plug-ins) that build stores.
namespace store {

/// The base of every store: its workers' handles point at it, so it is neither copied nor
/// moved.
class Immovable {
 public:
  Immovable() = default;
  Immovable(const Immovable&) = delete;
  Immovable& operator=(const Immovable&) = delete;
  Immovable(Immovable&&) = delete;
  Immovable& operator=(Immovable&&) = delete;
  ~Immovable() = default;
};

/// A store serves at least one worker.
inline void check_workers(std::size_t workers) {
  if (workers == 0) {
    throw std::invalid_argument("asyncopt: a store needs at least one worker");
  }
}

/// A worker id must name one of the store's workers.
inline void check_worker_id(std::size_t id, std::size_t workers) {
  if (id >= workers) {
    throw std::out_of_range("asyncopt: worker id " + std::to_string(id) + " but the store has " +
                            std::to_string(workers) + " workers");
  }
}

/// A dense pull or push must cover every parameter.
inline void check_dense_size(std::size_t size, std::size_t parameters, const char* what) {
  if (size != parameters) {
    throw std::invalid_argument(std::string("asyncopt: ") + what + " of " + std::to_string(size) +
                                " elements into a store of " + std::to_string(parameters) +
                                " parameters");
  }
}

/// A sparse push has as many values as indices.
inline void check_sparse_sizes(std::size_t indices, std::size_t values) {
  if (indices != values) {
    throw std::invalid_argument("asyncopt: sparse push with " + std::to_string(indices) +
                                " indices but " + std::to_string(values) + " values");
  }
}

/// A sparse push: as many values as indices, every index in range, strictly increasing.
template <class Scalar>
void check_sparse_push(std::span<const std::size_t> index, std::span<const Scalar> value,
                       std::size_t parameters) {
  check_sparse_sizes(index.size(), value.size());
  if (!asyncopt::detail::strictly_increasing_below(index, parameters)) {
    throw std::invalid_argument("asyncopt: sparse push " +
                                asyncopt::detail::index_list_error(index, parameters));
  }
}

/// A sparse pull: every index in range, strictly increasing.
inline void check_sparse_pull(std::span<const std::size_t> index, std::size_t parameters) {
  if (!asyncopt::detail::strictly_increasing_below(index, parameters)) {
    throw std::invalid_argument("asyncopt: sparse pull " +
                                asyncopt::detail::index_list_error(index, parameters));
  }
}

/// A pull of packed values: as many values as indices.
inline void check_packed_size(std::size_t indices, std::size_t values) {
  if (indices != values) {
    throw std::invalid_argument("asyncopt: pull_values with " + std::to_string(indices) +
                                " indices into " + std::to_string(values) + " values");
  }
}

/// The `accepted` callback of a push that nobody listens to.
struct IgnoreAccepted {
  /// Does nothing.
  void operator()(const PushResult& /*result*/) const noexcept {}
};

/// Empty statistics with the staleness histogram sized for StoreStats::record().
[[nodiscard]] inline StoreStats empty_stats() {
  StoreStats stats;
  stats.staleness.assign(StoreStats::staleness_buckets, 0);
  return stats;
}

/// The statistics of every worker's counters (anything with a `stats` member), merged.
template <class Counters>
[[nodiscard]] StoreStats merged_stats(const Counters& counters) {
  StoreStats total;
  for (const auto& c : counters) {
    total.merge(c.stats);
  }
  return total;
}

/// Euclidean norm, summed in double, for the rules that clip by norm.
template <class Scalar>
[[nodiscard]] double norm(std::span<const Scalar> values) noexcept {
  double sum = 0.0;
  for (const Scalar v : values) {
    sum += static_cast<double>(v) * static_cast<double>(v);
  }
  return std::sqrt(sum);
}

/// Throws std::logic_error when a rule that reads the parameters a gradient was computed at
/// has none: a push before any pull.
template <class Rule>
void require_seen(bool pulled) {
  if constexpr (needs_w_seen_v<Rule>) {
    if (!pulled) {
      throw std::logic_error(
          "asyncopt: this update rule needs the parameters the gradient was computed at; "
          "pull before the first push (into a buffer kept unchanged until the push, where the "
          "store keeps no copy)");
    }
  }
}

/// Throws std::logic_error when a rule that reads the parameters a gradient was computed at
/// gets a dense push after a pull of only some of them.
template <class Rule>
void require_seen_all(bool partial) {
  if constexpr (needs_w_seen_v<Rule>) {
    if (partial) {
      throw std::logic_error(
          "asyncopt: this update rule needs every parameter the gradient was computed at for "
          "a dense update, but the last pull read only some of them; pull them all with "
          "pull(out)");
    }
  }
}

/// What a worker's last pull left for the push, for the rules that read the parameters the
/// gradient was computed at: where they are (the buffer the worker pulled into, or a copy
/// the store keeps), whether the pull read only some parameters, and, after a pull of
/// packed values, the index list the values belong to (which the push must use).
template <class Scalar>
struct Seen {
  /// The parameters the next gradient is computed at; null before the first pull.
  const Scalar* params = nullptr;
  /// After pull_values(): its index list, one value of `params` per entry.
  std::span<const std::size_t> packed_index{};
  /// Whether `params` holds one value per entry of `packed_index`.
  bool packed = false;
  /// Whether the pull read only some parameters.
  bool partial = false;

  /// w_seen for a dense update: every parameter, which a sparse pull did not read.
  template <class Rule>
  [[nodiscard]] const Scalar* dense() const {
    require_seen<Rule>(params != nullptr);
    require_seen_all<Rule>(partial);
    return params;
  }

  /// w_seen for a sparse update of `index`, and whether it is packed (one value per entry).
  template <class Rule>
  [[nodiscard]] const Scalar* sparse(std::span<const std::size_t> index) const {
    require_seen<Rule>(params != nullptr);
    if constexpr (needs_w_seen_v<Rule>) {
      if (packed && (index.data() != packed_index.data() || index.size() != packed_index.size())) {
        throw std::logic_error(
            "asyncopt: this update rule needs the parameters the gradient was computed at; "
            "after pull_values(index, values) push with the same index list");
      }
    }
    return params;
  }
};

/// A rule, validated for `Scalar`, and its state: `blocks` copies of Rule::state_slots arrays
/// of n scalars, zero at the start (one block per worker where workers keep replicas).
template <class Scalar, class Rule>
class RuleState {
 public:
  /// Scalars of rule state kept per parameter.
  static constexpr std::size_t slots = Rule::state_slots;
  /// The state arrays of one block.
  using Pointers = kernels::StatePointers<Scalar, slots>;

  /// Throws what `update::validate(rule, Precision::of<Scalar>())` throws.
  RuleState(const Rule& rule, std::size_t n, std::size_t blocks)
      : rule_((update::validate(rule, Precision::of<Scalar>()), rule)),
        n_(n),
        state_(slots * n * blocks, Scalar{0}) {}

  /// The rule.
  [[nodiscard]] const Rule& rule() const noexcept { return rule_; }
  /// Every block, one after the other; for checkpoints.
  [[nodiscard]] std::span<Scalar> all() noexcept { return state_; }
  /// The arrays of block `b`.
  [[nodiscard]] Pointers block(std::size_t b) noexcept {
    Pointers pointers{};
    for (std::size_t k = 0; k < slots; ++k) {
      pointers[k] = state_.data() + (b * slots + k) * n_;
    }
    return pointers;
  }

  /// The rule's formula for one update of `values` / `average_of` (the gradient, or the sum
  /// of a round's `average_of` gradients, whose mean's norm the rules that clip by norm
  /// receive).
  [[nodiscard]] auto formula(std::uint64_t staleness, std::uint64_t version, std::size_t worker,
                             std::span<const Scalar> values, std::size_t average_of = 1) const {
    auto formula = rule_.template formula<Scalar>(UpdateInfo{
        .staleness = staleness,
        .version = version,
        .worker = worker,
        .gradient_norm =
            needs_gradient_norm_v<Rule> ? norm(values) / static_cast<double>(average_of) : 0.0});
    static_assert(needs_w_seen_v<Rule> == needs_w_seen_v<decltype(formula)>,
                  "asyncopt: a rule and its formula must agree on needs_w_seen");
    return formula;
  }

 private:
  Rule rule_;
  std::size_t n_;
  std::vector<Scalar> state_;
};

/// Runs a rule's formula over a dense gradient under a consistency guard's write_dense():
/// the write path of every store that holds the parameters in host memory.
template <class Guard, class Formula, class Scalar, std::size_t Slots>
void write_dense(Guard&& guard, const Formula& formula, Scalar* w, std::span<const Scalar> gradient,
                 const kernels::StatePointers<Scalar, Slots>& state, const Scalar* w_seen) {
  guard.write_dense([&](auto access, std::size_t begin, std::size_t end) {
    kernels::apply_dense<decltype(access)>(
        formula,
        kernels::DenseOperands<Scalar, Slots>{
            .w = w, .g = gradient.data(), .state = state, .w_seen = w_seen},
        begin, end);
  });
}

/// A dense push's contribution to a round (see Synchronous::Guard::combine): its values where
/// they are, and the same buffer when the push lets the round sum into it (push_in_place),
/// else null; called with a slot, it copies the values there.
template <class Scalar>
struct DenseContribution {
  /// The gradient.
  std::span<const Scalar> gradient;
  /// The gradient's buffer, when the round may overwrite it; null otherwise.
  Scalar* scratch_buffer = nullptr;

  /// The gradient, where it is.
  [[nodiscard]] std::span<const Scalar> values() const noexcept { return gradient; }
  /// Where the round may sum into, or null.
  [[nodiscard]] Scalar* scratch() const noexcept { return scratch_buffer; }
  /// Copies the gradient into `slot`.
  void operator()(std::span<Scalar> slot) const {
    std::copy(gradient.begin(), gradient.end(), slot.begin());
  }
};

/// What a round's update sees instead of the sum of its gradients: their mean, divided in
/// the update's own pass over the parameters (the same division, so the same bits, as a
/// separate pass would give).
template <class Scalar>
struct DivideBy {
  /// How many gradients the sum holds.
  Scalar count;
  /// g / count.
  template <class V>
  V operator()(const V& g, const V& /*w*/) const {
    return g / V(count);
  }
};

/// The same for a count that is a power of two, whose reciprocal is exact: g * (1 / count)
/// is then g / count, bit for bit, and a multiplication costs less than a division.
template <class Scalar>
struct ScaleBy {
  /// 1 / count.
  Scalar reciprocal;
  /// g * reciprocal.
  template <class V>
  V operator()(const V& g, const V& /*w*/) const {
    return g * V(reciprocal);
  }
};

/// Runs a rule's formula over the mean of `count` dense gradients whose sum is `sum`, under
/// a consistency guard's write_dense(): a round's combined update.
template <class Guard, class Formula, class Scalar, std::size_t Slots>
void write_mean(Guard&& guard, const Formula& formula, Scalar* w, std::span<const Scalar> sum,
                std::size_t count, const kernels::StatePointers<Scalar, Slots>& state,
                const Scalar* w_seen) {
  if (count <= 1) {
    write_dense(guard, formula, w, sum, state, w_seen);
  } else if ((count & (count - 1)) == 0) {
    const Scalar reciprocal = Scalar{1} / static_cast<Scalar>(count);
    write_dense(guard, detail::mapped(formula, ScaleBy<Scalar>{reciprocal}), w, sum, state, w_seen);
  } else {
    write_dense(guard, detail::mapped(formula, DivideBy<Scalar>{static_cast<Scalar>(count)}), w,
                sum, state, w_seen);
  }
}

/// The same for a sparse gradient; w_seen holds one value per entry when `w_seen_by_entry`.
template <class Guard, class Formula, class Scalar, std::size_t Slots>
void write_sparse(Guard&& guard, const Formula& formula, Scalar* w,
                  std::span<const std::size_t> index, std::span<const Scalar> value,
                  const kernels::StatePointers<Scalar, Slots>& state, const Scalar* w_seen,
                  bool w_seen_by_entry) {
  guard.write_sparse(index, [&](auto access, std::size_t begin, std::size_t end) {
    kernels::apply_sparse<decltype(access)>(
        formula,
        kernels::SparseOperands<Scalar, Slots>{.w = w,
                                               .index = index.data(),
                                               .value = value.data(),
                                               .state = state,
                                               .w_seen = w_seen,
                                               .w_seen_by_entry = w_seen_by_entry},
        begin, end);
  });
}

/// The guard of memory nobody else touches, such as a worker's private replica: one range,
/// plain access.
struct Exclusive {
  /// The number of parameters.
  std::size_t n = 0;
  /// Calls apply(PlainAccess{}, 0, n).
  template <class F>
  void write_dense(F&& apply) const {
    apply(kernels::PlainAccess{}, std::size_t{0}, n);
  }
  /// Calls apply(PlainAccess{}, 0, index.size()).
  template <class F>
  void write_sparse(std::span<const std::size_t> index, F&& apply) const {
    apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
  }
};

}  // namespace store
}  // namespace asyncopt
