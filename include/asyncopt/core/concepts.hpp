// The three axes of an optimizer, as concepts. Reading one tells what to implement.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/batch.hpp>

namespace asyncopt {

namespace detail {

template <template <class> class>
struct TemplateOfOne {};
template <template <class, class, class> class>
struct TemplateOfThree {};

/// Stands in for the callables the store hands to a consistency policy's Guard.
struct RangeArchetype {
  void operator()(kernels::PlainAccess /*access*/, std::size_t /*begin*/,
                  std::size_t /*end*/) const {}
  void operator()(kernels::RelaxedAccess /*access*/, std::size_t /*begin*/,
                  std::size_t /*end*/) const {}
};

/// Stands in for a worker's step in Transport::run.
struct WorkerBodyArchetype {
  bool operator()(std::size_t /*worker*/) const { return false; }
};

}  // namespace detail

namespace detail {

/// The members of an update rule, with its formula called on scalars (the first part of
/// UpdateRule; see there).
template <class R>
concept UpdateRuleMembers = std::copy_constructible<R> && requires(const R& rule) {
  { R::state_slots } -> std::convertible_to<std::size_t>;
  rule.validate();
} &&((!needs_w_seen_v<R> &&
      requires(const R& rule, const UpdateInfo& info, float& wf, double& wd,
               std::array<float, R::state_slots>& sf, std::array<double, R::state_slots>& sd) {
        rule.template formula<float>(info)(wf, wf, sf);
        rule.template formula<double>(info)(wd, wd, sd);
      }) ||
     (needs_w_seen_v<R> &&
      requires(const R& rule, const UpdateInfo& info, float& wf, double& wd,
               std::array<float, R::state_slots>& sf, std::array<double, R::state_slots>& sd) {
        rule.template formula<float>(info)(wf, wf, sf, wf);
        rule.template formula<double>(info)(wd, wd, sd, wd);
      }));

/// A rule's formula takes the SIMD batches the kernels hand it (the second part of
/// UpdateRule). This checks the call only: the body is compiled for batches where the
/// kernels or AsyncOptimizer instantiate it, and kernels::Batch turns its usual mistakes
/// into one sentence there.
template <class R, class Scalar>
concept BatchFormulaOf = (!needs_w_seen_v<R> &&
                          requires(const R& rule, const UpdateInfo& info, kernels::Batch<Scalar>& w,
                                   std::array<kernels::Batch<Scalar>, R::state_slots>& state) {
                            rule.template formula<Scalar>(info)(w, w, state);
                          }) ||
                         (needs_w_seen_v<R> &&
                          requires(const R& rule, const UpdateInfo& info, kernels::Batch<Scalar>& w,
                                   std::array<kernels::Batch<Scalar>, R::state_slots>& state) {
                            rule.template formula<Scalar>(info)(w, w, state, w);
                          });

template <class R>
concept BatchFormula = BatchFormulaOf<R, float> && BatchFormulaOf<R, double>;

}  // namespace detail

/// How one gradient changes the parameters.
///
/// A rule is a value type holding its hyper-parameters. It provides
/// - `state_slots`: how many extra scalars it keeps per parameter (0 for SGD, 1 for momentum);
/// - `formula<Scalar>(UpdateInfo)`: the coefficients of this update folded into a callable
///   `s(w, g, state)` that updates one element in place, where `w` and `g` are `V` and `state`
///   is `std::array<V, state_slots>&`, for `V` = `Scalar` and `V` = `kernels::Batch<Scalar>`
///   (an `xsimd::batch<Scalar>`), and on the device for `V` = `Scalar` under `ASYNCOPT_HD`:
///   write the formula once, generic over `V`, with the functions of asyncopt/update/math.hpp
///   (math::sqrt, math::min, math::max, math::abs, math::select) and no branch on a value.
///   `formula` is called concurrently by several workers, so it must not modify the rule;
/// - optionally `needs_w_seen = true` (on the rule and its formula): the formula then takes a
///   fourth argument, the parameter's value when the worker pulled (delay compensation);
/// - optionally `needs_gradient_norm = true`: UpdateInfo::gradient_norm is filled in;
/// - `validate()`: throws std::invalid_argument on bad hyper-parameters; optionally also
///   `validate(const asyncopt::Precision&)`, which stores call with their scalar type's
///   precision so that a setting that would become inf or 0 there is refused (see
///   update::validate). A decorator holding an `inner` rule passes it on with
///   `update::validate(inner, precision)`, or the inner rule's checks in float are lost.
template <class R>
concept UpdateRule = detail::UpdateRuleMembers<R> && detail::BatchFormula<R>;

/// How concurrent pushes and pulls relate.
///
/// A policy is a value type with its options, `validate()`, and a nested class template
/// `Guard<Scalar>`, constructed as `Guard(policy, n, workers)`, which the store uses for
/// every access to the shared parameters:
/// - `read(src, dst)`: copy the n parameters for a pull;
/// - `write_dense(apply)`: call `apply(access, begin, end)` over ranges covering [0, n);
/// - `write_sparse(index, apply)`: call `apply(access, k_begin, k_end)` over runs of entries
///   of a strictly increasing index list;
/// where `access` is kernels::PlainAccess (the guard excludes other writers of the range)
/// or kernels::RelaxedAccess (it does not; the kernel then uses atomic_ref).
///
/// Optional hooks, with their defaults in asyncopt/core/guard.hpp (namespace asyncopt::hooks),
/// through which every store calls a guard: `read_sparse(index, apply)`, calling
/// `apply(access, k_begin, k_end)` over runs of entries of a strictly increasing index list
/// for a pull of just those parameters (without it, pulls use write_sparse's ranges and
/// access); `wait_to_read(id, clock)` before a pull, returning the
/// seconds waited, and `clock(id, clock)` after a step (bounded staleness); `lead(id,
/// clock)` with `staleness_bound()` (a server's non-blocking check of the gate); `leave(id)`
/// and `join(id, clock)`; and the round hooks of CombiningGuard and ReplicatingGuard below.
/// A policy written outside the library needs nothing more: it runs on every transport that
/// runs its kind (tests/test_user_policy.cpp).
template <class C>
concept ConsistencyPolicy = std::copy_constructible<C> && requires {
  typename detail::TemplateOfOne<C::template Guard>;
} && requires(const C& policy, typename C::template Guard<float>& guard, const float* src,
              float* dst, std::span<const std::size_t> index, detail::RangeArchetype apply) {
  policy.validate();
  requires std::constructible_from < typename C::template Guard<float>,
  const C&, std::size_t, std::size_t > ;
  guard.read(src, dst);
  guard.write_dense(apply);
  guard.write_sparse(index, apply);
};

/// Whether a policy moves the workers in rounds (Synchronous, LocalSgd): its guard then
/// takes over pushes (CombiningGuard) or keeps private replicas (ReplicatingGuard), which a
/// transport must support explicitly. A policy says so with `static constexpr bool
/// coordinates_rounds = true`, a transport that can run it with `supports_rounds = true`.
template <class C>
inline constexpr bool coordinates_rounds_v = [] {
  if constexpr (requires { C::coordinates_rounds; }) {
    return static_cast<bool>(C::coordinates_rounds);
  } else {
    return false;
  }
}();

/// Whether a transport runs policies that move workers in rounds
/// (`static constexpr bool supports_rounds = true`).
template <class T>
inline constexpr bool supports_rounds_v = [] {
  if constexpr (requires { T::supports_rounds; }) {
    return static_cast<bool>(T::supports_rounds);
  } else {
    return false;
  }
}();

/// Whether a transport runs only policies that move workers in rounds
/// (`static constexpr bool rounds_only = true`): the MPI transport, whose processes meet in
/// collectives.
template <class T>
inline constexpr bool rounds_only_v = [] {
  if constexpr (requires { T::rounds_only; }) {
    return static_cast<bool>(T::rounds_only);
  } else {
    return false;
  }
}();

/// A guard that turns the pushes of a round into one update (Synchronous):
/// `combine(id, fill, commit)` lets worker `id` write its dense gradient with `fill(slot)`,
/// blocks until the round is complete, and has one worker of the round apply the mean of the
/// round's `count` gradients with `commit(sum, count)` (their sum, which the update divides
/// by `count` as it reads it). Returns the seconds spent waiting.
template <class G, class Scalar>
concept CombiningGuard = requires(G& guard, std::size_t id, void (*fill)(std::span<Scalar>),
                                  void (*commit)(std::span<const Scalar>, std::size_t)) {
  { guard.combine(id, fill, commit) } -> std::convertible_to<double>;
};

/// A guard that gives every worker a private replica of the parameters (LocalSgd): pushes
/// use `replica(id)` and pulls its const overload, and the hooks that take the shared parameters
/// decide when they are combined: `clock(id, clock, shared)` (returns the seconds spent waiting),
/// `leave(id, shared)` and `join(id, clock, shared)`.
template <class G, class Scalar>
concept ReplicatingGuard = requires(G& guard, std::size_t id, std::uint64_t clock,
                                    std::span<Scalar> shared) {
  { guard.replica(id) } -> std::same_as<std::span<Scalar>>;
  { std::as_const(guard).replica(id) } -> std::same_as<std::span<const Scalar>>;
  { guard.clock(id, clock, shared) } -> std::convertible_to<double>;
  guard.leave(id, shared);
  guard.join(id, clock, std::span<const Scalar>(shared));
};

/// Where the store lives and how workers reach it.
///
/// A transport is a value type with its options, a nested class template
/// `Store<Scalar, Rule, Consistency>` that holds (or reaches) the parameters and hands out
/// worker handles (`pull`, `push`, `clock`), and `run(workers, body)`, which calls
/// `body(worker)` repeatedly for every worker until it returns false: on threads, in one
/// thread in a simulated order, or in remote processes.
template <class T>
concept Transport = std::copy_constructible<T> && requires {
  typename detail::TemplateOfThree<T::template Store>;
} && requires(const T& transport, std::size_t workers, detail::WorkerBodyArchetype body) {
  transport.run(workers, body);
};

/// Whether a transport gives rules the parameters each gradient was computed at
/// (`static constexpr bool provides_w_seen = true`), as delay compensation needs.
template <class T>
inline constexpr bool provides_w_seen_v = [] {
  if constexpr (requires { T::provides_w_seen; }) {
    return static_cast<bool>(T::provides_w_seen);
  } else {
    return false;
  }
}();

/// A worker's view of a store: the parameter-server API every transport offers.
template <class H, class Scalar>
concept WorkerHandle = requires(H& handle, std::span<Scalar> out, std::span<const Scalar> grad,
                                std::span<const std::size_t> index) {
  handle.pull(out);
  handle.push(grad);
  handle.push(index, grad);
  handle.clock();
};

}  // namespace asyncopt
