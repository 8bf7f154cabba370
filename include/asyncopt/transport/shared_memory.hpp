// The default transport: the store lives in this process and workers are threads. The store,
// its worker handle and the server's proxy handle, built from the pieces in core/store.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/guard.hpp>
#include <asyncopt/core/handle.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/store.hpp>
#include <asyncopt/core/threads.hpp>
#include <asyncopt/core/versions.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::transport {

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
    store::run_threads(workers, body, pin_threads);
  }
};

/// The parameters, the rule's state and the version counter, shared by worker threads.
///
/// The store keeps a reference to the caller's parameter array, which must outlive it.
/// Each worker id has at most one live handle at a time (worker() refuses a second), and a
/// handle is used by one thread at a time. Under a policy whose guard keeps replicas
/// (LocalSgd), each worker also has its own copy of the rule's state.
template <class Scalar, class Rule, class Consistency>
class SharedMemory::Store : store::Immovable {
 public:
  /// The type of the parameters and gradients: `Scalar`, float or double.
  using scalar_type = Scalar;
  /// The consistency policy's guard for `Scalar`, through which every read and write of
  /// the shared parameters goes (by way of the hooks in asyncopt/core/guard.hpp).
  using guard_type = typename Consistency::template Guard<Scalar>;
  /// Scalars of rule state kept per parameter (`Rule::state_slots`: 0 for SGD, 1 for
  /// momentum).
  static constexpr std::size_t slots = Rule::state_slots;

  static_assert(!sends_momentum_v<Rule> || sends_momenta_v<Consistency>,
                "asyncopt: this update rule's rounds send momenta (OneBitAdam), which only "
                "consistency::Synchronous runs: use it as the Consistency slot");

  class Worker;
  class Proxy;

  /// Attaches to `params` in place (no copy; they must outlive the store) for `workers`
  /// workers, with the rule's state at zero (one copy per worker when the guard keeps
  /// replicas) and the guard built from `consistency`. The transport's settings matter only
  /// to run(). Throws std::invalid_argument when `workers` is 0, and whatever the rule's
  /// `validate()` or the guard's constructor throws.
  Store(const SharedMemory& /*transport*/, const Rule& rule, const Consistency& consistency,
        std::span<Scalar> params, std::size_t workers)
      : params_(params),
        guard_((store::check_workers(workers), consistency), params.size(), workers),
        rule_(rule, params.size(), hooks::state_blocks<guard_type, Scalar>(workers)),
        counters_(workers),
        claims_(workers) {}

  /// The handle of worker `id` (0 <= id < workers()), which takes part (join()) from its
  /// creation, also after an earlier handle of the id left. Throws std::logic_error while
  /// another handle of the same id is alive.
  [[nodiscard]] Worker worker(std::size_t id) { return handle<Worker>(id); }

  /// The handle a server uses to act for remote worker `id`: a Worker with the entry points
  /// only a server needs. Claims the id as worker() does.
  [[nodiscard]] Proxy proxy(std::size_t id) { return handle<Proxy>(id); }

  /// The number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return params_.size(); }
  /// The number of workers the store was created for.
  [[nodiscard]] std::size_t workers() const noexcept { return counters_.size(); }
  /// Updates applied so far.
  [[nodiscard]] std::uint64_t version() const noexcept { return versions_.completed(); }

  /// The update rule's state: Rule::state_slots arrays of dimension() scalars, one after the
  /// other (one such block per worker under a replicating policy). For checkpoints: read or
  /// overwrite it only while no worker pulls or pushes.
  [[nodiscard]] std::span<Scalar> rule_state() noexcept { return rule_.all(); }

  /// Sets the number of updates applied so far, as when resuming from a checkpoint. Call it
  /// only while no worker pulls or pushes.
  void restore_version(std::uint64_t version) noexcept { versions_.restore(version); }

  /// The counters of all workers, merged, with the bytes of the policy's compression stage.
  /// Call it while no worker is pushing.
  [[nodiscard]] StoreStats stats() const {
    StoreStats stats = store::merged_stats(counters_);
    const auto [sent, raw] = hooks::compression_bytes(guard_);
    stats.compressed_bytes += sent;
    stats.uncompressed_bytes += raw;
    return stats;
  }

 protected:
  /// The same store, for `workers` threads of one process of a job whose rounds span the
  /// processes of `across` (the MPI transport): the guard is built with `across`, which must
  /// outlive the store.
  Store(const Rule& rule, const Consistency& consistency, std::span<Scalar> params,
        std::size_t workers,
        collective::Ref across) requires hooks::crosses_processes<guard_type, Consistency, Scalar>
      : params_(params),
        guard_((store::check_workers(workers), consistency), params.size(), workers, across),
        rule_(rule, params.size(), hooks::state_blocks<guard_type, Scalar>(workers)),
        counters_(workers),
        claims_(workers) {}

  /// Sets worker `id`'s count of finished steps, as when resuming from a checkpoint. Call it
  /// only while no worker pulls or pushes.
  void restore_clock(std::size_t id, std::uint64_t clock) noexcept {
    counters_[id].clock.store(clock, std::memory_order_release);
  }

  /// Worker `id`'s count of finished steps. Call it while worker `id` does not step.
  [[nodiscard]] std::uint64_t clock_of(std::size_t id) const noexcept {
    return counters_[id].clock.load(std::memory_order_acquire);
  }

  /// Once every worker of this process has left: takes part in the job's rounds that the
  /// other processes still run, applying their updates as a worker's round would, until a
  /// round to which no process contributes. Returns the number of rounds applied. Call it
  /// only while no worker of this process pulls or pushes.
  std::uint64_t finish_rounds() {
    std::vector<Scalar> seen;  // the parameters a round's gradients were computed at
    std::uint64_t rounds = 0;
    auto commit = [&](std::span<const Scalar> sum, std::size_t count) {
      if constexpr (needs_w_seen_v<Rule>) {
        seen.assign(params_.begin(), params_.end());
      }
      const auto state = rule_.block(0);
      apply(
          0, versions_.completed(), false, sum, count,
          [&](const auto& formula) {
            store::write_mean(guard_, formula, params_.data(), sum, count, state, seen.data());
          },
          store::IgnoreAccepted{});
    };
    auto messages = [this] { return round_messages(); };
    while (hooks::idle_round(
        guard_, params_,
        hooks::RoundCommit<decltype(commit), decltype(messages)>{commit, messages})) {
      ++rounds;
    }
    return rounds;
  }

 private:
  friend class store::Handle<Store>;

  template <class H>
  H handle(std::size_t id) {
    store::check_worker_id(id, counters_.size());
    claims_.claim(id);
    H handle(*this, id);
    handle.join();  // a handle of an id whose earlier handle left takes part again
    return handle;
  }

  // A handle of `id` went: it leaves, and the id is free for a new handle.
  void release(std::size_t id) noexcept {
    try {
      hooks::leave(guard_, id, params_);
    } catch (...) {  // a failed notify cannot be reported from a destructor
    }
    claims_.release(id);
  }

  // Applies one update of `values` (the gradient, for the norm) with `write(formula)`, in
  // the store's sequence of updates. `seen` counts the updates completed before the
  // worker's pull, so every update that started after that (or had started but not
  // finished) counts towards the staleness: it is never underestimated.
  // A step on a worker's own replica (`local`) is never stale, and its version (what
  // schedules and Adam's bias correction see) is the worker's own step count, as for a
  // sequential run on the replica: the same in every run, whatever the threads' timing,
  // and the round count of Synchronous when the period is 1.
  // `values` is the gradient, or the sum of a round's `average_of` gradients.
  template <class Write, class Accepted>
  PushResult apply(std::size_t worker, std::uint64_t seen, bool local,
                   std::span<const Scalar> values, std::size_t average_of, Write&& write,
                   Accepted&& accepted) {
    static_assert(std::is_nothrow_invocable_v<Accepted&, const PushResult&>,
                  "asyncopt: a push's accepted callback must be noexcept");
    const auto ticket = versions_.take();
    const std::uint64_t staleness = local ? 0 : ticket.staleness(seen);
    const std::uint64_t version =
        local ? counters_[worker].clock.load(std::memory_order_relaxed) : ticket.slot();
    const auto formula = rule_.formula(staleness, version, worker, values, average_of);
    const PushResult result{.applied = true, .staleness = staleness};
    accepted(result);
    write(formula);
    counters_[worker].stats.record(staleness);
    return result;
  }

  // What the round about to close sends: for a rule whose rounds send momenta, gradients
  // uncompressed during its warm-up, then each worker's momentum. Asked by the round's
  // closer, while no other update runs.
  [[nodiscard]] RoundMessages<Scalar> round_messages() noexcept {
    if constexpr (sends_momentum_v<Rule>) {
      const auto beta = rule_.rule().momentum_round(versions_.completed());
      if (!beta) {
        return {.compressed = false};
      }
      return {.compressed = true,
              .momentum = rule_.block(0)[0],
              .beta = static_cast<Scalar>(*beta),
              .one_minus_beta = static_cast<Scalar>(1.0 - *beta)};
    } else {
      return {};
    }
  }

  std::span<Scalar> params_;
  guard_type guard_;
  store::RuleState<Scalar, Rule> rule_;
  store::Versions versions_;
  std::vector<store::Counters> counters_;
  store::Claims claims_;
};

/// A worker's handle on a shared-memory store: pull, push, clock.
template <class Scalar, class Rule, class Consistency>
class SharedMemory::Store<Scalar, Rule, Consistency>::Worker : public store::Handle<Store> {
  using Base = store::Handle<Store>;

 public:
  using Base::id;

  /// Copies the parameters into `out` and remembers the store's version, so that the next
  /// push knows how stale its gradient is. Rules that need the parameters a gradient was
  /// computed at (delay compensation) read them from `out` at the next push: keep it
  /// alive and unchanged until then.
  void pull(std::span<Scalar> out) {
    check_size(out.size(), "pull");
    begin_pull();
    Store& s = this->store();
    hooks::read(s.guard_, id(), std::span<const Scalar>(s.params_), out.data());
    seen_ = {.params = out.data()};
  }

  /// The parameters where they are, with no copy, under a policy that writes them only when a
  /// round closes, which waits for this worker's push (Synchronous). Remembers the version
  /// as pull() does. The values stay unchanged until this worker's next push returns: read
  /// them only until then. Throws std::logic_error after leave(), when rounds no longer wait
  /// for this worker: join() first.
  [[nodiscard]] std::span<const Scalar> pull_view() requires hooks::stable_until_push<guard_type> {
    Store& s = this->store();
    if constexpr (requires { s.guard_.live(id()); }) {
      if (!s.guard_.live(id())) {
        throw std::logic_error("asyncopt: pull_view() by worker " + std::to_string(id()) +
                               ", which has left: the rounds no longer wait for it; join() first");
      }
    }
    begin_pull();
    seen_ = {.params = s.params_.data()};
    return std::span<const Scalar>(s.params_);
  }

  /// A buffer of n values for this worker's dense gradients, lent by a policy that combines
  /// rounds (Synchronous): push_in_place() of it hands the gradient to the round with no copy,
  /// and across processes the round's count travels in the same all-reduce as the sum. It
  /// lives as long as the store; its values after a push are unspecified.
  [[nodiscard]] std::span<Scalar> gradient_buffer() requires hooks::lends_rows<guard_type, Scalar> {
    return this->store().guard_.lend(id());
  }

  /// Copies only the parameters at `index` (strictly increasing) into the same positions of
  /// `out` (all n elements long; the others are left as they are): the pull of a sparse
  /// gradient, which reads just the parameters its examples touch. The version and w_seen
  /// are remembered as for a dense pull.
  void pull(std::span<const std::size_t> index, std::span<Scalar> out) {
    check_size(out.size(), "pull");
    store::check_sparse_pull(index, this->store().params_.size());
    pull_sparse<false>(index, out.data());
    seen_ = {.params = out.data(), .partial = true};
  }

  /// Copies the parameters at `index` (strictly increasing) into `values`, packed:
  /// values[k] = w[index[k]]. The pull of a sparse step that needs only those values, with
  /// no buffer of the full dimension. A push after it that reads the parameters the gradient
  /// was computed at (delay compensation) must use the same index list, kept unchanged.
  void pull_values(std::span<const std::size_t> index, std::span<Scalar> values) {
    store::check_packed_size(index.size(), values.size());
    store::check_sparse_pull(index, this->store().params_.size());
    pull_sparse<true>(index, values.data());
    seen_ = {.params = values.data(), .packed_index = index, .packed = true, .partial = true};
  }

  /// One sparse step in one call: pull_values(index, values), then `gradient(values)`, which
  /// returns the gradient at the same indices (one value per entry of `index`, valid until
  /// the call returns), then push(index, gradient) and clock(). The index list is checked
  /// once, for the pull and the push together, so `gradient` must change neither `index` nor
  /// `values`, nor return a view of `values`. Returns, throws and changes what those calls
  /// would in that order; a `gradient` that throws ends the step after the pull.
  template <class Gradient>
  PushResult step(std::span<const std::size_t> index, std::span<Scalar> values,
                  Gradient&& gradient) requires
      std::is_invocable_r_v<std::span<const Scalar>, Gradient&, std::span<const Scalar>> {
    pull_values(index, values);
    // Kept alive to the end of the step, should `gradient` return a container by value.
    auto&& returned = gradient(std::span<const Scalar>(values));
    const std::span<const Scalar> g(returned);
    store::check_sparse_sizes(index.size(), g.size());
    const PushResult result = push_sparse_checked(index, g, store::IgnoreAccepted{});
    clock();
    return result;
  }

  /// Applies a dense gradient computed at the last pulled parameters.
  PushResult push(std::span<const Scalar> gradient) {
    return push_dense(gradient, store::IgnoreAccepted{});
  }

  /// Applies a dense gradient as push(gradient) does, and may use its buffer as scratch: it
  /// holds unspecified values afterwards. Under a policy that combines rounds, the round
  /// then sums the gradients in that buffer, with no copy (as MPI_IN_PLACE does); under the
  /// others it is push(gradient).
  PushResult push_in_place(std::span<Scalar> gradient) {
    return push_dense(std::span<const Scalar>(gradient), store::IgnoreAccepted{}, gradient.data());
  }

  /// Applies a sparse gradient: strictly increasing indices with their values.
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    return push_sparse(index, value, store::IgnoreAccepted{});
  }

  /// The same as push(gradient.indices(), gradient.values()).
  PushResult push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step.
  void clock() {
    Store& s = this->store();
    // Only the thread using this handle writes its clock: a load and a store, no RMW.
    auto& counter = s.counters_[id()].clock;
    const std::uint64_t now = counter.load(std::memory_order_relaxed) + 1;
    counter.store(now, std::memory_order_release);
    s.counters_[id()].stats.wait_seconds += hooks::clock(s.guard_, id(), now, s.params_);
  }

  /// Stops holding other workers back (bounded staleness) until join(): call it when this
  /// worker has no more steps for now. Destroying the handle leaves as well.
  void leave() {
    Store& s = this->store();
    hooks::leave(s.guard_, id(), s.params_);
  }

  /// Takes part again after leave(), at this worker's clock.
  void join() {
    Store& s = this->store();
    hooks::join(s.guard_, id(), clock_count(), std::span<const Scalar>(s.params_));
  }

  /// The store's version at the last pull.
  [[nodiscard]] std::uint64_t seen_version() const noexcept { return seen_version_; }
  /// Steps this worker has finished.
  [[nodiscard]] std::uint64_t clock_count() const noexcept {
    return this->store().counters_[id()].clock.load(std::memory_order_acquire);
  }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  /// Takes over `other`'s worker id and last pull. `other` is left empty: it may only be
  /// destroyed or assigned to.
  Worker(Worker&& other) noexcept = default;
  /// Releases this handle's worker id as the destructor does (leave(), and the id may
  /// have a new handle), then takes over `other`'s id and last pull, leaving `other` empty.
  Worker& operator=(Worker&& other) noexcept = default;
  /// Leaves and frees the worker id for a new handle.
  ~Worker() = default;

 protected:
  /// The handle of worker `id` on `store`; Store::worker() and Store::proxy() make them.
  Worker(Store& store, std::size_t id) : Base(store, id) {}

  /// A dense push; `accepted(result)` (noexcept) runs once the gradient is accepted, before
  /// the update (Proxy's push with a callback). A round may sum into `scratch` (the
  /// gradient's own buffer, from push_in_place) when it is not null.
  template <class Accepted>
  PushResult push_dense(std::span<const Scalar> gradient, Accepted&& accepted,
                        Scalar* scratch = nullptr) {
    check_size(gradient.size(), "push");
    const Scalar* const w_seen = seen_.template dense<Rule>();
    if (!kernels::all_finite(gradient)) {
      return reject();
    }
    if constexpr (hooks::corrects<guard_type, Scalar>) {
      return push_checked(this->store().guard_.correct(id(), gradient), w_seen, accepted, nullptr);
    } else {
      return push_checked(gradient, w_seen, accepted, scratch);
    }
  }

  /// A sparse push; `accepted` as for a dense one.
  template <class Accepted>
  PushResult push_sparse(std::span<const std::size_t> index, std::span<const Scalar> value,
                         Accepted&& accepted) {
    store::check_sparse_push(index, value, this->store().params_.size());
    return push_sparse_checked(index, value, accepted);
  }

  /// The same for an index list already checked (strictly increasing, in range) and as many
  /// values as indices.
  template <class Accepted>
  PushResult push_sparse_checked(std::span<const std::size_t> index, std::span<const Scalar> value,
                                 Accepted&& accepted) {
    if constexpr (hooks::corrects<guard_type, Scalar>) {
      // The correction touches every parameter: the step is dense.
      const Scalar* const w_seen = seen_.template dense<Rule>();
      if (!kernels::all_finite(value)) {
        return reject();
      }
      return push_checked(this->store().guard_.correct(id(), index, value), w_seen, accepted,
                          nullptr);
    }
    // A combined round applies one dense update, which needs every parameter seen.
    const Scalar* const w_seen = hooks::combines_rounds<guard_type, Scalar>
                                     ? seen_.template dense<Rule>()
                                     : seen_.template sparse<Rule>(index);
    if (!kernels::all_finite(value)) {
      return reject();
    }
    return push_through(
        [&](std::span<Scalar> slot) {
          std::fill(slot.begin(), slot.end(), Scalar{0});
          for (std::size_t k = 0; k < index.size(); ++k) {
            slot[index[k]] = value[k];
          }
        },
        [&](auto&& range, Scalar* w, const auto& state, const auto& formula) {
          store::write_sparse(range, formula, w, index, value, state, w_seen, seen_.packed);
        },
        value, accepted);
  }

 private:
  friend class Store;

  // A dense push of a finite gradient computed at w_seen.
  template <class Accepted>
  PushResult push_checked(std::span<const Scalar> gradient, const Scalar* w_seen,
                          Accepted& accepted, Scalar* scratch) {
    return push_through(
        store::DenseContribution<Scalar>{.gradient = gradient, .scratch_buffer = scratch},
        [&](auto&& range, Scalar* w, const auto& state, const auto& formula) {
          store::write_dense(range, formula, w, gradient, state, w_seen);
        },
        gradient, accepted);
  }

  // The push path every policy shares: the guard's push hook decides where and when the
  // update runs; `write` applies the worker's own gradient, a round's mean gradient is
  // applied densely, from its sum, at the parameters this worker pulled.
  template <class Contribute, class Write, class Accepted>
  PushResult push_through(Contribute&& contribute, Write&& write, std::span<const Scalar> values,
                          Accepted&& accepted) {
    Store& s = this->store();
    PushResult result{.applied = true, .staleness = 0};
    s.counters_[id()].stats.wait_seconds += hooks::push(
        s.guard_, id(), s.params_, contribute,
        [&](auto&& range, Scalar* w, std::size_t block, const Scalar* combined, std::size_t count,
            bool local) {
          const auto state = s.rule_.block(block);
          if (combined == nullptr) {
            result = s.apply(
                id(), seen_version_, local, values, 1,
                [&](const auto& formula) { write(range, w, state, formula); }, accepted);
          } else {
            const std::span<const Scalar> sum(combined, s.params_.size());
            result = s.apply(
                id(), seen_version_, local, sum, count,
                [&](const auto& formula) {
                  store::write_mean(range, formula, w, sum, count, state, seen_.params);
                },
                store::IgnoreAccepted{});
          }
        },
        [&s] { return s.round_messages(); });
    return result;
  }

  PushResult reject() noexcept {
    ++this->store().counters_[id()].stats.rejected;
    return {.applied = false, .staleness = 0};
  }

  // Waits at the policy's gate if it has one and remembers the version the pull sees.
  void begin_pull() {
    Store& s = this->store();
    s.counters_[id()].stats.wait_seconds += hooks::wait_to_read(s.guard_, id(), clock_count());
    seen_version_ = s.versions_.completed();
  }

  // The parameters at `index` into dst[index[k]] or, Packed, into dst[k].
  template <bool Packed>
  void pull_sparse(std::span<const std::size_t> index, Scalar* dst) {
    begin_pull();
    Store& s = this->store();
    hooks::read_sparse(s.guard_, id(), index, std::span<const Scalar>(s.params_),
                       [&]<class Access>(Access /*access*/, const Scalar* src, std::size_t begin,
                                         std::size_t end) {
                         if constexpr (Packed) {
                           kernels::gather_values<Access>(src, dst, index.data(), begin, end);
                         } else {
                           kernels::gather<Access>(src, dst, index.data(), begin, end);
                         }
                       });
  }

  void check_size(std::size_t size, const char* what) const {
    store::check_dense_size(size, this->store().params_.size(), what);
  }

  std::uint64_t seen_version_ = 0;
  store::Seen<Scalar> seen_;
};

/// The handle a server (the ZeroMQ plug-in) uses to act for a remote worker: a Worker, plus
/// a push that reports acceptance before the update runs, a clock that jumps to where the
/// remote worker is, and a check of the gate that never blocks. Users' code needs none of
/// these and gets Worker from worker().
template <class Scalar, class Rule, class Consistency>
class SharedMemory::Store<Scalar, Rule, Consistency>::Proxy : public Worker {
 public:
  using Worker::push;

  /// A dense push that calls `accepted(result)` (noexcept) once the gradient is accepted,
  /// with its staleness, and before the update runs; a rejected gradient never calls it. A
  /// server answers there, so that its reply does not wait for the update. Not under a
  /// policy that combines rounds, where a worker's push waits for the others.
  template <class Accepted>
  PushResult push(std::span<const Scalar> gradient,
                  Accepted&& accepted) requires(!hooks::combines_rounds<guard_type, Scalar>) {
    return this->push_dense(gradient, accepted);
  }

  /// The same for a sparse gradient.
  template <class Accepted>
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value,
                  Accepted&& accepted) requires(!hooks::combines_rounds<guard_type, Scalar>) {
    return this->push_sparse(index, value, accepted);
  }

  /// Moves this worker's clock forward to `clock` when it is behind (nothing otherwise): the
  /// remote worker reports the clock it has reached.
  void clock_to(std::uint64_t clock) requires(!hooks::replicates<guard_type, Scalar>) {
    Store& s = this->store();
    auto& counter = s.counters_[this->id()].clock;
    if (clock <= counter.load(std::memory_order_acquire)) {
      return;
    }
    counter.store(clock, std::memory_order_release);
    hooks::clock(s.guard_, this->id(), clock, s.params_);
  }

  /// Whether a pull now would go through without waiting at the policy's gate (bounded
  /// staleness): a server must never block.
  [[nodiscard]] bool may_pull() const noexcept {
    return hooks::may_read(std::as_const(this->store().guard_), this->id(), this->clock_count());
  }

 private:
  friend class Store;
  Proxy(Store& store, std::size_t id) : Worker(store, id) {}
};

}  // namespace asyncopt::transport
