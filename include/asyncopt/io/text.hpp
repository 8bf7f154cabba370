// Building blocks of the text readers (LIBSVM, CSV): lines from a file that may be
// gzip-compressed, and numbers parsed without locale or allocation.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <asyncopt/core/precision.hpp>
#include <asyncopt/io/error.hpp>
#include <asyncopt/io/idx.hpp>

namespace asyncopt::io {

/// The longest line the text readers accept by default, in bytes, not counting its line end
/// (64 MiB: a dense row of four million features at 16 characters each). A longer one is
/// refused with its file and line, so that a file with no line ends (a binary file, a gzip
/// bomb of zeros, /dev/zero) costs bounded memory instead of all of it.
inline constexpr std::size_t default_max_line_bytes = std::size_t{64} << 20;

}  // namespace asyncopt::io

namespace asyncopt::io::detail {

/// The lines of a text file, gzip-compressed or not (the content decides, not the name).
///
/// A line ends at '\n'; a '\r' before it (Windows line ends) is dropped, and so is a UTF-8
/// byte order mark at the start of the file. The last line needs no terminator. The lines
/// returned are views into one buffer that grows to the longest line, so reading costs no
/// allocation per line; a view is valid until the next call to next(). A line longer than
/// `max_line_bytes`, not counting its '\n' and a '\r' before it, throws DataError naming the
/// file, the line and `limit_name`, the option that sets the limit; the buffer never grows
/// beyond that limit plus the line end. 0 accepts empty lines only; SIZE_MAX sets no limit.
class LineReader {
 public:
  explicit LineReader(const std::filesystem::path& file,
                      std::size_t max_line_bytes = default_max_line_bytes,
                      std::string_view limit_name = "max_line_bytes")
      : in_(file), name_(in_.quoted()), max_line_(max_line_bytes), limit_name_(limit_name) {}

  /// Sets `line` to the next line and returns true; returns false at the end of the file.
  /// Throws DataError on a read error or a corrupted or truncated gzip stream.
  bool next(std::string_view& line) {
    for (;;) {
      const char* begin = buffer_.data() + begin_;
      const std::size_t available = end_ - begin_;
      const void* found = available != 0 ? std::memchr(begin, '\n', available) : nullptr;
      if (found != nullptr) {
        const auto length = static_cast<std::size_t>(static_cast<const char*>(found) - begin);
        check_length(begin, length);
        line = finish_line(begin, length);
        begin_ += length + 1;
        return true;
      }
      if (at_end_) {
        if (available == 0) {
          return false;
        }
        check_length(begin, available);
        line = finish_line(begin, available);
        begin_ = end_;
        return true;
      }
      // No line end yet: the line holds at least `available` bytes, one of which may be the
      // '\r' of a Windows line end.
      if (available > 0 && available - 1 > max_line_) {
        line_too_long();
      }
      fill();
    }
  }

  /// The 1-based number of the line that next() returned last; 0 before the first.
  [[nodiscard]] std::size_t line_number() const noexcept { return line_number_; }

  /// Whether the file holds no byte at all (after its gzip wrapper, if any). Reads ahead
  /// when nothing has been read yet.
  [[nodiscard]] bool empty() {
    if (!started_) {
      fill();
    }
    return line_number_ == 0 && end_ == 0 && at_end_;
  }

  /// The file's path in quotes, for messages.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  /// Throws unless the line of `length` bytes at `begin` (its '\n' excluded) fits the limit,
  /// its '\r' not counted.
  void check_length(const char* begin, std::size_t length) const {
    if (length != 0 && begin[length - 1] == '\r') {
      --length;
    }
    if (length > max_line_) {
      line_too_long();
    }
  }

  [[noreturn]] void line_too_long() const {
    throw DataError(name_ + " line " + std::to_string(line_number_ + 1) + " is longer than " +
                    std::to_string(max_line_) + " bytes (" + std::string(limit_name_) +
                    "): is it a text file with line ends?");
  }

  std::string_view finish_line(const char* begin, std::size_t length) {
    ++line_number_;
    if (length != 0 && begin[length - 1] == '\r') {
      --length;
    }
    std::string_view line(begin, length);
    if (line_number_ == 1 && line.starts_with("\xEF\xBB\xBF")) {
      line.remove_prefix(3);
    }
    return line;
  }

  /// Moves the unread part to the front, grows the buffer when that part fills it, and
  /// reads as much as fits.
  void fill() {
    started_ = true;
    std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(begin_),
              buffer_.begin() + static_cast<std::ptrdiff_t>(end_), buffer_.begin());
    end_ -= begin_;
    begin_ = 0;
    if (end_ == buffer_.size()) {
      // One byte beyond the limit shows that a line exceeds it.
      const std::size_t cap = max_line_ < std::numeric_limits<std::size_t>::max() / 2
                                  ? max_line_ + 2
                                  : std::numeric_limits<std::size_t>::max() / 2;
      buffer_.resize(
          std::max(buffer_.size() + 1,
                   std::min(std::max<std::size_t>(2 * buffer_.size(), first_buffer), cap)));
    }
    const std::size_t want = buffer_.size() - end_;
    // GzReader reads bytes; the buffer holds chars, which may alias any object.
    const std::size_t got =
        in_.read(reinterpret_cast<std::byte*>(buffer_.data() + end_), want);  // NOLINT
    end_ += got;
    if (got < want) {
      at_end_ = true;
      if (in_.gzip_ended_early()) {
        throw DataError(name_ + " is truncated: the gzip stream ends early");
      }
    }
  }

  static constexpr std::size_t first_buffer = std::size_t{256} << 10;

  GzReader in_;
  std::string name_;
  std::size_t max_line_;
  std::string_view limit_name_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t line_number_ = 0;
  bool at_end_ = false;
  bool started_ = false;
};

/// Throws DataError "'file' line N: what" for the line that `in` returned last.
[[noreturn]] inline void throw_at_line(const LineReader& in, const std::string& what) {
  throw DataError(in.name() + " line " + std::to_string(in.line_number()) + ": " + what);
}

[[nodiscard]] constexpr bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\v' || c == '\f';
}

/// `text` without leading and trailing blanks (spaces, tabs, vertical tabs, form feeds).
[[nodiscard]] constexpr std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && is_blank(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_blank(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

/// The next run of non-blank characters in `line` from `pos`, which moves past it; empty at
/// the end of the line.
[[nodiscard]] constexpr std::string_view next_token(std::string_view line,
                                                    std::size_t& pos) noexcept {
  while (pos < line.size() && is_blank(line[pos])) {
    ++pos;
  }
  const std::size_t start = pos;
  while (pos < line.size() && !is_blank(line[pos])) {
    ++pos;
  }
  return line.substr(start, pos - start);
}

/// A piece of input for a message: in single quotes, cut to 40 characters, with control and
/// non-ASCII bytes written as \xNN so that a binary file cannot garble the message.
[[nodiscard]] inline std::string excerpt(std::string_view text) {
  constexpr std::size_t max_shown = 40;
  std::string out;
  out.reserve(std::min(text.size(), max_shown) + 8);
  out += '\'';
  for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte >= 0x7F) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(byte));
      out += hex;
    } else {
      out += text[i];
    }
  }
  out += '\'';
  if (text.size() > max_shown) {
    out += "...";
  }
  return out;
}

using asyncopt::detail::format_number;

enum class NumberStatus : std::uint8_t {
  ok,
  invalid,       ///< not a decimal number
  out_of_range,  ///< beyond the largest finite value of the type
  not_finite,    ///< "inf", "nan" and their variants
};

/// Whether `text`, which has the syntax of a decimal number, is below 1 in magnitude: its
/// leading significant digit has a negative decimal exponent. Zero counts as small.
[[nodiscard]] inline bool is_small_decimal(std::string_view text) noexcept {
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) {
    text.remove_prefix(1);
  }
  const std::size_t exponent_at = text.find_first_of("eE");
  const std::string_view mantissa = text.substr(0, exponent_at);
  const std::size_t point = std::min(mantissa.find('.'), mantissa.size());
  const std::size_t first = mantissa.find_first_not_of("0.");
  if (first == std::string_view::npos) {
    return true;
  }
  // The decimal exponent of the leading nonzero digit, from the mantissa alone.
  const std::int64_t lead = first < point ? static_cast<std::int64_t>(point - first) - 1
                                          : -static_cast<std::int64_t>(first - point);
  if (exponent_at == std::string_view::npos) {
    return lead < 0;
  }
  std::string_view exponent = text.substr(exponent_at + 1);
  const bool negative = exponent.starts_with('-');
  if (negative || exponent.starts_with('+')) {
    exponent.remove_prefix(1);
  }
  std::int64_t magnitude = 0;
  const auto parsed =
      std::from_chars(exponent.data(), exponent.data() + exponent.size(), magnitude);
  if (parsed.ec == std::errc::result_out_of_range) {
    // An exponent beyond 9.2e18 decides on its own.
    return negative;
  }
  // |lead| is at most the length of the text, far from overflowing with the exponent.
  return lead + (negative ? -magnitude : magnitude) < 0;
}

/// Parses all of `text` as a decimal number (an optional sign, digits with an optional point,
/// an optional exponent), the same in every locale. A value too small for `Scalar` reads as
/// zero of its sign, as strtod does; one too large is out_of_range.
template <std::floating_point Scalar>
[[nodiscard]] NumberStatus parse_number(std::string_view text, Scalar& value) noexcept {
  std::string_view digits = text;
  // from_chars takes no '+', which LIBSVM labels ("+1") and many writers use.
  if (digits.starts_with('+')) {
    digits.remove_prefix(1);
    if (digits.starts_with('-')) {
      return NumberStatus::invalid;
    }
  }
  if (digits.empty()) {
    return NumberStatus::invalid;
  }
  Scalar parsed = 0;
  const char* end = digits.data() + digits.size();
  const auto result = std::from_chars(digits.data(), end, parsed, std::chars_format::general);
  if (result.ptr != end || result.ec == std::errc::invalid_argument) {
    return NumberStatus::invalid;
  }
  if (result.ec == std::errc::result_out_of_range) {
    if (!is_small_decimal(digits)) {
      return NumberStatus::out_of_range;
    }
    parsed = digits.starts_with('-') ? -Scalar(0) : Scalar(0);
  } else if (!std::isfinite(parsed)) {
    return NumberStatus::not_finite;
  }
  value = parsed;
  return NumberStatus::ok;
}

using asyncopt::detail::type_name;

/// Why parse_number() refused `text`, for a message: "'abc' is not a number".
template <std::floating_point Scalar>
[[nodiscard]] std::string describe_number_error(NumberStatus status, std::string_view text) {
  switch (status) {
    case NumberStatus::ok:
      break;
    case NumberStatus::invalid:
      return excerpt(text) + " is not a number";
    case NumberStatus::out_of_range:
      return excerpt(text) + " is out of range for " + type_name<Scalar>() + " (largest " +
             format_number(std::numeric_limits<Scalar>::max()) + ")";
    case NumberStatus::not_finite:
      return excerpt(text) + " is not a finite number";
  }
  return excerpt(text) + " is a number";
}

}  // namespace asyncopt::io::detail
