// The floating-point type that settings held as double are used in.
#pragma once

#include <cmath>
#include <concepts>
#include <limits>
#include <string_view>
#include <type_traits>

namespace asyncopt {

/// The scalar type that a setting held as `double` (a learning rate, a decay, an L2 weight)
/// is converted to when it is used: a float optimizer multiplies by `float(learning_rate)`.
/// Settings are checked against it, so that 1e39 is refused for float (it would become
/// inf) and a decay of 0.999999999 (1 in float) is caught, instead of being accepted as a
/// valid double and going wrong at the first update.
struct Precision {
  /// "float" or "double".
  std::string_view name = "double";
  /// `value` converted to the scalar type and back: +-inf when its magnitude is beyond the
  /// type's largest finite value, 0 when it is too small for the type.
  double (*round)(double value) noexcept = [](double value) noexcept { return value; };

  /// The precision of `Scalar` (float or double).
  template <std::floating_point Scalar>
  [[nodiscard]] static constexpr Precision of() noexcept {
    return {.name = std::is_same_v<Scalar, float>    ? "float"
                    : std::is_same_v<Scalar, double> ? "double"
                                                     : "long double",
            .round = [](double value) noexcept {
              if (std::isfinite(value) &&
                  std::abs(value) > static_cast<double>(std::numeric_limits<Scalar>::max())) {
                return std::copysign(std::numeric_limits<double>::infinity(), value);
              }
              return static_cast<double>(static_cast<Scalar>(value));
            }};
  }

  /// Whether `value` is finite in the scalar type and non-zero there unless it is zero.
  [[nodiscard]] bool represents(double value) const noexcept {
    const double rounded = round(value);
    return std::isfinite(rounded) && (rounded == 0.0) == (value == 0.0);
  }
};

}  // namespace asyncopt
