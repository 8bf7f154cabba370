// The data, labels and options of a linear-model objective, and the checks every method of
// one shares.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/precision.hpp>
#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// The data matrices the objectives accept, one example per row: a dense
/// `Eigen::Matrix<Scalar, Dynamic, Dynamic>` (either layout) or a row-major
/// `Eigen::SparseMatrix<Scalar, RowMajor>`, with Scalar float or double.
template <class Matrix>
concept DataMatrix = detail::IsDataMatrix<Matrix>::value;

/// The data, labels and options of a linear model, with the checks every method shares: the
/// base of the objectives, whose public members every one of them offers. An objective of
/// your own over such data can derive from it: it checks the data, the options and the
/// number of labels at construction, and leaves the labels' values to the derived class.
template <class Matrix, class Labels>
class ModelData {
  static_assert(DataMatrix<Matrix>,
                "asyncopt::objective: the data must be a dense Eigen::Matrix<Scalar, Dynamic, "
                "Dynamic[, RowMajor]> or a row-major Eigen::SparseMatrix<Scalar, RowMajor> with "
                "Scalar float or double: the objectives read one example (row) at a time.");

 public:
  /// The element type of the data: float or double.
  using Scalar = typename Matrix::Scalar;

  /// The examples, one per row.
  [[nodiscard]] const Matrix& data() const noexcept { return data_; }
  /// The labels, one per example.
  [[nodiscard]] const Labels& labels() const noexcept { return labels_; }
  /// The options the model was built with.
  [[nodiscard]] const Options& options() const noexcept { return options_; }
  /// The number of examples (rows of the data).
  [[nodiscard]] std::size_t num_examples() const noexcept {
    return static_cast<std::size_t>(data_.rows());
  }
  /// The number of features (columns of the data).
  [[nodiscard]] std::size_t num_features() const noexcept {
    return static_cast<std::size_t>(data_.cols());
  }

  /// Starts loading the rows and labels of `batch` into the cache (ids out of range are
  /// skipped); changes nothing. With `steps_ahead` >= 2 only a sparse row's offsets and the
  /// labels, which a call with `steps_ahead` = 1 a step later needs to find the row: see
  /// asyncopt::PrefetchingObjective.
  ASYNCOPT_ALWAYS_INLINE void prefetch(std::span<const std::size_t> batch,
                                       std::size_t steps_ahead) const noexcept {
    for (const std::size_t id : batch) {
      if (id >= num_examples()) {
        continue;
      }
      const auto i = static_cast<Eigen::Index>(id);
      if (steps_ahead >= 2) {
        if constexpr (detail::is_sparse_v<Matrix>) {
          detail::prefetch_range(data_.outerIndexPtr() + i, data_.outerIndexPtr() + i + 2);
        }
        ASYNCOPT_PREFETCH(labels_.data() + i);
      } else if constexpr (detail::is_sparse_v<Matrix>) {
        const auto begin = data_.outerIndexPtr()[i];
        const auto end = data_.outerIndexPtr()[i + 1];
        detail::prefetch_range(data_.innerIndexPtr() + begin, data_.innerIndexPtr() + end);
        detail::prefetch_range(data_.valuePtr() + begin, data_.valuePtr() + end);
      } else if constexpr (Matrix::IsRowMajor) {
        const auto* row = data_.data() + i * data_.cols();
        detail::prefetch_range(row, row + data_.cols());
      }
    }
  }

 protected:
  /// Takes the data, labels and options, and checks that the data is non-empty with finite
  /// features (and, when sparse, sorted unique columns in each row; it is compressed), that
  /// there is one label per example, and that `options.l2` is finite, non-negative and
  /// representable in `Scalar`; otherwise throws std::invalid_argument with a message that
  /// starts with `type`, the class name, which must outlive the object (a string literal).
  ModelData(std::string_view type, Matrix data, Labels labels, Options options)
      : data_(std::move(data)), labels_(std::move(labels)), options_(options), type_(type) {
    if (data_.rows() == 0 || data_.cols() == 0) {
      detail::fail(type_, "",
                   "the data is empty (" + std::to_string(data_.rows()) + " x " +
                       std::to_string(data_.cols()) + ")");
    }
    if (labels_.size() != data_.rows()) {
      detail::fail(type_, "",
                   "there are " + std::to_string(labels_.size()) + " labels for " +
                       std::to_string(data_.rows()) + " examples (rows)");
    }
    if (!std::isfinite(options_.l2) || options_.l2 < 0.0) {
      detail::fail(type_, "",
                   "options.l2 must be finite and >= 0, got " + detail::format_number(options_.l2));
    }
    // The gradient multiplies by Scalar(l2): a value that becomes inf (or 0) there would
    // make every gradient non-finite (or drop the penalty) without a word.
    if (constexpr Precision precision = Precision::of<Scalar>();
        !precision.represents(options_.l2)) {
      detail::fail(type_, "",
                   "options.l2 is " + detail::format_number(options_.l2) + ", which is " +
                       detail::format_number(precision.round(options_.l2)) + " in " +
                       std::string(precision.name) + " (the data's scalar type)");
    }
    if constexpr (detail::is_sparse_v<Matrix>) {
      data_.makeCompressed();
      for (Eigen::Index i = 0; i < data_.outerSize(); ++i) {
        const auto* begin = data_.innerIndexPtr() + data_.outerIndexPtr()[i];
        const auto* end = data_.innerIndexPtr() + data_.outerIndexPtr()[i + 1];
        if (std::adjacent_find(begin, end, [](auto a, auto b) { return a >= b; }) != end) {
          detail::fail(type_, "",
                       "row " + std::to_string(i) + " has unsorted or repeated column indices");
        }
        for (auto k = data_.outerIndexPtr()[i]; k < data_.outerIndexPtr()[i + 1]; ++k) {
          if (!std::isfinite(data_.valuePtr()[k])) {
            fail_feature(i, data_.innerIndexPtr()[k], data_.valuePtr()[k]);
          }
        }
      }
    } else if (!data_.allFinite()) {
      for (Eigen::Index i = 0; i < data_.rows(); ++i) {
        for (Eigen::Index j = 0; j < data_.cols(); ++j) {
          if (!std::isfinite(data_(i, j))) {
            fail_feature(i, j, data_(i, j));
          }
        }
      }
    }
  }

  /// Throws std::invalid_argument: the feature at (`row`, `column`) is `value`, not finite.
  [[noreturn]] void fail_feature(Eigen::Index row, Eigen::Index column, Scalar value) const {
    detail::fail(type_, "",
                 "the feature at row " + std::to_string(row) + ", column " +
                     std::to_string(column) + " is " +
                     detail::format_number(static_cast<double>(value)) +
                     "; features must be finite");
  }

  /// The class name the messages start with.
  [[nodiscard]] std::string_view type() const noexcept { return type_; }
  /// options().l2
  [[nodiscard]] double l2() const noexcept { return options_.l2; }
  /// options().intercept
  [[nodiscard]] bool intercept() const noexcept { return options_.intercept; }

  /// Throws std::invalid_argument, naming `method` and `what`, unless `size` == `expected`.
  void check_size(std::string_view method, std::string_view what, std::size_t size,
                  std::size_t expected) const {
    if (size != expected) {
      detail::fail(type_, method,
                   std::string(what) + " has " + std::to_string(size) + " entries, expected " +
                       std::to_string(expected) + " (the dimension)");
    }
  }

  /// Throws std::invalid_argument, naming `method`, unless `row` is an example's.
  void check_row(std::string_view method, std::size_t row) const {
    if (row >= num_examples()) {
      detail::fail(type_, method,
                   "row " + std::to_string(row) + " is out of range (" +
                       std::to_string(num_examples()) + " examples)");
    }
  }

  /// Throws std::invalid_argument, naming `method`, when `batch` is empty or holds an id out
  /// of range.
  void check_batch(std::string_view method, std::span<const std::size_t> batch) const {
    if (batch.empty()) {
      detail::fail(type_, method, "the batch is empty");
    }
    for (const std::size_t id : batch) {
      if (id >= num_examples()) {
        detail::fail(type_, method,
                     "batch id " + std::to_string(id) + " is out of range (" +
                         std::to_string(num_examples()) + " examples)");
      }
    }
  }

 private:
  Matrix data_;
  Labels labels_;
  Options options_;
  std::string_view type_;
};

}  // namespace asyncopt::objective
