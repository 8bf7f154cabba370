// AsyncOptimizer: an update rule, a consistency policy and a transport composed into one
// type, checked at compile time, with the training loop of core/training.hpp. This header
// names no rule, policy or transport: asyncopt/optimizer.hpp adds the default transport.
#pragma once

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <asyncopt/core/archetypes.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/options.hpp>
#include <asyncopt/core/precision.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/training.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/batch.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt {

namespace detail {

template <class T>
inline constexpr bool always_false = false;

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

}  // namespace detail

/// An asynchronous optimizer: `Rule` (how a gradient changes the parameters),
/// `Consistency` (how concurrent pushes and pulls relate) and `Transport` (where the
/// parameters live and how workers reach them), checked at compile time.
///
/// Two levels of API: `attach(params, workers)` gives a store whose worker handles
/// (pull, push, clock) serve users who own their loop; `optimize(objective, params, options)`
/// runs the worker pool over disjoint shards of the examples and returns a Report.
///
/// Declared here with four arguments; `#include <asyncopt/optimizer.hpp>` (or
/// `<asyncopt/asyncopt.hpp>`) makes `Transport` default to transport::SharedMemory.
template <class Scalar, class Rule, class Consistency, class Transport>
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
  static_assert(!rounds_only_v<Transport> || coordinates_rounds_v<Consistency>,
                "asyncopt: the Transport slot runs round policies only (Synchronous, LocalSgd) "
                "and the Consistency slot is asynchronous; asynchronous training across "
                "processes runs on the ZeroMQ plug-in (asyncopt/zmq/transport.hpp)");

  static_assert(!sends_momentum_v<Rule> || sends_momenta_v<Consistency>,
                "asyncopt: the Rule slot's rounds send momenta (OneBitAdam), which only "
                "consistency::Synchronous runs: use it as the Consistency slot");

  // Whether every check above holds. After a failed one, the slot's archetype
  // (core/archetypes.hpp) in its place below, and overloads that take what was meant for the
  // wrong type, keep the compiler from adding a cascade of errors to the one sentence.
  static constexpr bool scalar_checked =
      std::same_as<Scalar, float> || std::same_as<Scalar, double>;
  static constexpr bool rule_checked =
      UpdateRule<Rule> && (!needs_w_seen_v<Rule> || provides_w_seen_v<Transport>);
  static constexpr bool consistency_checked =
      ConsistencyPolicy<Consistency> &&
      (!sends_momentum_v<Rule> || sends_momenta_v<Consistency>)&&(
          !coordinates_rounds_v<Consistency> ||
          supports_rounds_v<Transport>)&&(!rounds_only_v<Transport> ||
                                          coordinates_rounds_v<Consistency>);
  static constexpr bool transport_checked = asyncopt::Transport<Transport>;
  static constexpr bool slots_checked =
      scalar_checked && rule_checked && consistency_checked && transport_checked;

 public:
  /// The parameter type: `Scalar`, float or double.
  using scalar_type = std::conditional_t<scalar_checked, Scalar, float>;
  /// The update rule: `Rule`, which turns each pushed gradient into a change of the
  /// parameters.
  using rule_type = std::conditional_t<rule_checked, Rule, detail::RuleArchetype>;
  /// The consistency policy: `Consistency`, which decides how concurrent pulls and pushes
  /// may interleave.
  using consistency_type =
      std::conditional_t<consistency_checked, Consistency, detail::ConsistencyArchetype>;
  /// The transport: `Transport` (transport::SharedMemory unless given, with
  /// asyncopt/optimizer.hpp), which holds the parameters and runs the workers.
  using transport_type =
      std::conditional_t<transport_checked, Transport, detail::TransportArchetype>;
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
  /// match no archetype, so that the slot's sentence stays the only error.
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
    if constexpr (slots_checked) {
      return std::make_unique<store_type>(transport_, rule_, consistency_, params, workers);
    } else {
      return nullptr;  // a slot check failed: its sentence is the error
    }
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
    if constexpr (slots_checked && Objective<F, scalar_type> &&
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
    const auto start = std::chrono::steady_clock::now();
    store_type store(transport_, rule_, consistency_, params, options.workers);
    detail::Training<scalar_type, rule_type, consistency_type, store_type, F> training(
        objective, params, options, store, start);
    return training.run(transport_, callbacks...);
  }

  rule_type rule_{};
  consistency_type consistency_{};
  transport_type transport_{};
};

}  // namespace asyncopt
