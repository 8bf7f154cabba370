// Hyper-parameter checks shared by the update rules.
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace asyncopt::update::detail {

/// Throws std::invalid_argument("asyncopt: <Rule>::<field> must be <what>, got <value>")
/// unless `ok`.
inline void require(bool ok, std::string_view rule, std::string_view field, std::string_view what,
                    double value) {
  if (!ok) {
    std::ostringstream message;
    message << "asyncopt: " << rule << "::" << field << " must be " << what << ", got " << value;
    throw std::invalid_argument(message.str());
  }
}

inline void require_learning_rate(std::string_view rule, double learning_rate) {
  require(learning_rate > 0.0 && std::isfinite(learning_rate), rule, "learning_rate",
          "positive and finite", learning_rate);
}

/// A decay factor in [0, 1).
inline void require_unit(std::string_view rule, std::string_view field, double value) {
  require(value >= 0.0 && value < 1.0, rule, field, "in [0, 1)", value);
}

inline void require_non_negative(std::string_view rule, std::string_view field, double value) {
  require(value >= 0.0 && std::isfinite(value), rule, field, "finite and non-negative", value);
}

inline void require_positive(std::string_view rule, std::string_view field, double value) {
  require(value > 0.0 && std::isfinite(value), rule, field, "positive and finite", value);
}

}  // namespace asyncopt::update::detail
