// Command-line checks shared by the example programs, with messages a person reads at once:
// "--workers: must be a positive integer, got '0'", "--lr: 'abc' is not a number". CLI11's
// own validators print a 309-digit bound for PositiveNumber and accept "-1" for an
// unsigned option (it wraps); these parse the text themselves, so the range of the
// option's type is checked too.
#pragma once

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>

#include <CLI/CLI.hpp>

#include <asyncopt/core/precision.hpp>
#include <asyncopt/core/report.hpp>

namespace examples::cli {

namespace detail {

inline std::string quoted(const std::string& text) {
  return "'" + text + "'";
}

using asyncopt::detail::format_number;

}  // namespace detail

/// Accepts an integer of type T that is at least `minimum`, written in decimal with an
/// optional sign, within T's range ("-1" for an unsigned option is refused, not wrapped).
/// `wanted` names what is accepted in messages ("a positive integer"); `description` is
/// what --help shows.
template <std::integral T>
CLI::Validator integer_in(T minimum, const std::string& wanted, const std::string& description) {
  return CLI::Validator(
      [minimum, wanted](std::string& text) -> std::string {
        std::string_view digits = text;
        if (digits.starts_with('+') && !digits.substr(1).starts_with('-')) {
          digits.remove_prefix(1);
        }
        T value{};
        const char* last = digits.data() + digits.size();
        const auto [end, error] = std::from_chars(digits.data(), last, value);
        if (error == std::errc::result_out_of_range) {
          return detail::quoted(text) + " is out of range: it must be " + wanted + " from " +
                 std::to_string(minimum) + " to " + std::to_string(std::numeric_limits<T>::max());
        }
        if (error != std::errc{} || end != last || digits.empty()) {
          return detail::quoted(text) + " is not " + wanted;
        }
        if (value < minimum) {
          return "must be " + wanted + ", got " + detail::quoted(text);
        }
        return std::string();
      },
      description);
}

/// Any integer of type T.
template <std::integral T>
CLI::Validator integer() {
  return integer_in<T>(std::numeric_limits<T>::min(), "an integer", "INT");
}

/// A whole number > 0 of type T.
template <std::integral T>
CLI::Validator positive_integer() {
  return integer_in<T>(T{1}, "a positive integer", "INT > 0");
}

/// A whole number >= 0 of type T (for an unsigned T this refuses "-1").
template <std::integral T>
CLI::Validator non_negative_integer() {
  return integer_in<T>(T{0}, "a non-negative integer", "INT >= 0");
}

/// Accepts a finite decimal number for which `accept(value)` holds; `requirement` says what
/// that is in messages ("a positive number", "in [0, 1)").
template <class Accept>
CLI::Validator number_where(const std::string& requirement, const std::string& description,
                            Accept accept) {
  return CLI::Validator(
      [requirement, accept](std::string& text) -> std::string {
        std::string_view digits = text;
        if (digits.starts_with('+') && !digits.substr(1).starts_with('-')) {
          digits.remove_prefix(1);
        }
        double value = 0.0;
        const char* last = digits.data() + digits.size();
        const auto [end, error] =
            std::from_chars(digits.data(), last, value, std::chars_format::general);
        if (error == std::errc::invalid_argument || end != last || digits.empty()) {
          return detail::quoted(text) + " is not a number";
        }
        if (error == std::errc::result_out_of_range) {
          return detail::quoted(text) + " is out of the range of a double";
        }
        if (!std::isfinite(value)) {
          return detail::quoted(text) + " is not a finite number";
        }
        if (!accept(value)) {
          return "must be " + requirement + ", got " + detail::quoted(text);
        }
        return std::string();
      },
      description);
}

/// A finite number in [low, high] (or [low, high) with `high_open`), excluding `low` with
/// `low_open`.
inline CLI::Validator number_in(double low, double high, bool low_open = false,
                                bool high_open = false) {
  const std::string interval = std::string(low_open ? "(" : "[") + detail::format_number(low) +
                               ", " + detail::format_number(high) + (high_open ? ")" : "]");
  return number_where("in " + interval, "NUMBER in " + interval, [=](double value) {
    return (low_open ? value > low : value >= low) && (high_open ? value < high : value <= high);
  });
}

/// A finite number > 0.
inline CLI::Validator positive_number() {
  return number_where("a positive number", "NUMBER > 0", [](double value) { return value > 0.0; });
}

/// A finite number >= 0.
inline CLI::Validator non_negative_number() {
  return number_where("a non-negative number", "NUMBER >= 0",
                      [](double value) { return value >= 0.0; });
}

/// Prints a parse error as "error: <what is wrong>", the way the programs print every other
/// error, and a hint to --help on the next line; install with
/// `app.failure_message(examples::cli::failure_message)`.
inline std::string failure_message(const CLI::App* /*app*/, const CLI::Error& error) {
  return std::string("error: ") + error.what() + "\nRun with --help for the options.\n";
}

/// With compression: the bytes of the messages against the same messages uncompressed.
inline void print_compression(const asyncopt::Report& report) {
  if (report.uncompressed_bytes > 0) {
    std::printf("compressed messages: %.2f MB of %.2f MB (%.2f%%)\n",
                static_cast<double>(report.compressed_bytes) / 1e6,
                static_cast<double>(report.uncompressed_bytes) / 1e6,
                100.0 * static_cast<double>(report.compressed_bytes) /
                    static_cast<double>(report.uncompressed_bytes));
  }
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
  if (report.stop == asyncopt::StopReason::all_rejected) {
    std::fprintf(stderr,
                 "error: every gradient of epoch %zu was rejected as non-finite (%llu in all); "
                 "check the data and the hyper-parameters\n",
                 report.epochs, static_cast<unsigned long long>(report.rejected));
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
