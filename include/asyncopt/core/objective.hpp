// What a user hands to optimize(): the Objective and SparseObjective concepts.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/core/sparse.hpp>

namespace asyncopt {

/// A differentiable finite-sum objective f(w) = mean_i loss_i(w) + regularizer(w).
///
/// To implement one, provide (all `const`, and safe to call from several threads at once):
/// - `dimension()`: the number of parameters;
/// - `num_examples()`: the number of terms in the sum (examples);
/// - `loss(w)`: the full objective at `w`;
/// - `gradient(w, batch, grad)`: overwrite `grad` (size `dimension()`) with the gradient of
///   the mean loss over the examples whose ids are in `batch`, plus the regularizer's.
template <class F, class Scalar>
concept Objective = requires(const F& f, std::span<const Scalar> w,
                             std::span<const std::size_t> batch, std::span<Scalar> grad) {
  { f.dimension() } -> std::convertible_to<std::size_t>;
  { f.num_examples() } -> std::convertible_to<std::size_t>;
  { f.loss(w) } -> std::convertible_to<double>;
  { f.gradient(w, batch, grad) } -> std::same_as<void>;
};

/// An Objective that multiplies its batch Hessian by a vector: `hessian_vector(w, batch, v,
/// out)` writes H v, H the Hessian at w of the batch's mean loss (with the regularizer), as
/// `gradient` is its gradient. Newton-type solvers (GIANT) use it.
template <class F, class Scalar>
concept HessianObjective = Objective<F, Scalar> &&
    requires(const F& f, std::span<const Scalar> w, std::span<const std::size_t> batch,
             std::span<const Scalar> v, std::span<Scalar> out) {
  { f.hessian_vector(w, batch, v, out) } -> std::same_as<void>;
};

/// An Objective whose batch gradients touch few parameters (sparse data, Hogwild!).
///
/// `sparse_gradient(w, batch, g)` clears `g` and writes the batch gradient as strictly
/// increasing indices with their values. It only needs the parameters at those indices, so
/// a worker may pull just them.
template <class F, class Scalar>
concept SparseObjective = Objective<F, Scalar> &&
    requires(const F& f, std::span<const Scalar> w, std::span<const std::size_t> batch,
             SparseGradient<Scalar>& g) {
  { f.sparse_gradient(w, batch, g) } -> std::same_as<void>;
};

/// A SparseObjective that names the parameters a batch's sparse gradient reads:
/// `touched(batch, index)` overwrites `index` with them, strictly increasing. optimize() then
/// pulls only those, so a step costs O(non-zeros) rather than O(dimension).
template <class F>
concept TouchedParameters = requires(const F& f, std::span<const std::size_t> batch,
                                     std::vector<std::size_t>& index) {
  { f.touched(batch, index) } -> std::same_as<void>;
};

/// A SparseObjective with TouchedParameters that computes a sparse gradient from just the
/// parameters it touches: `touched_gradient(w_touched, batch, g)` takes `g.index` as
/// touched() wrote it (strictly increasing, in range, holding every parameter the batch
/// touches; std::invalid_argument otherwise) and `w_touched[k]`, the value of parameter
/// `g.index[k]`, and overwrites `g.value`. optimize() then pulls those values packed
/// (`pull_values`), so one index list serves the pull, the gradient and the push, and a step
/// touches nothing of the full dimension.
template <class F, class Scalar>
concept TouchedGradient = SparseObjective<F, Scalar> && TouchedParameters<F> &&
    requires(const F& f, std::span<const Scalar> w, std::span<const std::size_t> batch,
             SparseGradient<Scalar>& g) {
  { f.touched_gradient(w, batch, g) } -> std::same_as<void>;
};

/// An Objective that can start loading a batch's examples into the cache before a step needs
/// them: `prefetch(batch, steps_ahead)` changes nothing and ignores ids out of range.
/// optimize() calls it for each worker's upcoming batches: with `steps_ahead` = 2 for the
/// batch after next, when an objective can ask for where its examples are (a sparse matrix's
/// row offsets), and with `steps_ahead` = 1 for the next batch, when it can ask for the
/// examples themselves, their place being in the cache by then. Without it most of a sparse
/// step is spent waiting for its row.
template <class F>
concept PrefetchingObjective = requires(const F& f, std::span<const std::size_t> batch,
                                        std::size_t steps_ahead) {
  { f.prefetch(batch, steps_ahead) }
  noexcept->std::same_as<void>;
};

}  // namespace asyncopt
