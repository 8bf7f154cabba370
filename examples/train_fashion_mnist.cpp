// The main job: softmax regression on Fashion-MNIST, trained asynchronously by worker
// threads sharing the parameters in memory.
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/softmax.hpp>

#include "cli.hpp"
#include "dispatch.hpp"

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Softmax = asyncopt::objective::SoftmaxRegression<Matrix>;

struct Settings {
  std::string rule = "sgd";
  examples::dispatch::RuleSettings rules;  // learning rate 0.01, momentum 0.9, lambda 0.04
  std::string consistency = "locked";
  examples::dispatch::PolicySettings policies;  // 64 stripes, staleness 2, period 8
  std::size_t workers = 2;
  std::size_t epochs = 10;
  std::size_t batch_size = 8;
  double l2 = 1e-4;
  std::uint64_t seed = 1;
  std::size_t limit = 0;
  std::string data_dir = asyncopt::io::default_fashion_mnist_dir().string();
  std::string csv = "fashion_mnist_loss.csv";
};

template <class Rule, class Consistency>
int train(const Settings& s, const Rule& rule, const Consistency& consistency,
          const Softmax& train_set, const Softmax& test_set) {
  const asyncopt::AsyncOptimizer<float, Rule, Consistency> optimizer(rule, consistency);
  std::vector<float> w(train_set.dimension(), 0.0f);

  std::ofstream csv(s.csv);
  if (!csv) {
    std::fprintf(stderr, "error: cannot write '%s'\n", s.csv.c_str());
    return 1;
  }
  csv << "epoch,seconds,loss,test_accuracy,updates_per_second,mean_staleness\n";
  std::printf("epoch %2d  loss %.4f  test accuracy %.4f\n", 0,
              train_set.loss(std::span<const float>(w)), test_set.accuracy(w));
  double last_seconds = 0.0;
  std::uint64_t last_updates = 0;

  const auto report = optimizer.optimize(
      train_set, std::span<float>(w),
      {.workers = s.workers, .batch_size = s.batch_size, .epochs = s.epochs, .seed = s.seed},
      [&](const asyncopt::EpochInfo<float>& e) {
        const double accuracy = test_set.accuracy(e.params);
        const double rate = static_cast<double>(e.updates - last_updates) /
                            std::max(1e-9, e.seconds - last_seconds);
        last_seconds = e.seconds;
        last_updates = e.updates;
        std::printf(
            "epoch %2zu  loss %.4f  test accuracy %.4f  updates/s %8.0f  mean staleness %.3f\n",
            e.epoch, e.loss, accuracy, rate, e.mean_staleness);
        std::fflush(stdout);
        csv << e.epoch << ',' << e.seconds << ',' << e.loss << ',' << accuracy << ',' << rate << ','
            << e.mean_staleness << '\n';
      });

  std::printf(
      "%llu updates in %.2f s (%.0f updates/s), mean staleness %.3f, max %llu, "
      "rejected %llu; loss curve in %s\n",
      static_cast<unsigned long long>(report.updates), report.training_seconds,
      report.updates_per_second(), report.mean_staleness(),
      static_cast<unsigned long long>(report.max_staleness()),
      static_cast<unsigned long long>(report.rejected), s.csv.c_str());
  std::printf("test accuracy: %.4f\n", test_set.accuracy(w));
  return examples::cli::finish(report);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"Softmax regression on Fashion-MNIST, trained asynchronously with asyncopt"};
  app.failure_message(examples::cli::failure_message);
  namespace dispatch = examples::dispatch;
  dispatch::add_choice(app, "--rule", s.rule, "update rule: ", dispatch::rules);
  app.add_option("--momentum", s.rules.momentum, "beta (momentum) or mu (heavy-ball, nesterov)")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str();
  app.add_option("--lambda", s.rules.lambda, "lambda of the delay-compensated rule")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str();
  dispatch::add_choice(app, "--consistency", s.consistency,
                       "consistency policy: ", dispatch::policies);
  app.add_option("--staleness", s.policies.staleness,
                 "clocks a worker may run ahead, for --consistency ssp")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str();
  app.add_option("--period", s.policies.period,
                 "local steps between averages, for --consistency local")
      ->check(examples::cli::positive_integer<std::uint64_t>())
      ->capture_default_str();
  app.add_option("--stripes", s.policies.stripes,
                 "lock stripes for --consistency locked (1 = one lock)")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--workers", s.workers, "worker threads")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--epochs", s.epochs, "passes over the training set")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--batch-size", s.batch_size, "examples per gradient")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--lr", s.rules.learning_rate, "learning rate")
      ->check(examples::cli::positive_number())
      ->capture_default_str();
  app.add_option("--l2", s.l2, "L2 penalty on the weights")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str();
  app.add_option("--seed", s.seed, "seed of the per-epoch shuffles")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str();
  app.add_option("--limit", s.limit, "use only the first N training images (0 = all)")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--data-dir", s.data_dir, "directory with the Fashion-MNIST .gz files")
      ->capture_default_str();
  app.add_option("--csv", s.csv, "where to write the loss curve")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const auto start = std::chrono::steady_clock::now();
    auto data = asyncopt::io::load_fashion_mnist<float>(s.data_dir);
    if (s.limit != 0 && s.limit < static_cast<std::size_t>(data.train.images.rows())) {
      const auto rows = static_cast<Eigen::Index>(s.limit);
      data.train.images.conservativeResize(rows, Eigen::NoChange);
      data.train.labels.conservativeResize(rows);
    }
    const asyncopt::objective::Options model{.l2 = s.l2, .intercept = true};
    const Softmax train_set(std::move(data.train.images), std::move(data.train.labels),
                            asyncopt::io::FashionMnist<float>::classes, model);
    const Softmax test_set(std::move(data.test.images), std::move(data.test.labels),
                           asyncopt::io::FashionMnist<float>::classes, model);
    std::printf(
        "Fashion-MNIST: %zu training and %zu test images, %zu parameters; "
        "%zu workers, rule %s, consistency %s, loaded in %.2f s\n",
        train_set.num_examples(), test_set.num_examples(), train_set.dimension(), s.workers,
        s.rule.c_str(), s.consistency.c_str(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return dispatch::with_policy(s.consistency, s.policies, [&](const auto& consistency) {
      return dispatch::with_rule(s.rule, s.rules, [&](const auto& rule) {
        return train(s, rule, consistency, train_set, test_set);
      });
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
