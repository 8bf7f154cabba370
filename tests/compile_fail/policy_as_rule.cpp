// A consistency policy where the update rule belongs, passed to the constructor.
#include <asyncopt/asyncopt.hpp>

int main() {
  const asyncopt::AsyncOptimizer<float, asyncopt::consistency::Locked,
                                 asyncopt::consistency::LockFree>
      optimizer(asyncopt::consistency::Locked{});
  (void)optimizer;
}
