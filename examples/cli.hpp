// Command-line checks shared by the example programs, with messages a person reads at once:
// "--workers: must be a positive integer, got '0'", "--lr: 'abc' is not a number". CLI11's
// own validators print a 309-digit bound for PositiveNumber and accept "-1" for an
// unsigned option (it wraps); these parse the text themselves, so the range of the
// option's type is checked too.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>

#include <CLI/CLI.hpp>

#include <asyncopt/core/report.hpp>

namespace examples::cli {

namespace detail {

inline std::string quoted(const std::string& text) {
  return "'" + text + "'";
}

inline std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", value);
  return buffer;
}

}  // namespace detail

/// Accepts a whole number of type T that is at least `minimum`; the text must be an integer
/// in T's range ("-1" for an unsigned option is refused, not wrapped).
template <std::integral T>
CLI::Validator integer_at_least(T minimum) {
  std::string description = minimum == 1 ? "INT > 0" : "INT >= " + std::to_string(minimum);
  return CLI::Validator(
      [minimum](std::string& text) -> std::string {
        T value{};
        const char* first = text.data();
        const char* last = first + text.size();
        auto [end, error] = std::from_chars(first, last, value);
        const std::string wanted =
            minimum == 1 ? std::string("a positive integer")
                         : (minimum == 0 ? std::string("a non-negative integer")
                                         : "an integer >= " + std::to_string(minimum));
        if (error == std::errc::result_out_of_range) {
          return "must be " + wanted + " of at most " +
                 std::to_string(std::numeric_limits<T>::max()) + ", got " + detail::quoted(text);
        }
        if (error != std::errc{} || end != last) {
          return detail::quoted(text) + " is not " +
                 (minimum >= 0 ? wanted : std::string("an integer"));
        }
        if (value < minimum) {
          return "must be " + wanted + ", got " + detail::quoted(text);
        }
        return {};
      },
      description);
}

/// A whole number > 0 of type T.
template <std::integral T>
CLI::Validator positive_integer() {
  return integer_at_least<T>(T{1});
}

/// A whole number >= 0 of type T (for an unsigned T this refuses "-1").
template <std::integral T>
CLI::Validator non_negative_integer() {
  return integer_at_least<T>(T{0});
}

/// A finite number in [low, high] (or [low, high) with `high_open`), excluding `low` with
/// `low_open`.
inline CLI::Validator number_in(double low, double high, bool low_open = false,
                                bool high_open = false) {
  std::string interval = std::string(low_open ? "(" : "[") + detail::format_number(low) + ", " +
                         detail::format_number(high) + (high_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const char* first = text.c_str();
        char* end = nullptr;
        errno = 0;
        const double value = std::strtod(first, &end);
        if (text.empty() || end != first + text.size() || std::isnan(value)) {
          return detail::quoted(text) + " is not a number";
        }
        const bool below = low_open ? !(value > low) : value < low;
        const bool above = high_open ? !(value < high) : value > high;
        if (errno == ERANGE || std::isinf(value) || below || above) {
          return "must be in " + interval + ", got " + detail::quoted(text);
        }
        return {};
      },
      "NUMBER in " + interval);
}

/// A finite number > 0.
inline CLI::Validator positive_number() {
  CLI::Validator check = number_in(0.0, std::numeric_limits<double>::max(), true);
  return CLI::Validator(
      [check](std::string& text) -> std::string {
        std::string message = check(text);
        if (message.empty() || message.ends_with("is not a number")) {
          return message;
        }
        return "must be a positive number, got " + detail::quoted(text);
      },
      "NUMBER > 0");
}

/// A finite number >= 0.
inline CLI::Validator non_negative_number() {
  CLI::Validator check = number_in(0.0, std::numeric_limits<double>::max());
  return CLI::Validator(
      [check](std::string& text) -> std::string {
        std::string message = check(text);
        if (message.empty() || message.ends_with("is not a number")) {
          return message;
        }
        return "must be a non-negative number, got " + detail::quoted(text);
      },
      "NUMBER >= 0");
}

/// Prints a parse error as "error: <what is wrong>", the way the programs print every other
/// error, and a hint to --help on the next line; install with
/// `app.failure_message(examples::cli::failure_message)`.
inline std::string failure_message(const CLI::App* /*app*/, const CLI::Error& error) {
  return std::string("error: ") + error.what() + "\nRun with --help for the options.\n";
}

/// Prints why the run stopped and returns the program's exit status: 0, or 1 (with an error
/// line on stderr) when the run diverged or applied no update at all, so that a script
/// never takes a failed run for a trained model.
inline int finish(const asyncopt::Report& report) {
  const std::string_view reason = to_string(report.stop);
  std::printf("stopped: %.*s after %zu epoch%s\n", static_cast<int>(reason.size()), reason.data(),
              report.epochs, report.epochs == 1 ? "" : "s");
  std::fflush(stdout);
  if (report.stop == asyncopt::StopReason::diverged) {
    std::fprintf(stderr, "error: training diverged (loss %g after epoch %zu); try a smaller --lr\n",
                 report.final_loss(), report.epochs);
    return 1;
  }
  if (report.updates == 0) {
    if (report.rejected > 0) {
      std::fprintf(stderr,
                   "error: no update was applied: all %llu gradients were rejected as "
                   "non-finite; check the data and the hyper-parameters\n",
                   static_cast<unsigned long long>(report.rejected));
    } else {
      std::fprintf(stderr, "error: no update was applied\n");
    }
    return 1;
  }
  return 0;
}

}  // namespace examples::cli
