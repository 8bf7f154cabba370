// Reader for the LIBSVM (SVMlight) sparse text format, gzip-compressed or not, and the
// mapping of two-class labels to the {0, 1} that LogisticRegression takes.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/io/error.hpp>
#include <asyncopt/io/text.hpp>

namespace asyncopt::io {

/// Examples as sparse rows with one label each: the layout the objectives take.
template <class Scalar>
struct SparseDataset {
  /// Sparse row-major (compressed-row) features: one example per row.
  using Matrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor>;
  /// A column vector of one label per example.
  using Labels = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  Matrix data;    ///< row i holds the features of example i; column j is feature index j + 1
  Labels labels;  ///< the labels as written in the file
};

/// How read_libsvm() reads a file.
struct LibsvmReadOptions {
  /// The number of features (columns). Unset, the default: the largest index in the file. Set: an
  /// index beyond it is an error, and the matrix has this many columns even where the file uses
  /// fewer, so that a test set can be read with its training set's width.
  std::optional<std::size_t> features{};
  /// The longest line accepted, in bytes; a longer one throws DataError naming the file and
  /// the line, and no more than this is ever buffered.
  std::size_t max_line_bytes = default_max_line_bytes;
};

namespace detail {

/// The largest feature index (1-based) that a row-major Eigen::SparseMatrix can hold: its
/// column indices and row offsets are of type StorageIndex.
template <class Scalar>
inline constexpr auto max_libsvm_index = static_cast<std::uint64_t>(
    std::numeric_limits<typename SparseDataset<Scalar>::Matrix::StorageIndex>::max());

/// Parses the features of one line, `index:value` tokens from `pos`, appending 0-based
/// indices and values; returns the last index, 0 for a line without features.
template <class Scalar, class StorageIndex>
std::uint64_t parse_libsvm_features(const LineReader& in, std::string_view line, std::size_t pos,
                                    const LibsvmReadOptions& options,
                                    std::vector<StorageIndex>& inner, std::vector<Scalar>& values) {
  constexpr std::uint64_t max_index = max_libsvm_index<Scalar>;
  std::uint64_t previous = 0;
  bool first = true;
  for (std::string_view token = next_token(line, pos); !token.empty();
       token = next_token(line, pos)) {
    const std::size_t colon = token.find(':');
    if (colon == std::string_view::npos) {
      throw_at_line(in, "missing ':' in " + excerpt(token) + ": expected index:value");
    }
    const std::string_view index_text = token.substr(0, colon);
    const std::string_view value_text = token.substr(colon + 1);
    // SVMlight's query id for ranking, allowed before the features; not a feature.
    if (first && index_text == "qid") {
      first = false;
      continue;
    }
    first = false;

    std::uint64_t index = 0;
    const char* index_end = index_text.data() + index_text.size();
    const auto parsed = std::from_chars(index_text.data(), index_end, index);
    if (index_text.empty() || parsed.ptr != index_end) {
      throw_at_line(in, "bad feature index " + excerpt(index_text) + " in " + excerpt(token) +
                            ": expected a positive integer");
    }
    if (parsed.ec == std::errc::result_out_of_range || index > max_index) {
      throw_at_line(in, "feature index " + excerpt(index_text) + " in " + excerpt(token) +
                            " is too large (at most " + std::to_string(max_index) + ")");
    }
    if (index == 0) {
      throw_at_line(in, "feature index 0 in " + excerpt(token) + ": indices start at 1");
    }
    if (index <= previous) {
      throw_at_line(in, "feature index " + std::to_string(index) + " in " + excerpt(token) +
                            " does not follow " + std::to_string(previous) +
                            ": indices must increase along a line");
    }
    if (options.features && index > *options.features) {
      throw_at_line(in, "feature index " + std::to_string(index) + " in " + excerpt(token) +
                            " is beyond the " + std::to_string(*options.features) +
                            " features given (LibsvmReadOptions::features)");
    }
    Scalar value{};
    const NumberStatus status = parse_number(value_text, value);
    if (status != NumberStatus::ok) {
      throw_at_line(in, "bad value of feature " + std::to_string(index) + ": " +
                            describe_number_error<Scalar>(status, value_text));
    }
    inner.push_back(static_cast<StorageIndex>(index - 1));
    values.push_back(value);
    previous = index;
  }
  return previous;
}

}  // namespace detail

/// Reads a LIBSVM (SVMlight) file, gzip-compressed or not (the content decides, not the name):
/// one example per line, `label index:value index:value ...`, with 1-based indices that
/// increase along the line and features not listed zero.
///
/// Blanks are spaces or tabs; '#' starts a comment that runs to the end of the line; blank and
/// comment-only lines are skipped, and Windows line ends are accepted. A line may hold just a
/// label (an example without features). SVMlight's `qid:N` right after the label is skipped.
/// Labels and values are decimal numbers (an optional sign, '+' included, and exponent);
/// values too small for `Scalar` read as zero, as strtod makes them.
///
/// Reading is linear in the size of the file: the rows go into compressed-row arrays as the
/// lines come, sorted already because the indices increase, and are copied once into the
/// matrix.
///
/// Throws DataError naming the file, and for a malformed line its 1-based number and what is
/// wrong: a label or value that is not a finite number or is out of the range of `Scalar`, a
/// missing ':', an index that is not a positive integer, is 0, does not increase, or is
/// beyond `options.features`, a line longer than `options.max_line_bytes`; also when the file
/// cannot be opened or read, is empty, or holds no example. Throws std::invalid_argument when
/// `options.features` is beyond what the matrix can index.
template <std::floating_point Scalar = double>
[[nodiscard]] SparseDataset<Scalar> read_libsvm(const std::filesystem::path& file,
                                                const LibsvmReadOptions& options = {}) {
  using Matrix = typename SparseDataset<Scalar>::Matrix;
  using StorageIndex = typename Matrix::StorageIndex;
  constexpr std::uint64_t max_index = detail::max_libsvm_index<Scalar>;
  if (options.features && *options.features > max_index) {
    throw std::invalid_argument("read_libsvm: LibsvmReadOptions::features is " +
                                std::to_string(*options.features) + ", more than the " +
                                std::to_string(max_index) + " columns a sparse matrix can index");
  }

  detail::LineReader in(file, options.max_line_bytes, "LibsvmReadOptions::max_line_bytes");
  if (in.empty()) {
    throw DataError(in.name() + " is empty: expected LIBSVM lines 'label index:value ...'");
  }
  // Compressed row storage: row offsets, column indices, values.
  std::vector<StorageIndex> outer{0};
  std::vector<StorageIndex> inner;
  std::vector<Scalar> values;
  std::vector<Scalar> labels;
  std::uint64_t largest = 0;
  std::string_view line;
  while (in.next(line)) {
    line = line.substr(0, line.find('#'));
    std::size_t pos = 0;
    const std::string_view label_text = detail::next_token(line, pos);
    if (label_text.empty()) {
      continue;
    }
    if (label_text.find(':') != std::string_view::npos) {
      detail::throw_at_line(in, "the line starts with " + detail::excerpt(label_text) +
                                    ", not a label: expected 'label index:value ...'");
    }
    Scalar label{};
    const detail::NumberStatus status = detail::parse_number(label_text, label);
    if (status != detail::NumberStatus::ok) {
      detail::throw_at_line(
          in, "bad label: " + detail::describe_number_error<Scalar>(status, label_text));
    }
    const std::uint64_t last = detail::parse_libsvm_features(in, line, pos, options, inner, values);
    if (inner.size() > max_index) {
      detail::throw_at_line(in, "more than " + std::to_string(max_index) +
                                    " nonzeros in all: beyond what a sparse matrix can index");
    }
    largest = std::max(largest, last);
    outer.push_back(static_cast<StorageIndex>(inner.size()));
    labels.push_back(label);
  }
  if (labels.empty()) {
    throw DataError(in.name() + " holds no example: its " + std::to_string(in.line_number()) +
                    " lines are blank or comments");
  }

  const auto rows = static_cast<Eigen::Index>(labels.size());
  const auto cols = static_cast<Eigen::Index>(options.features.value_or(largest));
  SparseDataset<Scalar> out;
  out.data.resize(rows, cols);
  out.data.resizeNonZeros(static_cast<Eigen::Index>(values.size()));
  std::copy(outer.begin(), outer.end(), out.data.outerIndexPtr());
  std::copy(inner.begin(), inner.end(), out.data.innerIndexPtr());
  std::copy(values.begin(), values.end(), out.data.valuePtr());
  out.labels = Eigen::Map<const typename SparseDataset<Scalar>::Labels>(labels.data(), rows);
  return out;
}

/// Two-class labels mapped to the {0, 1} that LogisticRegression takes: `positive` to 1, the
/// other label to 0. Without `positive`, the larger of the two labels is positive: +1 of
/// {-1, +1}, 1 of {0, 1}, 4 of {2, 4}.
///
/// Throws DataError when a label is not finite, when there are more than two distinct labels
/// (naming three and the rows where they first appear), when `positive` is given and no label
/// equals it, and when it is not given and every label is the same.
template <std::floating_point Scalar>
[[nodiscard]] Eigen::Matrix<Scalar, Eigen::Dynamic, 1> binary_labels(
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& labels,
    std::type_identity_t<std::optional<Scalar>> positive = std::nullopt) {
  using detail::format_number;
  std::array<Scalar, 2> seen{};
  std::array<Eigen::Index, 2> first_row{};
  std::size_t distinct = 0;
  for (Eigen::Index i = 0; i < labels.size(); ++i) {
    const Scalar y = labels[i];
    if (!std::isfinite(y)) {
      throw DataError("binary_labels: the label at row " + std::to_string(i) + " is " +
                      format_number(y) + "; labels must be finite");
    }
    if ((distinct > 0 && y == seen[0]) || (distinct > 1 && y == seen[1])) {
      continue;
    }
    if (distinct == 2) {
      throw DataError("binary_labels: more than two distinct labels: " + format_number(seen[0]) +
                      " (first at row " + std::to_string(first_row[0]) + "), " +
                      format_number(seen[1]) + " (row " + std::to_string(first_row[1]) + ") and " +
                      format_number(y) + " (row " + std::to_string(i) + ")");
    }
    seen.at(distinct) = y;
    first_row.at(distinct) = i;
    ++distinct;
  }
  if (distinct == 0) {
    return {};
  }
  const std::string found =
      distinct == 1 ? "every label is " + format_number(seen[0])
                    : "the labels are " + format_number(seen[0]) + " and " + format_number(seen[1]);
  Scalar chosen = std::max(seen[0], seen[distinct - 1]);
  if (positive) {
    if (*positive != seen[0] && *positive != seen[distinct - 1]) {
      throw DataError("binary_labels: no label equals the positive label " +
                      format_number(*positive) + "; " + found);
    }
    chosen = *positive;
  } else if (distinct == 1) {
    throw DataError("binary_labels: " + found + ", so which is positive is ambiguous; pass it");
  }
  return (labels.array() == chosen).template cast<Scalar>();
}

}  // namespace asyncopt::io
