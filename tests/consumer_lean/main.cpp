// Trains a least-squares fit written on std::span through asyncopt::asyncopt alone: the
// optimizer, the shared-memory transport, a rule and a policy, and no Eigen or zlib. Exit
// status 0 means the lean target works.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <span>
#include <vector>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/optimizer.hpp>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/update/sgd.hpp>

#include "no_eigen_no_zlib.hpp"

std::size_t umbrella_optimizers();

namespace {

// y = 2 x - 1 at 64 points of [-1, 1]; the parameters are (slope, intercept).
class Line {
 public:
  Line() {
    for (std::size_t i = 0; i < 64; ++i) {
      const double x = -1.0 + 2.0 * static_cast<double>(i) / 63.0;
      x_.push_back(x);
      y_.push_back(2.0 * x - 1.0);
    }
  }
  [[nodiscard]] std::size_t dimension() const { return 2; }
  [[nodiscard]] std::size_t num_examples() const { return x_.size(); }
  [[nodiscard]] double loss(std::span<const double> w) const {
    double sum = 0.0;
    for (std::size_t i = 0; i < x_.size(); ++i) {
      const double r = w[0] * x_[i] + w[1] - y_[i];
      sum += 0.5 * r * r;
    }
    return sum / static_cast<double>(x_.size());
  }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    grad[0] = 0.0;
    grad[1] = 0.0;
    for (const std::size_t i : batch) {
      const double r = w[0] * x_[i] + w[1] - y_[i];
      grad[0] += r * x_[i];
      grad[1] += r;
    }
    grad[0] /= static_cast<double>(batch.size());
    grad[1] /= static_cast<double>(batch.size());
  }

 private:
  std::vector<double> x_;
  std::vector<double> y_;
};

}  // namespace

// An exception escaping main() ends the program with a failing status too.
int main() {
  // Three arguments: the transport defaults to transport::SharedMemory.
  const asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, asyncopt::consistency::Locked>
      optimizer(asyncopt::update::Sgd{.learning_rate = 0.2});
  std::vector<double> w(2, 0.0);
  const asyncopt::Report report = optimizer.optimize(
      Line{}, std::span<double>(w), {.workers = 2, .batch_size = 4, .epochs = 60, .seed = 3});
  std::printf("w = (%.5f, %.5f) after %llu updates, loss %.3g\n", w[0], w[1],
              static_cast<unsigned long long>(report.updates), report.final_loss());
  if (umbrella_optimizers() != 2) {
    std::printf("FAILED: the umbrella's optimizer types\n");
    return 1;
  }
  if (!(std::abs(w[0] - 2.0) < 1e-3 && std::abs(w[1] + 1.0) < 1e-3)) {
    std::printf("FAILED: the line y = 2 x - 1 was not recovered\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
