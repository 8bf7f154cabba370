// The SIMD batch the kernels hand to a rule's per-element formula: an xsimd::batch that
// stops the build with one sentence where a formula written for scalars only would misuse it.
#pragma once

#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace asyncopt::kernels {

namespace detail {

template <class T>
inline constexpr bool always_false_v = false;

template <class U>
concept Arithmetic = std::is_arithmetic_v<U>;

}  // namespace detail

/// A lane-by-lane comparison of two Batch values: an xsimd::batch_bool whose conversion to
/// bool (a branch on a value) fails with a sentence saying what to use instead.
template <class Scalar>
class BatchMask : public xsimd::batch_bool<Scalar> {
 public:
  /// The xsimd mask this type is.
  using base_type = xsimd::batch_bool<Scalar>;
  using base_type::base_type;
  BatchMask() = default;
  /// Implicit: the results of xsimd's own functions come back as this type.
  BatchMask(const base_type& mask) noexcept : base_type(mask) {}

  /// Stops the build with one sentence: a formula branched on a lane-by-lane comparison.
  explicit operator bool() const noexcept {
    static_assert(detail::always_false_v<Scalar>,
                  "asyncopt: an update rule's per-element formula must compile for xsimd::batch "
                  "as well as for scalars, and it branches on a comparison, which a batch "
                  "answers lane by lane (if, ?:, && or ||): compute both values and pick per "
                  "lane with asyncopt::update::math::select(condition, a, b), math::min or "
                  "math::max");
    return false;
  }

  /// Lane-by-lane and.
  friend BatchMask operator&(const BatchMask& a, const BatchMask& b) noexcept {
    return static_cast<const base_type&>(a) & static_cast<const base_type&>(b);
  }
  /// Lane-by-lane or.
  friend BatchMask operator|(const BatchMask& a, const BatchMask& b) noexcept {
    return static_cast<const base_type&>(a) | static_cast<const base_type&>(b);
  }
  /// Lane-by-lane exclusive or.
  friend BatchMask operator^(const BatchMask& a, const BatchMask& b) noexcept {
    return static_cast<const base_type&>(a) ^ static_cast<const base_type&>(b);
  }
  /// Lane-by-lane not.
  friend BatchMask operator~(const BatchMask& a) noexcept {
    return ~static_cast<const base_type&>(a);
  }
  /// Lane-by-lane not.
  friend BatchMask operator!(const BatchMask& a) noexcept {
    return !static_cast<const base_type&>(a);
  }
};

/// xsimd::batch<Scalar> as the kernels hand it to a rule's formula (`V` in UpdateRule). It
/// is an xsimd::batch, and its arithmetic, comparisons and the functions of
/// asyncopt/update/math.hpp keep it one, so that a formula written for scalars only (a
/// std:: math function, a cast to the scalar, a branch on a value) stops the build with one
/// sentence instead of an error deep inside xsimd.
template <class Scalar>
class Batch : public xsimd::batch<Scalar> {
 public:
  /// The xsimd batch this type is.
  using base_type = xsimd::batch<Scalar>;
  /// What its comparisons return.
  using mask_type = BatchMask<Scalar>;
  using base_type::base_type;
  Batch() = default;
  /// Implicit: the results of xsimd's own functions come back as this type.
  Batch(const base_type& batch) noexcept : base_type(batch) {}

  /// Stops the build with one sentence: a formula turned a batch into one scalar. Implicit,
  /// so that overload resolution picks it for std::sqrt(batch) and the like and the
  /// sentence is the one error.
  operator Scalar() const noexcept {
    static_assert(detail::always_false_v<Scalar>,
                  "asyncopt: an update rule's per-element formula must compile for xsimd::batch "
                  "as well as for scalars, and it turns a batch into one scalar (std::sqrt, "
                  "std::abs, std::min, std::max or a cast): use the functions of "
                  "asyncopt/update/math.hpp (math::sqrt, math::abs, math::min, math::max, "
                  "math::select)");
    return Scalar{};
  }

  /// Negation, lane by lane.
  friend Batch operator-(const Batch& a) noexcept { return -static_cast<const base_type&>(a); }
  /// The batch itself.
  friend Batch operator+(const Batch& a) noexcept { return a; }

  // Each binary operator for Batch with Batch, with a plain xsimd::batch on either side, and
  // with an arithmetic scalar on either side (converted to Scalar, as xsimd does).
#define ASYNCOPT_BATCH_BINARY(op, Result)                                         \
  friend Result operator op(const Batch& a, const Batch& b) noexcept {            \
    return static_cast<const base_type&>(a) op static_cast<const base_type&>(b);  \
  }                                                                               \
  friend Result operator op(const base_type& a, const Batch& b) noexcept {        \
    return a op static_cast<const base_type&>(b);                                 \
  }                                                                               \
  friend Result operator op(const Batch& a, const base_type& b) noexcept {        \
    return static_cast<const base_type&>(a) op b;                                 \
  }                                                                               \
  template <detail::Arithmetic U>                                                 \
  friend Result operator op(const Batch& a, U b) noexcept {                       \
    return static_cast<const base_type&>(a) op base_type(static_cast<Scalar>(b)); \
  }                                                                               \
  template <detail::Arithmetic U>                                                 \
  friend Result operator op(U a, const Batch& b) noexcept {                       \
    return base_type(static_cast<Scalar>(a)) op static_cast<const base_type&>(b); \
  }
  ASYNCOPT_BATCH_BINARY(+, Batch)
  ASYNCOPT_BATCH_BINARY(-, Batch)
  ASYNCOPT_BATCH_BINARY(*, Batch)
  ASYNCOPT_BATCH_BINARY(/, Batch)
  ASYNCOPT_BATCH_BINARY(<, mask_type)
  ASYNCOPT_BATCH_BINARY(<=, mask_type)
  ASYNCOPT_BATCH_BINARY(>, mask_type)
  ASYNCOPT_BATCH_BINARY(>=, mask_type)
  ASYNCOPT_BATCH_BINARY(==, mask_type)
  ASYNCOPT_BATCH_BINARY(!=, mask_type)
#undef ASYNCOPT_BATCH_BINARY

  // The functions asyncopt/update/math.hpp finds by argument-dependent lookup, as exact
  // matches so that neither xsimd's templates nor std's scalar overloads compete.
  /// Square root, lane by lane.
  friend Batch sqrt(const Batch& x) noexcept {
    return xsimd::sqrt(static_cast<const base_type&>(x));
  }
  /// Absolute value, lane by lane.
  friend Batch abs(const Batch& x) noexcept {
    return xsimd::abs(static_cast<const base_type&>(x));
  }
  /// Minimum, lane by lane.
  friend Batch min(const Batch& a, const Batch& b) noexcept {
    return xsimd::min(static_cast<const base_type&>(a), static_cast<const base_type&>(b));
  }
  /// Maximum, lane by lane.
  friend Batch max(const Batch& a, const Batch& b) noexcept {
    return xsimd::max(static_cast<const base_type&>(a), static_cast<const base_type&>(b));
  }
  /// a * b + c, lane by lane.
  friend Batch fma(const Batch& a, const Batch& b, const Batch& c) noexcept {
    return xsimd::fma(static_cast<const base_type&>(a), static_cast<const base_type&>(b),
                      static_cast<const base_type&>(c));
  }
  /// a where `condition` holds, else b, lane by lane.
  friend Batch select(const xsimd::batch_bool<Scalar>& condition, const Batch& a,
                      const Batch& b) noexcept {
    return xsimd::select(condition, static_cast<const base_type&>(a),
                         static_cast<const base_type&>(b));
  }
};

}  // namespace asyncopt::kernels
