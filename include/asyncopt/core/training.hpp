// The training loop of AsyncOptimizer::optimize(), written once on top of the worker handle
// for every transport: each worker's state, one function per kind of step, the epoch loop
// and the decision to stop.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/guard.hpp>
#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/options.hpp>
#include <asyncopt/core/progress.hpp>
#include <asyncopt/core/random.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/update_info.hpp>

namespace asyncopt {

/// What an epoch callback receives.
template <class Scalar>
struct EpochInfo {
  /// The number of the epoch just finished, counting from 1.
  std::size_t epoch = 0;
  /// Full loss (over all examples) after the epoch; NaN when Options::evaluate_loss is false.
  double loss = std::numeric_limits<double>::quiet_NaN();
  /// Updates applied to the parameters since the run started (the store's version),
  /// rejected pushes excluded.
  std::uint64_t updates = 0;
  /// Training wall time so far in seconds: the time spent in the workers' loops, summed over
  /// the epochs run so far; loss evaluations and callbacks excluded.
  double seconds = 0.0;
  /// Mean staleness, in updates, of the updates applied during this epoch only; 0 when
  /// none was applied.
  double mean_staleness = 0.0;
  /// Bytes the rounds have handed to the collective across processes so far, over the whole
  /// job (StoreStats::collective_bytes); 0 within one process.
  std::uint64_t collective_bytes = 0;
  /// Bytes of the compressed messages of a round policy's compression stage so far
  /// (StoreStats::compressed_bytes); 0 without compression.
  std::uint64_t compressed_bytes = 0;
  /// The parameters after the epoch (no worker is running while callbacks run).
  std::span<const Scalar> params;
};

namespace detail {

// A callback returning bool stops the run with false; one returning void never stops it.
template <class Callback, class Info>
bool invoke_callback(Callback& callback, const Info& info) {
  if constexpr (std::is_void_v<std::invoke_result_t<Callback&, const Info&>>) {
    callback(info);
    return true;
  } else {
    return static_cast<bool>(callback(info));
  }
}

/// An epoch callback: called with the EpochInfo, returning void or something that converts
/// to bool (false stops the run).
template <class Callback, class Info>
concept EpochCallback = std::invocable<Callback&, const Info&> &&
    (std::is_void_v<std::invoke_result_t<Callback&, const Info&>> ||
     std::convertible_to<std::invoke_result_t<Callback&, const Info&>, bool>);

// The worker-handle and store capabilities the loop tests for, as concepts at namespace
// scope: nvcc 13's device front end (cicc) segfaults on a requires-expression inside a member
// function template whose parameter type involves a variable template or concept
// specialization on the class's template parameters.
template <class W, class S>
concept SparsePull = requires(W& h, std::span<const std::size_t> index, std::span<S> out) {
  h.pull(index, out);
};
template <class W, class S>
concept PackedPull = requires(W& h, std::span<const std::size_t> index, std::span<S> values) {
  h.pull_values(index, values);
};
/// A handle that pulls the values at an index list, has their gradient computed, pushes it and
/// clocks in one call, checking the list once (the shared-memory Worker::step).
template <class W, class S>
concept SparseStep = requires(W& h, std::span<const std::size_t> index, std::span<S> values,
                              std::span<const S> (*gradient)(std::span<const S>)) {
  h.step(index, values, gradient);
};
template <class W, class S>
concept InPlacePush = requires(W& h, std::span<S> g) {
  h.push_in_place(g);
};
template <class W, class S>
concept ViewPull = requires(W& h) {
  { h.pull_view() } -> std::convertible_to<std::span<const S>>;
};
template <class W, class S>
concept LentGradient = requires(W& h) {
  { h.gradient_buffer() } -> std::same_as<std::span<S>>;
};
template <class W, class S>
concept FusedStep = requires(W& h, std::span<const S> g, std::span<S> out) {
  h.push_clock_pull(g, out);
};
/// A store that keeps the parameters elsewhere and copies them back with sync().
template <class Store>
concept SyncedStore = requires(Store& store) {
  store.sync();
};

/// A store whose job spans several processes (the MPI transport): its workers are numbered
/// across the job, this process's being `first_worker()` to `first_worker() + workers() - 1`
/// of `job_workers()`, and `job_sum(values)` sums a few doubles over the processes in place
/// (every process calls it at the same points), so that every process shards the examples
/// alike and stops after the same epoch.
template <class Store>
concept JobStore = requires(Store& store, std::span<double> values) {
  { store.first_worker() } -> std::convertible_to<std::size_t>;
  { store.job_workers() } -> std::convertible_to<std::size_t>;
  store.job_sum(values);
};

/// A store that checkpoints training (the MPI transport): optimize() lets it read where the
/// run stands with `track(report)` (the store calls report(progress) at its checkpoints, on
/// a worker thread while this process's workers wait in a round, or after they have left),
/// and starts from `resume_point()` when the store resumed from a checkpoint.
template <class Store>
concept CheckpointingStore = requires(Store& store, std::function<void(Progress&)> report) {
  store.track(report);
  { store.resume_point() } -> std::same_as<std::optional<Progress>>;
};

/// How a worker steps on objective F through a handle of type Worker: which of the four
/// kinds of step (touched gradient, fused, sparse, dense) it takes, and what it pulls.
template <class F, class Scalar, class Rule, class Consistency, class Worker>
struct StepPlan {
  /// The objective computes sparse gradients.
  static constexpr bool sparse = SparseObjective<F, Scalar>;
  /// A round's combined update, or a corrected push (Scaffold), is dense and reads every
  /// parameter the gradient was computed at (delay compensation): every worker must pull all.
  static constexpr bool dense_seen =
      needs_w_seen_v<Rule> &&
      (CombiningGuard<typename Consistency::template Guard<Scalar>, Scalar> ||
       hooks::corrects<typename Consistency::template Guard<Scalar>, Scalar>);
  /// A sparse step pulls only the parameters its batch touches, when the objective names
  /// them and the transport offers a sparse pull.
  static constexpr bool sparse_pull =
      sparse && TouchedParameters<F> && !dense_seen && SparsePull<Worker, Scalar>;
  /// ... and only their values, packed, when the objective computes its gradient from them
  /// on the pulled index list.
  static constexpr bool touched_gradient =
      sparse_pull && TouchedGradient<F, Scalar> && PackedPull<Worker, Scalar>;
  /// A dense step whose transport can push, clock and pull in one exchange (ZeroMQ) uses it.
  static constexpr bool fused = !sparse && FusedStep<Worker, Scalar>;
};

/// One worker's handle, buffers and place in its shard. The buffers live across epochs, so
/// a step allocates nothing; each worker's state has cache lines of its own, since a step
/// writes its fields.
template <class Worker, class Scalar>
struct alignas(cache_line) WorkerState {
  explicit WorkerState(Worker h) : handle(std::move(h)) {}
  Worker handle;
  std::vector<Scalar> w;  // pulled parameters: all n, or packed (touched gradient)
  std::vector<Scalar> grad;
  std::span<Scalar> dense_grad;  // where dense gradients go: `grad`, or a buffer the store lends
  SparseGradient<Scalar> sparse_grad;
  std::vector<std::size_t> touched;  // the parameters a sparse step pulls
  std::size_t start = 0;             // the shard of this epoch: order_[start, end)
  std::size_t next = 0;
  std::size_t end = 0;
  std::uint64_t examples = 0;
  bool pulled = false;  // w already holds this step's parameters (fused step)
  // STORM (Options::storm): the parameters of this step and of the previous one, the
  // gradients of this step's batch at them, and the estimate d, which carries over.
  struct Storm {
    std::vector<Scalar> now, previous, fresh, at_previous, estimate;
    bool started = false;
  } storm;
};

/// What the decision to stop reads after an epoch.
struct EpochEnd {
  std::size_t epoch = 0;
  double loss = std::numeric_limits<double>::quiet_NaN();  // NaN when not evaluated
  double previous_loss = 0.0;   // before the epoch; 0 when the loss is not evaluated
  bool interrupted = false;     // a worker stopped the epoch: the time ran out
  bool callbacks_agree = true;  // no callback returned false
  bool all_rejected = false;    // something was pushed and nothing applied
};

/// Why a run stops after an epoch, or nothing when it goes on. The first reason that holds
/// wins, in this order; `out_of_time()` is asked only when no reason before it holds.
template <class OutOfTime>
std::optional<StopReason> stop_reason(const Options& options, const EpochEnd& end,
                                      OutOfTime&& out_of_time) {
  if (end.interrupted) {
    return StopReason::time;
  }
  if (!end.callbacks_agree) {
    return StopReason::callback;
  }
  if (end.all_rejected) {
    return StopReason::all_rejected;
  }
  if (options.evaluate_loss && !std::isfinite(end.loss)) {
    return StopReason::diverged;
  }
  if (options.evaluate_loss && end.loss <= options.target_loss) {
    return StopReason::target_loss;
  }
  if (options.tolerance > 0.0 && std::abs(end.previous_loss - end.loss) <= options.tolerance) {
    return StopReason::tolerance;
  }
  if (out_of_time()) {
    return StopReason::time;
  }
  if (options.epochs != 0 && end.epoch >= options.epochs) {
    return StopReason::epochs;
  }
  return std::nullopt;
}

/// One optimize() call on a store: the workers' states, the shuffled example ids and the
/// stop flag, with the epoch loop and the steps the transport runs.
template <class Scalar, class Rule, class Consistency, class Store, class F>
class Training {
  using Worker = typename Store::Worker;
  using Plan = StepPlan<F, Scalar, Rule, Consistency, Worker>;
  using State = WorkerState<Worker, Scalar>;
  // A dense pull reads the parameters where they are when the store allows it (Synchronous).
  static constexpr bool view_pull = ViewPull<Worker, Scalar> && !Plan::fused;
  using Clock = std::chrono::steady_clock;

 public:
  /// Training of `objective` on `store`, which works on `params`, with options already
  /// validated; `start` is when the optimize() call began.
  Training(const F& objective, std::span<Scalar> params, const Options& options, Store& store,
           Clock::time_point start)
      : objective_(objective),
        params_(params),
        options_(options),
        store_(store),
        start_(start),
        batch_size_(options.batch_size),
        timed_(options.max_seconds > 0.0),
        order_(objective.num_examples()) {
    const std::size_t n = params.size();
    states_.reserve(options.workers);
    for (std::size_t id = 0; id < options.workers; ++id) {
      states_.emplace_back(store.worker(id));
      State& ws = states_.back();
      if constexpr (!Plan::touched_gradient && !(view_pull && !Plan::sparse_pull)) {
        ws.w.resize(n);
      }
      if constexpr (!Plan::sparse && LentGradient<Worker, Scalar>) {
        ws.dense_grad = ws.handle.gradient_buffer();
      } else if constexpr (!Plan::sparse) {
        ws.grad.resize(n);
        ws.dense_grad = std::span<Scalar>(ws.grad);
      }
      if (options.storm) {
        for (std::vector<Scalar>* v : {&ws.storm.now, &ws.storm.previous, &ws.storm.fresh,
                                       &ws.storm.at_previous, &ws.storm.estimate}) {
          v->resize(n);
        }
      }
    }
    if constexpr (requires { store.checkpointing(); }) {
      if (options.storm && store.checkpointing()) {
        throw std::invalid_argument(
            "asyncopt: Options::storm with checkpoints: the checkpoints do not hold the workers' "
            "STORM estimates yet; run without one of them");
      }
    }
    if constexpr (CheckpointingStore<Store>) {
      store_.track([this](Progress& progress) {
        progress.epoch = epoch_;
        progress.taken.resize(states_.size());
        for (std::size_t k = 0; k < states_.size(); ++k) {
          progress.taken[k] = states_[k].next - states_[k].start;
        }
      });
    }
  }
  Training(const Training&) = delete;
  Training& operator=(const Training&) = delete;
  Training(Training&&) = delete;
  Training& operator=(Training&&) = delete;
  ~Training() {
    if constexpr (CheckpointingStore<Store>) {
      store_.track({});  // the store outlives this training
    }
  }

  /// Runs epochs on `transport` until a stopping criterion holds, calling every callback
  /// after each epoch, and reports.
  template <class Transport, class... Callbacks>
  [[nodiscard]] Report run(const Transport& transport, Callbacks&... callbacks) {
    Report report;
    if (options_.evaluate_loss) {
      report.loss.push_back(loss());
    }
    double previous = report.loss.empty() ? 0.0 : report.loss.back();
    // A store that resumed from a checkpoint continues its epoch where it stood.
    std::optional<Progress> resume;
    if constexpr (CheckpointingStore<Store>) {
      resume = store_.resume_point();
    }
    const std::size_t first_epoch = resume ? static_cast<std::size_t>(resume->epoch) : 1;
    for (std::size_t epoch = first_epoch;; ++epoch) {
      run_epoch(transport, epoch, epoch == first_epoch && resume ? &*resume : nullptr);
      report.epochs = epoch;
      EpochEnd end{.epoch = epoch, .previous_loss = previous};
      if (options_.evaluate_loss) {
        end.loss = loss();
        report.loss.push_back(end.loss);
      }
      const StoreStats stats = store_.stats();
      end.all_rejected =
          stats.updates == before_epoch_.updates && stats.rejected > before_epoch_.rejected;
      [[maybe_unused]] const EpochInfo<Scalar> info{
          .epoch = epoch,
          .loss = end.loss,
          .updates = store_.version(),
          .seconds = std::chrono::duration<double>(training_).count(),
          .mean_staleness = epoch_staleness(stats),
          .collective_bytes = stats.collective_bytes,
          .compressed_bytes = stats.compressed_bytes,
          .params = std::span<const Scalar>(params_)};
      ((end.callbacks_agree = invoke_callback(callbacks, info) && end.callbacks_agree), ...);
      end.interrupted = stop_.load(std::memory_order_relaxed);
      if (const auto reason =
              agreed(stop_reason(options_, end, [this] { return out_of_time(); }))) {
        report.stop = *reason;
        break;
      }
      previous = end.loss;
    }
    static_cast<StoreStats&>(report) = store_.stats();
    for (const State& ws : states_) {
      report.examples += ws.examples;
    }
    if constexpr (JobStore<Store>) {
      std::array<double, 1> examples{static_cast<double>(report.examples)};
      store_.job_sum(std::span<double>(examples));
      report.examples = static_cast<std::uint64_t>(examples[0]);
    }
    report.training_seconds = std::chrono::duration<double>(training_).count();
    report.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return report;
  }

 private:
  // Within one process, `reason`. Across processes, every process stops after the same
  // epoch: for the first reason, in stop_reason's order, that holds on any of them.
  std::optional<StopReason> agreed(std::optional<StopReason> reason) {
    if constexpr (JobStore<Store>) {
      constexpr std::size_t reasons = static_cast<std::size_t>(StopReason::all_rejected) + 1;
      constexpr std::array<StopReason, reasons> order = {
          StopReason::time,     StopReason::callback,    StopReason::all_rejected,
          StopReason::diverged, StopReason::target_loss, StopReason::tolerance,
          StopReason::epochs};
      std::array<double, reasons> votes{};
      if (reason) {
        for (std::size_t k = 0; k < reasons; ++k) {
          votes[k] = order[k] == *reason ? 1.0 : 0.0;
        }
      }
      store_.job_sum(std::span<double>(votes));
      for (std::size_t k = 0; k < reasons; ++k) {
        if (votes[k] > 0.0) {
          return order[k];
        }
      }
      return std::nullopt;
    } else {
      return reason;
    }
  }

  [[nodiscard]] double loss() const {
    return static_cast<double>(objective_.loss(std::span<const Scalar>(params_)));
  }

  // Compared in double seconds: any finite limit is representable, however large.
  [[nodiscard]] bool out_of_time() const {
    return timed_ &&
           std::chrono::duration<double>(Clock::now() - start_).count() >= options_.max_seconds;
  }

  // The mean staleness of the updates applied since the last call.
  double epoch_staleness(const StoreStats& now) {
    const std::uint64_t updates = now.updates - before_epoch_.updates;
    const double mean = updates == 0
                            ? 0.0
                            : static_cast<double>(now.staleness_sum - before_epoch_.staleness_sum) /
                                  static_cast<double>(updates);
    before_epoch_ = now;
    return mean;
  }

  // One pass over a fresh shuffle: worker k takes the k-th contiguous slice.
  // `from`, when given, says how far into its shard each worker is already.
  template <class Transport>
  void run_epoch(const Transport& transport, std::size_t epoch, const Progress* from) {
    epoch_ = epoch;
    random_permutation(order_, epoch_seed(options_.seed, epoch));
    const std::size_t workers = states_.size();
    const std::size_t examples = order_.size();
    // Across processes, worker k of this process is worker first + k of the job.
    std::size_t first = 0;
    std::size_t total = workers;
    if constexpr (JobStore<Store>) {
      first = store_.first_worker();
      total = store_.job_workers();
    }
    for (std::size_t id = 0; id < workers; ++id) {
      states_[id].start = (first + id) * examples / total;
      states_[id].end = (first + id + 1) * examples / total;
      states_[id].next = states_[id].start;
      if (from != nullptr && id < from->taken.size()) {
        states_[id].next += std::min<std::size_t>(static_cast<std::size_t>(from->taken[id]),
                                                  states_[id].end - states_[id].start);
      }
      states_[id].handle.join();
      states_[id].pulled = false;
    }
    const auto epoch_start = Clock::now();
    auto body = [this](std::size_t id) { return step(id); };
    if constexpr (requires { store_.run(workers, body); }) {
      store_.run(workers, body);  // a store that schedules its workers itself (a simulator)
    } else {
      transport.run(workers, body);
    }
    training_ += Clock::now() - epoch_start;
    if constexpr (SyncedStore<Store>) {
      store_.sync();  // a remote store copies the parameters back for the loss and callbacks
    }
  }

  // Worker id's next step; false when its slice is done or the run stops.
  bool step(std::size_t id) {
    State& ws = states_[id];
    if (ws.next >= ws.end || stop_.load(std::memory_order_relaxed)) {
      ws.handle.leave();
      return false;
    }
    const std::size_t count = std::min(batch_size_, ws.end - ws.next);
    const std::span<const std::size_t> batch(order_.data() + ws.next, count);
    ws.next += count;
    if constexpr (PrefetchingObjective<F>) {
      prefetch_upcoming(ws);
    }
    try {
      if (options_.storm) {
        storm_step(ws, batch);
      } else {
        plain_step(ws, batch);
      }
    } catch (...) {
      stop_.store(true, std::memory_order_relaxed);
      ws.handle.leave();
      throw;
    }
    ws.examples += count;
    if (out_of_time()) {
      stop_.store(true, std::memory_order_relaxed);
    }
    if (ws.next >= ws.end) {
      ws.handle.leave();
      return false;
    }
    return true;
  }

  // A step that pushes the batch's gradient: the step plan's kind.
  void plain_step(State& ws, std::span<const std::size_t> batch) {
    if constexpr (Plan::touched_gradient) {
      touched_gradient_step(ws, batch);
    } else if constexpr (Plan::fused) {
      fused_step(ws, batch);
    } else {
      pull_push_step(ws, batch);
    }
  }

  // The loads of the next two batches overlap this step. Forced inline: GCC takes a function
  // that only prefetches for one without effect and drops calls to it.
  ASYNCOPT_ALWAYS_INLINE void prefetch_upcoming(const State& ws) const {
    auto upcoming = [&](std::size_t from) {
      return from < ws.end ? std::span<const std::size_t>(order_.data() + from,
                                                          std::min(batch_size_, ws.end - from))
                           : std::span<const std::size_t>();
    };
    objective_.prefetch(upcoming(ws.next), 1);
    objective_.prefetch(upcoming(ws.next + batch_size_), 2);
  }

  // One list of indices serves the pull, the gradient and the push, and the pulled values
  // are packed: nothing of the full dimension is touched.
  void touched_gradient_step(State& ws, std::span<const std::size_t> batch) {
    SparseGradient<Scalar>& g = ws.sparse_grad;
    objective_.touched(batch, g.index);
    ws.w.resize(g.index.size());
    if constexpr (SparseStep<Worker, Scalar>) {
      // The pull, the push and the clock in one call, the index list checked once.
      ws.handle.step(std::span<const std::size_t>(g.index), std::span<Scalar>(ws.w),
                     [&](std::span<const Scalar> w) {
                       objective_.touched_gradient(w, batch, g);
                       return g.values();
                     });
    } else {
      ws.handle.pull_values(std::span<const std::size_t>(g.index), std::span<Scalar>(ws.w));
      objective_.touched_gradient(std::span<const Scalar>(ws.w), batch, g);
      ws.handle.push(g);
      ws.handle.clock();
    }
  }

  // The push, the clock and the next step's pull travel together while another step of this
  // shard follows; the first step of a shard pulls on its own.
  void fused_step(State& ws, std::span<const std::size_t> batch) {
    if (!ws.pulled) {
      ws.handle.pull(ws.w);
    }
    objective_.gradient(std::span<const Scalar>(ws.w), batch, ws.dense_grad);
    ws.pulled = ws.next < ws.end && !stop_.load(std::memory_order_relaxed);
    if (ws.pulled) {
      ws.handle.push_clock_pull(std::span<const Scalar>(ws.dense_grad), std::span<Scalar>(ws.w));
    } else {
      ws.handle.push(std::span<const Scalar>(ws.dense_grad));
      ws.handle.clock();
    }
  }

  // STORM: a dense pull, the batch's gradients at this step's parameters and at the previous
  // step's, the estimate pushed in place of the gradient, a clock.
  void storm_step(State& ws, std::span<const std::size_t> batch) {
    auto& s = ws.storm;
    ws.handle.pull(std::span<Scalar>(s.now));
    objective_.gradient(std::span<const Scalar>(s.now), batch, std::span<Scalar>(s.fresh));
    if (s.started) {
      objective_.gradient(std::span<const Scalar>(s.previous), batch,
                          std::span<Scalar>(s.at_previous));
      const auto keep = static_cast<Scalar>(1.0 - options_.storm->a);
      for (std::size_t i = 0; i < s.estimate.size(); ++i) {
        s.estimate[i] = s.fresh[i] + keep * (s.estimate[i] - s.at_previous[i]);
      }
    } else {
      std::copy(s.fresh.begin(), s.fresh.end(), s.estimate.begin());
      s.started = true;
    }
    // A rejected (non-finite) estimate is not carried: the next step starts afresh, d = g.
    if (!ws.handle.push(std::span<const Scalar>(s.estimate)).applied) {
      s.started = false;
    }
    ws.handle.clock();
    std::swap(s.now, s.previous);  // read by the push (w_seen): swapped after it
  }

  // A pull (of the touched parameters, or of all), a sparse or dense gradient, a push and a
  // clock.
  void pull_push_step(State& ws, std::span<const std::size_t> batch) {
    std::span<const Scalar> w(ws.w);
    if constexpr (Plan::sparse_pull) {
      objective_.touched(batch, ws.touched);
      ws.handle.pull(std::span<const std::size_t>(ws.touched), std::span<Scalar>(ws.w));
    } else if constexpr (view_pull) {
      w = ws.handle.pull_view();  // unchanged until this worker's push returns
    } else {
      ws.handle.pull(ws.w);
    }
    if constexpr (Plan::sparse) {
      objective_.sparse_gradient(w, batch, ws.sparse_grad);
      ws.handle.push(ws.sparse_grad);
    } else {
      objective_.gradient(w, batch, ws.dense_grad);
      if constexpr (InPlacePush<Worker, Scalar>) {
        ws.handle.push_in_place(ws.dense_grad);  // the next step overwrites it
      } else {
        ws.handle.push(std::span<const Scalar>(ws.dense_grad));
      }
    }
    ws.handle.clock();
  }

  const F& objective_;
  std::span<Scalar> params_;
  const Options& options_;
  Store& store_;
  Clock::time_point start_;
  std::size_t batch_size_;
  bool timed_;
  std::vector<std::size_t> order_;
  std::vector<State> states_;
  std::atomic<bool> stop_{false};
  Clock::duration training_{};
  StoreStats before_epoch_;
  std::size_t epoch_ = 0;  // the epoch in progress
};

}  // namespace detail
}  // namespace asyncopt
