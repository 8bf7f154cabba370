// Binary logistic regression.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>

#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/linear.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// The negative log-likelihood log(1 + exp(-s z)), s = 2y - 1, of a label y in {0, 1} given
/// the margin z: LogisticRegression's loss.
struct LogisticLoss {
  /// log(1 + exp(-s z)), computed without overflow.
  static double value(double z, double y) { return detail::log1p_exp(y > 0.5 ? -z : z); }
  /// Its derivative in z: sigmoid(z) - y.
  static double slope(double z, double y) { return detail::sigmoid(z) - y; }
  /// Its second derivative in z: sigmoid(z) sigmoid(-z), whatever the label.
  static double curvature(double z, double /*y*/) {
    return detail::sigmoid(z) * detail::sigmoid(-z);
  }
};

/// Minimises mean_i log(1 + exp(-s_i z_i)) + 0.5 l2 ||w||^2, z_i = x_i . w + b, s_i = 2 y_i - 1
/// for labels in {0, 1}; parameters [w_0..w_{d-1}, b] (b iff `intercept`). `sparse_gradient`
/// puts L2 on touched weights only: it differs from `gradient` by l2 * w elsewhere (Hogwild!).
/// Reference: Hastie, Tibshirani, Friedman, The Elements of Statistical Learning, 2009, 4.4.
template <class Matrix>
class LogisticRegression : public SingleOutputModel<Matrix, LogisticLoss> {
  using Base = SingleOutputModel<Matrix, LogisticLoss>;

 public:
  /// The element type of the data and of the parameters: float or double.
  using Scalar = typename Matrix::Scalar;
  /// One label per example, each exactly 0 or 1.
  using Labels = typename Base::Labels;
  /// The L2 penalty and whether the model has an intercept.
  using Options = objective::Options;

  /// Takes the data and labels by value: pass them with std::move to avoid a copy.
  LogisticRegression(Matrix data, Labels labels, Options options = {})
      : Base("LogisticRegression", std::move(data), std::move(labels), options) {
    for (Eigen::Index i = 0; i < this->labels().size(); ++i) {
      const Scalar y = this->labels()[i];
      if (y != Scalar(0) && y != Scalar(1)) {
        detail::fail(this->type(), "",
                     "the label at row " + std::to_string(i) + " is " +
                         detail::format_number(static_cast<double>(y)) + "; labels must be 0 or 1");
      }
    }
  }

  /// The predicted class of example `row`: 1 when its probability of class 1 is at least 0.5.
  [[nodiscard]] int predict(std::span<const Scalar> w, std::size_t row) const {
    this->check_size("predict", "w", w.size(), this->dimension());
    this->check_row("predict", row);
    return predict_unchecked(detail::as_vector(w), static_cast<Eigen::Index>(row));
  }

  /// The fraction of examples whose predicted class is their label.
  [[nodiscard]] double accuracy(std::span<const Scalar> w) const {
    this->check_size("accuracy", "w", w.size(), this->dimension());
    const auto wv = detail::as_vector(w);
    std::size_t correct = 0;
    for (Eigen::Index i = 0; i < this->data().rows(); ++i) {
      correct += predict_unchecked(wv, i) == static_cast<int>(this->labels()[i]) ? 1 : 0;
    }
    return static_cast<double>(correct) / static_cast<double>(this->num_examples());
  }

 private:
  template <class Weights>
  [[nodiscard]] int predict_unchecked(const Weights& w, Eigen::Index i) const {
    // sigmoid(z) >= 0.5 exactly when z >= 0.
    return this->margin(w, i) >= Scalar(0) ? 1 : 0;
  }
};

}  // namespace asyncopt::objective
