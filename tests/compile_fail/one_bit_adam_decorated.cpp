// Weight decay around 1-bit Adam, whose formula receives a momentum, not a gradient, once
// its warm-up is over.
#include <asyncopt/asyncopt.hpp>

int main() {
  const asyncopt::update::WeightDecay<asyncopt::update::OneBitAdam> rule{};
  (void)rule;
}
