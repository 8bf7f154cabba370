// The objectives: least squares, logistic and softmax regression, each over dense or sparse
// (row-major) Eigen data, a multilayer perceptron over dense data, and the bases and options
// they share.
#pragma once

#include <asyncopt/objective/data.hpp>
#include <asyncopt/objective/least_squares.hpp>
#include <asyncopt/objective/linear.hpp>
#include <asyncopt/objective/logistic.hpp>
#include <asyncopt/objective/mlp.hpp>
#include <asyncopt/objective/options.hpp>
#include <asyncopt/objective/softmax.hpp>
