// Hyper-parameter checks shared by the update rules.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>
#include <string_view>

#include <asyncopt/core/precision.hpp>

namespace asyncopt::update {

/// A rule whose `validate` also checks its settings against the scalar type they will be
/// used in (every rule of the library does; a user's rule may offer only `validate()`).
template <class Rule>
concept ValidatesPrecision = requires(const Rule& rule, const Precision& precision) {
  rule.validate(precision);
};

/// Validates `rule` for use with `precision`'s scalar type: `rule.validate(precision)` where
/// the rule offers it, else `rule.validate()`.
template <class Rule>
void validate(const Rule& rule, const Precision& precision) {
  if constexpr (ValidatesPrecision<Rule>) {
    rule.validate(precision);
  } else {
    rule.validate();
  }
}

}  // namespace asyncopt::update

namespace asyncopt::update::detail {

/// Throws std::invalid_argument("asyncopt: <Rule>::<field> must be <what>, got <value>")
/// unless `ok`.
inline void require(bool ok, std::string_view rule, std::string_view field, std::string_view what,
                    double value) {
  if (!ok) {
    throw std::invalid_argument("asyncopt: " + std::string(rule) + "::" + std::string(field) +
                                " must be " + std::string(what) + ", got " +
                                asyncopt::detail::format_number(value));
  }
}

/// Throws std::invalid_argument("asyncopt: <Rule>::<field> is <value>, which is <rounded> in
/// <type>; it must stay <what> there") unless `ok`, the check of `value` as the scalar type
/// it is used in holds it.
inline void require_rounded(bool ok, std::string_view rule, std::string_view field, double value,
                            const Precision& precision, std::string_view what) {
  if (!ok) {
    throw std::invalid_argument("asyncopt: " + std::string(rule) + "::" + std::string(field) +
                                " is " + asyncopt::detail::format_number(value) + ", which is " +
                                asyncopt::detail::format_number(precision.round(value)) + " in " +
                                std::string(precision.name) + "; it must stay " +
                                std::string(what) + " there");
  }
}

/// `value` must stay finite in the scalar type it is used in, and non-zero with
/// `keep_nonzero` (a step size or an epsilon that 0 would break; a decay of 0 is fine).
inline void require_held(std::string_view rule, std::string_view field, double value,
                         const Precision& precision, bool keep_nonzero) {
  if (keep_nonzero) {
    require_rounded(precision.represents(value), rule, field, value, precision,
                    "finite and non-zero");
  } else {
    require_rounded(precision.holds(value), rule, field, value, precision, "finite");
  }
}

inline void require_learning_rate(std::string_view rule, double learning_rate,
                                  const Precision& precision = {}) {
  require(learning_rate > 0.0 && std::isfinite(learning_rate), rule, "learning_rate",
          "positive and finite", learning_rate);
  require_held(rule, "learning_rate", learning_rate, precision, true);
}

/// A decay factor in [0, 1), also after rounding to the scalar type (0.99999999999 is 1 in
/// float, and a decay of 1 never forgets).
inline void require_unit(std::string_view rule, std::string_view field, double value,
                         const Precision& precision = {}) {
  require(value >= 0.0 && value < 1.0, rule, field, "in [0, 1)", value);
  require_rounded(precision.round(value) < 1.0, rule, field, value, precision, "below 1");
}

/// Finite and >= 0, and finite in the scalar type.
inline void require_non_negative(std::string_view rule, std::string_view field, double value,
                                 const Precision& precision = {}) {
  require(value >= 0.0 && std::isfinite(value), rule, field, "finite and non-negative", value);
  require_held(rule, field, value, precision, false);
}

/// Finite and > 0, and finite and non-zero in the scalar type.
inline void require_positive(std::string_view rule, std::string_view field, double value,
                             const Precision& precision = {}) {
  require(value > 0.0 && std::isfinite(value), rule, field, "positive and finite", value);
  require_held(rule, field, value, precision, true);
}

}  // namespace asyncopt::update::detail
