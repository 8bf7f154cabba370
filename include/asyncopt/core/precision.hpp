// The floating-point type that settings held as double are used in, and how numbers are
// written in messages.
#pragma once

#include <charconv>
#include <cmath>
#include <concepts>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

namespace asyncopt {

namespace detail {

/// "float", "double" or "long double".
template <std::floating_point Scalar>
[[nodiscard]] constexpr const char* type_name() noexcept {
  if constexpr (std::same_as<Scalar, float>) {
    return "float";
  } else if constexpr (std::same_as<Scalar, double>) {
    return "double";
  } else {
    return "long double";
  }
}

/// The shortest decimal text that reads back as `value` ("0.5", not "0.500000"; "1e+39").
template <std::floating_point Scalar>
[[nodiscard]] std::string format_number(Scalar value) {
  char text[64];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return {text, result.ptr};
}

/// `value` converted to `Scalar` and back, as the conversion rounds it: +-inf beyond the
/// largest finite Scalar plus half its last unit (where rounding to nearest goes to
/// infinity), 0 or a denormal below the smallest normal Scalar.
template <std::floating_point Scalar>
[[nodiscard]] double round_to(double value) noexcept {
  using Limits = std::numeric_limits<Scalar>;
  // max() + half an ulp = (2 - 2^-digits) * 2^(max_exponent - 1); inf where double cannot
  // hold it (Scalar as wide as double or wider), so that no finite double overflows.
  const double overflow =
      std::ldexp(2.0 - std::ldexp(1.0, -Limits::digits), Limits::max_exponent - 1);
  if (std::isfinite(value) && std::abs(value) >= overflow) {
    return std::copysign(std::numeric_limits<double>::infinity(), value);
  }
  return static_cast<double>(static_cast<Scalar>(value));
}

}  // namespace detail

/// The scalar type that a setting held as `double` (a learning rate, a decay, an L2 weight)
/// is converted to when it is used: a float optimizer multiplies by `float(learning_rate)`.
/// Settings are checked against it, so that 1e39 is refused for float (it would become
/// inf) and a decay of 0.99999999999 (1 in float) is caught, instead of being accepted as a
/// valid double and going wrong at the first update.
struct Precision {
  /// "float" or "double".
  std::string_view name = "double";
  /// `value` converted to the scalar type and back (see detail::round_to).
  double (*round)(double value) noexcept = [](double value) noexcept { return value; };

  /// The precision of `Scalar`.
  template <std::floating_point Scalar>
  [[nodiscard]] static constexpr Precision of() noexcept {
    return {.name = detail::type_name<Scalar>(), .round = &detail::round_to<Scalar>};
  }

  /// Whether `value` stays finite in the scalar type.
  [[nodiscard]] bool holds(double value) const noexcept { return std::isfinite(round(value)); }

  /// Whether `value` stays finite in the scalar type, and non-zero unless it is zero.
  [[nodiscard]] bool represents(double value) const noexcept {
    const double rounded = round(value);
    return std::isfinite(rounded) && (rounded == 0.0) == (value == 0.0);
  }
};

}  // namespace asyncopt
