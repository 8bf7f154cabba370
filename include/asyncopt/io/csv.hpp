// Reader for numeric CSV files, gzip-compressed or not: one example per line, one column of
// labels, the other columns features.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include <asyncopt/io/error.hpp>
#include <asyncopt/io/text.hpp>

namespace asyncopt::io {

/// Examples as dense rows with one label each: the layout the objectives take.
template <class Scalar>
struct DenseDataset {
  /// Dense row-major features: one example per row.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// A column vector of one label per example.
  using Labels = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  Matrix data;    ///< row i holds the features of example i, in the file's column order
  Labels labels;  ///< the labels as written in the file
  /// The header's names of the feature columns (feature_names[j] names column j of `data`);
  /// empty when the file has no header.
  std::vector<std::string> feature_names;
  std::string label_name;  ///< the header's name of the label column; empty without a header
};

/// Whether the first non-blank line of a CSV file names the columns.
enum class CsvHeader : std::uint8_t {
  /// A header when none of its fields is a number: "x,y,label" is one, "1,2,3" is data,
  /// and so is "label,1,2", which fails as data and asks for CsvHeader::present.
  detect,
  present,  ///< always a header
  absent,   ///< always data
};

/// How read_csv() reads a file.
struct CsvReadOptions {
  /// Whether the first non-blank line is a header; the default, CsvHeader::detect, takes it
  /// for one when none of its fields is a number.
  CsvHeader header = CsvHeader::detect;
  /// The column of the labels, 0-based; a negative one counts from the end: -1, the default,
  /// is the last column, -2 the one before it.
  std::ptrdiff_t label_column = -1;
  /// Separates the fields: ',' by default; not a quote, a space or a line end. ';' and a tab
  /// (`\t`) are common too.
  char separator = ',';
  /// The longest line accepted, in bytes; a longer one throws DataError naming the file and
  /// the line, and no more than this is ever buffered.
  std::size_t max_line_bytes = default_max_line_bytes;
};

namespace detail {

struct CsvField {
  std::string_view text;  ///< trimmed, without the quotes of a quoted field
  bool quoted = false;    ///< a doubled quote inside stays doubled in `text`
};

/// Splits one line into its fields (RFC 4180 quoting within the line, blanks around a field
/// ignored) into `fields`, whose storage is reused from line to line.
inline void split_csv_line(const LineReader& in, std::string_view line, char separator,
                           std::vector<CsvField>& fields) {
  fields.clear();
  std::size_t pos = 0;
  for (;;) {
    while (pos < line.size() && line[pos] != separator && is_blank(line[pos])) {
      ++pos;
    }
    CsvField field;
    if (pos < line.size() && line[pos] == '"') {
      const std::size_t open = pos++;
      for (;;) {
        pos = line.find('"', pos);
        if (pos == std::string_view::npos) {
          throw_at_line(in, "column " + std::to_string(fields.size() + 1) +
                                ": unterminated quote (a quoted field cannot span lines)");
        }
        if (pos + 1 < line.size() && line[pos + 1] == '"') {
          pos += 2;
          continue;
        }
        break;
      }
      field.text = line.substr(open + 1, pos - open - 1);
      field.quoted = true;
      ++pos;
      while (pos < line.size() && line[pos] != separator && is_blank(line[pos])) {
        ++pos;
      }
      if (pos < line.size() && line[pos] != separator) {
        throw_at_line(in, "column " + std::to_string(fields.size() + 1) + ": " +
                              excerpt(line.substr(pos)) + " after the closing quote");
      }
    } else {
      const std::size_t start = pos;
      pos = std::min(line.find(separator, pos), line.size());
      field.text = trim(line.substr(start, pos - start));
    }
    fields.push_back(field);
    if (pos >= line.size()) {
      return;
    }
    ++pos;  // past the separator
  }
}

/// A header field as a name: the text with each doubled quote of a quoted field made single.
inline std::string csv_name(const CsvField& field) {
  std::string name;
  name.reserve(field.text.size());
  for (std::size_t i = 0; i < field.text.size(); ++i) {
    name += field.text[i];
    if (field.quoted && field.text[i] == '"') {
      ++i;
    }
  }
  return name;
}

}  // namespace detail

/// Reads a CSV file of numbers, gzip-compressed or not (the content decides, not the name):
/// one example per line, the column `options.label_column` its label, the others its features.
///
/// Fields are separated by `options.separator`; blanks around a field are ignored, a field
/// may be quoted ("1.5"), and blank lines are skipped. Every line has as many fields as the
/// first. A header, detected or requested with `options.header`, gives the columns' names.
/// Numbers are decimal (an optional sign and exponent) and finite; values too small for
/// `Scalar` read as zero, as strtod makes them. A UTF-8 byte order mark and Windows line ends
/// are accepted.
///
/// Throws DataError naming the file, and for a bad line its 1-based number, the 1-based
/// column (with its name from the header) and what is wrong: an empty field, a field that is
/// not a finite number or is out of the range of `Scalar`, a wrong number of fields, an
/// unterminated quote, a line longer than `options.max_line_bytes`; also when the label
/// column does not exist, when the file cannot be opened or read, is empty, or holds no data
/// row. Throws std::invalid_argument for a
/// separator that is a quote, a space or a line end.
template <std::floating_point Scalar = double>
[[nodiscard]] DenseDataset<Scalar> read_csv(const std::filesystem::path& file,
                                            const CsvReadOptions& options = {}) {
  const char separator = options.separator;
  if (separator == '"' || separator == ' ' || separator == '\n' || separator == '\r') {
    throw std::invalid_argument(
        "read_csv: CsvReadOptions::separator cannot be a quote, a space or a line end");
  }
  detail::LineReader in(file, options.max_line_bytes, "CsvReadOptions::max_line_bytes");
  if (in.empty()) {
    throw DataError(in.name() + " is empty: expected lines of comma-separated numbers");
  }

  DenseDataset<Scalar> out;
  std::vector<detail::CsvField> fields;
  std::vector<Scalar> values;
  std::vector<Scalar> labels;
  std::size_t columns = 0;
  std::size_t label = 0;
  std::size_t first_line = 0;
  bool has_header = false;
  std::string_view line;
  while (in.next(line)) {
    if (detail::trim(line).empty()) {
      continue;
    }
    detail::split_csv_line(in, line, separator, fields);
    if (columns == 0) {
      columns = fields.size();
      first_line = in.line_number();
      const std::ptrdiff_t wanted = options.label_column;
      const auto width = static_cast<std::ptrdiff_t>(columns);
      if (wanted >= width || wanted < -width) {
        detail::throw_at_line(in, "the label column " + std::to_string(wanted) +
                                      " (CsvReadOptions::label_column) does not exist: the line "
                                      "has " +
                                      std::to_string(columns) + " columns");
      }
      label = static_cast<std::size_t>(wanted < 0 ? width + wanted : wanted);
      has_header = options.header == CsvHeader::present;
      if (options.header == CsvHeader::detect) {
        has_header = true;
        for (const detail::CsvField& field : fields) {
          Scalar ignored{};
          has_header =
              has_header && detail::parse_number(field.text, ignored) != detail::NumberStatus::ok;
        }
      }
      if (has_header) {
        out.feature_names.reserve(columns - 1);
        for (std::size_t c = 0; c < columns; ++c) {
          if (c == label) {
            out.label_name = detail::csv_name(fields[c]);
          } else {
            out.feature_names.push_back(detail::csv_name(fields[c]));
          }
        }
        continue;
      }
    } else if (fields.size() != columns) {
      detail::throw_at_line(in, std::to_string(fields.size()) + " columns, but line " +
                                    std::to_string(first_line) + " has " + std::to_string(columns));
    }

    for (std::size_t c = 0; c < columns; ++c) {
      const std::string_view text = fields[c].text;
      Scalar value{};
      const detail::NumberStatus status = detail::parse_number(text, value);
      if (status != detail::NumberStatus::ok) {
        std::string where = "column " + std::to_string(c + 1);
        if (has_header) {
          where += " (" +
                   detail::excerpt(c == label ? out.label_name
                                              : out.feature_names[c < label ? c : c - 1]) +
                   ")";
        }
        std::string what = text.empty() ? "the field is empty (missing values are not supported)"
                                        : detail::describe_number_error<Scalar>(status, text);
        if (options.header == CsvHeader::detect && in.line_number() == first_line) {
          what +=
              "; the line was taken for data because some of its fields are numbers (set "
              "CsvReadOptions::header to CsvHeader::present if it is a header)";
        }
        where += ": ";
        where += what;
        detail::throw_at_line(in, where);
      }
      (c == label ? labels : values).push_back(value);
    }
  }
  if (labels.empty()) {
    throw DataError(in.name() + (has_header ? " has a header but no data row"
                                            : " holds no data row: its lines are blank"));
  }

  const auto rows = static_cast<Eigen::Index>(labels.size());
  out.data = Eigen::Map<const typename DenseDataset<Scalar>::Matrix>(
      values.data(), rows, static_cast<Eigen::Index>(columns - 1));
  out.labels = Eigen::Map<const typename DenseDataset<Scalar>::Labels>(labels.data(), rows);
  return out;
}

}  // namespace asyncopt::io
