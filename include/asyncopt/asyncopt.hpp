// asyncopt: asynchronous and parallel SGD. One include for the optimizer with every rule,
// consistency policy and transport of the core target, asyncopt::asyncopt, which needs only
// xsimd and threads. The Eigen objectives are in asyncopt/objectives.hpp (target
// asyncopt::objectives), the data readers in asyncopt/io.hpp (target asyncopt::io).
#pragma once

#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/local_sgd.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/consistency/scaffold.hpp>
#include <asyncopt/consistency/synchronous.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/options.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/optimizer.hpp>
#include <asyncopt/solver/giant.hpp>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/transport/simulated.hpp>
#include <asyncopt/update/update.hpp>
