// The linear-model objectives: least squares, logistic and softmax regression, each over
// dense or sparse (row-major) Eigen data.
#pragma once

#include <asyncopt/objective/least_squares.hpp>
#include <asyncopt/objective/logistic.hpp>
#include <asyncopt/objective/softmax.hpp>
