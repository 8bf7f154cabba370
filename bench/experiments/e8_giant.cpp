// E8: GIANT against synchronous gradient descent and synchronous SGD, in rounds.
//
// Wang, Roosta, Xu and Mahoney ("GIANT: Globally Improved Approximate Newton Method for
// Distributed Optimization", NeurIPS 2018) show that averaging the workers' local Newton
// directions, each solved by conjugate gradient on the worker's own data, reaches a
// precise solution of a regularized logistic regression in far fewer communication rounds
// than first-order methods. This program runs L2-regularized logistic regression on the
// Fashion-MNIST pair T-shirt/top (class 0) against shirt (class 6), 12,000 training
// examples of 784 pixels and a bias, with 4 workers each holding a quarter of the data, and
// counts the rounds each method needs to bring the training objective within 1e-6 of its
// optimum:
//   - GIANT (asyncopt::giant, conjugate gradient to 1e-8, backtracking line search);
//   - synchronous gradient descent: the library's Synchronous rounds with each worker's
//     batch its whole shard (one round, one full-gradient step) at the step 1/L;
//   - synchronous SGD: Synchronous rounds of 32 examples per worker, its learning rate the
//     best of a grid (1/32 to 1/2, factors of 2) after 20 epochs.
// The optimum is Newton's method (GIANT with one worker, whose local Hessian is the whole
// one) run to a gradient norm of 1e-10.
//
// Usage: e8_giant [CSV]. Prints CHECK lines; exits 1 if one fails.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/logistic.hpp>
#include <asyncopt/solver/giant.hpp>

#include "csv_argument.hpp"

namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Logistic = asyncopt::objective::LogisticRegression<Matrix>;

constexpr std::size_t workers = 4;
constexpr double l2 = 1e-4;
constexpr double target = 1e-6;
constexpr std::size_t giant_rounds = 30;
constexpr std::size_t descent_rounds = 3000;
constexpr std::size_t sgd_batch = 32;
constexpr std::size_t sgd_epochs = 20;

// The first round after which the loss is within `target` of `optimum`; 0 when it starts
// there, and nothing when no round reaches it.
std::ptrdiff_t rounds_to(const std::vector<double>& loss, double optimum, std::size_t per_entry) {
  for (std::size_t k = 0; k < loss.size(); ++k) {
    if (loss[k] - optimum <= target) {
      return static_cast<std::ptrdiff_t>(k * per_entry);
    }
  }
  return -1;
}

// The largest eigenvalue of A^T A / N, A = [X, 1], by power iteration.
double largest_eigenvalue(const Matrix& x) {
  Eigen::VectorXd v = Eigen::VectorXd::Ones(x.cols() + 1).normalized();
  double lambda = 0.0;
  for (int it = 0; it < 200; ++it) {
    Eigen::VectorXd av = x * v.head(x.cols());
    av.array() += v[x.cols()];
    Eigen::VectorXd next(x.cols() + 1);
    next.head(x.cols()) = x.transpose() * av;
    next[x.cols()] = av.sum();
    next /= static_cast<double>(x.rows());
    lambda = next.norm();
    v = next / lambda;
  }
  return lambda;
}

void write(std::ofstream& csv, const std::string& method, const std::vector<double>& loss,
           std::size_t rounds_per_entry, double optimum) {
  if (!csv.is_open()) {
    return;
  }
  for (std::size_t k = 0; k < loss.size(); ++k) {
    csv << method << ',' << k * rounds_per_entry << ',' << loss[k] << ','
        << std::max(loss[k] - optimum, 0.0) << '\n';
  }
}

std::string rounds_text(std::ptrdiff_t rounds, std::size_t cap) {
  return rounds < 0 ? "not within " + std::to_string(cap) : std::to_string(rounds);
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  auto data = asyncopt::io::load_fashion_mnist<double>();
  std::vector<Eigen::Index> rows;
  for (Eigen::Index i = 0; i < data.train.labels.size(); ++i) {
    if (data.train.labels[i] == 0 || data.train.labels[i] == 6) {
      rows.push_back(i);
    }
  }
  Matrix x(static_cast<Eigen::Index>(rows.size()), data.train.images.cols());
  Eigen::VectorXd y(x.rows());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    x.row(r) = data.train.images.row(rows[static_cast<std::size_t>(r)]);
    y[r] = data.train.labels[rows[static_cast<std::size_t>(r)]] == 0 ? 1.0 : 0.0;
  }
  const double lipschitz = largest_eigenvalue(x) / 4.0 + l2;
  const Logistic f(std::move(x), std::move(y), {.l2 = l2, .intercept = true});
  const std::size_t n = f.dimension();
  std::printf(
      "logistic regression, Fashion-MNIST T-shirt/top against shirt: %zu examples, %zu "
      "parameters, l2 %g, %zu workers; target: within %g of the optimum\n",
      f.num_examples(), n, l2, workers, target);

  // The optimum: Newton's method.
  std::vector<double> best(n, 0.0);
  const auto newton = asyncopt::giant(f, std::span<double>(best),
                                      asyncopt::Giant{.workers = 1,
                                                      .rounds = 50,
                                                      .gradient_tolerance = 1e-10,
                                                      .cg_iterations = 1000,
                                                      .cg_tolerance = 1e-12,
                                                      .line_search = true});
  const double optimum = newton.loss.back();
  std::printf("optimum (Newton, %zu iterations, gradient norm %.2g): %.12f\n", newton.rounds,
              newton.gradient_norm, optimum);

  if (csv.is_open()) {
    csv << "method,round,loss,suboptimality\n";
  }

  // GIANT with 4 workers.
  std::vector<double> w(n, 0.0);
  const auto giant = asyncopt::giant(f, std::span<double>(w),
                                     asyncopt::Giant{.workers = workers,
                                                     .rounds = giant_rounds,
                                                     .gradient_tolerance = 1e-9,
                                                     .cg_iterations = 100,
                                                     .cg_tolerance = 1e-8,
                                                     .line_search = true});
  const std::ptrdiff_t giant_to = rounds_to(giant.loss, optimum, 1);
  write(csv, "GIANT", giant.loss, 1, optimum);
  std::printf(
      "GIANT: %s rounds to the target; %.2f s, %llu Hessian-vector products over the workers\n",
      rounds_text(giant_to, giant_rounds).c_str(), giant.seconds,
      static_cast<unsigned long long>(giant.hessian_vector_products));

  // Synchronous gradient descent at 1/L: each worker's batch is its whole shard.
  using Sgd = asyncopt::update::Sgd;
  using Sync = asyncopt::consistency::Synchronous;
  std::vector<double> descent(n, 0.0);
  const auto gd = asyncopt::AsyncOptimizer<double, Sgd, Sync>(Sgd{.learning_rate = 1.0 / lipschitz})
                      .optimize(f, std::span<double>(descent),
                                {.workers = workers,
                                 .batch_size = (f.num_examples() + workers - 1) / workers,
                                 .epochs = descent_rounds,
                                 .target_loss = optimum + target});
  const std::ptrdiff_t gd_to = rounds_to(gd.loss, optimum, 1);
  write(csv, "gradient descent", gd.loss, 1, optimum);
  std::printf(
      "synchronous gradient descent (step 1/L = %.4g): %s rounds; after %zu rounds %.3g from "
      "the optimum; %.2f s\n",
      1.0 / lipschitz, rounds_text(gd_to, descent_rounds).c_str(), gd.loss.size() - 1,
      gd.loss.back() - optimum, gd.seconds);

  // Synchronous SGD: the best learning rate of a grid after sgd_epochs epochs.
  const std::size_t rounds_per_epoch = (f.num_examples() / workers + sgd_batch - 1) / sgd_batch;
  asyncopt::Report sgd_best;
  double sgd_lr = 0.0;
  for (const double lr : {0.03125, 0.0625, 0.125, 0.25, 0.5}) {
    std::vector<double> v(n, 0.0);
    const auto r =
        asyncopt::AsyncOptimizer<double, Sgd, Sync>(Sgd{.learning_rate = lr})
            .optimize(
                f, std::span<double>(v),
                {.workers = workers, .batch_size = sgd_batch, .epochs = sgd_epochs, .seed = 3});
    std::printf("synchronous SGD, lr %g: final loss %.8f\n", lr, r.final_loss());
    if (sgd_best.loss.empty() || r.final_loss() < sgd_best.final_loss()) {
      sgd_best = r;
      sgd_lr = lr;
    }
  }
  const std::ptrdiff_t sgd_to = rounds_to(sgd_best.loss, optimum, rounds_per_epoch);
  write(csv, "synchronous SGD", sgd_best.loss, rounds_per_epoch, optimum);
  std::printf(
      "synchronous SGD (batch %zu per worker, lr %g): %s rounds; after %zu rounds %.3g from the "
      "optimum\n",
      sgd_batch, sgd_lr, rounds_text(sgd_to, sgd_epochs * rounds_per_epoch).c_str(),
      sgd_epochs * rounds_per_epoch, sgd_best.final_loss() - optimum);

  // The claims: GIANT reaches the target, and in fewer rounds than gradient descent (which
  // counts as its cap when it does not reach it) and synchronous SGD.
  bool pass = true;
  const bool reached = giant_to >= 0;
  pass = pass && reached;
  std::printf("CHECK E8/giant_reaches_1e-6: %s (goal: within %zu rounds) %s\n",
              rounds_text(giant_to, giant_rounds).c_str(), giant_rounds, reached ? "PASS" : "FAIL");
  const double gd_rounds = gd_to >= 0 ? static_cast<double>(gd_to) : descent_rounds;
  const double ratio = reached ? static_cast<double>(giant_to) / gd_rounds : 1.0;
  const bool fewer = reached && ratio < 1.0;
  pass = pass && fewer;
  std::printf(
      "CHECK E8/rounds_to_1e-6_giant_vs_gradient_descent: %s%.4f (goal < 1) %s  [GIANT %s, "
      "gradient descent %s]\n",
      gd_to < 0 ? "<" : "", ratio, fewer ? "PASS" : "FAIL",
      rounds_text(giant_to, giant_rounds).c_str(), rounds_text(gd_to, descent_rounds).c_str());
  const bool fewer_than_sgd =
      reached && (sgd_to < 0 || static_cast<std::ptrdiff_t>(giant_to) < sgd_to);
  pass = pass && fewer_than_sgd;
  std::printf(
      "CHECK E8/rounds_to_1e-6_giant_vs_synchronous_sgd: GIANT %s, SGD %s (goal: GIANT fewer) "
      "%s\n",
      rounds_text(giant_to, giant_rounds).c_str(),
      rounds_text(sgd_to, sgd_epochs * rounds_per_epoch).c_str(), fewer_than_sgd ? "PASS" : "FAIL");
  return pass ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e8_giant: %s\n", e.what());
  return 2;
}
