// The update kernels: one pass over memory, the rule's formula on SIMD batches with a scalar
// tail running the same formula, no allocation and no branch inside the loop.
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <span>

#include <xsimd/xsimd.hpp>

#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/batch.hpp>

namespace asyncopt::kernels {

/// Pointers to a rule's per-parameter state slots (momentum, second moments, ...).
template <class Scalar, std::size_t Slots>
using StatePointers = std::array<Scalar*, Slots>;

/// What a dense update reads and writes: w[i], g[i], state[k][i] and, for rules that need it
/// (delay compensation), w_seen[i], the parameters the gradient was computed at.
template <class Scalar, std::size_t Slots>
struct DenseOperands {
  Scalar* w = nullptr;        ///< the parameters, updated in place
  const Scalar* g = nullptr;  ///< the gradient, one value per parameter
  /// The rule's state slots, each an array of one value per parameter, updated in place.
  StatePointers<Scalar, Slots> state{};
  /// The parameters the gradient was computed at, one per parameter; read only by rules that
  /// need it, and may stay null for the others.
  const Scalar* w_seen = nullptr;
};

/// What a sparse update reads and writes: entries (index[k], value[k]); state is a dense
/// array indexed by index[k], and so is w_seen unless `w_seen_by_entry`, when it holds one
/// value per entry (w_seen[k], from a pull of just those parameters).
template <class Scalar, std::size_t Slots>
struct SparseOperands {
  Scalar* w = nullptr;                 ///< the full parameter vector, updated at index[k]
  const std::size_t* index = nullptr;  ///< the entries' parameter indices
  const Scalar* value = nullptr;       ///< the entries' gradient values, value[k] for index[k]
  /// The rule's state slots, each a dense array of one value per parameter, updated at
  /// index[k].
  StatePointers<Scalar, Slots> state{};
  /// The parameters the gradient was computed at: dense (w_seen[index[k]]), or one value per
  /// entry (w_seen[k]) when `w_seen_by_entry`; read only by rules that need it, and may stay
  /// null for the others.
  const Scalar* w_seen = nullptr;
  bool w_seen_by_entry = false;  ///< whether `w_seen` holds one value per entry; default false
};

namespace detail {

template <class V, std::size_t Slots, class Load>
inline std::array<V, Slots> load_state(Load&& load) {
  std::array<V, Slots> s{};
  for (std::size_t k = 0; k < Slots; ++k) {
    s[k] = load(k);
  }
  return s;
}

// Calls the formula with w_seen only when it asks for it, so rules that do not need
// it never read the array.
template <class Formula, class V, std::size_t Slots, class LoadSeen>
inline void invoke(const Formula& formula, V& w, const V& g, std::array<V, Slots>& s,
                   LoadSeen&& load_seen) {
  if constexpr (asyncopt::needs_w_seen_v<Formula>) {
    formula(w, g, s, load_seen());
  } else {
    formula(w, g, s);
  }
}

}  // namespace detail

/// w[i], state[.][i] <- formula(w[i], g[i], state[.][i] [, w_seen[i]]) for i in [begin, end).
///
/// `step` is the rule's per-element formula, called with `Scalar` and with
/// `kernels::Batch<Scalar>` (an `xsimd::batch<Scalar>`). With RelaxedAccess every shared element (w
/// and state) is read and written through std::atomic_ref and the loop stays scalar; g and w_seen
/// belong to the pushing worker and are read plainly.
template <Access A, class Formula, class Scalar, std::size_t Slots>
void apply_dense(const Formula& formula_ref, const DenseOperands<Scalar, Slots>& op,
                 std::size_t begin, std::size_t end) {
  // Local copies: the SIMD stores may alias anything reachable through a reference, which
  // would make the compiler reload the pointers and coefficients after every store.
  const Formula formula = formula_ref;
  Scalar* const w = op.w;
  const Scalar* const g = op.g;
  const StatePointers<Scalar, Slots> state = op.state;
  const Scalar* const w_seen = op.w_seen;
  std::size_t i = begin;
  if constexpr (A::vectorizable) {
    using Batch = kernels::Batch<Scalar>;
    constexpr std::size_t width = Batch::size;
    for (; i + width <= end; i += width) {
      Batch wv = Batch::load_unaligned(w + i);
      const Batch gv = Batch::load_unaligned(g + i);
      auto s = detail::load_state<Batch, Slots>(
          [&](std::size_t k) { return Batch(Batch::load_unaligned(state[k] + i)); });
      detail::invoke(formula, wv, gv, s, [&] { return Batch(Batch::load_unaligned(w_seen + i)); });
      wv.store_unaligned(w + i);
      for (std::size_t k = 0; k < Slots; ++k) {
        s[k].store_unaligned(state[k] + i);
      }
    }
  }
  for (; i < end; ++i) {
    Scalar wv = A::load(w + i);
    auto s =
        detail::load_state<Scalar, Slots>([&](std::size_t k) { return A::load(state[k] + i); });
    detail::invoke(formula, wv, g[i], s, [&] { return w_seen[i]; });
    A::store(w + i, wv);
    for (std::size_t k = 0; k < Slots; ++k) {
      A::store(state[k] + i, s[k]);
    }
  }
}

/// The same formula over a sparse gradient: entries [begin, end) of (index, value).
template <Access A, class Formula, class Scalar, std::size_t Slots>
void apply_sparse(const Formula& formula_ref, const SparseOperands<Scalar, Slots>& op,
                  std::size_t begin, std::size_t end) {
  const Formula formula = formula_ref;
  Scalar* const w = op.w;
  const std::size_t* const index = op.index;
  const Scalar* const value = op.value;
  const StatePointers<Scalar, Slots> state = op.state;
  const Scalar* const w_seen = op.w_seen;
  const bool by_entry = op.w_seen_by_entry;
  for (std::size_t k = begin; k < end; ++k) {
    const std::size_t i = index[k];
    Scalar wv = A::load(w + i);
    auto s =
        detail::load_state<Scalar, Slots>([&](std::size_t j) { return A::load(state[j] + i); });
    detail::invoke(formula, wv, value[k], s, [&] { return w_seen[by_entry ? k : i]; });
    A::store(w + i, wv);
    for (std::size_t j = 0; j < Slots; ++j) {
      A::store(state[j] + i, s[j]);
    }
  }
}

/// dst[index[k]] <- src[index[k]] for k in [begin, end), reading shared memory through A: a
/// sparse pull.
template <Access A, class Scalar>
void gather(const Scalar* src, Scalar* dst, const std::size_t* index, std::size_t begin,
            std::size_t end) noexcept {
  for (std::size_t k = begin; k < end; ++k) {
    dst[index[k]] = A::load(src + index[k]);
  }
}

/// values[k] <- src[index[k]] for k in [begin, end), reading shared memory through A: a pull
/// of just the values at `index`, packed.
template <Access A, class Scalar>
void gather_values(const Scalar* src, Scalar* values, const std::size_t* index, std::size_t begin,
                   std::size_t end) noexcept {
  for (std::size_t k = begin; k < end; ++k) {
    values[k] = A::load(src + index[k]);
  }
}

/// dst[i] <- src[i] for i in [begin, end), reading shared memory through A.
template <Access A, class Scalar>
void copy(const Scalar* src, Scalar* dst, std::size_t begin, std::size_t end) noexcept {
  if constexpr (A::vectorizable) {
    if (end > begin) {
      std::memcpy(dst + begin, src + begin, (end - begin) * sizeof(Scalar));
    }
  } else {
    for (std::size_t i = begin; i < end; ++i) {
      dst[i] = A::load(src + i);
    }
  }
}

namespace detail {

// One pass over `values`: x * 0 is 0 for finite x and NaN for NaN and Inf, so the lanes of
// the accumulated products are all 0 exactly when every value is finite. Four accumulators,
// so that the additions' latency does not bound the pass on data in cache. A tail shorter
// than a batch is taken as the last full batch, which overlaps the one before: a value seen
// twice changes no answer (and is copied twice, alike). Copy also stores each value to dst.
template <bool Copy, class Scalar>
[[nodiscard]] bool finite_pass(std::span<const Scalar> values, Scalar* dst) noexcept {
  using Batch = xsimd::batch<Scalar>;
  constexpr std::size_t width = Batch::size;
  const std::size_t n = values.size();
  const Scalar* p = values.data();
  if (n < width) {
    Scalar total{0};
    for (std::size_t i = 0; i < n; ++i) {
      if constexpr (Copy) {
        dst[i] = p[i];
      }
      total += p[i] * Scalar{0};
    }
    return total == Scalar{0};
  }
  const Batch zero(Scalar{0});
  std::array<Batch, 4> acc{zero, zero, zero, zero};
  auto take = [&](std::size_t i, Batch& into) {
    const Batch v = Batch::load_unaligned(p + i);
    if constexpr (Copy) {
      v.store_unaligned(dst + i);
    }
    into += v * zero;
  };
  std::size_t i = 0;
  for (; i + 4 * width <= n; i += 4 * width) {
    take(i, acc[0]);
    take(i + width, acc[1]);
    take(i + 2 * width, acc[2]);
    take(i + 3 * width, acc[3]);
  }
  for (; i + width <= n; i += width) {
    take(i, acc[0]);
  }
  if (i < n) {
    take(n - width, acc[1]);
  }
  return xsimd::all(((acc[0] + acc[1]) + (acc[2] + acc[3])) == zero);
}

}  // namespace detail

/// True when every value is finite. x * 0 is 0 for finite x and NaN for NaN or Inf, so one
/// vectorized accumulation answers for the whole span (not valid under -ffast-math).
template <class Scalar>
[[nodiscard]] bool all_finite(std::span<const Scalar> values) noexcept {
  return detail::finite_pass<false>(values, static_cast<Scalar*>(nullptr));
}

/// Copies `src` to `dst` (src.size() elements, any alignment) and returns whether every
/// value is finite, in one pass: a message buffer is filled and checked together.
template <class Scalar>
[[nodiscard]] bool copy_all_finite(std::span<const Scalar> src, Scalar* dst) noexcept {
  return detail::finite_pass<true>(src, dst);
}

/// out[i] = beta * m[i] + one_minus_beta * g[i] for the n = g.size() values: a worker's
/// momentum message (update::OneBitAdam). `out` may be g itself.
template <class Scalar>
void momentum_message(std::span<const Scalar> g, const Scalar* m, Scalar beta,
                      Scalar one_minus_beta, Scalar* out) noexcept {
  using Batch = xsimd::batch<Scalar>;
  constexpr std::size_t width = Batch::size;
  const std::size_t n = g.size();
  const Batch b(beta);
  const Batch c(one_minus_beta);
  std::size_t i = 0;
  for (; i + width <= n; i += width) {
    const Batch u = b * Batch::load_unaligned(m + i) + c * Batch::load_unaligned(g.data() + i);
    u.store_unaligned(out + i);
  }
  for (; i < n; ++i) {
    out[i] = beta * m[i] + one_minus_beta * g[i];
  }
}

}  // namespace asyncopt::kernels
