// A deterministic staleness simulator: workers take turns in one thread and every gradient
// is computed at parameters a controlled number of updates old.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
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

namespace asyncopt::timing {

/// A step time for transport::Simulated's timed mode: every step takes `step` simulated
/// seconds, and worker `worker`'s every `every`-th step (its steps every - 1, 2 every - 1,
/// ..., counted from 0) takes `extra` seconds more: a straggler that stalls periodically.
struct Straggler {
  double step = 1.0;        ///< seconds of an ordinary step, finite and non-negative
  std::size_t worker = 0;   ///< the worker that stalls
  std::uint64_t every = 1;  ///< it stalls on every this-many-th step (0: never)
  double extra = 0.0;       ///< seconds a stall adds, finite and non-negative

  /// The seconds worker `id`'s step number `step_index` (from 0) takes.
  [[nodiscard]] double operator()(std::size_t id, std::uint64_t step_index) const noexcept {
    const bool stalls = id == worker && every > 0 && (step_index + 1) % every == 0;
    return stalls ? step + extra : step;
  }
};

}  // namespace asyncopt::timing

namespace asyncopt::transport {

/// The staleness simulator, deterministic and single-threaded, in one of two modes.
///
/// Delay mode (the default): workers run in turn in the calling thread; a pull hands out the
/// parameters as they were tau updates ago, tau drawn from `delay`, and pushes are applied in
/// the order they are made. The same seed gives the same run, bit for bit. tau is capped by
/// the number of updates so far and by `history` (the number of past parameter vectors
/// kept). The consistency policy only guards memory: its gates (bounded staleness) are not
/// consulted, since the simulator decides every delay itself.
///
/// Timed mode (`step_time` set): the workers run on a simulated clock. Worker w's step number
/// k (a call of the body that pulls or pushes) starts when its previous step has ended and
/// the consistency policy's gate lets it read, and takes step_time(w, k) seconds; its pull
/// reads the parameters as they are at its start, and its pushes land, in that order, when
/// it ends, so a gradient is as stale as the number of other workers' steps that end
/// meanwhile. Steps end in the order of their end times, computed in double (ties, exact
/// equality only: ends before starts, then the lower worker id); a step of 0 seconds ends
/// before any other worker starts. Under consistency::BoundedStaleness the gate is the stale
/// synchronous parallel rule: a worker that has finished c steps starts its next once every
/// live worker has finished c - s; other policies never wait. A worker whose body returns
/// false leaves, and holds nobody back, when the step that call made ends (at once if the
/// call neither pulled nor pushed). StoreStats::wait_seconds sums the simulated seconds
/// workers waited at the gate; every `run` (an epoch) starts when the previous one ended.
/// Nothing is random: the run is a function of the step times and the workload. `delay` must
/// stay at its default, since the schedule decides every delay.
struct Simulated {
  /// The distribution each pull draws its tau from; the default, delay::fixed(0), hands
  /// out the current parameters every time.
  delay::Delay delay = delay::fixed(0);
  /// Seed of the generator that draws tau. The same seed, with the same workload, gives the
  /// same run bit for bit.
  std::uint64_t seed = 1;
  /// Past parameter vectors kept; a drawn tau above history - 1 is cut to it.
  std::size_t history = 65;
  /// Timed mode when set: the simulated seconds worker `id`'s step number `k` (from 0) takes,
  /// finite and non-negative (see timing::Straggler).
  std::function<double(std::size_t id, std::uint64_t k)> step_time{};

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

  /// Throws std::invalid_argument when `delay` is impossible (see delay::Delay::validate()),
  /// `history` is 0, or `step_time` is set together with a delay other than the default.
  void validate() const {
    delay.validate();
    if (history == 0) {
      throw std::invalid_argument("asyncopt: Simulated::history must be at least 1");
    }
    if (step_time && delay.bound() != 0) {
      throw std::invalid_argument(
          "asyncopt: Simulated takes a delay distribution or step times, not both: with "
          "step_time set, the delays follow from the schedule");
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
        counters_(workers, store::empty_stats()),
        step_time_(transport.step_time),
        lanes_(step_time_ ? workers : 0) {
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

  /// The counters of all workers, merged; `wait_seconds` is 0 in delay mode and the
  /// simulated seconds spent at the gate in timed mode.
  [[nodiscard]] StoreStats stats() const {
    StoreStats total;
    for (const auto& c : counters_) {
      total.merge(c);
    }
    return total;
  }

  /// Runs body(0), body(1), ... until every body has returned false: in turn in delay mode,
  /// as Simulated::run does; in timed mode in the order of the simulated schedule (see
  /// Simulated), each call one step of that worker. Throws std::invalid_argument when
  /// `workers` exceeds the store's, or (timed mode) when step_time returns a negative or
  /// non-finite time; whatever a body throws propagates.
  template <class Body>
  void run(std::size_t workers, Body&& body) {
    if (workers > counters_.size()) {
      throw std::invalid_argument("asyncopt: Simulated::Store::run for " + std::to_string(workers) +
                                  " workers, but the store has " +
                                  std::to_string(counters_.size()));
    }
    if (step_time_) {
      run_timed(workers, body);
    } else {
      Simulated{}.run(workers, body);
    }
  }

  /// Timed mode: the simulated time, in seconds since the store was created, of the event in
  /// progress: during a body's call the start of its step, after a run the end of its last
  /// step. 0 in delay mode.
  [[nodiscard]] double simulated_seconds() const noexcept { return now_; }

 private:
  // A push made during a timed step, to land when the step ends.
  struct Pending {
    std::vector<Scalar> values;
    std::vector<std::size_t> index;  // empty: dense
    std::vector<Scalar> w_seen;      // empty unless the rule needs it
    std::uint64_t seen = 0;
    bool sparse = false;
    bool packed = false;
  };

  // One worker's place on the simulated clock.
  struct Lane {
    double ready = 0.0;       // when its next step may start (or, blocked, when it began waiting)
    double end = 0.0;         // busy: when the step in flight ends
    std::uint64_t steps = 0;  // steps ended, over every run: its clock
    bool live = false;
    bool busy = false;
    bool blocked = false;
    bool leaving = false;  // busy with its last step
    std::vector<Pending> pending;
  };

  static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();

  [[nodiscard]] std::uint64_t gate_bound() const noexcept {
    if constexpr (requires { guard_.staleness_bound(); }) {
      return guard_.staleness_bound();
    } else {
      return std::numeric_limits<std::uint64_t>::max();
    }
  }

  // Whether worker id, having ended `steps` steps, may start its next: every other live
  // worker has ended at least steps - s.
  [[nodiscard]] bool gate_open(std::size_t id, std::uint64_t s) const noexcept {
    const std::uint64_t c = lanes_[id].steps;
    if (s == std::numeric_limits<std::uint64_t>::max() || c <= s) {
      return true;
    }
    for (std::size_t k = 0; k < lanes_.size(); ++k) {
      if (k != id && lanes_[k].live && lanes_[k].steps < c - s) {
        return false;
      }
    }
    return true;
  }

  // At time t something changed (a step ended, a worker left): starts the waits it ends.
  void release(double t, std::uint64_t s) {
    for (std::size_t k = 0; k < lanes_.size(); ++k) {
      Lane& lane = lanes_[k];
      if (lane.blocked && gate_open(k, s)) {
        lane.blocked = false;
        counters_[k].wait_seconds += t - lane.ready;
        lane.ready = t;
      }
    }
  }

  template <class Body>
  void run_timed(std::size_t workers, Body& body) {
    const std::uint64_t s = gate_bound();
    for (std::size_t k = 0; k < lanes_.size(); ++k) {
      Lane& lane = lanes_[k];
      lane.live = k < workers;
      lane.busy = false;
      lane.blocked = false;
      lane.leaving = false;
      lane.pending.clear();  // a run that threw may have left some
      lane.ready = now_;
    }
    for (;;) {
      std::size_t ending = none;
      std::size_t starting = none;
      for (std::size_t k = 0; k < lanes_.size(); ++k) {
        const Lane& lane = lanes_[k];
        if (lane.busy && (ending == none || lane.end < lanes_[ending].end)) {
          ending = k;
        } else if (lane.live && !lane.busy && !lane.blocked &&
                   (starting == none || lane.ready < lanes_[starting].ready)) {
          starting = k;
        }
      }
      if (ending == none && starting == none) {
        return;
      }
      if (ending != none && (starting == none || lanes_[ending].end <= lanes_[starting].ready)) {
        end_step(ending, s);
      } else {
        start_step(starting, body, s);
      }
    }
  }

  template <class Body>
  void start_step(std::size_t id, Body& body, std::uint64_t s) {
    Lane& lane = lanes_[id];
    now_ = lane.ready;  // events come in time order
    if (!gate_open(id, s)) {
      lane.blocked = true;  // waits from lane.ready
      return;
    }
    const double seconds = step_time_(id, lane.steps);
    if (!(seconds >= 0.0) || !std::isfinite(seconds)) {
      throw std::invalid_argument("asyncopt: Simulated::step_time(" + std::to_string(id) + ", " +
                                  std::to_string(lane.steps) + ") returned " +
                                  std::to_string(seconds) +
                                  "; a step takes a finite, non-negative time");
    }
    stepping_ = id;
    worked_ = false;
    bool more = false;
    try {
      more = static_cast<bool>(body(id));
    } catch (...) {
      stepping_ = none;
      lane.pending.clear();
      throw;
    }
    stepping_ = none;
    if (!more && !worked_) {  // a call that did nothing: the worker leaves now
      lane.live = false;
      release(lane.ready, s);
      return;
    }
    lane.leaving = !more;  // its last step: it leaves when the step ends
    lane.busy = true;
    lane.end = lane.ready + seconds;
  }

  void end_step(std::size_t id, std::uint64_t s) {
    Lane& lane = lanes_[id];
    for (const Pending& push : lane.pending) {
      land(id, push);
    }
    lane.pending.clear();
    ++lane.steps;
    lane.busy = false;
    lane.live = !lane.leaving;
    lane.leaving = false;
    lane.ready = lane.end;
    now_ = lane.end;
    release(lane.end, s);
  }

  void land(std::size_t id, const Pending& push) {
    const Scalar* w_seen = push.w_seen.empty() ? nullptr : push.w_seen.data();
    const std::span<const Scalar> values(push.values);
    if (push.sparse) {
      apply(id, push.seen, values, [&](const auto& formula, const auto& state) {
        store::write_sparse(guard_, formula, params_.data(),
                            std::span<const std::size_t>(push.index), values, state, w_seen,
                            push.packed);
      });
    } else {
      apply(id, push.seen, values, [&](const auto& formula, const auto& state) {
        store::write_dense(guard_, formula, params_.data(), values, state, w_seen);
      });
    }
  }

  // A push by worker id during its timed step: kept, with what the rule needs, until the step
  // ends. w_seen holds `seen_count` values when the rule needs them.
  PushResult defer(std::size_t id, std::uint64_t seen, std::span<const Scalar> values,
                   std::span<const std::size_t> index, const Scalar* w_seen, std::size_t seen_count,
                   bool sparse, bool packed) {
    Pending push{.values = std::vector<Scalar>(values.begin(), values.end()),
                 .index = std::vector<std::size_t>(index.begin(), index.end()),
                 .w_seen = {},
                 .seen = seen,
                 .sparse = sparse,
                 .packed = packed};
    if constexpr (needs_w_seen_v<Rule>) {
      push.w_seen.assign(w_seen, w_seen + seen_count);
    }
    lanes_[id].pending.push_back(std::move(push));
    return {.applied = true, .staleness = 0};
  }

  [[nodiscard]] bool deferring(std::size_t id) const noexcept { return stepping_ == id; }

  // A pull or a push by worker id: during its timed step, the call did work.
  void note_work(std::size_t id) noexcept {
    if (stepping_ == id) {
      worked_ = true;
    }
  }

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
  std::function<double(std::size_t, std::uint64_t)> step_time_;
  std::vector<Lane> lanes_;
  double now_ = 0.0;
  std::size_t stepping_ = none;  // timed mode: the worker whose step the body is running
  bool worked_ = false;          // whether that call pulled or pushed
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
  /// there was no pull, or the last pull read only some parameters. In timed mode a push made
  /// during a step is kept and lands when the step ends; its result then says only whether it
  /// was accepted (staleness 0), and stats() counts the staleness it lands with.
  PushResult push(std::span<const Scalar> gradient) {
    check_size(gradient.size(), "push");
    const Scalar* const w_seen = seen_.template dense<Rule>();
    if (!kernels::all_finite(gradient)) {
      return reject();
    }
    Store& s = *store_;
    if (s.deferring(id_)) {
      return s.defer(id_, seen_version_, gradient, {}, w_seen, s.params_.size(), false, false);
    }
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
    if (s.deferring(id_)) {
      return s.defer(id_, seen_version_, value, index, w_seen,
                     seen_.packed ? index.size() : s.params_.size(), true, seen_.packed);
    }
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
  /// wait at in a call: in timed mode the store's run() applies the gate between steps.
  void clock() noexcept { ++clock_; }
  /// Does nothing: in delay mode a simulated worker never holds another back, and in timed
  /// mode a worker leaves when its body returns false.
  void leave() noexcept {}
  /// Does nothing: in timed mode each run() starts with every worker taking part.
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
    s.note_work(id_);
    std::uint64_t tau = s.delay_.draw(s.rng_);
    tau = std::min<std::uint64_t>({tau, s.version_, s.capacity_ - 1});
    seen_version_ = s.version_ - tau;
    return s.ring_.data() + (seen_version_ % s.capacity_) * s.params_.size();
  }

  PushResult reject() noexcept {
    store_->note_work(id_);
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
