// The general trainer's models: the --model objective over the training and the test data,
// with the labels mapped as the model takes them (softmax classes 0..K-1, logistic 0 or 1).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/objective/objective.hpp>

#include "data.hpp"
#include "model.hpp"
#include "settings.hpp"

namespace examples::train {

/// Softmax classes: the distinct labels of both sets, in increasing order, become 0..K-1.
struct Classes {
  std::map<Scalar, int> index;

  Classes(const Labels& train, const Labels* test) {
    constexpr std::size_t max_classes = 1000;
    auto add = [&](const Labels& y) {
      for (Eigen::Index i = 0; i < y.size(); ++i) {
        index.emplace(y[i], 0);
        if (index.size() > max_classes) {
          throw DataError("softmax: more than " + std::to_string(max_classes) +
                          " distinct labels; softmax needs class labels (use --model "
                          "least-squares for real-valued targets)");
        }
      }
    };
    add(train);
    if (test != nullptr) {
      add(*test);
    }
    int k = 0;
    for (auto& [label, id] : index) {
      id = k++;
    }
  }

  [[nodiscard]] int count() const { return static_cast<int>(index.size()); }

  [[nodiscard]] Eigen::VectorXi map(const Labels& y) const {
    Eigen::VectorXi out(y.size());
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      out[i] = index.at(y[i]);
    }
    return out;
  }
};

/// Logistic labels: the positive label (--positive, else the larger training label) becomes
/// 1, the other 0. A test label must be one of the training set's two.
struct BinaryLabels {
  Scalar positive = 1;
  std::optional<Scalar> negative;

  BinaryLabels(const Labels& train, std::optional<double> chosen) {
    const std::optional<Scalar> given =
        chosen ? std::optional<Scalar>(static_cast<Scalar>(*chosen)) : std::nullopt;
    // Checks that there are at most two labels and that the positive one is among them.
    try {
      (void)asyncopt::io::binary_labels<Scalar>(train, given);
    } catch (const DataError& e) {
      throw DataError(std::string(e.what()) +
                      " (logistic regression takes two classes: try --model softmax)");
    }
    const Scalar low = train.minCoeff();
    const Scalar high = train.maxCoeff();
    positive = given.value_or(high);
    if (low != high) {
      negative = positive == high ? low : high;
    }
  }

  [[nodiscard]] Labels map(const Labels& y, const char* set) const {
    Labels out(y.size());
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      if (y[i] == positive) {
        out[i] = 1;
      } else if (!negative || y[i] == *negative) {
        out[i] = 0;
      } else {
        throw DataError(std::string("logistic: the ") + set + " label " + number(y[i]) +
                        " at row " + std::to_string(i) + " is neither of the training labels " +
                        number(positive) + " and " + number(*negative));
      }
    }
    return out;
  }
};

/// The models of the training set and of the test set.
struct Models {
  std::unique_ptr<Model> train;
  std::unique_ptr<Model> test;  // null without a test set
  int classes = 0;              // 0 for least squares

  /// The model accuracy is reported on: the test set's where there is one.
  [[nodiscard]] const Model& scored() const { return test ? *test : *train; }
  [[nodiscard]] const char* scored_name() const { return test ? "test" : "train"; }
};

inline std::unique_ptr<Model> build_one(const Settings& s, Data data,
                                        const std::optional<Classes>& classes,
                                        const std::optional<BinaryLabels>& binary,
                                        const char* set) {
  return std::visit(
      [&](auto& x) -> std::unique_ptr<Model> {
        using Matrix = std::decay_t<decltype(x)>;
        namespace objective = asyncopt::objective;
        if (classes && s.model == "mlp") {
          if constexpr (std::is_same_v<Matrix, SparseMatrix>) {
            throw std::invalid_argument(
                "--model mlp takes dense data: add --layout dense (for data that fits)");
          } else {
            using F = objective::Mlp<Matrix>;
            const auto activation =
                s.activation == "tanh" ? objective::Activation::tanh : objective::Activation::relu;
            return std::make_unique<ModelOf<F>>(F(std::move(x), classes->map(data.y),
                                                  classes->count(),
                                                  {.hidden = s.hidden, .activation = activation},
                                                  {.l2 = *s.l2, .intercept = s.intercept}));
          }
        }
        if (classes) {
          using F = objective::SoftmaxRegression<Matrix>;
          return std::make_unique<ModelOf<F>>(F(std::move(x), classes->map(data.y),
                                                classes->count(),
                                                {.l2 = *s.l2, .intercept = s.intercept}));
        }
        if (binary) {
          using F = objective::LogisticRegression<Matrix>;
          return std::make_unique<ModelOf<F>>(
              F(std::move(x), binary->map(data.y, set), {.l2 = *s.l2, .intercept = s.intercept}));
        }
        using F = objective::LeastSquares<Matrix>;
        return std::make_unique<ModelOf<F>>(
            F(std::move(x), std::move(data.y), {.l2 = *s.l2, .intercept = s.intercept}));
      },
      data.x);
}

/// The models of --model over the split, with the labels mapped as the model takes them.
inline Models build(const Settings& s, Split split) {
  std::optional<Classes> classes;
  std::optional<BinaryLabels> binary;
  if (s.model == "softmax" || s.model == "mlp") {
    classes.emplace(split.train.y, split.test ? &split.test->y : nullptr);
  } else if (s.model == "logistic") {
    binary.emplace(split.train.y, s.positive);
  }
  Models out;
  out.classes = classes ? classes->count() : (binary ? 2 : 0);
  out.train = build_one(s, std::move(split.train), classes, binary, "training");
  if (split.test) {
    out.test = build_one(s, std::move(*split.test), classes, binary, "test");
  }
  return out;
}

}  // namespace examples::train
