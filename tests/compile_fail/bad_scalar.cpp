// An integer element type in the Scalar slot.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<int, asyncopt::update::Sgd, asyncopt::consistency::LockFree> optimizer;
  (void)optimizer;
}
