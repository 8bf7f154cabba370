// What the linear-model objectives share: their options, input checks, numerically stable
// nonlinearities, and per-row kernels written once for dense and sparse rows.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/precision.hpp>
#include <asyncopt/core/sparse.hpp>

namespace asyncopt::objective {

/// Options of the linear-model objectives: `LeastSquares{x, y, {.l2 = 1e-4}}`.
struct Options {
  /// Weight of the penalty 0.5 * l2 * ||w||^2 on the weights; biases are never penalised.
  double l2 = 0.0;
  /// Whether the model has a bias (one per class for softmax), stored after the weights.
  bool intercept = true;
};

namespace detail {

template <class Matrix>
inline constexpr bool is_sparse_v = std::is_base_of_v<Eigen::SparseMatrixBase<Matrix>, Matrix>;

template <class Matrix>
struct IsDataMatrix : std::false_type {};

template <class Scalar, int Layout, int MaxRows, int MaxCols>
struct IsDataMatrix<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Layout, MaxRows, MaxCols>>
    : std::bool_constant<std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>> {};

// Only row-major sparse storage: every kernel reads one example (a row) at a time.
template <class Scalar, class StorageIndex>
struct IsDataMatrix<Eigen::SparseMatrix<Scalar, Eigen::RowMajor, StorageIndex>>
    : std::bool_constant<std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>> {};

/// The data matrices the objectives accept (one example per row).
template <class Matrix>
concept DataMatrix = IsDataMatrix<Matrix>::value;

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class Scalar>
Eigen::Map<const Vector<Scalar>> as_vector(std::span<const Scalar> s) {
  return {s.data(), static_cast<Eigen::Index>(s.size())};
}

template <class Scalar>
Eigen::Map<Vector<Scalar>> as_vector(std::span<Scalar> s) {
  return {s.data(), static_cast<Eigen::Index>(s.size())};
}

[[noreturn]] inline void fail(std::string_view type, std::string_view method,
                              const std::string& what) {
  std::string message(type);
  if (!method.empty()) {
    message.append("::").append(method);
  }
  message.append(": ").append(what);
  throw std::invalid_argument(message);
}

using asyncopt::detail::format_number;

// ---- Stable nonlinearities ------------------------------------------------------------------

/// log(1 + exp(t)) without overflow for large t nor loss of precision for very negative t.
inline double log1p_exp(double t) {
  return std::max(t, 0.0) + std::log1p(std::exp(-std::abs(t)));
}

/// 1 / (1 + exp(-z)); exp is only taken of a non-positive number, so it never overflows.
inline double sigmoid(double z) {
  if (z >= 0.0) {
    return 1.0 / (1.0 + std::exp(-z));
  }
  const double e = std::exp(z);
  return e / (1.0 + e);
}

/// log(sum_k exp(z_k)), shifted by the largest logit so no exponential overflows.
template <class Logits>
double log_sum_exp(const Logits& z) {
  const auto top = static_cast<double>(z.maxCoeff());
  double sum = 0.0;
  for (Eigen::Index k = 0; k < z.size(); ++k) {
    sum += std::exp(static_cast<double>(z[k]) - top);
  }
  return top + std::log(sum);
}

/// z <- softmax(z), shifted by the largest logit for the same reason.
template <class Logits>
void softmax_in_place(Logits& z) {
  const auto top = z.maxCoeff();
  z = (z.array() - top).exp();
  z /= z.sum();
}

// ---- Per-row kernels, one example at a time --------------------------------------------------

/// x_i . v
template <class Matrix, class Weights>
typename Matrix::Scalar row_dot(const Matrix& x, Eigen::Index i, const Weights& v) {
  if constexpr (is_sparse_v<Matrix>) {
    typename Matrix::Scalar sum(0);
    for (typename Matrix::InnerIterator it(x, i); it; ++it) {
      sum += it.value() * v.coeff(it.index());
    }
    return sum;
  } else {
    return x.row(i).dot(v);
  }
}

/// out += a * x_i
template <class Matrix, class Out>
void add_scaled_row(const Matrix& x, Eigen::Index i, typename Matrix::Scalar a, Out&& out) {
  if constexpr (is_sparse_v<Matrix>) {
    for (typename Matrix::InnerIterator it(x, i); it; ++it) {
      out.coeffRef(it.index()) += a * it.value();
    }
  } else {
    out += a * x.row(i).transpose();
  }
}

/// z = W x_i for a classes x features weight matrix W.
template <class Matrix, class Weights, class Logits>
void multiply_row(const Matrix& x, Eigen::Index i, const Weights& w, Logits& z) {
  if constexpr (is_sparse_v<Matrix>) {
    z.setZero();
    for (typename Matrix::InnerIterator it(x, i); it; ++it) {
      z += it.value() * w.col(it.index());
    }
  } else {
    z.noalias() = w * x.row(i).transpose();
  }
}

/// G += p x_i^T
template <class Matrix, class Coefficients, class Grad>
void add_outer_row(const Matrix& x, Eigen::Index i, const Coefficients& p, Grad&& g) {
  if constexpr (is_sparse_v<Matrix>) {
    for (typename Matrix::InnerIterator it(x, i); it; ++it) {
      g.col(it.index()) += it.value() * p;
    }
  } else {
    g.noalias() += p * x.row(i);
  }
}

/// Replaces `columns` by the sorted, unique columns the rows in `batch` have entries in.
/// Reuses the vector's capacity, so a worker stops allocating once it has grown.
template <class Matrix>
void gather_columns(const Matrix& x, std::span<const std::size_t> batch,
                    std::vector<std::size_t>& columns) {
  columns.clear();
  for (const std::size_t id : batch) {
    for (typename Matrix::InnerIterator it(x, static_cast<Eigen::Index>(id)); it; ++it) {
      columns.push_back(static_cast<std::size_t>(it.index()));
    }
  }
  // One row's columns are already strictly increasing (checked at construction).
  if (batch.size() > 1) {
    std::sort(columns.begin(), columns.end());
    columns.erase(std::unique(columns.begin(), columns.end()), columns.end());
  }
}

/// Calls f(position, value) for each entry of row i, where `position` is the entry's
/// column's place in `columns` (strictly increasing). The row's columns increase, so each
/// search starts where the previous one ended. Returns false, at the first entry whose
/// column `columns` lacks, when `columns` does not hold every column of the row.
template <class Matrix, class F>
bool for_each_entry_position(const Matrix& x, Eigen::Index i, std::span<const std::size_t> columns,
                             F&& f) {
  auto first = columns.begin();
  for (typename Matrix::InnerIterator it(x, i); it; ++it) {
    const auto column = static_cast<std::size_t>(it.index());
    // With one row per batch the columns are exactly the row's: the next one matches.
    if (first == columns.end() || *first != column) {
      first = std::lower_bound(first, columns.end(), column);
      if (first == columns.end() || *first != column) {
        return false;
      }
    }
    f(static_cast<std::size_t>(first - columns.begin()), it.value());
    ++first;
  }
  return true;
}

/// Asks the cache for every line of [begin, end): one request per 64 bytes, and the last.
/// Always inlined, here and in prefetch(): GCC finds that a function whose only effect is a
/// prefetch has no effect, and deletes its calls.
template <class T>
ASYNCOPT_ALWAYS_INLINE void prefetch_range(const T* begin, const T* end) noexcept {
  constexpr std::size_t line = 64;
  const auto* first = reinterpret_cast<const char*>(begin);
  const auto bytes = static_cast<std::size_t>(end - begin) * sizeof(T);
  for (std::size_t offset = 0; offset < bytes; offset += line) {
    ASYNCOPT_PREFETCH(first + offset);
  }
  if (bytes > 0) {
    ASYNCOPT_PREFETCH(first + bytes - 1);
  }
}

// ---- Data, labels, options and the checks every method shares --------------------------------

/// Owns the data, labels and options of a linear model, and checks its inputs.
template <class Matrix, class Labels>
class ModelData {
  static_assert(DataMatrix<Matrix>,
                "asyncopt::objective: the data must be a dense Eigen::Matrix<Scalar, Dynamic, "
                "Dynamic[, RowMajor]> or a row-major Eigen::SparseMatrix<Scalar, RowMajor> with "
                "Scalar float or double: the objectives read one example (row) at a time.");

 public:
  using Scalar = typename Matrix::Scalar;

  /// The examples, one per row.
  [[nodiscard]] const Matrix& data() const noexcept { return data_; }
  [[nodiscard]] const Labels& labels() const noexcept { return labels_; }
  [[nodiscard]] const Options& options() const noexcept { return options_; }
  [[nodiscard]] std::size_t num_examples() const noexcept {
    return static_cast<std::size_t>(data_.rows());
  }
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
        if constexpr (is_sparse_v<Matrix>) {
          prefetch_range(data_.outerIndexPtr() + i, data_.outerIndexPtr() + i + 2);
        }
        ASYNCOPT_PREFETCH(labels_.data() + i);
      } else if constexpr (is_sparse_v<Matrix>) {
        const auto begin = data_.outerIndexPtr()[i];
        const auto end = data_.outerIndexPtr()[i + 1];
        prefetch_range(data_.innerIndexPtr() + begin, data_.innerIndexPtr() + end);
        prefetch_range(data_.valuePtr() + begin, data_.valuePtr() + end);
      } else if constexpr (Matrix::IsRowMajor) {
        const auto* row = data_.data() + i * data_.cols();
        prefetch_range(row, row + data_.cols());
      }
    }
  }

 protected:
  ModelData(std::string_view type, Matrix data, Labels labels, Options options)
      : data_(std::move(data)), labels_(std::move(labels)), options_(options), type_(type) {
    if (data_.rows() == 0 || data_.cols() == 0) {
      fail(type_, "",
           "the data is empty (" + std::to_string(data_.rows()) + " x " +
               std::to_string(data_.cols()) + ")");
    }
    if (labels_.size() != data_.rows()) {
      fail(type_, "",
           "there are " + std::to_string(labels_.size()) + " labels for " +
               std::to_string(data_.rows()) + " examples (rows)");
    }
    if (!std::isfinite(options_.l2) || options_.l2 < 0.0) {
      fail(type_, "", "options.l2 must be finite and >= 0, got " + format_number(options_.l2));
    }
    // The gradient multiplies by Scalar(l2): a value that becomes inf (or 0) there would
    // make every gradient non-finite (or drop the penalty) without a word.
    if (constexpr Precision precision = Precision::of<Scalar>();
        !precision.represents(options_.l2)) {
      fail(type_, "",
           "options.l2 is " + format_number(options_.l2) + ", which is " +
               format_number(precision.round(options_.l2)) + " in " + std::string(precision.name) +
               " (the data's scalar type)");
    }
    if constexpr (is_sparse_v<Matrix>) {
      data_.makeCompressed();
      for (Eigen::Index i = 0; i < data_.outerSize(); ++i) {
        const auto* begin = data_.innerIndexPtr() + data_.outerIndexPtr()[i];
        const auto* end = data_.innerIndexPtr() + data_.outerIndexPtr()[i + 1];
        if (std::adjacent_find(begin, end, [](auto a, auto b) { return a >= b; }) != end) {
          fail(type_, "", "row " + std::to_string(i) + " has unsorted or repeated column indices");
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

  [[noreturn]] void fail_feature(Eigen::Index row, Eigen::Index column, Scalar value) const {
    fail(type_, "",
         "the feature at row " + std::to_string(row) + ", column " + std::to_string(column) +
             " is " + format_number(static_cast<double>(value)) + "; features must be finite");
  }

  [[nodiscard]] std::string_view type() const noexcept { return type_; }
  [[nodiscard]] double l2() const noexcept { return options_.l2; }
  [[nodiscard]] bool intercept() const noexcept { return options_.intercept; }

  void check_size(std::string_view method, std::string_view what, std::size_t size,
                  std::size_t expected) const {
    if (size != expected) {
      fail(type_, method,
           std::string(what) + " has " + std::to_string(size) + " entries, expected " +
               std::to_string(expected) + " (the dimension)");
    }
  }

  void check_row(std::string_view method, std::size_t row) const {
    if (row >= num_examples()) {
      fail(type_, method,
           "row " + std::to_string(row) + " is out of range (" + std::to_string(num_examples()) +
               " examples)");
    }
  }

  void check_batch(std::string_view method, std::span<const std::size_t> batch) const {
    if (batch.empty()) {
      fail(type_, method, "the batch is empty");
    }
    for (const std::size_t id : batch) {
      if (id >= num_examples()) {
        fail(type_, method,
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

// ---- One output per example: least squares and logistic regression ---------------------------

/// A linear model z_i = x_i . w + b with a per-example loss ell(z_i, y_i) that `Loss` gives
/// as `value(z, y)` and its derivative `slope(z, y)` in z. Parameters: [w_0..w_{d-1}, b].
template <class Matrix, class Loss>
class SingleOutputModel : public ModelData<Matrix, Vector<typename Matrix::Scalar>> {
  using Base = ModelData<Matrix, Vector<typename Matrix::Scalar>>;

 public:
  using Scalar = typename Matrix::Scalar;
  using Labels = Vector<Scalar>;

  /// The number of parameters: one weight per feature, then the bias if any.
  [[nodiscard]] std::size_t dimension() const noexcept {
    return this->num_features() + (this->intercept() ? 1 : 0);
  }

  /// The full objective: mean loss over all examples plus 0.5 * l2 * ||w||^2.
  [[nodiscard]] double loss(std::span<const Scalar> w) const {
    this->check_size("loss", "w", w.size(), dimension());
    const auto wv = as_vector(w);
    double sum = 0.0;
    for (Eigen::Index i = 0; i < this->data().rows(); ++i) {
      sum +=
          Loss::value(static_cast<double>(margin(wv, i)), static_cast<double>(this->labels()[i]));
    }
    const auto weights = wv.head(this->data().cols()).template cast<double>();
    return sum / static_cast<double>(this->num_examples()) +
           0.5 * this->l2() * weights.squaredNorm();
  }

  /// grad <- mean over `batch` of the loss gradient, plus l2 * w on the weights.
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    this->check_size("gradient", "w", w.size(), dimension());
    this->check_size("gradient", "grad", grad.size(), dimension());
    this->check_batch("gradient", batch);
    const auto wv = as_vector(w);
    auto gv = as_vector(grad);
    const Eigen::Index d = this->data().cols();
    gv.setZero();
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      const Scalar c = scale * slope(wv, i);
      add_scaled_row(this->data(), i, c, gv.head(d));
      if (this->intercept()) {
        gv[d] += c;
      }
    }
    if (this->l2() != 0.0) {
      gv.head(d) += static_cast<Scalar>(this->l2()) * wv.head(d);
    }
  }

  /// Writes the parameters the batch's sparse gradient reads and writes, strictly
  /// increasing: the features its rows have entries in, then the bias. A worker pulls just
  /// these before calling sparse_gradient.
  void touched(std::span<const std::size_t> batch,
               std::vector<std::size_t>& index) const requires is_sparse_v<Matrix> {
    this->check_batch("touched", batch);
    touched_unchecked(batch, index);
  }

  /// Clears `g`, then writes the batch gradient on the parameters the batch touches: the
  /// features its rows have entries in, then the bias. The L2 term is added on those weights
  /// only (the Hogwild! convention); elsewhere the dense gradient differs by l2 * w.
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       SparseGradient<Scalar>& g) const requires is_sparse_v<Matrix> {
    this->check_size("sparse_gradient", "w", w.size(), dimension());
    this->check_batch("sparse_gradient", batch);
    g.clear();
    touched_unchecked(batch, g.index);
    fill_values(batch, g,
                [&](std::size_t /*position*/, std::size_t parameter) { return w[parameter]; });
  }

  /// The same for a `g` whose indices touched(batch) already wrote, from the parameters at
  /// those indices only, packed: `w_touched[k]` is parameter `g.index[k]` (as a worker's
  /// pull_values(g.index, w_touched) gives them). Only the values are written, each row read
  /// once. `g.index` may hold more than the batch touches, the L2 term alone then lands
  /// there; indices that are not strictly increasing, out of range, or missing a feature or
  /// the bias the batch needs, or a `w_touched` of another length, throw
  /// std::invalid_argument.
  void touched_gradient(std::span<const Scalar> w_touched, std::span<const std::size_t> batch,
                        SparseGradient<Scalar>& g) const requires is_sparse_v<Matrix> {
    if (w_touched.size() != g.index.size()) {
      fail(this->type(), "touched_gradient",
           "w_touched has " + std::to_string(w_touched.size()) + " entries, expected " +
               std::to_string(g.index.size()) + " (one per entry of g.index)");
    }
    this->check_batch("touched_gradient", batch);
    if (!asyncopt::detail::strictly_increasing_below(g.index, dimension())) {
      fail(this->type(), "touched_gradient",
           "g.index: " + asyncopt::detail::index_list_error(g.index, dimension()) +
               "; pass the indices touched() wrote");
    }
    if (this->intercept() && (g.index.empty() || g.index.back() != this->num_features())) {
      fail(this->type(), "touched_gradient",
           "g.index must end with the bias, " + std::to_string(this->num_features()) +
               "; pass the indices touched() wrote");
    }
    fill_values(batch, g, [&](std::size_t position, std::size_t /*parameter*/) {
      return w_touched[position];
    });
  }

 protected:
  SingleOutputModel(std::string_view type, Matrix data, Labels labels, Options options)
      : Base(type, std::move(data), std::move(labels), options) {}

  /// x_i . w + b
  template <class Weights>
  [[nodiscard]] Scalar margin(const Weights& w, Eigen::Index i) const {
    const Eigen::Index d = this->data().cols();
    Scalar z = row_dot(this->data(), i, w.head(d));
    if (this->intercept()) {
      z += w[d];
    }
    return z;
  }

 private:
  void touched_unchecked(std::span<const std::size_t> batch,
                         std::vector<std::size_t>& index) const {
    gather_columns(this->data(), batch, index);
    if (this->intercept()) {
      index.push_back(this->num_features());
    }
  }

  // g.value <- the batch gradient at the indices in g.index (strictly increasing, in range,
  // the bias last when there is one): the rest of sparse_gradient and touched_gradient.
  // weight(position, parameter) is the value of parameter g.index[position]. The margin is
  // summed in the row's order, then the bias added, as margin() does.
  template <class Weight>
  void fill_values(std::span<const std::size_t> batch, SparseGradient<Scalar>& g,
                   Weight&& weight) const {
    const std::size_t touched = g.index.size() - (this->intercept() ? 1 : 0);
    const std::span<const std::size_t> columns(g.index.data(), touched);
    g.value.assign(g.index.size(), Scalar(0));
    const Scalar b = this->intercept() ? weight(touched, g.index[touched]) : Scalar(0);
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    Scalar bias = 0;
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      Scalar z(0);
      if (!for_each_entry_position(this->data(), i, columns, [&](std::size_t pos, Scalar x) {
            z += x * weight(pos, g.index[pos]);
          })) {
        fail(this->type(), "touched_gradient",
             "g.index lacks a feature of row " + std::to_string(id) +
                 ": it must hold every parameter the batch touches, as touched() writes it");
      }
      if (this->intercept()) {
        z += b;
      }
      const Scalar c = scale * static_cast<Scalar>(Loss::slope(
                                   static_cast<double>(z), static_cast<double>(this->labels()[i])));
      for_each_entry_position(this->data(), i, columns,
                              [&](std::size_t pos, Scalar x) { g.value[pos] += c * x; });
      bias += c;
    }
    if (this->l2() != 0.0) {
      const auto l2 = static_cast<Scalar>(this->l2());
      for (std::size_t t = 0; t < touched; ++t) {
        g.value[t] += l2 * weight(t, g.index[t]);
      }
    }
    if (this->intercept()) {
      g.value[touched] = bias;
    }
  }

  template <class Weights>
  [[nodiscard]] Scalar slope(const Weights& w, Eigen::Index i) const {
    return static_cast<Scalar>(
        Loss::slope(static_cast<double>(margin(w, i)), static_cast<double>(this->labels()[i])));
  }
};

}  // namespace detail
}  // namespace asyncopt::objective
