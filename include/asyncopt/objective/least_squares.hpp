// Linear least squares (ridge regression when l2 > 0).
#pragma once

#include <cmath>
#include <string>
#include <utility>

#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/linear.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// The squared error 0.5 (z - y)^2 of a prediction z for a real target y: LeastSquares' loss.
struct SquaredLoss {
  /// 0.5 (z - y)^2
  static double value(double z, double y) { return 0.5 * (z - y) * (z - y); }
  /// Its derivative in z: z - y.
  static double slope(double z, double y) { return z - y; }
  /// Its second derivative in z: 1.
  static double curvature(double /*z*/, double /*y*/) { return 1.0; }
};

/// Minimises mean_i 0.5 (x_i . w + b - y_i)^2 + 0.5 l2 ||w||^2; parameters [w_0..w_{d-1}, b],
/// b iff `intercept`, never penalised. `sparse_gradient` puts L2 on touched weights only, so
/// it differs from `gradient` by l2 * w elsewhere (Hogwild!, Niu et al., NeurIPS 2011).
/// Reference: Hastie, Tibshirani, Friedman, The Elements of Statistical Learning, 2009, 3.4.1.
template <class Matrix>
class LeastSquares : public SingleOutputModel<Matrix, SquaredLoss> {
  using Base = SingleOutputModel<Matrix, SquaredLoss>;

 public:
  /// The element type of the data and of the parameters: float or double.
  using Scalar = typename Matrix::Scalar;
  /// One real target per example.
  using Labels = typename Base::Labels;
  /// The L2 penalty and whether the model has an intercept.
  using Options = objective::Options;

  /// Takes the data and targets by value: pass them with std::move to avoid a copy.
  LeastSquares(Matrix data, Labels labels, Options options = {})
      : Base("LeastSquares", std::move(data), std::move(labels), options) {
    for (Eigen::Index i = 0; i < this->labels().size(); ++i) {
      if (!std::isfinite(this->labels()[i])) {
        detail::fail(this->type(), "", "the label at row " + std::to_string(i) + " is not finite");
      }
    }
  }
};

}  // namespace asyncopt::objective
