// AsyncOptimizer: an update rule, a consistency policy and a transport composed into one
// type, and the training loop written once on top of the worker handle.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/options.hpp>
#include <asyncopt/core/random.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/batch.hpp>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/update/check.hpp>
#include <asyncopt/update/sgd.hpp>

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
  /// The parameters after the epoch (no worker is running while callbacks run).
  std::span<const Scalar> params;
};

namespace detail {

template <class T>
inline constexpr bool always_false = false;

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

/// Instantiates a rule's formula for kernels::Batch<Scalar>; never called.
template <class Rule, class Scalar>
void compile_batch_formula(const Rule& rule) {
  using V = kernels::Batch<Scalar>;
  V w{};
  std::array<V, Rule::state_slots> state{};
  const auto formula = rule.template formula<Scalar>(UpdateInfo{});
  if constexpr (needs_w_seen_v<Rule>) {
    formula(w, w, state, w);
  } else {
    formula(w, w, state);
  }
}

/// True, once the function's definition has been instantiated: taking its address in a
/// constant expression does that.
template <class Function>
consteval bool instantiated(Function* /*function*/) {
  return true;
}

/// The floating-point type that is not `Scalar`.
template <class Scalar>
using OtherScalar = std::conditional_t<std::same_as<Scalar, float>, double, float>;

/// Parameters optimize() can work on in place: a contiguous range of `Scalar`.
template <class P, class Scalar>
concept ParametersOf = std::convertible_to<P, std::span<Scalar>>;

/// One sentence for optimize() called with an objective or parameters of the other scalar
/// type; static_assert messages are literals, so each pair has its own.
template <class Scalar, class F>
void scalar_mismatch() {
  constexpr bool objective_other = !Objective<F, Scalar> && Objective<F, OtherScalar<Scalar>>;
  if constexpr (objective_other && std::same_as<Scalar, float>) {
    static_assert(always_false<F>,
                  "asyncopt: the objective's scalar (double) does not match the optimizer's "
                  "Scalar (float); use AsyncOptimizer<double, ...> or an objective over float");
  } else if constexpr (objective_other) {
    static_assert(always_false<F>,
                  "asyncopt: the objective's scalar (float) does not match the optimizer's "
                  "Scalar (double); use AsyncOptimizer<float, ...> or an objective over double");
  } else if constexpr (std::same_as<Scalar, float>) {
    static_assert(always_false<F>,
                  "asyncopt: the parameters passed to optimize() must be a contiguous range of "
                  "the optimizer's Scalar (float)");
  } else {
    static_assert(always_false<F>,
                  "asyncopt: the parameters passed to optimize() must be a contiguous range of "
                  "the optimizer's Scalar (double)");
  }
}

// The worker-handle capabilities run() tests for, as concepts at namespace scope: nvcc 13's
// device front end (cicc) segfaults on a requires-expression inside a member function
// template whose parameter type involves a variable template or concept specialization on
// the class's template parameters (as store_type and scalar_type do).
template <class W, class S>
concept SparsePull = requires(W& h, std::span<const std::size_t> index, std::span<S> out) {
  h.pull(index, out);
};
template <class W, class S>
concept PackedPull = requires(W& h, std::span<const std::size_t> index, std::span<S> values) {
  h.pull_values(index, values);
};
template <class W, class S>
concept FusedStep = requires(W& h, std::span<const S> g, std::span<S> out) {
  h.push_clock_pull(g, out);
};

}  // namespace detail

/// An asynchronous optimizer: `Rule` (how a gradient changes the parameters),
/// `Consistency` (how concurrent pushes and pulls relate) and `Transport` (where the
/// parameters live and how workers reach them), checked at compile time.
///
/// Two levels of API: `attach(params, workers)` gives a store whose worker handles
/// (pull, push, clock) serve users who own their loop; `optimize(objective, params, options)`
/// runs the worker pool over disjoint shards of the examples and returns a Report.
template <class Scalar, class Rule, class Consistency, class Transport = transport::SharedMemory>
class AsyncOptimizer {
  static_assert(std::same_as<Scalar, float> || std::same_as<Scalar, double>,
                "asyncopt: the Scalar slot of AsyncOptimizer must be float or double");
  static_assert(detail::UpdateRuleMembers<Rule>,
                "asyncopt: the Rule slot of AsyncOptimizer needs an update rule (a type that "
                "models asyncopt::UpdateRule, such as asyncopt::update::Sgd)");
  static_assert(
      !detail::UpdateRuleMembers<Rule> || detail::BatchFormula<Rule>,
      "asyncopt: the Rule slot's per-element formula must compile for xsimd::batch as "
      "well as for scalars: make formula<Scalar>(info) return a callable templated on the "
      "element type V, as asyncopt::update::Sgd does");
  static_assert(ConsistencyPolicy<Consistency>,
                "asyncopt: the Consistency slot of AsyncOptimizer needs a consistency policy (a "
                "type that models asyncopt::ConsistencyPolicy, such as "
                "asyncopt::consistency::LockFree or asyncopt::consistency::Locked)");
  static_assert(!needs_w_seen_v<Rule> || provides_w_seen_v<Transport>,
                "asyncopt: the Rule slot needs w_seen (the parameters a gradient was computed "
                "at, for delay compensation) but the Transport slot cannot provide it");
  static_assert(asyncopt::Transport<Transport>,
                "asyncopt: the Transport slot of AsyncOptimizer needs a transport (a type that "
                "models asyncopt::Transport, such as asyncopt::transport::SharedMemory)");
  static_assert(!coordinates_rounds_v<Consistency> || supports_rounds_v<Transport>,
                "asyncopt: the Consistency slot moves workers in rounds (Synchronous, LocalSgd) "
                "but the Transport slot cannot run them; use asyncopt::transport::SharedMemory");

  // Whether every check above holds. After a failed one, well-formed stand-ins below and
  // overloads that take what was meant for the wrong type keep the compiler from adding a
  // cascade of errors to the one sentence.
  static constexpr bool scalar_checked =
      std::same_as<Scalar, float> || std::same_as<Scalar, double>;
  static constexpr bool rule_checked =
      UpdateRule<Rule> && (!needs_w_seen_v<Rule> || provides_w_seen_v<Transport>);
  static constexpr bool consistency_checked =
      ConsistencyPolicy<Consistency> &&
      (!coordinates_rounds_v<Consistency> || supports_rounds_v<Transport>);
  static constexpr bool transport_checked = asyncopt::Transport<Transport>;
  static constexpr bool slots_checked =
      scalar_checked && rule_checked && consistency_checked && transport_checked;

 public:
  /// The parameter type: `Scalar`, float or double.
  using scalar_type = std::conditional_t<scalar_checked, Scalar, float>;
  /// The update rule: `Rule`, which turns each pushed gradient into a change of the
  /// parameters.
  using rule_type = std::conditional_t<rule_checked, Rule, update::Sgd>;
  /// The consistency policy: `Consistency`, which decides how concurrent pulls and pushes
  /// may interleave.
  using consistency_type =
      std::conditional_t<consistency_checked, Consistency, consistency::LockFree>;
  /// The transport: `Transport` (transport::SharedMemory unless given), which holds the
  /// parameters and runs the workers.
  using transport_type = std::conditional_t<transport_checked, Transport, transport::SharedMemory>;
  /// The store type the transport provides for this scalar, rule and policy: what attach()
  /// returns and what optimize() runs on.
  using store_type =
      typename transport_type::template Store<scalar_type, rule_type, consistency_type>;

  // The formula is compiled for the kernels' batches whatever the policy (the lock-free
  // kernels run it on scalars only), so that a formula written for scalars only stops the
  // build wherever the optimizer is declared, with the one sentence of kernels::Batch. Not in
  // nvcc's device pass, which refuses SIMD types in the __host__ __device__ formula; the
  // host pass of the same source checks it.
#if !defined(__CUDA_ARCH__)
  static_assert(detail::instantiated(&detail::compile_batch_formula<rule_type, scalar_type>));
#endif

  /// An optimizer with a default-constructed rule, policy and transport.
  AsyncOptimizer() = default;
  /// An optimizer with the given rule, consistency policy and transport; those omitted are
  /// default-constructed. Their settings are not checked here: optimize() validates them
  /// before it starts, and a store checks what it uses when attach() creates it.
  explicit AsyncOptimizer(rule_type rule, consistency_type consistency = {},
                          transport_type transport = {}) requires slots_checked
      : rule_(std::move(rule)),
        consistency_(std::move(consistency)),
        transport_(std::move(transport)) {}
  /// Only where a slot check failed: takes the arguments meant for the wrong type, which
  /// match no stand-in, so that the slot's sentence stays the only error.
  template <class... Arguments>
  requires(!slots_checked) explicit AsyncOptimizer(Arguments&&... /*arguments*/) {}

  /// The update rule and its settings.
  [[nodiscard]] const rule_type& rule() const noexcept {
    return rule_;
  }
  /// The consistency policy and its settings.
  [[nodiscard]] const consistency_type& consistency() const noexcept {
    return consistency_;
  }
  /// The transport and its settings.
  [[nodiscard]] const transport_type& transport() const noexcept {
    return transport_;
  }

  /// A store over `params` (used in place, so it must outlive the store) for `workers`
  /// workers; its `worker(id)` handles pull, push and clock.
  [[nodiscard]] std::unique_ptr<store_type> attach(std::span<scalar_type> params,
                                                   std::size_t workers) const {
    return std::make_unique<store_type>(transport_, rule_, consistency_, params, workers);
  }

  /// Minimizes `objective` from the starting point in `params`, in place.
  ///
  /// Each epoch shuffles the example ids with a seed derived from Options::seed, gives
  /// worker k the k-th contiguous slice, and runs the workers until their slices are done
  /// or a stopping criterion fires. Bad options, rule or policy settings, or a parameter
  /// span of the wrong size throw std::invalid_argument before anything is touched.
  /// Callbacks are called after every epoch with an EpochInfo; one that returns false stops
  /// the run.
  template <class F, class... Callbacks>
  [[nodiscard]] Report optimize(const F& objective, std::span<scalar_type> params,
                                const Options& options, Callbacks&&... callbacks) const {
    if constexpr (!Objective<F, scalar_type> && Objective<F, detail::OtherScalar<scalar_type>>) {
      detail::scalar_mismatch<scalar_type, F>();
    } else {
      static_assert(Objective<F, scalar_type>,
                    "asyncopt: the objective passed to optimize() must model "
                    "asyncopt::Objective<F, Scalar> (dimension(), num_examples(), loss(w), "
                    "gradient(w, batch, grad))");
    }
    static_assert((detail::EpochCallback<Callbacks, EpochInfo<scalar_type>> && ...),
                  "asyncopt: every callback passed to optimize() must be callable with "
                  "const asyncopt::EpochInfo<Scalar>& and return void or bool");
    if constexpr (Objective<F, scalar_type> &&
                  (detail::EpochCallback<Callbacks, EpochInfo<scalar_type>> && ...)) {
      return run(objective, params, options, callbacks...);
    } else {
      return {};
    }
  }

  /// The same, with default options.
  template <class F>
  [[nodiscard]] Report optimize(const F& objective, std::span<scalar_type> params) const {
    return optimize(objective, params, Options{});
  }

  /// Only for parameters that are not a span of Scalar (those of an objective over the other
  /// scalar type, say), which would match no overload above: fails the build with one
  /// sentence saying why.
  template <class F, class Params, class... Callbacks>
  requires(!detail::ParametersOf<Params, scalar_type>) [[nodiscard]] Report
      optimize(const F& /*objective*/, Params&& /*params*/, const Options& /*options*/ = {},
               Callbacks&&... /*callbacks*/) const {
    detail::scalar_mismatch<scalar_type, F>();
    return {};
  }

 private:
  using Clock = std::chrono::steady_clock;

  template <class F>
  void validate(const F& objective, std::span<scalar_type> params, const Options& options) const {
    options.validate();
    update::validate(rule_, Precision::of<scalar_type>());
    consistency_.validate();
    const std::size_t dimension = objective.dimension();
    if (params.size() != dimension) {
      throw std::invalid_argument(
          "asyncopt: the parameter span has " + std::to_string(params.size()) +
          " elements but the objective's dimension is " + std::to_string(dimension));
    }
    const std::size_t examples = objective.num_examples();
    if (examples == 0) {
      throw std::invalid_argument("asyncopt: the objective has no examples");
    }
    if (options.workers > examples) {
      throw std::invalid_argument("asyncopt: Options::workers is " +
                                  std::to_string(options.workers) + " but the objective has only " +
                                  std::to_string(examples) + " examples");
    }
  }

  template <class F, class... Callbacks>
  [[nodiscard]] Report run(const F& objective, std::span<scalar_type> params,
                           const Options& options, Callbacks&... callbacks) const {
    static_assert(WorkerHandle<typename store_type::Worker, scalar_type>,
                  "asyncopt: the transport's worker handle must offer pull, push and clock");
    validate(objective, params, options);
    constexpr bool sparse = SparseObjective<F, scalar_type>;
    // A sparse step pulls only the parameters its batch touches, when the objective names
    // them and the transport offers a sparse pull; not when a round's combined update is
    // dense and reads every parameter the gradient was computed at (delay compensation
    // under Synchronous), which needs every worker to pull all.
    constexpr bool dense_seen =
        needs_w_seen_v<rule_type> &&
        CombiningGuard<typename consistency_type::template Guard<scalar_type>, scalar_type>;
    constexpr bool sparse_pull = sparse && TouchedParameters<F> && !dense_seen &&
                                 detail::SparsePull<typename store_type::Worker, scalar_type>;
    // ... and only their values, packed, when the objective computes its gradient from them
    // on the pulled index list.
    constexpr bool touched_gradient = sparse_pull && TouchedGradient<F, scalar_type> &&
                                      detail::PackedPull<typename store_type::Worker, scalar_type>;
    // A dense step whose transport can push, clock and pull in one exchange (ZeroMQ) uses it.
    constexpr bool fused_step =
        !sparse && detail::FusedStep<typename store_type::Worker, scalar_type>;
    const auto start = Clock::now();
    const std::size_t n = params.size();
    const std::size_t examples = objective.num_examples();
    const std::size_t workers = options.workers;

    store_type store(transport_, rule_, consistency_, params, workers);

    // Per-worker buffers live across epochs: a step allocates nothing. Each worker's state
    // has cache lines of its own: a step writes its fields.
    struct alignas(cache_line) WorkerState {
      explicit WorkerState(typename store_type::Worker h) : handle(std::move(h)) {}
      typename store_type::Worker handle;
      std::vector<scalar_type> w;  // pulled parameters: all n, or packed (touched_gradient)
      std::vector<scalar_type> grad;
      SparseGradient<scalar_type> sparse_grad;
      std::vector<std::size_t> touched;  // the parameters a sparse step pulls
      std::size_t next = 0;
      std::size_t end = 0;
      std::uint64_t examples = 0;
      bool pulled = false;  // w already holds this step's parameters (fused_step)
    };
    std::vector<WorkerState> states;
    states.reserve(workers);
    for (std::size_t id = 0; id < workers; ++id) {
      states.emplace_back(store.worker(id));
      if constexpr (!touched_gradient) {
        states.back().w.resize(n);
      }
      if constexpr (!sparse) {
        states.back().grad.resize(n);
      }
    }

    Report report;
    auto evaluate = [&] {
      return static_cast<double>(objective.loss(std::span<const scalar_type>(params)));
    };
    if (options.evaluate_loss) {
      report.loss.push_back(evaluate());
    }

    std::vector<std::size_t> order(examples);
    std::atomic<bool> stop{false};
    const bool timed = options.max_seconds > 0.0;
    // Compared in double seconds: any finite limit is representable, however large.
    auto out_of_time = [&] {
      return timed &&
             std::chrono::duration<double>(Clock::now() - start).count() >= options.max_seconds;
    };
    const std::size_t batch_size = options.batch_size;

    auto step = [&](std::size_t id) -> bool {
      WorkerState& ws = states[id];
      if (ws.next >= ws.end || stop.load(std::memory_order_relaxed)) {
        ws.handle.leave();
        return false;
      }
      const std::size_t count = std::min(batch_size, ws.end - ws.next);
      const std::span<const std::size_t> batch(order.data() + ws.next, count);
      ws.next += count;
      if constexpr (PrefetchingObjective<F>) {
        // The loads of the next two batches overlap this step.
        auto upcoming = [&](std::size_t from) {
          return from < ws.end ? std::span<const std::size_t>(order.data() + from,
                                                              std::min(batch_size, ws.end - from))
                               : std::span<const std::size_t>();
        };
        objective.prefetch(upcoming(ws.next), 1);
        objective.prefetch(upcoming(ws.next + batch_size), 2);
      }
      try {
        if constexpr (touched_gradient) {
          // One list of indices serves the pull, the gradient and the push, and the pulled
          // values are packed: nothing of the full dimension is touched.
          SparseGradient<scalar_type>& g = ws.sparse_grad;
          objective.touched(batch, g.index);
          ws.w.resize(g.index.size());
          ws.handle.pull_values(std::span<const std::size_t>(g.index),
                                std::span<scalar_type>(ws.w));
          objective.touched_gradient(std::span<const scalar_type>(ws.w), batch, g);
          ws.handle.push(g);
          ws.handle.clock();
        } else if constexpr (fused_step) {
          // The push, the clock and the next step's pull travel together while another step
          // of this shard follows; the first step of a shard pulls on its own.
          if (!ws.pulled) {
            ws.handle.pull(ws.w);
          }
          objective.gradient(std::span<const scalar_type>(ws.w), batch,
                             std::span<scalar_type>(ws.grad));
          ws.pulled = ws.next < ws.end && !stop.load(std::memory_order_relaxed);
          if (ws.pulled) {
            ws.handle.push_clock_pull(std::span<const scalar_type>(ws.grad),
                                      std::span<scalar_type>(ws.w));
          } else {
            ws.handle.push(std::span<const scalar_type>(ws.grad));
            ws.handle.clock();
          }
        } else {
          if constexpr (sparse_pull) {
            objective.touched(batch, ws.touched);
            ws.handle.pull(std::span<const std::size_t>(ws.touched), std::span<scalar_type>(ws.w));
          } else {
            ws.handle.pull(ws.w);
          }
          if constexpr (sparse) {
            objective.sparse_gradient(std::span<const scalar_type>(ws.w), batch, ws.sparse_grad);
            ws.handle.push(ws.sparse_grad);
          } else {
            objective.gradient(std::span<const scalar_type>(ws.w), batch,
                               std::span<scalar_type>(ws.grad));
            ws.handle.push(std::span<const scalar_type>(ws.grad));
          }
          ws.handle.clock();
        }
      } catch (...) {
        stop.store(true, std::memory_order_relaxed);
        ws.handle.leave();
        throw;
      }
      ws.examples += count;
      if (out_of_time()) {
        stop.store(true, std::memory_order_relaxed);
      }
      if (ws.next >= ws.end) {
        ws.handle.leave();
        return false;
      }
      return true;
    };

    Clock::duration training{};
    StoreStats before_epoch;
    auto epoch_staleness = [&](const StoreStats& now) {
      const std::uint64_t updates = now.updates - before_epoch.updates;
      const double mean =
          updates == 0 ? 0.0
                       : static_cast<double>(now.staleness_sum - before_epoch.staleness_sum) /
                             static_cast<double>(updates);
      before_epoch = now;
      return mean;
    };
    double previous = report.loss.empty() ? 0.0 : report.loss.back();
    for (std::size_t epoch = 1;; ++epoch) {
      random_permutation(order, epoch_seed(options.seed, epoch));
      for (std::size_t id = 0; id < workers; ++id) {
        states[id].next = id * examples / workers;
        states[id].end = (id + 1) * examples / workers;
        states[id].handle.join();
        states[id].pulled = false;
      }
      const auto epoch_start = Clock::now();
      transport_.run(workers, step);
      training += Clock::now() - epoch_start;
      if constexpr (requires { store.sync(); }) {
        store.sync();  // a remote store copies the parameters back for the loss and callbacks
      }
      report.epochs = epoch;

      double loss = std::numeric_limits<double>::quiet_NaN();
      if (options.evaluate_loss) {
        loss = evaluate();
        report.loss.push_back(loss);
      }
      bool keep_going = true;
      const StoreStats epoch_end = store.stats();
      // Nothing applied and something rejected: every gradient of the epoch was non-finite.
      const bool all_rejected =
          epoch_end.updates == before_epoch.updates && epoch_end.rejected > before_epoch.rejected;
      [[maybe_unused]] const EpochInfo<scalar_type> info{
          .epoch = epoch,
          .loss = loss,
          .updates = store.version(),
          .seconds = std::chrono::duration<double>(training).count(),
          .mean_staleness = epoch_staleness(epoch_end),
          .params = std::span<const scalar_type>(params)};
      ((keep_going = detail::invoke_callback(callbacks, info) && keep_going), ...);

      if (stop.load(std::memory_order_relaxed)) {
        report.stop = StopReason::time;
        break;
      }
      if (!keep_going) {
        report.stop = StopReason::callback;
        break;
      }
      if (all_rejected) {
        report.stop = StopReason::all_rejected;
        break;
      }
      if (options.evaluate_loss && !std::isfinite(loss)) {
        report.stop = StopReason::diverged;
        break;
      }
      if (options.evaluate_loss && loss <= options.target_loss) {
        report.stop = StopReason::target_loss;
        break;
      }
      if (options.tolerance > 0.0 && std::abs(previous - loss) <= options.tolerance) {
        report.stop = StopReason::tolerance;
        break;
      }
      if (out_of_time()) {
        report.stop = StopReason::time;
        break;
      }
      if (options.epochs != 0 && epoch >= options.epochs) {
        report.stop = StopReason::epochs;
        break;
      }
      previous = loss;
    }

    static_cast<StoreStats&>(report) = store.stats();
    for (const auto& ws : states) {
      report.examples += ws.examples;
    }
    report.training_seconds = std::chrono::duration<double>(training).count();
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return report;
  }

  rule_type rule_{};
  consistency_type consistency_{};
  transport_type transport_{};
};

}  // namespace asyncopt
