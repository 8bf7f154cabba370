// Hyper-parameter checks shared by the update rules.
#pragma once

#include <cmath>
#include <sstream>
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
/// unless `ok`, and "... is <value>, which <precision> cannot represent ..." when `value`
/// would become infinite or 0 in the scalar type it is used in.
inline void require(bool ok, std::string_view rule, std::string_view field, std::string_view what,
                    double value, const Precision& precision = {}) {
  if (!ok) {
    std::ostringstream message;
    message << "asyncopt: " << rule << "::" << field << " must be " << what << ", got " << value;
    throw std::invalid_argument(message.str());
  }
  if (!precision.represents(value)) {
    std::ostringstream message;
    message << "asyncopt: " << rule << "::" << field << " is " << value << ", which "
            << precision.name << " cannot represent (it would become " << precision.round(value)
            << ")";
    throw std::invalid_argument(message.str());
  }
}

inline void require_learning_rate(std::string_view rule, double learning_rate,
                                  const Precision& precision = {}) {
  require(learning_rate > 0.0 && std::isfinite(learning_rate), rule, "learning_rate",
          "positive and finite", learning_rate, precision);
}

/// A decay factor in [0, 1), also after rounding to the scalar type (0.999999999 is 1 in
/// float, and a decay of 1 never forgets).
inline void require_unit(std::string_view rule, std::string_view field, double value,
                         const Precision& precision = {}) {
  require(value >= 0.0 && value < 1.0, rule, field, "in [0, 1)", value, precision);
  require(precision.round(value) < 1.0, rule, field,
          std::string("below 1 in ") + std::string(precision.name), value);
}

inline void require_non_negative(std::string_view rule, std::string_view field, double value,
                                 const Precision& precision = {}) {
  require(value >= 0.0 && std::isfinite(value), rule, field, "finite and non-negative", value,
          precision);
}

inline void require_positive(std::string_view rule, std::string_view field, double value,
                             const Precision& precision = {}) {
  require(value > 0.0 && std::isfinite(value), rule, field, "positive and finite", value,
          precision);
}

}  // namespace asyncopt::update::detail
