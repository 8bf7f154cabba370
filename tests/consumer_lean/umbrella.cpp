// The umbrella header of asyncopt::asyncopt includes neither Eigen nor zlib.
#include <cstddef>

#include <asyncopt/asyncopt.hpp>

#include "no_eigen_no_zlib.hpp"

// Two optimizer types from the umbrella's rules, policies and transports; main() calls this,
// so the file is linked, not just compiled.
std::size_t umbrella_optimizers() {
  using Adam = asyncopt::AsyncOptimizer<float, asyncopt::update::Adam,
                                        asyncopt::consistency::BoundedStaleness<>>;
  using Simulated =
      asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::LockFree,
                               asyncopt::transport::Simulated>;
  return (sizeof(Adam) > 0 ? 1 : 0) + (sizeof(Simulated) > 0 ? 1 : 0);
}
