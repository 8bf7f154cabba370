// Element functions that work on scalars and on SIMD batches alike, so that a rule's formula
// is written once. Batches find their overloads (kernels::Batch's, xsimd's) by
// argument-dependent lookup.
#pragma once

#include <cmath>
#include <type_traits>

#include <asyncopt/core/config.hpp>

namespace asyncopt::update::math {

namespace adl {
// Unqualified calls here see no std:: overloads, only those found through the argument.
template <class V>
ASYNCOPT_HD V call_sqrt(const V& x) {
  return sqrt(x);
}
template <class V>
ASYNCOPT_HD V call_min(const V& a, const V& b) {
  return min(a, b);
}
template <class V>
ASYNCOPT_HD V call_max(const V& a, const V& b) {
  return max(a, b);
}
template <class V>
ASYNCOPT_HD V call_abs(const V& x) {
  return abs(x);
}
template <class Mask, class V>
ASYNCOPT_HD V call_select(const Mask& condition, const V& a, const V& b) {
  return select(condition, a, b);
}
}  // namespace adl

template <class V>
ASYNCOPT_HD V sqrt(const V& x) {
  if constexpr (std::is_floating_point_v<V>) {
    return std::sqrt(x);
  } else {
    return adl::call_sqrt(x);
  }
}

template <class V>
ASYNCOPT_HD V min(const V& a, const V& b) {
  if constexpr (std::is_floating_point_v<V>) {
    return b < a ? b : a;
  } else {
    return adl::call_min(a, b);
  }
}

template <class V>
ASYNCOPT_HD V max(const V& a, const V& b) {
  if constexpr (std::is_floating_point_v<V>) {
    return a < b ? b : a;
  } else {
    return adl::call_max(a, b);
  }
}

/// |x|.
template <class V>
ASYNCOPT_HD V abs(const V& x) {
  if constexpr (std::is_floating_point_v<V>) {
    return std::abs(x);
  } else {
    return adl::call_abs(x);
  }
}

/// `condition ? a : b`, lane by lane for batches: what a formula uses instead of a branch on
/// a value. `condition` is a comparison of values of type V (`g > V(0)`): a bool for scalars,
/// a mask for batches.
template <class Mask, class V>
ASYNCOPT_HD V select(const Mask& condition, const V& a, const V& b) {
  if constexpr (std::is_floating_point_v<V>) {
    return condition ? a : b;
  } else {
    return adl::call_select(condition, a, b);
  }
}

/// Clamps x to [-limit, limit].
template <class V>
ASYNCOPT_HD V clamp_abs(const V& x, const V& limit) {
  return math::min(math::max(x, -limit), limit);
}

}  // namespace asyncopt::update::math
