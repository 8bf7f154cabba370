// E1: the stability boundary of gradient descent with a fixed delay.
//
// Gradient descent on f(x) = h x^2 / 2 whose gradients are tau updates old is the linear
// recurrence x_{t+1} = x_t - a x_{t-tau}, a = lr * h, which is asymptotically stable iff
// 0 < a < 2 sin(pi / (4 tau + 2)) (Levin and May, "A note on difference-delay equations",
// Theoretical Population Biology 9, 1976). This program finds the boundary by bisection on
// runs of the staleness simulator and compares it with the formula.
//
// Usage: e1_stability [CSV]. Prints one CHECK line per tau; exits 1 if one fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <numbers>
#include <span>
#include <vector>

#include <asyncopt/asyncopt.hpp>

#include "csv_argument.hpp"

namespace {

constexpr double tolerance = 1e-3;   // the criterion on |measured - theory|
constexpr double resolution = 1e-5;  // the bisection stops at this bracket width

// Runs x_{t+1} = x_t - a x_{t-tau} through the simulator: a Simulated store with a fixed
// delay, plain SGD with learning rate a on f(x) = x^2 / 2. Stable when the envelope of |x|
// over the last tenth of the run is not above that of the tenth before the middle (a fast
// decay reaches 0 in both).
bool stable(double a, std::uint64_t tau, std::uint64_t steps) {
  using Opt = asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Locked,
                                       asyncopt::transport::Simulated>;
  const Opt opt(asyncopt::update::Sgd{.learning_rate = a}, asyncopt::consistency::Locked{},
                asyncopt::transport::Simulated{.delay = asyncopt::delay::fixed(tau),
                                               .history = static_cast<std::size_t>(tau) + 1});
  std::vector<double> x = {1.0};
  auto store = opt.attach(x, 1);
  auto worker = store->worker(0);
  std::vector<double> seen(1);
  std::vector<double> gradient(1);
  double middle = 0.0;
  double last = 0.0;
  for (std::uint64_t t = 0; t < steps; ++t) {
    worker.pull(seen);
    gradient[0] = seen[0];  // f'(x) = h x with h = 1
    (void)worker.push(std::span<const double>(gradient));
    const double magnitude = std::abs(x[0]);
    if (!(magnitude < 1e150)) {
      return false;
    }
    if (t >= 4 * steps / 10 && t < 5 * steps / 10) {
      middle = std::max(middle, magnitude);
    } else if (t >= 9 * steps / 10) {
      last = std::max(last, magnitude);
    }
  }
  return last <= middle;
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  const std::vector<std::uint64_t> delays = {0, 1, 2, 4, 8, 16, 32};
  if (csv.is_open()) {
    csv << "tau,theory,measured\n";
  }
  bool all = true;
  for (const std::uint64_t tau : delays) {
    const double theory = 2.0 * std::sin(std::numbers::pi / (4.0 * static_cast<double>(tau) + 2.0));
    // Near the boundary the slowest mode grows or decays by about |a - a*| / (tau + 1) per
    // step: 400k steps amplify a 1e-4 miss by e^12 even at tau = 32.
    const std::uint64_t steps = 400000;
    double low = 0.0;
    double high = 2.5;
    while (high - low > resolution) {
      const double mid = 0.5 * (low + high);
      (stable(mid, tau, steps) ? low : high) = mid;
    }
    const double measured = 0.5 * (low + high);
    const double error = std::abs(measured - theory);
    const bool pass = error <= tolerance;
    all = all && pass;
    std::printf(
        "CHECK E1/stability_boundary/tau=%llu: %.6f (goal <= %.0e) %s  [measured %.6f, "
        "theory %.6f]\n",
        static_cast<unsigned long long>(tau), error, tolerance, pass ? "PASS" : "FAIL", measured,
        theory);
    std::fflush(stdout);
    if (csv.is_open()) {
      csv << tau << ',' << theory << ',' << measured << '\n';
    }
  }
  return all ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e1_stability: %s\n", e.what());
  return 2;
}
