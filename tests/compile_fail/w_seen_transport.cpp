// Delay compensation over a transport that cannot give the store the pulled parameters.
#include <cstddef>

#include <asyncopt/asyncopt.hpp>

struct Postbox {
  template <class Scalar, class Rule, class Consistency>
  class Store;
  template <class Body>
  void run(std::size_t /*workers*/, Body&& /*body*/) const {}
};

int main() {
  asyncopt::AsyncOptimizer<float, asyncopt::update::DelayCompensated,
                           asyncopt::consistency::LockFree, Postbox>
      optimizer;
  (void)optimizer;
}
