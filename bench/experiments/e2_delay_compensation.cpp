// E2: delay compensation.
//
// Zheng, Meng, Wang, Chen, Yu, Ma and Liu ("Asynchronous Stochastic Gradient Descent with
// Delay Compensation", ICML 2017) correct a gradient computed at stale parameters w_seen by
// a first-order Taylor term whose Hessian is approximated by lambda * g * g (DC-ASGD), or by
// lambda0 * g * g / sqrt(running mean of g * g) (DC-ASGD-a), and report that this recovers
// most of what staleness costs plain asynchronous SGD. This program trains logistic
// regression on two Fashion-MNIST classes in the staleness simulator with every gradient
// tau updates old, tau in {0, 4, 16}, tunes every method's learning rate over the same
// grid, and measures how much of the gap between ASGD at tau = 16 and SGD (tau = 0) the best
// DC-ASGD closes. Staleness-aware SGD (the learning rate divided by tau; Zhang, Gupta, Lian
// and Liu, IJCAI 2016) is a control: under a fixed delay it is ASGD with the learning rate
// scaled by 1 / tau (except in the first tau updates, whose staleness the simulator caps at
// the number of updates so far), and with a grid of ratio 2 that scaled rate is a grid
// point, so the two tuned results must tie. Under a random delay (uniform and geometric,
// mean 16) it is a different method, and its result is reported.
//
// The control (staleness-aware SGD ties ASGD under a fixed delay) is checked; the gap
// closed with every method tuned is reported as a FINDING, since it does not hold here (see
// docs/experiments.md); E2b checks the claim as the paper ran it.
//
// Usage: e2_delay_compensation [CSV]. Prints CHECK and FINDING lines; exits 1 if a check
// fails, 2 on an error (such as missing Fashion-MNIST files).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/logistic.hpp>

#include "csv_argument.hpp"

namespace {

using Scalar = float;
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Logistic = asyncopt::objective::LogisticRegression<Matrix>;
using asyncopt::delay::Delay;

// Shirt (label 1) against T-shirt/top (label 0), one of the pairs a linear model confuses
// most in Fashion-MNIST: both are upper-body garments with similar silhouettes, so the two
// classes overlap, the loss is far from zero after a few epochs (about 0.33, 84% test
// accuracy) and differences between optimizers show in it. 12,000 training and 2,000 test
// images, pixels scaled to [0, 1] by the loader.
constexpr int negative_class = 0;  // T-shirt/top
constexpr int positive_class = 6;  // Shirt

// The budget: batches of 32 for 4 epochs, 1500 updates. With batches of 1 the tuned
// learning rate is limited by gradient noise, below where a delay of 16 makes SGD unstable,
// and tau = 16 raised ASGD's tuned loss by under 1% (3 epochs); with batches of 32 the tuned
// learning rate at tau = 0 sits near the stability edge, a delay forces a smaller one, and
// within 1500 updates that costs ASGD about 14% of its loss. The batch size and budget were
// chosen on ASGD's results alone, before any DC-ASGD run.
constexpr std::size_t batch_size = 32;
constexpr std::size_t epochs = 4;

// Each configuration runs once per seed (the shuffles and the simulator's delay draws)
// and reports the mean final loss; every method sees the same seeds. A run that diverges
// counts as +inf, and so does its mean.
constexpr std::uint64_t seeds[] = {1, 2, 3};

// The learning rates: 2^-13 .. 2^-1, ratio 2. Staleness-aware divides by tau = 4 or 16, a
// power of 2, so its scaled rates fall on ASGD's grid exactly.
constexpr int lr_low_exponent = -13;
constexpr int lr_high_exponent = -1;

// DC-ASGD's lambda and DC-ASGD-a's lambda0: ratio 5 from 0.04, with 2 added for the
// adaptive variant (mean-square decay 0.95); 0.04 and 2 are the library's defaults, the
// values public DC-ASGD implementations ship. The grids reach far above them: here g is the
// mean gradient of a batch of 32, so g * g is small, and the curvature that limits the
// learning rate lies along the mean image (the pixels are all non-negative), which a
// diagonal approximation sees only in part; the compensation starts to matter at lambda in
// the thousands. Both grids extend past their best point.
const std::vector<double> dc_lambdas = {0.04, 0.2, 1.0, 5.0, 25.0, 125.0, 625.0, 3125.0, 15625.0};
const std::vector<double> dc_adaptive_lambdas = {0.04, 0.2,   1.0,   2.0,   5.0,
                                                 25.0, 125.0, 625.0, 3125.0};
constexpr double mean_square_decay = 0.95;

constexpr double gap_goal = 0.25;  // the claim: DC-ASGD closes at least this fraction
constexpr double tie_goal = 0.01;  // |staleness-aware - ASGD| / ASGD at most this

struct Problem {
  Logistic train;
  Logistic test;
};

Logistic pick(const asyncopt::io::LabeledImages<Scalar>& set) {
  std::vector<Eigen::Index> rows;
  for (Eigen::Index i = 0; i < set.labels.size(); ++i) {
    if (set.labels[i] == negative_class || set.labels[i] == positive_class) {
      rows.push_back(i);
    }
  }
  Matrix x(static_cast<Eigen::Index>(rows.size()), set.images.cols());
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> y(x.rows());
  for (Eigen::Index k = 0; k < x.rows(); ++k) {
    const auto i = rows[static_cast<std::size_t>(k)];
    x.row(k) = set.images.row(i);
    y[k] = set.labels[i] == positive_class ? Scalar(1) : Scalar(0);
  }
  return {std::move(x), std::move(y), {.l2 = 0.0, .intercept = true}};
}

// How stale the gradients are: a fixed tau, or a distribution with mean 16.
struct Staleness {
  const char* kind = "fixed";  // "fixed", "uniform" or "geometric"
  std::uint64_t tau = 0;       // fixed: tau; random: the mean
  Delay delay;
  std::size_t history = 1;  // past parameter vectors the simulator keeps
};

struct Outcome {
  double loss = std::numeric_limits<double>::infinity();  // mean final training loss
  double accuracy = 0.0;                                  // mean test accuracy
};

template <class Rule>
Outcome run(const Problem& p, const Rule& rule, const Staleness& s) {
  using Opt = asyncopt::AsyncOptimizer<Scalar, Rule, asyncopt::consistency::Locked,
                                       asyncopt::transport::Simulated>;
  Outcome out{.loss = 0.0, .accuracy = 0.0};
  for (const std::uint64_t seed : seeds) {
    const Opt opt(rule, asyncopt::consistency::Locked{},
                  asyncopt::transport::Simulated{
                      .delay = s.delay, .seed = 1000 + seed, .history = s.history});
    std::vector<Scalar> w(p.train.dimension(), Scalar(0));
    const auto report =
        opt.optimize(p.train, std::span<Scalar>(w),
                     {.workers = 1, .batch_size = batch_size, .epochs = epochs, .seed = seed});
    const double loss = report.final_loss();
    if (std::isfinite(loss)) {
      out.loss += loss;
    } else {
      out.loss = std::numeric_limits<double>::infinity();
    }
    out.accuracy += p.test.accuracy(std::span<const Scalar>(w));
  }
  const auto count = static_cast<double>(std::size(seeds));
  out.loss /= count;
  out.accuracy /= count;
  return out;
}

// One method with its parameter fixed: the learning rate is the only thing left to tune.
struct Method {
  std::string name;  // "asgd", "staleness_aware", "dc" or "dc_adaptive"
  double lambda;     // dc: lambda; dc_adaptive: lambda0; otherwise 0
  std::function<Outcome(const Problem&, double lr, const Staleness&)> train;
};

std::vector<Method> methods(bool with_dc) {
  namespace update = asyncopt::update;
  std::vector<Method> list;
  list.push_back({"asgd", 0.0, [](const Problem& p, double lr, const Staleness& s) {
                    return run(p, update::Sgd{.learning_rate = lr}, s);
                  }});
  list.push_back({"staleness_aware", 0.0, [](const Problem& p, double lr, const Staleness& s) {
                    return run(
                        p, update::StalenessAware<update::Sgd>{.inner = {.learning_rate = lr}}, s);
                  }});
  if (!with_dc) {
    return list;
  }
  for (const double lambda : dc_lambdas) {
    list.push_back({"dc", lambda, [lambda](const Problem& p, double lr, const Staleness& s) {
                      return run(p, update::DelayCompensated{.learning_rate = lr, .lambda = lambda},
                                 s);
                    }});
  }
  for (const double lambda0 : dc_adaptive_lambdas) {
    list.push_back(
        {"dc_adaptive", lambda0, [lambda0](const Problem& p, double lr, const Staleness& s) {
           return run(
               p,
               update::AdaptiveDelayCompensated{
                   .learning_rate = lr, .lambda0 = lambda0, .mean_square_decay = mean_square_decay},
               s);
         }});
  }
  return list;
}

struct Best {
  std::string name;
  double lambda = 0.0;
  int exponent = 0;  // the best learning rate is 2^exponent
  Outcome outcome;
};

std::string label(const std::string& name, double lambda) {
  if (name != "dc" && name != "dc_adaptive") {
    return name;
  }
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%s (%s %g)", name.c_str(),
                name == "dc" ? "lambda" : "lambda0", lambda);
  return buffer;
}

// Tunes one method's learning rate over the grid, writes a CSV row per learning rate,
// prints the best, and warns when the best is at an edge of the grid.
Best tune(const Problem& p, const Method& m, const Staleness& s, std::ofstream& csv) {
  Best best{.name = m.name, .lambda = m.lambda, .exponent = lr_low_exponent, .outcome = {}};
  for (int k = lr_low_exponent; k <= lr_high_exponent; ++k) {
    const double lr = std::ldexp(1.0, k);
    const Outcome o = m.train(p, lr, s);
    if (csv.is_open()) {
      csv << s.kind << ',' << s.tau << ',' << m.name << ',' << m.lambda << ',' << k << ',' << lr
          << ',' << o.loss << ',' << o.accuracy << '\n';
    }
    if (o.loss < best.outcome.loss) {
      best.outcome = o;
      best.exponent = k;
    }
  }
  std::printf("  %-26s best lr 2^%-3d = %-10.6g final loss %.5f  test accuracy %.4f\n",
              label(m.name, m.lambda).c_str(), best.exponent, std::ldexp(1.0, best.exponent),
              best.outcome.loss, best.outcome.accuracy);
  if (best.exponent == lr_low_exponent || best.exponent == lr_high_exponent) {
    std::printf("  WARNING: %s at %s tau = %llu: the best learning rate is at the grid's edge\n",
                label(m.name, m.lambda).c_str(), s.kind, static_cast<unsigned long long>(s.tau));
  }
  std::fflush(stdout);
  return best;
}

struct Results {
  Best asgd;
  Best staleness_aware;
  Best dc;  // the best over both variants and their parameters
};

Results sweep(const Problem& p, const Staleness& s, bool with_dc, std::ofstream& csv) {
  std::printf("%s delay, tau %s %llu:\n", s.kind, s.kind[0] == 'f' ? "=" : "mean",
              static_cast<unsigned long long>(s.tau));
  Results r;
  for (const Method& m : methods(with_dc)) {
    const Best b = tune(p, m, s, csv);
    if (m.name == "asgd") {
      r.asgd = b;
    } else if (m.name == "staleness_aware") {
      r.staleness_aware = b;
    } else if (b.outcome.loss < r.dc.outcome.loss || r.dc.name.empty()) {
      r.dc = b;
    }
  }
  if (with_dc) {
    std::printf("  best DC-ASGD: %s, lr 2^%d, final loss %.5f\n",
                label(r.dc.name, r.dc.lambda).c_str(), r.dc.exponent, r.dc.outcome.loss);
    const auto& grid = r.dc.name == "dc" ? dc_lambdas : dc_adaptive_lambdas;
    if (r.dc.lambda == grid.front() || r.dc.lambda == grid.back()) {
      std::printf("  WARNING: the best DC-ASGD's lambda is at the edge of its grid\n");
    }
  }
  return r;
}

// The fraction of the gap between ASGD's loss and SGD's (tau = 0) that DC-ASGD closes; NaN
// (which fails the check) when there is no gap to close.
double closed(const Results& stale, const Results& sync) {
  const double gap = stale.asgd.outcome.loss - sync.asgd.outcome.loss;
  if (!(gap > 0.0) || !std::isfinite(gap)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return (stale.asgd.outcome.loss - stale.dc.outcome.loss) / gap;
}

double tie(const Results& r) {
  return std::abs(r.staleness_aware.outcome.loss - r.asgd.outcome.loss) / r.asgd.outcome.loss;
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  const auto data = asyncopt::io::load_fashion_mnist<Scalar>();
  const Problem p{pick(data.train), pick(data.test)};
  std::printf(
      "Fashion-MNIST shirt (1) vs T-shirt/top (0): %zu training, %zu test images; batch %zu, "
      "%zu epochs (%zu updates), %zu seeds\n",
      p.train.num_examples(), p.test.num_examples(), batch_size, epochs,
      epochs * p.train.num_examples() / batch_size, std::size(seeds));
  if (csv.is_open()) {
    csv.precision(10);
    csv << "delay,tau,method,lambda,lr_log2,lr,final_loss,test_accuracy\n";
  }
  auto fixed = [](std::uint64_t tau) {
    return Staleness{"fixed", tau, asyncopt::delay::fixed(tau), static_cast<std::size_t>(tau) + 1};
  };
  // At tau = 0, w_seen is w, so both DC-ASGD variants are SGD exactly, and so is
  // staleness-aware SGD (it scales only at tau > 1); DC-ASGD is not run there.
  const Results sync = sweep(p, fixed(0), false, csv);
  const Results tau4 = sweep(p, fixed(4), true, csv);
  const Results tau16 = sweep(p, fixed(16), true, csv);
  // Random delays with mean 16: uniform on 0..32, and geometric with p = 1/17 (the
  // simulator's 257 past vectors cut tau at 256, a probability of about 1e-7).
  const Results uniform =
      sweep(p, {"uniform", 16, asyncopt::delay::uniform(0, 32), 33}, false, csv);
  const Results geometric =
      sweep(p, {"geometric", 16, asyncopt::delay::geometric(1.0 / 17.0), 257}, false, csv);

  for (const auto* r : {&uniform, &geometric}) {
    const bool is_uniform = r == &uniform;
    std::printf(
        "staleness-aware vs ASGD, %s delay (mean 16): final loss %.5f (lr 2^%d) vs %.5f (lr "
        "2^%d), ratio %.4f\n",
        is_uniform ? "uniform 0..32" : "geometric p = 1/17", r->staleness_aware.outcome.loss,
        r->staleness_aware.exponent, r->asgd.outcome.loss, r->asgd.exponent,
        r->staleness_aware.outcome.loss / r->asgd.outcome.loss);
  }
  std::printf(
      "DC-ASGD at tau = 4 (reported, not a criterion): closes %.3f of the gap "
      "[SGD %.5f, ASGD %.5f, best DC-ASGD %.5f, %s]\n",
      closed(tau4, sync), sync.asgd.outcome.loss, tau4.asgd.outcome.loss, tau4.dc.outcome.loss,
      label(tau4.dc.name, tau4.dc.lambda).c_str());

  // Reported, not promised: this tuned-per-method version of the claim did not hold after a
  // fair attempt; E2b runs it as the paper did (an MLP, every method at sequential SGD's
  // learning rate, the published lambdas) and checks it there.
  bool all = true;
  std::printf(
      "FINDING E2/dc_closes_gap_each_tuned/tau=16: %.3f  [final loss: SGD (tau = 0) %.5f, "
      "ASGD %.5f, best DC-ASGD %.5f (%s, lr 2^%d); claim: closes >= %.2f of the gap]\n",
      closed(tau16, sync), sync.asgd.outcome.loss, tau16.asgd.outcome.loss, tau16.dc.outcome.loss,
      label(tau16.dc.name, tau16.dc.lambda).c_str(), tau16.dc.exponent, gap_goal);
  for (const auto& [tau, r] : {std::pair{4, &tau4}, std::pair{16, &tau16}}) {
    const double difference = tie(*r);
    const bool ties = difference <= tie_goal;
    all = all && ties;
    std::printf(
        "CHECK E2/staleness_aware_ties_asgd/tau=%d: %.4f (goal <= %.2f) %s  [final loss: "
        "staleness-aware %.5f at lr 2^%d, ASGD %.5f at lr 2^%d]\n",
        tau, difference, tie_goal, ties ? "PASS" : "FAIL", r->staleness_aware.outcome.loss,
        r->staleness_aware.exponent, r->asgd.outcome.loss, r->asgd.exponent);
  }
  return all ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e2_delay_compensation: %s\n", e.what());
  return 2;
}
