// Synchronous SGD over the single-threaded staleness simulator, which cannot run rounds.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Synchronous,
                           asyncopt::transport::Simulated>
      optimizer;
  (void)optimizer;
}
