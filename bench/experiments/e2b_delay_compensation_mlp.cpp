// E2b: delay compensation as its paper ran it.
//
// Zheng, Meng, Wang, Chen, Yu, Ma and Liu ("Asynchronous Stochastic Gradient Descent with
// Delay Compensation", ICML 2017) train deep networks on mean-subtracted, normalised images
// with M = 4 and 8 workers, every method at the learning rate tuned for sequential SGD, and
// the compensation at its published settings: lambda = 0.04 for DC-ASGD-c (the Hessian
// approximated by lambda * g * g) and lambda0 = 2 with a mean-square decay of 0.95 for
// DC-ASGD-a (lambda0 * g * g / sqrt(running mean of g * g)). They report that delay
// compensation recovers much of what asynchrony costs. This program does the same with an
// MLP (784-128-10, ReLU) on all of Fashion-MNIST: each pixel minus its mean over the
// training images, divided by the standard deviation of the centred training pixels; batches
// of 128; 5 epochs. M workers taking turns (round robin) make every gradient M - 1 updates
// old; a geometric delay with the same mean models workers of random speed. Both run in the
// staleness simulator, so every run is deterministic for its seed, and every method sees the
// same batches, starting point and delays.
//
// The learning rate is tuned for sequential SGD alone (tau = 0) over a grid of factors of 2
// and then used for every method. The claim as the issue that asked for this experiment
// states it: at M = 8, delay compensation (the better of DC-ASGD-c and DC-ASGD-a) closes at
// least 25% of the gap between ASGD's final training loss and sequential SGD's, under
// round-robin and under geometric delays. It does not hold here (see docs/experiments.md),
// so it is printed as FINDING lines with the numbers, among them the stability bound that
// decides it: sequential SGD's best rate lies within a factor of 2 of its stability edge,
// and a delay of M - 1 moves the edge down by the factor that E1 measures. The same
// comparison at every smaller rate of the grid follows as context. A seed whose loss ends
// above its starting loss (or is not finite) counts as diverged, and so does a setting with
// a diverged seed.
//
// Usage: e2b_delay_compensation_mlp [CSV]. Prints FINDING lines; exits 2 on an error (such
// as missing Fashion-MNIST files).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/mlp.hpp>

#include "csv_argument.hpp"

namespace {

using Scalar = float;
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Mlp = asyncopt::objective::Mlp<Matrix>;
using asyncopt::delay::Delay;

constexpr std::size_t batch_size = 128;  // the paper's
constexpr std::size_t epochs = 5;
constexpr std::uint64_t seeds[] = {1, 2, 3};  // shuffles, simulator and initial weights
// Sequential SGD's learning rates: 2^-6 .. 2^1; the best must be interior.
constexpr int lr_low_exponent = -6;
constexpr int lr_high_exponent = 1;
constexpr double lambda = 0.04;             // DC-ASGD-c, published
constexpr double lambda0 = 2.0;             // DC-ASGD-a, published
constexpr double mean_square_decay = 0.95;  // DC-ASGD-a, published
constexpr double gap_goal = 0.25;           // the claim's fraction of the gap

// Each pixel minus its training mean, divided by the standard deviation of all centred
// training pixels (one number: a per-pixel deviation would blow up the border pixels, which
// are nearly constant).
void normalise(Matrix& train, Matrix& test) {
  const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> mean = train.colwise().mean();
  train.rowwise() -= mean;
  test.rowwise() -= mean;
  const double variance =
      static_cast<double>(train.cast<double>().squaredNorm()) / static_cast<double>(train.size());
  const auto scale = static_cast<Scalar>(1.0 / std::sqrt(variance));
  train *= scale;
  test *= scale;
}

struct Setting {
  std::string delay;  // "none", "round robin" or "geometric"
  std::size_t workers = 1;
  Delay distribution;
  std::size_t history = 1;
};

struct Outcome {
  std::vector<double> loss;  // mean over seeds, before training and after each epoch
  double accuracy = 0.0;     // mean test accuracy
  [[nodiscard]] double final() const { return loss.back(); }
};

template <class Rule>
Outcome run(const Mlp& train, const Mlp& test, const Rule& rule, const Setting& s) {
  using Opt = asyncopt::AsyncOptimizer<Scalar, Rule, asyncopt::consistency::Locked,
                                       asyncopt::transport::Simulated>;
  Outcome out{.loss = std::vector<double>(epochs + 1, 0.0)};
  for (const std::uint64_t seed : seeds) {
    const Opt opt(rule, asyncopt::consistency::Locked{},
                  asyncopt::transport::Simulated{
                      .delay = s.distribution, .seed = 1000 + seed, .history = s.history});
    std::vector<Scalar> w = train.initial_parameters(seed);
    const auto report =
        opt.optimize(train, std::span<Scalar>(w),
                     {.workers = 1, .batch_size = batch_size, .epochs = epochs, .seed = seed});
    // A loss above the starting one, or none (the run stopped early), counts as diverged.
    for (std::size_t e = 0; e < out.loss.size(); ++e) {
      const double l =
          e < report.loss.size() ? report.loss[e] : std::numeric_limits<double>::infinity();
      const bool diverged = !std::isfinite(l) || l > report.loss.front();
      out.loss[e] += diverged ? std::numeric_limits<double>::infinity() : l;
    }
    out.accuracy += test.accuracy(std::span<const Scalar>(w));
  }
  const auto count = static_cast<double>(std::size(seeds));
  for (double& l : out.loss) {
    l /= count;
  }
  out.accuracy /= count;
  return out;
}

void write(std::ofstream& csv, const Setting& s, const char* method, double lr, const Outcome& o) {
  if (!csv.is_open()) {
    return;
  }
  for (std::size_t e = 0; e < o.loss.size(); ++e) {
    csv << s.delay << ',' << s.workers << ',' << method << ',' << lr << ',' << e << ',' << o.loss[e]
        << ',' << o.accuracy << '\n';
  }
}

struct Compared {  // the asynchronous methods in one setting
  Outcome asgd;
  Outcome dc;
  Outcome dc_adaptive;
};

// The fraction of the gap between ASGD's loss and sequential SGD's that the better DC-ASGD
// closes: 1 when ASGD diverged and the better DC-ASGD did not (an infinite gap, all but a
// finite part closed), NaN when both diverged or there is no gap, and -inf when only the
// DC-ASGD variants diverged.
double closed(const Compared& c, const Outcome& sgd) {
  const double dc = std::min(c.dc.final(), c.dc_adaptive.final());
  if (!std::isfinite(c.asgd.final())) {
    return std::isfinite(dc) ? 1.0 : std::numeric_limits<double>::quiet_NaN();
  }
  const double gap = c.asgd.final() - sgd.final();
  if (!(gap > 0.0)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return (c.asgd.final() - dc) / gap;
}

std::string loss_text(double loss) {
  if (!std::isfinite(loss)) {
    return "diverged";
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.5f", loss);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  auto data = asyncopt::io::load_fashion_mnist<Scalar>();
  normalise(data.train.images, data.test.images);
  constexpr int classes = asyncopt::io::FashionMnist<Scalar>::classes;
  const asyncopt::objective::MlpShape shape{.hidden = {128},
                                            .activation = asyncopt::objective::Activation::relu};
  const asyncopt::objective::Options options{.l2 = 1e-4, .intercept = true};
  const Mlp train(std::move(data.train.images), std::move(data.train.labels), classes, shape,
                  options);
  const Mlp test(std::move(data.test.images), std::move(data.test.labels), classes, shape, options);
  std::printf(
      "MLP 784-128-10 (ReLU) on mean-subtracted, normalised Fashion-MNIST: %zu training, %zu "
      "test images, %zu parameters; batch %zu, %zu epochs (%zu updates), %zu seeds\n",
      train.num_examples(), test.num_examples(), train.dimension(), batch_size, epochs,
      epochs * ((train.num_examples() + batch_size - 1) / batch_size), std::size(seeds));
  if (csv.is_open()) {
    csv.precision(10);
    csv << "delay,workers,method,lr,epoch,loss,test_accuracy\n";
  }
  namespace update = asyncopt::update;

  // Sequential SGD's learning rate, chosen on sequential SGD alone.
  const Setting sequential{"none", 1, asyncopt::delay::fixed(0), 1};
  std::vector<Outcome> sgd_at;  // [k - lr_low_exponent]
  int best = lr_low_exponent;
  int smallest_diverging = lr_high_exponent + 1;
  for (int k = lr_low_exponent; k <= lr_high_exponent; ++k) {
    const double lr = std::ldexp(1.0, k);
    sgd_at.push_back(run(train, test, update::Sgd{.learning_rate = lr}, sequential));
    const Outcome& o = sgd_at.back();
    write(csv, sequential, "sgd", lr, o);
    std::printf("sequential SGD, lr 2^%-2d: final loss %s, test accuracy %.4f\n", k,
                loss_text(o.final()).c_str(), o.accuracy);
    std::fflush(stdout);
    if (o.final() < sgd_at[static_cast<std::size_t>(best - lr_low_exponent)].final()) {
      best = k;
    }
    if (!std::isfinite(o.final())) {
      smallest_diverging = std::min(smallest_diverging, k);
    }
  }
  std::printf("sequential SGD's learning rate: 2^%d%s\n", best,
              best != lr_low_exponent && best != lr_high_exponent
                  ? ""
                  : " (WARNING: at the edge of the grid)");

  // Every method at sequential SGD's rate (the paper's protocol), then at each smaller rate.
  std::vector<std::string> context;  // M = 8 at the smaller rates
  for (int k = best; k >= lr_low_exponent; --k) {
    const double rate = std::ldexp(1.0, k);
    const Outcome& sgd = sgd_at[static_cast<std::size_t>(k - lr_low_exponent)];
    for (const std::size_t m : {std::size_t{4}, std::size_t{8}}) {
      // Geometric with p = 1 / M has mean M - 1; the ring of 16 M past vectors cuts it with
      // probability (1 - 1/M)^(16 M), under 3e-7.
      const std::vector<Setting> settings = {
          {"round robin", m, asyncopt::delay::fixed(m - 1), m},
          {"geometric", m, asyncopt::delay::geometric(1.0 / static_cast<double>(m)), 16 * m}};
      for (const Setting& s : settings) {
        Compared c;
        c.asgd = run(train, test, update::Sgd{.learning_rate = rate}, s);
        c.dc =
            run(train, test, update::DelayCompensated{.learning_rate = rate, .lambda = lambda}, s);
        c.dc_adaptive = run(
            train, test,
            update::AdaptiveDelayCompensated{
                .learning_rate = rate, .lambda0 = lambda0, .mean_square_decay = mean_square_decay},
            s);
        write(csv, s, "asgd", rate, c.asgd);
        write(csv, s, "dc", rate, c.dc);
        write(csv, s, "dc_adaptive", rate, c.dc_adaptive);
        const double fraction = closed(c, sgd);
        char numbers[256];
        std::snprintf(numbers, sizeof numbers,
                      "final loss: SGD %s, ASGD %s, DC-ASGD-c %s, DC-ASGD-a %s",
                      loss_text(sgd.final()).c_str(), loss_text(c.asgd.final()).c_str(),
                      loss_text(c.dc.final()).c_str(), loss_text(c.dc_adaptive.final()).c_str());
        std::printf(
            "lr 2^%-2d M = %zu, %-11s delays: %s; closes %.3f of the gap; test accuracy SGD "
            "%.4f ASGD %.4f DC-ASGD-c %.4f DC-ASGD-a %.4f\n",
            k, m, s.delay.c_str(), numbers, fraction, sgd.accuracy, c.asgd.accuracy, c.dc.accuracy,
            c.dc_adaptive.accuracy);
        const char* name = s.delay == "geometric" ? "geometric" : "round_robin";
        if (m == 8 && k == best) {
          std::printf(
              "FINDING E2b/dc_closes_gap/M=8/%s: %.3f  [at sequential SGD's lr 2^%d; %s; claim: "
              "closes >= %.2f of the gap]\n",
              name, fraction, k, numbers, gap_goal);
        } else if (m == 8) {
          char line[64];
          std::snprintf(line, sizeof line, "%s 2^%d: %.3f", name, k, fraction);
          context.emplace_back(line);
        }
        std::fflush(stdout);
      }
    }
  }
  std::string joined;
  for (const std::string& c : context) {
    joined += (joined.empty() ? "" : ", ") + c;
  }
  std::printf(
      "FINDING E2b/dc_closes_gap/M=8/smaller_rates: %s  [fraction of the gap closed at each "
      "smaller rate; 1 where ASGD diverged and a DC-ASGD did not, nan where both diverged]\n",
      joined.c_str());
  // The bound (E1): with a delay tau, gradient descent on a quadratic is stable for lr * h <
  // 2 sin(pi / (4 tau + 2)), against 2 without delay.
  const auto shrink = [](std::size_t tau) {
    return std::sin(std::numbers::pi / (4.0 * static_cast<double>(tau) + 2.0));
  };
  std::printf(
      "FINDING E2b/stability_bound: sequential SGD diverges from lr 2^%d on and is best at 2^%d; "
      "a delay of 3 (M = 4) divides the stable rate by %.1f and a delay of 7 (M = 8) by %.1f "
      "(E1's closed form), which puts the edge near 2^%.1f and 2^%.1f\n",
      smallest_diverging, best, 1.0 / shrink(3), 1.0 / shrink(7),
      smallest_diverging + std::log2(shrink(3)), smallest_diverging + std::log2(shrink(7)));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e2b_delay_compensation_mlp: %s\n", e.what());
  return 2;
}
