// 1-bit Adam under an asynchronous policy, whose pushes never send the momenta it needs.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<double, asyncopt::update::OneBitAdam, asyncopt::consistency::LockFree>
      optimizer;
  (void)optimizer;
}
