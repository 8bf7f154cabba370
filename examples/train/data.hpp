// The general trainer's data: Fashion-MNIST, a LIBSVM or CSV file, or generated RCV1-like
// data, read into dense or sparse matrices, split into training and test sets and converted
// to the layout asked for.
#pragma once

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/core/precision.hpp>
#include <asyncopt/io/csv.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/io/synthetic.hpp>

#include "settings.hpp"

namespace examples::train {

using Scalar = float;
using DenseMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using SparseMatrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor>;
using Labels = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using Features = std::variant<DenseMatrix, SparseMatrix>;
using asyncopt::io::DataError;

/// The shortest decimal that reads back as `v`, for messages.
inline std::string number(double v) {
  return asyncopt::detail::format_number(v);
}

struct Data {
  Features x;
  Labels y;
};

/// The training set, and the test set where there is one.
struct Split {
  Data train;
  std::optional<Data> test;
  std::string description;  // where the data came from, for the first line printed
  std::string name;         // a short name, for the plot's title
};

inline Eigen::Index rows_of(const Features& x) {
  return std::visit([](const auto& m) { return m.rows(); }, x);
}

inline Eigen::Index cols_of(const Features& x) {
  return std::visit([](const auto& m) { return m.cols(); }, x);
}

/// Rows [begin, begin + count) of `x`.
inline Features take_rows(const Features& x, Eigen::Index begin, Eigen::Index count) {
  return std::visit(
      [&](const auto& m) -> Features {
        using M = std::decay_t<decltype(m)>;
        return M(m.middleRows(begin, count));
      },
      x);
}

inline Labels labels_of(const Eigen::VectorXi& labels) {
  return labels.cast<Scalar>();
}

inline Split load(const Settings& s) {
  if (s.examples && s.data != "rcv1-like") {
    throw std::invalid_argument("--examples applies to --data rcv1-like only");
  }
  if (s.features && s.data != "rcv1-like" && s.data != "libsvm") {
    throw std::invalid_argument("--features applies to --data rcv1-like and libsvm only; " +
                                s.data + " files give their own width");
  }
  Split out;
  if (s.data == "fashion-mnist") {
    const std::filesystem::path dir =
        s.path.empty() ? asyncopt::io::default_fashion_mnist_dir() : std::filesystem::path(s.path);
    auto data = asyncopt::io::load_fashion_mnist<Scalar>(dir);
    out.train = {std::move(data.train.images), labels_of(data.train.labels)};
    out.test = Data{std::move(data.test.images), labels_of(data.test.labels)};
    out.description = "Fashion-MNIST (" + dir.string() + ")";
    out.name = "Fashion-MNIST";
    return out;
  }
  if (s.data == "rcv1-like") {
    auto data = asyncopt::io::generate_rcv1_like<Scalar>({.examples = s.examples.value_or(100'000),
                                                          .features = s.features.value_or(47'236),
                                                          .seed = s.seed});
    out.train = {std::move(data.data), std::move(data.labels)};
    out.description = "RCV1-like (generated, seed " + std::to_string(s.seed) + ")";
    out.name = "RCV1-like";
    return out;
  }
  if (s.path.empty()) {
    throw std::invalid_argument("--data " + s.data + " needs --path FILE");
  }
  if (s.data == "libsvm") {
    // --features sets the width: an index beyond it is an error, and a file that uses fewer
    // columns is read as this wide.
    auto train = asyncopt::io::read_libsvm<Scalar>(s.path, {.features = s.features});
    out.train = {std::move(train.data), std::move(train.labels)};
    if (!s.test_path.empty()) {
      // Read with the training set's width; a feature beyond it is an error.
      auto test = asyncopt::io::read_libsvm<Scalar>(
          s.test_path, {.features = static_cast<std::size_t>(cols_of(out.train.x))});
      out.test = Data{std::move(test.data), std::move(test.labels)};
    }
    out.description = "LIBSVM '" + s.path + "'";
    out.name = std::filesystem::path(s.path).filename().string();
    return out;
  }
  const asyncopt::io::CsvReadOptions options{.label_column = s.label_column,
                                             .separator = s.separator};
  auto train = asyncopt::io::read_csv<Scalar>(s.path, options);
  out.train = {std::move(train.data), std::move(train.labels)};
  if (!s.test_path.empty()) {
    auto test = asyncopt::io::read_csv<Scalar>(s.test_path, options);
    if (test.data.cols() != std::get<DenseMatrix>(out.train.x).cols()) {
      throw DataError("'" + s.test_path + "' has " + std::to_string(test.data.cols()) +
                      " feature columns but '" + s.path + "' has " +
                      std::to_string(std::get<DenseMatrix>(out.train.x).cols()));
    }
    out.test = Data{std::move(test.data), std::move(test.labels)};
  }
  out.description = "CSV '" + s.path + "'";
  out.name = std::filesystem::path(s.path).filename().string();
  return out;
}

/// Holds out the last rows as the test set, keeps the first --limit training rows, and
/// converts to the layout asked for.
inline void prepare(const Settings& s, Split& split) {
  if (s.holdout > 0.0) {
    if (split.test) {
      throw std::invalid_argument(
          "--holdout and a test set (--test-path, or Fashion-MNIST's) exclude each other");
    }
    const Eigen::Index n = rows_of(split.train.x);
    const auto held = static_cast<Eigen::Index>(std::floor(s.holdout * static_cast<double>(n)));
    if (held == 0 || held == n) {
      throw std::invalid_argument("--holdout " + number(s.holdout) + " of " + std::to_string(n) +
                                  " examples leaves no test or no training example");
    }
    split.test = Data{take_rows(split.train.x, n - held, held), split.train.y.tail(held)};
    split.train = {take_rows(split.train.x, 0, n - held), Labels(split.train.y.head(n - held))};
  }
  if (s.limit != 0 && static_cast<Eigen::Index>(s.limit) < rows_of(split.train.x)) {
    const auto n = static_cast<Eigen::Index>(s.limit);
    split.train = {take_rows(split.train.x, 0, n), Labels(split.train.y.head(n))};
  }
  auto convert = [&](Features& x) {
    if (s.layout == "sparse" && std::holds_alternative<DenseMatrix>(x)) {
      x = SparseMatrix(std::get<DenseMatrix>(x).sparseView());
    } else if (s.layout == "dense" && std::holds_alternative<SparseMatrix>(x)) {
      const auto& m = std::get<SparseMatrix>(x);
      constexpr double max_bytes = 16.0 * (1 << 30);
      const double bytes =
          static_cast<double>(m.rows()) * static_cast<double>(m.cols()) * sizeof(Scalar);
      if (bytes > max_bytes) {
        throw std::invalid_argument("--layout dense: " + std::to_string(m.rows()) + " x " +
                                    std::to_string(m.cols()) +
                                    " dense would take more than 16 GiB");
      }
      x = DenseMatrix(m);
    }
  };
  convert(split.train.x);
  if (split.test) {
    convert(split.test->x);
  }
}

/// What the first line printed says about the training data, taken before build() consumes it.
struct DataSummary {
  std::string description;
  std::string name;
  std::size_t features = 0;
  double nonzeros = 0.0;
};

inline DataSummary summarize(const Split& split) {
  const auto nonzeros = std::visit(
      [](const auto& m) -> double {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, SparseMatrix>) {
          return static_cast<double>(m.nonZeros());
        } else {
          return static_cast<double>(m.size());
        }
      },
      split.train.x);
  return {.description = split.description,
          .name = split.name,
          .features = static_cast<std::size_t>(cols_of(split.train.x)),
          .nonzeros = nonzeros};
}

}  // namespace examples::train
