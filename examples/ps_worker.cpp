// A worker process of a parameter-server job: trains softmax regression on its share of
// Fashion-MNIST against the servers of examples/ps_server, through transport::Zmq.
//
// Rank r of R takes the r-th contiguous slice of the training set; its --threads workers
// have the global ids r * threads ... r * threads + threads - 1. --evaluate only reads the
// servers' parameters and prints the test accuracy.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/softmax.hpp>
#include <asyncopt/zmq/zmq.hpp>

#include "cli.hpp"
#include "dispatch.hpp"

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Softmax = asyncopt::objective::SoftmaxRegression<Matrix>;
// The servers apply their own rule and policy; on the worker's side these only have to pass
// the compile-time checks.
using Optimizer =
    asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree,
                             asyncopt::transport::Zmq>;

struct Settings {
  std::string servers = "tcp://127.0.0.1:5570";
  std::size_t rank = 0;
  std::size_t ranks = 1;
  std::size_t threads = 1;
  std::size_t epochs = 10;
  std::size_t batch_size = 8;
  double l2 = 1e-4;
  std::uint64_t seed = 1;
  long timeout_ms = 30000;
  std::size_t limit = 0;
  bool evaluate = false;
  std::string compress = "none";
  std::string data_dir = asyncopt::io::default_fashion_mnist_dir().string();
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) {
      out.push_back(item);
    }
  }
  return out;
}

}  // namespace

namespace {

int run(int argc, char** argv) {
  Settings s;
  CLI::App app{"asyncopt parameter-server worker: softmax regression on Fashion-MNIST"};
  app.failure_message(examples::cli::failure_message);
  app.add_option("--servers", s.servers, "comma-separated server endpoints")->capture_default_str();
  app.add_option("--rank", s.rank, "this process's rank, 0 .. ranks - 1")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--ranks", s.ranks, "worker processes in the job")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--threads", s.threads, "worker threads in this process")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--epochs", s.epochs, "passes over this process's slice")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--batch-size", s.batch_size, "examples per gradient")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--l2", s.l2, "L2 penalty on the weights")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str();
  app.add_option("--seed", s.seed, "seed of the per-epoch shuffles")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str();
  app.add_option("--timeout-ms", s.timeout_ms, "how long a request waits for its server")
      ->check(examples::cli::positive_integer<long>())
      ->capture_default_str();
  app.add_option("--limit", s.limit, "use only the first N training images (0 = all)")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--compress", s.compress,
                 "compress dense pushes, as the servers' --compress does; " +
                     std::string(examples::dispatch::compression_syntax))
      ->check(examples::dispatch::compression_check())
      ->capture_default_str();
  app.add_flag("--evaluate", s.evaluate, "only print the test accuracy of the servers' model");
  app.add_option("--data-dir", s.data_dir, "directory with the Fashion-MNIST .gz files")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (s.rank >= s.ranks) {
    std::fprintf(stderr, "error: --rank: must be below --ranks (%zu), got '%zu'\n", s.ranks,
                 s.rank);
    return 2;
  }
  // Worker ids are 32-bit, and the largest one is reserved.
  if (s.ranks > (std::numeric_limits<std::uint32_t>::max() - 1) / s.threads) {
    std::fprintf(stderr, "error: --ranks %zu times --threads %zu workers is too many\n", s.ranks,
                 s.threads);
    return 2;
  }

  try {
    auto data = asyncopt::io::load_fashion_mnist<float>(s.data_dir);
    auto rows = data.train.images.rows();
    if (s.limit != 0 && static_cast<Eigen::Index>(s.limit) < rows) {
      rows = static_cast<Eigen::Index>(s.limit);
    }
    const auto first =
        static_cast<Eigen::Index>(s.rank) * rows / static_cast<Eigen::Index>(s.ranks);
    const auto last =
        static_cast<Eigen::Index>(s.rank + 1) * rows / static_cast<Eigen::Index>(s.ranks);
    Matrix images = data.train.images.middleRows(first, last - first);
    Eigen::VectorXi labels = data.train.labels.segment(first, last - first);
    const asyncopt::objective::Options model{.l2 = s.l2, .intercept = true};
    const Softmax train_set(std::move(images), std::move(labels),
                            asyncopt::io::FashionMnist<float>::classes, model);
    const Softmax test_set(std::move(data.test.images), std::move(data.test.labels),
                           asyncopt::io::FashionMnist<float>::classes, model);

    asyncopt::transport::Zmq transport{
        .servers = split(s.servers),
        .first_worker = static_cast<std::uint32_t>(s.rank * s.threads),
        .timeout = std::chrono::milliseconds(s.timeout_ms),
        .compression = examples::dispatch::parse_compression(s.compress)};
    const Optimizer optimizer(asyncopt::update::Sgd{}, asyncopt::consistency::LockFree{},
                              transport);
    std::vector<float> w(train_set.dimension(), 0.0F);
    if (s.evaluate) {
      const auto store = optimizer.attach(w, 1);  // copies the servers' parameters into w
      std::printf("test accuracy: %.4f\n", test_set.accuracy(w));
      return 0;
    }
    std::printf("ps_worker %zu of %zu: %zu training images, %zu threads, servers %s\n", s.rank,
                s.ranks, train_set.num_examples(), s.threads, s.servers.c_str());
    std::fflush(stdout);
    const auto report = optimizer.optimize(
        train_set, std::span<float>(w),
        {.workers = s.threads,
         .batch_size = s.batch_size,
         .epochs = s.epochs,
         .seed = s.seed + s.rank},
        [&](const asyncopt::EpochInfo<float>& e) {
          std::printf("ps_worker %zu: epoch %2zu  loss %.4f  test accuracy %.4f  %.1f s\n", s.rank,
                      e.epoch, e.loss, test_set.accuracy(e.params), e.seconds);
          std::fflush(stdout);
        });
    std::printf("ps_worker %zu: %llu updates in %.2f s (%.0f updates/s), mean staleness %.3f\n",
                s.rank, static_cast<unsigned long long>(report.updates), report.training_seconds,
                report.updates_per_second(), report.mean_staleness());
    examples::cli::print_compression(report);
    return examples::cli::finish(report);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ps_worker %zu: error: %s\n", s.rank, e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // setting up the command line itself failed
    std::fprintf(stderr, "ps_worker: error: %s\n", e.what());
    return 1;
  }
}
