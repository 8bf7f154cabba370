// An update rule where the consistency policy belongs.
#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::update::Sgd> optimizer;
  (void)optimizer;
}
