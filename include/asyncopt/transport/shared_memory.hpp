// The default transport: the store lives in this process and workers are threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/step.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt::transport {

/// What a push did.
struct PushResult {
  /// False when the gradient was rejected (it held NaN or Inf); nothing changed then.
  bool applied = false;
  /// Updates applied between the worker's last pull and this push.
  std::uint64_t staleness = 0;
};

namespace detail {

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

/// The `accepted` callback of a push that nobody listens to.
struct IgnoreAccepted {
  void operator()(const PushResult& /*result*/) const noexcept {}
};

/// The statistics of every worker's counters (anything with a `stats` member), merged.
template <class Counters>
[[nodiscard]] StoreStats merged_stats(const Counters& counters) {
  StoreStats total;
  for (const auto& c : counters) {
    total.merge(c.stats);
  }
  return total;
}

/// A worker id must name one of the store's workers.
inline void check_worker_id(std::size_t id, std::size_t workers) {
  if (id >= workers) {
    throw std::out_of_range("asyncopt: worker id " + std::to_string(id) + " but the store has " +
                            std::to_string(workers) + " workers");
  }
}

/// A sparse pull: every index in range, strictly increasing.
inline void check_sparse_pull(std::span<const std::size_t> index, std::size_t parameters) {
  if (!asyncopt::detail::strictly_increasing_below(index, parameters)) {
    throw std::invalid_argument("asyncopt: sparse pull " +
                                asyncopt::detail::index_list_error(index, parameters));
  }
}

/// Rules such as delay compensation read the parameters the gradient was computed at: the
/// worker's own pulled copy, so the store keeps none. A push before any pull has none.
template <class Rule, class Scalar>
void check_seen(const Scalar* seen_params) {
  if constexpr (needs_w_seen_v<Rule>) {
    if (seen_params == nullptr) {
      throw std::logic_error(
          "asyncopt: this update rule needs the parameters the gradient was computed at; "
          "pull into a buffer before the first push and keep it unchanged until the push");
    }
  }
}

/// What a worker's last pull left for the push, for the rules that read the parameters the
/// gradient was computed at: the buffer it pulled into, whether the pull read only some
/// parameters, and, after a pull of packed values, the index list the values belong to
/// (which the push must use).
template <class Scalar>
struct Seen {
  const Scalar* params = nullptr;
  std::span<const std::size_t> packed_index{};
  bool packed = false;
  bool partial = false;

  /// w_seen for a dense update: every parameter, which a sparse pull did not read.
  template <class Rule>
  [[nodiscard]] const Scalar* dense() const {
    check_seen<Rule>(params);
    if constexpr (needs_w_seen_v<Rule>) {
      if (partial) {
        throw std::logic_error(
            "asyncopt: this update rule needs every parameter the gradient was computed at for "
            "a dense update, but the last pull read only some of them; pull them all with "
            "pull(out)");
      }
    }
    return params;
  }

  /// w_seen for a sparse update of `index`, and whether it is packed (one value per entry).
  template <class Rule>
  [[nodiscard]] const Scalar* sparse(std::span<const std::size_t> index) const {
    check_seen<Rule>(params);
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

/// Runs a rule's step over a dense gradient under a consistency guard: the write path of
/// every store that holds the parameters in memory.
template <class Guard, class Step, class Scalar, std::size_t Slots>
void write_dense(Guard&& guard, const Step& step, Scalar* w, std::span<const Scalar> gradient,
                 const kernels::StatePointers<Scalar, Slots>& state, const Scalar* w_seen) {
  guard.write_dense([&](auto access, std::size_t begin, std::size_t end) {
    kernels::apply_dense<decltype(access)>(
        step,
        kernels::DenseOperands<Scalar, Slots>{
            .w = w, .g = gradient.data(), .state = state, .w_seen = w_seen},
        begin, end);
  });
}

/// The same for a sparse gradient; w_seen holds one value per entry when `w_seen_by_entry`.
template <class Guard, class Step, class Scalar, std::size_t Slots>
void write_sparse(Guard&& guard, const Step& step, Scalar* w, std::span<const std::size_t> index,
                  std::span<const Scalar> value, const kernels::StatePointers<Scalar, Slots>& state,
                  const Scalar* w_seen, bool w_seen_by_entry) {
  guard.write_sparse(index, [&](auto access, std::size_t begin, std::size_t end) {
    kernels::apply_sparse<decltype(access)>(
        step,
        kernels::SparseOperands<Scalar, Slots>{.w = w,
                                               .index = index.data(),
                                               .value = value.data(),
                                               .state = state,
                                               .w_seen = w_seen,
                                               .w_seen_by_entry = w_seen_by_entry},
        begin, end);
  });
}

/// A pull of packed values: as many values as indices.
inline void check_packed_size(std::size_t indices, std::size_t values) {
  if (indices != values) {
    throw std::invalid_argument("asyncopt: pull_values with " + std::to_string(indices) +
                                " indices into " + std::to_string(values) + " values");
  }
}

/// The guard of memory nobody else touches: a worker's private replica.
struct Exclusive {
  std::size_t n = 0;
  template <class F>
  void write_dense(F&& apply) const {
    apply(kernels::PlainAccess{}, std::size_t{0}, n);
  }
  template <class F>
  void write_sparse(std::span<const std::size_t> index, F&& apply) const {
    apply(kernels::PlainAccess{}, std::size_t{0}, index.size());
  }
};

/// Euclidean norm, summed in double, for the rules that clip by norm.
template <class Scalar>
double norm(std::span<const Scalar> values) noexcept {
  double sum = 0.0;
  for (const Scalar v : values) {
    sum += static_cast<double>(v) * static_cast<double>(v);
  }
  return std::sqrt(sum);
}

}  // namespace detail

/// Shared memory: the store holds the caller's parameter array in place (no copy) and
/// workers are threads of this process.
struct SharedMemory {
  /// Pin worker k to CPU k modulo the CPUs this process may use (Linux only; elsewhere
  /// ignored). Steadier timings on a quiet machine, worse ones on a shared one.
  bool pin_threads = false;

  /// A worker's pulled copy holds the parameters its gradient was computed at.
  static constexpr bool provides_w_seen = true;
  /// Workers are threads that may block for each other: Synchronous and LocalSgd run here.
  static constexpr bool supports_rounds = true;

  template <class Scalar, class Rule, class Consistency>
  class Store;

  /// Runs body(worker) repeatedly on one thread per worker until it returns false. The
  /// first exception thrown by a body is rethrown here after every thread has finished.
  template <class Body>
  void run(std::size_t workers, Body&& body) const {
    std::exception_ptr error;
    std::mutex error_mutex;
    {
      std::vector<std::jthread> threads;
      threads.reserve(workers);
      for (std::size_t id = 0; id < workers; ++id) {
        threads.emplace_back([this, &body, &error, &error_mutex, id] {
          if (pin_threads) {
            pin_to_cpu(id);
          }
          try {
            while (body(id)) {
            }
          } catch (...) {
            const std::lock_guard lock(error_mutex);
            if (!error) {
              error = std::current_exception();
            }
          }
        });
      }
    }
    if (error) {
      std::rethrow_exception(error);
    }
  }

 private:
  static void pin_to_cpu([[maybe_unused]] std::size_t worker) noexcept {
#if defined(__linux__)
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
      return;
    }
    const int count = CPU_COUNT(&allowed);
    if (count <= 0) {
      return;
    }
    int wanted = static_cast<int>(worker % static_cast<std::size_t>(count));
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed) && wanted-- == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
        return;
      }
    }
#endif
  }
};

/// The parameters, the rule's state and the version counter, shared by worker threads.
///
/// The store keeps a reference to the caller's parameter array, which must outlive it.
/// Each worker id has at most one live handle at a time (worker() refuses a second), and a
/// handle is used by one thread at a time. Under a policy whose guard keeps replicas
/// (LocalSgd), each worker also has its own copy of the rule's state.
template <class Scalar, class Rule, class Consistency>
class SharedMemory::Store {
 public:
  /// The type of the parameters and gradients: `Scalar`, float or double.
  using scalar_type = Scalar;
  /// The consistency policy's guard for `Scalar`, through which every read and write of
  /// the shared parameters goes.
  using guard_type = typename Consistency::template Guard<Scalar>;
  /// Scalars of rule state kept per parameter (`Rule::state_slots`: 0 for SGD, 1 for
  /// momentum).
  static constexpr std::size_t slots = Rule::state_slots;
  /// Whether the guard turns each round's pushes into one update (a CombiningGuard, as
  /// under Synchronous).
  static constexpr bool combining = CombiningGuard<guard_type, Scalar>;
  /// Whether the guard gives every worker a private replica of the parameters (a
  /// ReplicatingGuard, as under LocalSgd).
  static constexpr bool replicated = ReplicatingGuard<guard_type, Scalar>;
  /// Whether the policy reads a sparse pull's entries only (read_sparse).
  static constexpr bool reads_sparse = requires(guard_type & g, std::span<const std::size_t> index,
                                                asyncopt::detail::RangeArchetype apply) {
    g.read_sparse(index, apply);
  };

  class Worker;

  /// Attaches to `params` in place (no copy; they must outlive the store) for `workers`
  /// workers, with the rule's state at zero (one copy per worker when `replicated`) and the
  /// guard built from `consistency`. The transport's settings matter only to run(). Throws
  /// std::invalid_argument when `workers` is 0, and whatever the rule's `validate()` or the
  /// guard's constructor throws.
  Store(const SharedMemory& /*transport*/, const Rule& rule, const Consistency& consistency,
        std::span<Scalar> params, std::size_t workers)
      : rule_(rule),
        params_(params),
        state_(slots * params.size() * (replicated ? workers : 1), Scalar{0}),
        guard_(consistency, params.size(), workers),
        counters_(workers),
        claimed_(std::make_unique<std::atomic<bool>[]>(workers)) {
    if (workers == 0) {
      throw std::invalid_argument("asyncopt: a store needs at least one worker");
    }
    update::validate(rule_, Precision::of<Scalar>());
    for (auto& c : counters_) {
      c.stats.staleness.assign(StoreStats::staleness_buckets, 0);
    }
    for (std::size_t k = 0; k < slots; ++k) {
      state_pointers_[k] = state_.data() + k * params.size();
    }
  }

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  Store(Store&&) = delete;
  Store& operator=(Store&&) = delete;
  ~Store() = default;

  /// The handle of worker `id` (0 <= id < workers()), which takes part (join()) from its
  /// creation, also after an earlier handle of the id left. Throws std::logic_error while
  /// another handle of the same id is alive.
  [[nodiscard]] Worker worker(std::size_t id) {
    detail::check_worker_id(id, counters_.size());
    if (claimed_[id].exchange(true, std::memory_order_acq_rel)) {
      throw std::logic_error("asyncopt: worker " + std::to_string(id) +
                             " already has a handle; each worker id has one at a time");
    }
    Worker handle(*this, id);
    handle.join();  // a handle of an id whose earlier handle left takes part again
    return handle;
  }

  /// The number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return params_.size(); }
  /// The number of workers the store was created for.
  [[nodiscard]] std::size_t workers() const noexcept { return counters_.size(); }
  /// Updates applied so far.
  [[nodiscard]] std::uint64_t version() const noexcept {
    return completed_.load(std::memory_order_acquire);
  }

  /// The update rule's state: Rule::state_slots arrays of dimension() scalars, one after the
  /// other (one such block per worker under a replicating policy). For checkpoints: read or
  /// overwrite it only while no worker pulls or pushes.
  [[nodiscard]] std::span<Scalar> rule_state() noexcept { return state_; }

  /// Sets the number of updates applied so far, as when resuming from a checkpoint. Call it
  /// only while no worker pulls or pushes.
  void restore_version(std::uint64_t version) noexcept {
    started_.store(version, std::memory_order_relaxed);
    completed_.store(version, std::memory_order_release);
  }

  /// The counters of all workers, merged. Call it while no worker is pushing.
  [[nodiscard]] StoreStats stats() const { return detail::merged_stats(counters_); }

 private:
  struct alignas(cache_line) Counters {
    StoreStats stats;
    std::atomic<std::uint64_t> clock{0};
  };

  // Counts an update as completed when it leaves apply(), even by an exception, so that
  // version() and the pulls' view never wait for an update that will not come.
  struct CompleteOnExit {
    std::atomic<std::uint64_t>& completed;
    explicit CompleteOnExit(std::atomic<std::uint64_t>& counter) : completed(counter) {}
    CompleteOnExit(const CompleteOnExit&) = delete;
    CompleteOnExit& operator=(const CompleteOnExit&) = delete;
    ~CompleteOnExit() { completed.fetch_add(1, std::memory_order_release); }
  };

  // Takes this update's slot in the sequence of updates, then applies it. `seen` counts the
  // updates completed before the worker's pull, so every update that started after that
  // (or had started but not finished) counts towards the staleness: it is never
  // underestimated.
  // A step on a worker's own replica (Local) is never stale, and its version (what
  // schedules and Adam's bias correction see) is the worker's own step count, as for a
  // sequential run on the replica: the same in every run, whatever the threads' timing,
  // and the round count of Synchronous when the period is 1.
  template <bool Local = false, class Apply, class Accepted = detail::IgnoreAccepted>
  PushResult apply(std::size_t worker, std::uint64_t seen, std::span<const Scalar> values,
                   Apply&& apply_with, Accepted&& accepted = {}) {
    static_assert(std::is_nothrow_invocable_v<Accepted&, const PushResult&>,
                  "asyncopt: a push's accepted callback must be noexcept");
    const std::uint64_t slot = started_.fetch_add(1, std::memory_order_acq_rel);
    const CompleteOnExit done{completed_};
    const std::uint64_t staleness = !Local && slot >= seen ? slot - seen : 0;
    const std::uint64_t version =
        Local ? counters_[worker].clock.load(std::memory_order_relaxed) : slot;
    const auto step = rule_.template step<Scalar>(
        StepInfo{.staleness = staleness,
                 .version = version,
                 .worker = worker,
                 .gradient_norm = needs_gradient_norm_v<Rule> ? detail::norm(values) : 0.0});
    static_assert(needs_w_seen_v<Rule> == needs_w_seen_v<std::decay_t<decltype(step)>>,
                  "asyncopt: a rule and its step must agree on needs_w_seen");
    const PushResult result{.applied = true, .staleness = staleness};
    accepted(result);
    apply_with(step);
    counters_[worker].stats.record(staleness);
    return result;
  }

  void leave(std::size_t id) {
    if constexpr (replicated) {
      guard_.leave(id, params_);
    } else if constexpr (requires(guard_type & g) { g.leave(id); }) {
      guard_.leave(id);
    }
  }

  // Worker `id`'s copy of the rule's state, under a replicating policy.
  [[nodiscard]] kernels::StatePointers<Scalar, slots> local_state(std::size_t id) noexcept {
    kernels::StatePointers<Scalar, slots> pointers{};
    const std::size_t n = params_.size();
    for (std::size_t k = 0; k < slots; ++k) {
      pointers[k] = state_.data() + (id * slots + k) * n;
    }
    return pointers;
  }

  Rule rule_;
  std::span<Scalar> params_;
  std::vector<Scalar> state_;
  kernels::StatePointers<Scalar, slots> state_pointers_{};
  guard_type guard_;
  alignas(cache_line) std::atomic<std::uint64_t> started_{0};
  alignas(cache_line) std::atomic<std::uint64_t> completed_{0};
  std::vector<Counters> counters_;
  std::unique_ptr<std::atomic<bool>[]> claimed_;
};

/// A worker's handle on a shared-memory store: pull, push, clock.
template <class Scalar, class Rule, class Consistency>
class SharedMemory::Store<Scalar, Rule, Consistency>::Worker {
 public:
  /// Copies the parameters into `out` and remembers the store's version, so that the next
  /// push knows how stale its gradient is. Rules that need the parameters a gradient was
  /// computed at (delay compensation) read them from `out` at the next push: keep it
  /// alive and unchanged until then.
  void pull(std::span<Scalar> out) {
    check_size(out.size(), "pull");
    begin_pull();
    if constexpr (replicated) {
      const std::span<const Scalar> mine = std::as_const(store_->guard_).replica(id_);
      std::copy(mine.begin(), mine.end(), out.begin());
    } else {
      store_->guard_.read(store_->params_.data(), out.data());
    }
    seen_ = {.params = out.data()};
  }

  /// Copies only the parameters at `index` (strictly increasing) into the same positions of
  /// `out` (all n elements long; the others are left as they are): the pull of a sparse
  /// gradient, which reads just the parameters its examples touch. The version and w_seen
  /// are remembered as for a dense pull.
  void pull(std::span<const std::size_t> index, std::span<Scalar> out) {
    check_size(out.size(), "pull");
    detail::check_sparse_pull(index, store_->params_.size());
    if constexpr (replicated || reads_sparse) {
      pull_sparse<false>(index, out.data());
    } else {
      begin_pull();
      store_->guard_.read(store_->params_.data(), out.data());
    }
    seen_ = {.params = out.data(), .partial = true};
  }

  /// Copies the parameters at `index` (strictly increasing) into `values`, packed:
  /// values[k] = w[index[k]]. The pull of a sparse step that needs only those values, with
  /// no buffer of the full dimension. A push after it that reads the parameters the gradient
  /// was computed at (delay compensation) must use the same index list, kept unchanged.
  void pull_values(std::span<const std::size_t> index,
                   std::span<Scalar> values) requires(replicated || reads_sparse) {
    detail::check_packed_size(index.size(), values.size());
    detail::check_sparse_pull(index, store_->params_.size());
    pull_sparse<true>(index, values.data());
    seen_ = {.params = values.data(), .packed_index = index, .packed = true, .partial = true};
  }

  /// Applies a dense gradient computed at the last pulled parameters.
  PushResult push(std::span<const Scalar> gradient) {
    return push_dense(gradient, detail::IgnoreAccepted{});
  }

  /// The same, calling `accepted(result)` (noexcept) once the gradient is accepted, with its
  /// staleness, and before the update runs; a rejected gradient never calls it. A store that
  /// serves remote workers answers there, so that its reply does not wait for the update.
  template <class Accepted>
  PushResult push(std::span<const Scalar> gradient, Accepted&& accepted) requires(!combining) {
    return push_dense(gradient, accepted);
  }

  /// Applies a sparse gradient: strictly increasing indices with their values.
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    return push_sparse(index, value, detail::IgnoreAccepted{});
  }

  /// The same, with an `accepted` callback as for a dense push.
  template <class Accepted>
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value,
                  Accepted&& accepted) requires(!combining) {
    return push_sparse(index, value, accepted);
  }

  /// The same as push(gradient.indices(), gradient.values()).
  PushResult push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step.
  void clock() {
    const std::uint64_t now =
        store_->counters_[id_].clock.fetch_add(1, std::memory_order_acq_rel) + 1;
    if constexpr (replicated) {
      store_->counters_[id_].stats.wait_seconds += store_->guard_.clock(id_, now, store_->params_);
    } else if constexpr (requires(guard_type & g) { g.clock(id_, now); }) {
      store_->guard_.clock(id_, now);
    }
  }

  /// Moves this worker's clock forward to `clock` when it is behind (nothing otherwise): for
  /// stores that serve a remote worker, which reports the clock it has reached.
  void clock_to(std::uint64_t clock) requires(!replicated) {
    auto& counter = store_->counters_[id_].clock;
    if (clock <= counter.load(std::memory_order_acquire)) {
      return;
    }
    counter.store(clock, std::memory_order_release);
    if constexpr (requires(guard_type & g) { g.clock(id_, clock); }) {
      store_->guard_.clock(id_, clock);
    }
  }

  /// Whether a pull now would go through without waiting at the policy's gate (bounded
  /// staleness): for stores that serve remote workers and must never block.
  [[nodiscard]] bool may_pull() const noexcept {
    if constexpr (requires(const guard_type& g) {
                    g.lead(id_, std::uint64_t{0});
                    g.staleness_bound();
                  }) {
      return store_->guard_.lead(id_, clock_count()) <= store_->guard_.staleness_bound();
    } else {
      return true;
    }
  }

  /// Stops holding other workers back (bounded staleness) until join(): call it when this
  /// worker has no more steps for now. Destroying the handle leaves as well.
  void leave() { store_->leave(id_); }

  /// Takes part again after leave(), at this worker's clock.
  void join() {
    if constexpr (replicated) {
      store_->guard_.join(id_, clock_count(), std::span<const Scalar>(store_->params_));
    } else if constexpr (requires(guard_type & g) { g.join(id_, std::uint64_t{0}); }) {
      store_->guard_.join(id_, clock_count());
    }
  }

  /// The worker id this handle was created for.
  [[nodiscard]] std::size_t id() const noexcept { return id_; }
  /// The store's version at the last pull.
  [[nodiscard]] std::uint64_t seen_version() const noexcept { return seen_version_; }
  /// Steps this worker has finished.
  [[nodiscard]] std::uint64_t clock_count() const noexcept {
    return store_->counters_[id_].clock.load(std::memory_order_acquire);
  }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  /// Takes over `other`'s worker id and last pull. `other` is left empty: it may only be
  /// destroyed or assigned to.
  Worker(Worker&& other) noexcept
      : store_(std::exchange(other.store_, nullptr)),
        id_(other.id_),
        seen_version_(other.seen_version_),
        seen_(other.seen_) {}
  /// Releases this handle's worker id as the destructor does (leave(), and the id may
  /// have a new handle), then takes over `other`'s id and last pull, leaving `other` empty.
  Worker& operator=(Worker&& other) noexcept {
    if (this != &other) {
      release();
      store_ = std::exchange(other.store_, nullptr);
      id_ = other.id_;
      seen_version_ = other.seen_version_;
      seen_ = other.seen_;
    }
    return *this;
  }
  ~Worker() { release(); }

 private:
  friend class Store;
  Worker(Store& store, std::size_t id) : store_(&store), id_(id) {}

  void release() noexcept {
    if (store_ != nullptr) {
      try {
        store_->leave(id_);
      } catch (...) {  // a failed notify cannot be reported from a destructor
      }
      store_->claimed_[id_].store(false, std::memory_order_release);
      store_ = nullptr;
    }
  }

  // A dense push; `accepted` as for push(gradient, accepted) (never called under a
  // combining policy, whose round applies the update).
  template <class Accepted>
  PushResult push_dense(std::span<const Scalar> gradient, Accepted&& accepted) {
    check_size(gradient.size(), "push");
    const Scalar* const w_seen = seen_.template dense<Rule>();
    if (!kernels::all_finite(gradient)) {
      return reject();
    }
    Store& s = *store_;
    if constexpr (replicated) {
      return s.template apply<true>(
          id_, seen_version_, gradient,
          [&](const auto& step) {
            detail::write_dense(detail::Exclusive{.n = gradient.size()}, step,
                                s.guard_.replica(id_).data(), gradient, s.local_state(id_), w_seen);
          },
          accepted);
    } else if constexpr (combining) {
      return combine([&](std::span<Scalar> slot) {
        std::copy(gradient.begin(), gradient.end(), slot.begin());
      });
    } else {
      return s.apply(
          id_, seen_version_, gradient,
          [&](const auto& step) {
            detail::write_dense(s.guard_, step, s.params_.data(), gradient, s.state_pointers_,
                                w_seen);
          },
          accepted);
    }
  }

  // A sparse push; `accepted` as for a dense one.
  template <class Accepted>
  PushResult push_sparse(std::span<const std::size_t> index, std::span<const Scalar> value,
                         Accepted&& accepted) {
    check_sparse(index, value);
    // A combined round applies one dense update, which needs every parameter seen.
    const Scalar* const w_seen =
        combining ? seen_.template dense<Rule>() : seen_.template sparse<Rule>(index);
    if (!kernels::all_finite(value)) {
      return reject();
    }
    Store& s = *store_;
    if constexpr (replicated) {
      return s.template apply<true>(
          id_, seen_version_, value,
          [&](const auto& step) {
            detail::write_sparse(detail::Exclusive{.n = s.params_.size()}, step,
                                 s.guard_.replica(id_).data(), index, value, s.local_state(id_),
                                 w_seen, seen_.packed);
          },
          accepted);
    } else if constexpr (combining) {
      return combine([&](std::span<Scalar> slot) {
        std::fill(slot.begin(), slot.end(), Scalar{0});
        for (std::size_t k = 0; k < index.size(); ++k) {
          slot[index[k]] = value[k];
        }
      });
    } else {
      return s.apply(
          id_, seen_version_, value,
          [&](const auto& step) {
            detail::write_sparse(s.guard_, step, s.params_.data(), index, value, s.state_pointers_,
                                 w_seen, seen_.packed);
          },
          accepted);
    }
  }

  PushResult reject() noexcept {
    ++store_->counters_[id_].stats.rejected;
    return {.applied = false, .staleness = 0};
  }

  // One gradient of a round: the worker that completes the round applies the combined
  // gradient as one update, from the parameters it pulled.
  template <class Fill>
  PushResult combine(Fill&& fill) {
    Store& s = *store_;
    PushResult result{.applied = true, .staleness = 0};
    s.counters_[id_].stats.wait_seconds +=
        s.guard_.combine(id_, fill, [&](std::span<const Scalar> combined) {
          result = s.apply(id_, seen_version_, combined, [&](const auto& step) {
            detail::write_dense(s.guard_, step, s.params_.data(), combined, s.state_pointers_,
                                seen_.params);
          });
        });
    return result;
  }

  // Waits at the policy's gate if it has one and remembers the version the pull sees.
  void begin_pull() {
    if constexpr (requires(guard_type & g) { g.wait_to_read(id_, std::uint64_t{0}); }) {
      store_->counters_[id_].stats.wait_seconds += store_->guard_.wait_to_read(id_, clock_count());
    }
    seen_version_ = store_->completed_.load(std::memory_order_acquire);
  }

  // The parameters at `index` into dst[index[k]] or, Packed, into dst[k].
  template <bool Packed>
  void pull_sparse(std::span<const std::size_t> index, Scalar* dst) {
    begin_pull();
    auto gather = [&]<class Access>(Access /*access*/, const Scalar* src, std::size_t begin,
                                    std::size_t end) {
      if constexpr (Packed) {
        kernels::gather_values<Access>(src, dst, index.data(), begin, end);
      } else {
        kernels::gather<Access>(src, dst, index.data(), begin, end);
      }
    };
    if constexpr (replicated) {
      gather(kernels::PlainAccess{}, std::as_const(store_->guard_).replica(id_).data(), 0,
             index.size());
    } else {
      store_->guard_.read_sparse(index, [&](auto access, std::size_t begin, std::size_t end) {
        gather(access, store_->params_.data(), begin, end);
      });
    }
  }

  void check_size(std::size_t size, const char* what) const {
    detail::check_dense_size(size, store_->params_.size(), what);
  }

  void check_sparse(std::span<const std::size_t> index, std::span<const Scalar> value) const {
    detail::check_sparse_push(index, value, store_->params_.size());
  }

  Store* store_;
  std::size_t id_;
  std::uint64_t seen_version_ = 0;
  detail::Seen<Scalar> seen_;
};

}  // namespace asyncopt::transport
