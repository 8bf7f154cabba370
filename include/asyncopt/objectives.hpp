// The ready-made objectives on Eigen data (target asyncopt::objectives, which needs Eigen
// 3.4): least squares, logistic and softmax regression over dense or sparse row-major
// matrices, in namespace asyncopt::objective.
#pragma once

#include <asyncopt/objective/objective.hpp>
