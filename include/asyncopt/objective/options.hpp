// The options every linear-model objective takes.
#pragma once

namespace asyncopt::objective {

/// Options of the linear-model objectives: `LeastSquares{x, y, {.l2 = 1e-4}}`.
struct Options {
  /// Weight of the penalty 0.5 * l2 * ||w||^2 on the weights; biases are never penalised.
  double l2 = 0.0;
  /// Whether the model has a bias (one per class for softmax), stored after the weights.
  bool intercept = true;
};

}  // namespace asyncopt::objective
