// A decorator around something that is not an update rule.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::StalenessAware<double>,
                           asyncopt::consistency::LockFree>
      optimizer;
  (void)optimizer;
}
