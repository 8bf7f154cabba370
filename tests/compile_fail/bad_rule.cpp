// A consistency policy where the update rule belongs.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::consistency::Locked, asyncopt::consistency::LockFree>
      optimizer;
  (void)optimizer;
}
