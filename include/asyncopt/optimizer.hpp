// AsyncOptimizer with its default transport: the fourth template argument, when left out, is
// transport::SharedMemory (worker threads sharing the parameters in this process).
#pragma once

#include <asyncopt/core/optimizer.hpp>
#include <asyncopt/transport/shared_memory.hpp>

namespace asyncopt {

// A redeclaration that adds the default; the class is defined in core/optimizer.hpp.
template <class Scalar, class Rule, class Consistency, class Transport = transport::SharedMemory>
class AsyncOptimizer;

}  // namespace asyncopt
