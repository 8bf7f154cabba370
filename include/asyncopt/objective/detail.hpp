// The internals of the linear-model objectives: the test behind objective::DataMatrix,
// error messages, numerically stable nonlinearities, and per-row kernels written once for
// dense and sparse rows. Nothing here is named by users: the public types are in data.hpp,
// options.hpp and linear.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/precision.hpp>

namespace asyncopt::objective::detail {

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

/// A sum of one row's terms in `lanes` interleaved partial sums (term k in sum k mod lanes),
/// added in a fixed tree at the end: the same bits for the same terms, however they are
/// visited, and no chain of one dependent addition per term, so a long row's sum runs at the
/// pace of the loads rather than of the adder's latency. It may differ from the sum in
/// order by rounding.
template <class Scalar>
struct LaneSum {
  static constexpr std::size_t lanes = 8;
  std::array<Scalar, lanes> part{};

  /// Adds term k, x * w, in one expression (so a compiler that fuses a multiply and an add
  /// does so on every path alike).
  void add(std::size_t k, Scalar x, Scalar w) noexcept { part[k % lanes] += x * w; }
  /// The sum of the terms added.
  [[nodiscard]] Scalar total() const noexcept {
    return ((part[0] + part[4]) + (part[2] + part[6])) +
           ((part[1] + part[5]) + (part[3] + part[7]));
  }
};

/// Row i of a compressed row-major sparse matrix as arrays: its `size` column ids (strictly
/// increasing) and values.
template <class Matrix>
struct SparseRow {
  const typename Matrix::StorageIndex* column;
  const typename Matrix::Scalar* value;
  std::size_t size;
};

/// Row i of `x`, which every objective keeps compressed.
template <class Matrix>
[[nodiscard]] SparseRow<Matrix> sparse_row(const Matrix& x, Eigen::Index i) noexcept {
  const auto begin = x.outerIndexPtr()[i];
  const auto end = x.outerIndexPtr()[i + 1];
  return {x.innerIndexPtr() + begin, x.valuePtr() + begin, static_cast<std::size_t>(end - begin)};
}

/// Replaces `columns` by the sorted, unique columns the rows in `batch` have entries in.
/// Reuses the vector's capacity, so a worker stops allocating once it has grown.
template <class Matrix>
void gather_columns(const Matrix& x, std::span<const std::size_t> batch,
                    std::vector<std::size_t>& columns) {
  if (batch.size() == 1) {  // one row's columns: already strictly increasing
    const auto row = sparse_row(x, static_cast<Eigen::Index>(batch[0]));
    columns.resize(row.size);
    for (std::size_t k = 0; k < row.size; ++k) {
      columns[k] = static_cast<std::size_t>(row.column[k]);
    }
    return;
  }
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

}  // namespace asyncopt::objective::detail
