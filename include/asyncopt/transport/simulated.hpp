// A deterministic staleness simulator: workers take turns in one thread and every gradient
// is computed at parameters a controlled number of updates old.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <asyncopt/core/random.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/store.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::delay {

/// How stale each simulated gradient is: a distribution over tau, the number of updates
/// applied between the parameters a gradient is computed at and its arrival.
struct Delay {
  /// The family of the distribution, which says how `low`, `high` and `p` are read.
  enum class Kind {
    fixed,     ///< tau is always `low`.
    uniform,   ///< tau is uniform over the integers in [`low`, `high`].
    geometric  ///< P(tau = k) = (1 - p)^k p for k = 0, 1, 2, ...
  };
  /// Which distribution this is; the default, fixed with `low` = 0, makes every gradient
  /// fresh.
  Kind kind = Kind::fixed;
  std::uint64_t low = 0;   ///< fixed: tau; uniform: smallest tau
  std::uint64_t high = 0;  ///< uniform: largest tau
  double p = 1.0;          ///< geometric: P(tau = k) = (1 - p)^k p

  /// Throws std::invalid_argument on an impossible distribution.
  void validate() const {
    if (kind == Kind::uniform && low > high) {
      throw std::invalid_argument("asyncopt: delay::uniform(a, b) needs a <= b, got a = " +
                                  std::to_string(low) + ", b = " + std::to_string(high));
    }
    if (kind == Kind::geometric && !(p > 0.0 && p <= 1.0)) {
      throw std::invalid_argument("asyncopt: delay::geometric(p) needs p in (0, 1], got " +
                                  std::to_string(p));
    }
  }

  /// The largest tau this distribution can draw before truncation.
  [[nodiscard]] std::uint64_t bound() const noexcept {
    return kind == Kind::uniform ? high : kind == Kind::fixed ? low : ~std::uint64_t{0};
  }

  /// Draws one tau from `rng`, before the simulator caps it. A geometric draw too large
  /// to represent (1e18 or more) returns the largest std::uint64_t. Assumes validate()
  /// passed.
  [[nodiscard]] std::uint64_t draw(Xoshiro256& rng) const {
    switch (kind) {
      case Kind::fixed:
        return low;
      case Kind::uniform:
        return low + rng.below(high - low + 1);
      case Kind::geometric: {
        if (p >= 1.0) {
          return 0;
        }
        // Inverse CDF: floor(log(U) / log(1 - p)) with U uniform in (0, 1].
        const double u = 1.0 - rng.uniform();
        const double k = std::floor(std::log(u) / std::log1p(-p));
        return k >= 1e18 ? ~std::uint64_t{0} : static_cast<std::uint64_t>(k);
      }
    }
    return 0;
  }
};

/// Every gradient is tau updates old. tau = K - 1 is K workers taking turns.
[[nodiscard]] constexpr Delay fixed(std::uint64_t tau) noexcept {
  return {.kind = Delay::Kind::fixed, .low = tau, .high = tau};
}
/// tau uniform in [a, b].
[[nodiscard]] constexpr Delay uniform(std::uint64_t a, std::uint64_t b) noexcept {
  return {.kind = Delay::Kind::uniform, .low = a, .high = b};
}
/// tau geometric with success probability p (mean (1 - p) / p), truncated at the
/// simulator's history.
[[nodiscard]] constexpr Delay geometric(double p) noexcept {
  return {.kind = Delay::Kind::geometric, .p = p};
}

}  // namespace asyncopt::delay

namespace asyncopt::transport {

/// The staleness simulator: workers run in turn in the calling thread; a pull hands out the
/// parameters as they were tau updates ago, tau drawn from `delay`, and pushes are applied in
/// the order they are made. The same seed gives the same run, bit for bit. tau is capped by
/// the number of updates so far and by `history` (the number of past parameter vectors
/// kept). The consistency policy only guards memory here: its gates (bounded staleness)
/// are not consulted, since the simulator decides every delay itself.
struct Simulated {
  /// The distribution each pull draws its tau from; the default, delay::fixed(0), hands
  /// out the current parameters every time.
  delay::Delay delay = delay::fixed(0);
  /// Seed of the generator that draws tau. The same seed, with the same workload, gives the
  /// same run bit for bit.
  std::uint64_t seed = 1;
  /// Past parameter vectors kept; a drawn tau above history - 1 is cut to it.
  std::size_t history = 65;

  /// A worker's pulled copy holds the (past) parameters its gradient was computed at, so
  /// rules that need them (delay compensation) run here.
  static constexpr bool provides_w_seen = true;

  template <class Scalar, class Rule, class Consistency>
  class Store;

  /// Calls body(0), body(1), ..., body(workers - 1), and again, skipping the workers whose
  /// body returned false, until every body has returned false.
  template <class Body>
  void run(std::size_t workers, Body&& body) const {
    std::vector<char> active(workers, 1);
    std::size_t remaining = workers;
    while (remaining > 0) {
      for (std::size_t id = 0; id < workers; ++id) {
        if (active[id] != 0 && !body(id)) {
          active[id] = 0;
          --remaining;
        }
      }
    }
  }

  /// Throws std::invalid_argument when `delay` is impossible (see delay::Delay::validate())
  /// or `history` is 0.
  void validate() const {
    delay.validate();
    if (history == 0) {
      throw std::invalid_argument("asyncopt: Simulated::history must be at least 1");
    }
  }
};

/// The simulated store: the parameters in place, the rule's state, and a ring of the last
/// `history` parameter vectors.
template <class Scalar, class Rule, class Consistency>
class Simulated::Store : store::Immovable {
  static_assert(!sends_momentum_v<Rule>,
                "asyncopt: this update rule's rounds send momenta (OneBitAdam), which only "
                "consistency::Synchronous runs, on transport::SharedMemory or transport::Mpi");

 public:
  /// The type of the parameters and gradients: `Scalar`, float or double.
  using scalar_type = Scalar;
  /// Scalars of rule state kept per parameter (`Rule::state_slots`: 0 for SGD, 1 for
  /// momentum).
  static constexpr std::size_t slots = Rule::state_slots;

  class Worker;

  /// Attaches to `params` in place (they must outlive the store) for `workers` workers, with
  /// the rule's state at zero, version 0, and the current parameters as the first entry of
  /// the history ring. The ring keeps `history` vectors, or fewer when the delay
  /// distribution cannot draw a tau that large. Throws std::invalid_argument when the
  /// transport's settings are invalid (validate()) or `workers` is 0, and whatever the
  /// rule's `validate()` throws.
  Store(const Simulated& transport, const Rule& rule, const Consistency& consistency,
        std::span<Scalar> params, std::size_t workers)
      : delay_((transport.validate(), store::check_workers(workers), transport.delay)),
        params_(params),
        guard_(consistency, params.size(), workers),
        rule_(rule, params.size(), 1),
        rng_(transport.seed),
        counters_(workers, store::empty_stats()) {
    const std::uint64_t bound = transport.delay.bound();
    capacity_ = static_cast<std::size_t>(std::min<std::uint64_t>(
        bound == ~std::uint64_t{0} ? transport.history : bound + 1, transport.history));
    capacity_ = std::max<std::size_t>(capacity_, 1);
    ring_.resize(capacity_ * params.size());
    remember();
  }

  /// A new handle of worker `id` (0 <= id < workers()); throws std::out_of_range
  /// otherwise. Unlike shared memory, an id may have several live handles: each keeps its
  /// own last pull and clock count, and they share the id's statistics.
  [[nodiscard]] Worker worker(std::size_t id) {
    store::check_worker_id(id, counters_.size());
    return Worker(*this, id);
  }

  /// The number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return params_.size(); }
  /// The number of workers the store was created for.
  [[nodiscard]] std::size_t workers() const noexcept { return counters_.size(); }
  /// Updates applied so far (accepted pushes; rejected ones do not count).
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }

  /// The counters of all workers, merged; `wait_seconds` is always 0, since simulated
  /// workers never wait.
  [[nodiscard]] StoreStats stats() const {
    StoreStats total;
    for (const auto& c : counters_) {
      total.merge(c);
    }
    return total;
  }

 private:
  // Copies the current parameters into the ring slot of the current version.
  void remember() {
    const std::size_t n = params_.size();
    std::copy(params_.begin(), params_.end(),
              ring_.begin() + static_cast<std::ptrdiff_t>((version_ % capacity_) * n));
  }

  template <class Write>
  PushResult apply(std::size_t worker, std::uint64_t seen, std::span<const Scalar> values,
                   Write&& write) {
    const std::uint64_t staleness = version_ - seen;
    write(rule_.formula(staleness, version_, worker, values), rule_.block(0));
    ++version_;
    counters_[worker].record(staleness);
    remember();
    return {.applied = true, .staleness = staleness};
  }

  delay::Delay delay_;
  std::span<Scalar> params_;
  typename Consistency::template Guard<Scalar> guard_;
  store::RuleState<Scalar, Rule> rule_;
  Xoshiro256 rng_;
  std::vector<StoreStats> counters_;
  std::vector<Scalar> ring_;
  std::size_t capacity_ = 1;
  std::uint64_t version_ = 0;
};

/// A simulated worker's handle: the same pull, push and clock as shared memory.
template <class Scalar, class Rule, class Consistency>
class Simulated::Store<Scalar, Rule, Consistency>::Worker {
 public:
  /// Draws tau and copies the parameters as they were tau updates ago into `out`.
  void pull(std::span<Scalar> out) {
    check_size(out.size(), "pull");
    const Scalar* past = draw_past();
    std::copy(past, past + out.size(), out.begin());
    seen_ = {.params = out.data()};
  }

  /// The same for the parameters at `index` only (strictly increasing), into the same
  /// positions of `out`.
  void pull(std::span<const std::size_t> index, std::span<Scalar> out) {
    check_size(out.size(), "pull");
    store::check_sparse_pull(index, store_->params_.size());
    const Scalar* past = draw_past();
    kernels::gather<kernels::PlainAccess>(past, out.data(), index.data(), 0, index.size());
    seen_ = {.params = out.data(), .partial = true};
  }

  /// The same into `values`, packed: values[k] = w[index[k]] as it was tau updates ago.
  void pull_values(std::span<const std::size_t> index, std::span<Scalar> values) {
    store::check_packed_size(index.size(), values.size());
    store::check_sparse_pull(index, store_->params_.size());
    const Scalar* past = draw_past();
    kernels::gather_values<kernels::PlainAccess>(past, values.data(), index.data(), 0,
                                                 index.size());
    seen_ = {.params = values.data(), .packed_index = index, .packed = true, .partial = true};
  }

  /// Applies a dense gradient (one value per parameter) computed at the parameters of the
  /// last pull, whose staleness is version() minus seen_version(). A gradient holding NaN
  /// or Inf is rejected: nothing changes and the result says `applied = false`. Throws
  /// std::invalid_argument when its size is not the store's dimension, and
  /// std::logic_error when the rule needs the parameters the gradient was computed at but
  /// there was no pull, or the last pull read only some parameters.
  PushResult push(std::span<const Scalar> gradient) {
    check_size(gradient.size(), "push");
    const Scalar* const w_seen = seen_.template dense<Rule>();
    if (!kernels::all_finite(gradient)) {
      return reject();
    }
    Store& s = *store_;
    return s.apply(id_, seen_version_, gradient, [&](const auto& formula, const auto& state) {
      store::write_dense(s.guard_, formula, s.params_.data(), gradient, state, w_seen);
    });
  }

  /// Applies a sparse gradient: `value[k]` for parameter `index[k]`, with strictly
  /// increasing indices below the store's dimension; rejected as the dense push is when a
  /// value is NaN or Inf. Throws std::invalid_argument when the lists differ in length or
  /// an index is out of order or out of range, and std::logic_error when the rule needs the
  /// parameters the gradient was computed at but there was no pull, or the last pull was a
  /// pull_values() of a different index list.
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    store::check_sparse_push(index, value, store_->params_.size());
    const Scalar* const w_seen = seen_.template sparse<Rule>(index);
    if (!kernels::all_finite(value)) {
      return reject();
    }
    Store& s = *store_;
    return s.apply(id_, seen_version_, value, [&](const auto& formula, const auto& state) {
      store::write_sparse(s.guard_, formula, s.params_.data(), index, value, state, w_seen,
                          seen_.packed);
    });
  }

  /// The same as push(gradient.indices(), gradient.values()).
  PushResult push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step: adds one to clock_count(). There is no gate to
  /// wait at.
  void clock() noexcept { ++clock_; }
  /// Does nothing: a simulated worker never holds another back.
  void leave() noexcept {}
  /// Does nothing: a simulated worker never holds another back.
  void join() noexcept {}

  /// The worker id this handle was created for.
  [[nodiscard]] std::size_t id() const noexcept { return id_; }
  /// The version of the parameters the last pull returned: the store's version at that
  /// pull minus the tau it drew; 0 before the first pull.
  [[nodiscard]] std::uint64_t seen_version() const noexcept { return seen_version_; }
  /// Calls of clock() on this handle.
  [[nodiscard]] std::uint64_t clock_count() const noexcept { return clock_; }

 private:
  friend class Store;
  Worker(Store& store, std::size_t id) : store_(&store), id_(id) {}

  // Draws tau and returns the parameters as they were tau updates ago; remembers their
  // version.
  const Scalar* draw_past() {
    Store& s = *store_;
    std::uint64_t tau = s.delay_.draw(s.rng_);
    tau = std::min<std::uint64_t>({tau, s.version_, s.capacity_ - 1});
    seen_version_ = s.version_ - tau;
    return s.ring_.data() + (seen_version_ % s.capacity_) * s.params_.size();
  }

  PushResult reject() noexcept {
    ++store_->counters_[id_].rejected;
    return {.applied = false, .staleness = 0};
  }

  void check_size(std::size_t size, const char* what) const {
    store::check_dense_size(size, store_->params_.size(), what);
  }

  Store* store_;
  std::size_t id_;
  std::uint64_t seen_version_ = 0;
  std::uint64_t clock_ = 0;
  store::Seen<Scalar> seen_;
};

}  // namespace asyncopt::transport
