// E7: STORM against SGD and heavy-ball momentum on a non-convex model.
//
// Cutkosky and Orabona ("Momentum-Based Variance Reduction in Non-Convex SGD", NeurIPS 2019)
// replace the stochastic gradient by the estimate d_t = g(x_t; xi_t) + (1 - a)(d_{t-1} -
// g(x_{t-1}; xi_t)), a momentum whose bias the second gradient of the same batch removes, and
// show that it reduces the variance of the steps without large batches: per iteration it
// trains at least as well as SGD and momentum, at the price of two gradients per step. This
// program trains an MLP (784-128-10, ReLU) on Fashion-MNIST with 4 workers in synchronous
// rounds (batches of 32 per worker), for 6 epochs with SGD, heavy-ball momentum (0.9) and
// STORM (Sgd applying the estimate; a in {0.1, 0.3}), each method at its best learning rate
// of a grid (factors of 2, every best point interior) by final training loss, and compares the
// training loss at an equal number of steps (the paper's axis) and at an equal number of gradient
// evaluations (STORM after 3 epochs against the others after 6). Synchronous rounds sum in worker
// order and the MLP starts from seeded parameters: each run is deterministic.
//
// The issue that asked for it sets no criterion: the comparison is reported as FINDING lines.
//
// Usage: e7_storm [CSV]. Prints FINDING lines.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/mlp.hpp>

#include "csv_argument.hpp"

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Mlp = asyncopt::objective::Mlp<Matrix>;

constexpr std::size_t workers = 4;
constexpr std::size_t batch = 32;
constexpr std::size_t epochs = 6;

struct Run {
  std::string method;
  double lr = 0.0;
  double a = 0.0;
  std::vector<double> loss;  // before training and after each epoch
  [[nodiscard]] double final() const { return loss.back(); }
};

template <class Rule>
Run train(const Mlp& f, const std::string& method, const Rule& rule, double lr,
          std::optional<double> a) {
  std::vector<float> w = f.initial_parameters(7);
  const auto report =
      asyncopt::AsyncOptimizer<float, Rule, asyncopt::consistency::Synchronous>(rule).optimize(
          f, std::span<float>(w),
          {.workers = workers,
           .batch_size = batch,
           .epochs = epochs,
           .seed = 3,
           .storm = a ? std::optional<asyncopt::Storm>(asyncopt::Storm{.a = *a}) : std::nullopt});
  Run run{.method = method, .lr = lr, .a = a.value_or(0.0), .loss = report.loss};
  for (double& l : run.loss) {
    if (!std::isfinite(l)) {
      l = std::numeric_limits<double>::infinity();
    }
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  auto data = asyncopt::io::load_fashion_mnist<float>();
  const Mlp f(std::move(data.train.images), std::move(data.train.labels),
              asyncopt::io::FashionMnist<float>::classes,
              {.hidden = {128}, .activation = asyncopt::objective::Activation::relu},
              {.l2 = 1e-4, .intercept = true});
  std::printf(
      "MLP 784-128-10 (ReLU) on Fashion-MNIST: %zu examples, %zu parameters; %zu workers in "
      "synchronous rounds, batch %zu each, %zu epochs\n",
      f.num_examples(), f.dimension(), workers, batch, epochs);
  if (csv.is_open()) {
    csv << "method,learning_rate,a,epoch,gradient_evaluations_per_example,loss\n";
  }
  // One grid of factors of 2 per method, wide enough that every best point is interior;
  // heavy ball's steps are amplified about 1 / (1 - 0.9) = 10 times by its momentum.
  const std::vector<double> rates = {0.05, 0.1, 0.2, 0.4, 0.8, 1.6};
  const std::vector<double> storm_rates = {0.0125, 0.025, 0.05, 0.1, 0.2, 0.4};
  std::vector<Run> best;
  auto consider = [&](Run run) {
    std::printf("%-16s lr %-6g%s: loss after each epoch", run.method.c_str(), run.lr,
                run.a > 0.0 ? (" a " + std::to_string(run.a).substr(0, 3)).c_str() : "");
    for (std::size_t e = 1; e < run.loss.size(); ++e) {
      std::printf(" %.4f", run.loss[e]);
    }
    std::printf("\n");
    std::fflush(stdout);
    if (csv.is_open()) {
      const double per_step = run.a > 0.0 ? 2.0 : 1.0;
      for (std::size_t e = 0; e < run.loss.size(); ++e) {
        csv << run.method << ',' << run.lr << ',' << run.a << ',' << e << ','
            << per_step * static_cast<double>(e) << ',' << run.loss[e] << '\n';
      }
    }
    for (Run& b : best) {
      if (b.method == run.method) {
        if (run.final() < b.final()) {
          b = std::move(run);
        }
        return;
      }
    }
    best.push_back(std::move(run));
  };
  using asyncopt::update::HeavyBall;
  using asyncopt::update::Sgd;
  for (const double lr : rates) {
    consider(train(f, "SGD", Sgd{.learning_rate = lr}, lr, std::nullopt));
  }
  for (const double lr : rates) {
    consider(train(f, "heavy ball", HeavyBall{.learning_rate = lr / 10.0, .momentum = 0.9},
                   lr / 10.0, std::nullopt));
  }
  for (const double a : {0.1, 0.3}) {
    for (const double lr : storm_rates) {
      consider(train(f, "STORM", Sgd{.learning_rate = lr}, lr, a));
    }
  }
  const Run& sgd = best[0];
  const Run& heavy = best[1];
  const Run& storm = best[2];
  for (const Run& r : best) {
    std::printf("best %-10s: lr %g%s, final loss %.5f\n", r.method.c_str(), r.lr,
                r.a > 0.0 ? (", a " + std::to_string(r.a).substr(0, 3)).c_str() : "", r.final());
  }
  // Reported, not promised: the paper's claim is about iterations with its adaptive step
  // (a = c eta^2); here a and the learning rate are constant and tuned.
  const double first_order = std::min(sgd.final(), heavy.final());
  std::printf(
      "FINDING E7/loss_at_equal_steps_storm_vs_best_of_sgd_and_heavy_ball: %.4f (STORM %.5f, "
      "SGD %.5f, heavy ball %.5f after %zu epochs; claim: STORM at least as good per step)\n",
      storm.final() / first_order, storm.final(), sgd.final(), heavy.final(), epochs);
  std::printf(
      "FINDING E7/loss_at_equal_steps_storm_vs_sgd: %.4f (STORM %.5f against SGD %.5f, both "
      "applying their step with Sgd)\n",
      storm.final() / sgd.final(), storm.final(), sgd.final());
  const double half = storm.loss[epochs / 2];
  std::printf(
      "FINDING E7/loss_at_equal_gradient_evaluations_storm_vs_best_of_sgd_and_heavy_ball: %.4f "
      "(STORM after %zu epochs %.5f against %.5f after %zu; STORM pays two gradients per step)\n",
      half / first_order, epochs / 2, half, first_order, epochs);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e7_storm: %s\n", e.what());
  return 2;
}
