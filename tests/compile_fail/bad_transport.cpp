// Something that is not a transport in the Transport slot.
#include <string>

#include <asyncopt/asyncopt.hpp>

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree,
                           std::string>
      optimizer;
  (void)optimizer;
}
