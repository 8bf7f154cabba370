// The data readers and generators (target asyncopt::io, which needs Eigen 3.4 and zlib):
// LIBSVM, CSV, IDX and Fashion-MNIST files and RCV1-like synthetic data, in namespace
// asyncopt::io.
#pragma once

#include <asyncopt/io/csv.hpp>
#include <asyncopt/io/error.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/idx.hpp>
#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/io/synthetic.hpp>
