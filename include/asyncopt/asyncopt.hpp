// asyncopt: asynchronous and parallel SGD. One include for the whole library.
#pragma once

#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/local_sgd.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/consistency/synchronous.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/options.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/io/csv.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/idx.hpp>
#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/io/synthetic.hpp>
#include <asyncopt/objective/objective.hpp>
#include <asyncopt/optimizer.hpp>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/transport/simulated.hpp>
#include <asyncopt/update/update.hpp>
