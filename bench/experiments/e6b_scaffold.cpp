// E6b: SCAFFOLD against local SGD on workers whose data differ.
//
// Karimireddy, Kale, Mohri, Reddi, Stich and Suresh ("SCAFFOLD: Stochastic Controlled
// Averaging for Federated Learning", ICML 2020) show that local SGD (FedAvg) slows down when
// the workers' data differ, its replicas drifting towards their own optima between averages,
// and that control variates remove the drift: SCAFFOLD needs no more rounds than local SGD,
// and far fewer when the data are heterogeneous. Their experiments sort EMNIST by label and
// shuffle a given fraction of it ("similarity" 0%, 10%, 100%). This program does the same on
// Fashion-MNIST: the 60,000 training images sorted by label, a fraction s of them shuffled
// across the 4 workers' contiguous shards, softmax regression, each worker stepping through
// its own shard in batches of 16 with 8 local steps (K) between two rounds, and counts the
// rounds each method needs to reach 80% test accuracy (10,000 test images, checked every 5
// rounds), at most 600. Both methods take their best learning rate of 0.025 .. 0.8 (factors
// of 2).
//
// Usage: e6b_scaffold [CSV]. Prints CHECK lines; exits 1 if one fails.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/objective/softmax.hpp>

#include "csv_argument.hpp"

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Softmax = asyncopt::objective::SoftmaxRegression<Matrix>;

constexpr std::size_t workers = 4;
constexpr std::size_t batch = 16;
constexpr std::uint64_t local_steps = 8;
constexpr std::size_t max_rounds = 600;
constexpr std::size_t check_every = 5;
constexpr double target = 0.80;

// Each worker's examples: the training set sorted by label, then a fraction `shuffled` of
// the positions exchanged at random, cut into contiguous shards.
std::vector<std::vector<std::size_t>> shards(const Eigen::VectorXi& labels, double shuffled) {
  std::vector<std::size_t> order(static_cast<std::size_t>(labels.size()));
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return labels[static_cast<Eigen::Index>(a)] < labels[static_cast<Eigen::Index>(b)];
  });
  std::mt19937_64 rng(11);
  std::vector<std::size_t> picked;
  std::bernoulli_distribution pick(shuffled);
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (pick(rng)) {
      picked.push_back(i);
    }
  }
  std::vector<std::size_t> moved(picked.size());
  for (std::size_t k = 0; k < picked.size(); ++k) {
    moved[k] = order[picked[k]];
  }
  std::shuffle(moved.begin(), moved.end(), rng);
  for (std::size_t k = 0; k < picked.size(); ++k) {
    order[picked[k]] = moved[k];
  }
  std::vector<std::vector<std::size_t>> out(workers);
  for (std::size_t k = 0; k < workers; ++k) {
    out[k].assign(order.begin() + static_cast<std::ptrdiff_t>(k * order.size() / workers),
                  order.begin() + static_cast<std::ptrdiff_t>((k + 1) * order.size() / workers));
    std::shuffle(out[k].begin(), out[k].end(), rng);  // each worker's own order
  }
  return out;
}

struct Run {
  std::size_t rounds = 0;                                // to the target; 0 when not reached
  std::vector<std::pair<std::size_t, double>> accuracy;  // (round, test accuracy)
};

// Rounds of `Policy` from zero; every check_every rounds the workers stop, the test
// accuracy of the shared parameters is measured, and they go on.
template <class Policy>
Run train(const Softmax& f, const Softmax& test, const std::vector<std::vector<std::size_t>>& data,
          const Policy& policy, double lr) {
  using Opt = asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy>;
  const Opt opt(asyncopt::update::Sgd{.learning_rate = lr}, policy);
  std::vector<float> w(f.dimension(), 0.0F);
  auto store = opt.attach(std::span<float>(w), workers);
  std::vector<typename decltype(store)::element_type::Worker> handles;
  for (std::size_t k = 0; k < workers; ++k) {
    handles.push_back(store->worker(k));
  }
  std::vector<std::size_t> next(workers, 0);
  Run run;
  for (std::size_t done = 0; done < max_rounds; done += check_every) {
    {
      std::vector<std::jthread> threads;
      for (std::size_t k = 0; k < workers; ++k) {
        threads.emplace_back([&, k] {
          std::vector<float> x(f.dimension());
          std::vector<float> g(f.dimension());
          for (std::uint64_t t = 0; t < check_every * local_steps; ++t) {
            const std::vector<std::size_t>& mine = data[k];
            if (next[k] + batch > mine.size()) {
              next[k] = 0;
            }
            handles[k].pull(x);
            f.gradient(x, std::span<const std::size_t>(mine.data() + next[k], batch), g);
            next[k] += batch;
            handles[k].push(std::span<const float>(g));
            handles[k].clock();
          }
        });
      }
    }
    const double accuracy = test.accuracy(w);
    run.accuracy.emplace_back(done + check_every, accuracy);
    if (accuracy >= target) {
      run.rounds = done + check_every;
      break;
    }
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) try {
  std::ofstream csv = asyncopt::experiments::open_csv(argc, argv);
  auto data = asyncopt::io::load_fashion_mnist<float>();
  const Eigen::VectorXi labels = data.train.labels;
  const Softmax f(std::move(data.train.images), std::move(data.train.labels),
                  asyncopt::io::FashionMnist<float>::classes, {.l2 = 1e-4, .intercept = true});
  const Softmax test(std::move(data.test.images), std::move(data.test.labels),
                     asyncopt::io::FashionMnist<float>::classes, {.l2 = 1e-4, .intercept = true});
  std::printf(
      "softmax regression on Fashion-MNIST sorted by label, %zu workers, batch %zu, %llu local "
      "steps per round; rounds to %.0f%% test accuracy (checked every %zu), at most %zu\n",
      workers, batch, static_cast<unsigned long long>(local_steps), 100 * target, check_every,
      max_rounds);
  if (csv.is_open()) {
    csv << "similarity,method,learning_rate,round,test_accuracy\n";
  }
  const std::vector<double> rates = {0.025, 0.05, 0.1, 0.2, 0.4, 0.8};
  auto rounds_or_cap = [](std::size_t r) { return r == 0 ? max_rounds + check_every : r; };
  auto text = [](std::size_t r) {
    return r == 0 ? "not within " + std::to_string(max_rounds) : std::to_string(r);
  };
  bool pass = true;
  std::vector<double> gaps;
  for (const double similarity : {0.0, 0.1, 1.0}) {
    const auto split = shards(labels, similarity);
    std::size_t best[2] = {0, 0};
    double best_lr[2] = {0.0, 0.0};
    for (int method = 0; method < 2; ++method) {
      for (const double lr : rates) {
        const Run run =
            method == 0
                ? train(f, test, split, asyncopt::consistency::LocalSgd{.period = local_steps}, lr)
                : train(f, test, split, asyncopt::consistency::Scaffold{.period = local_steps}, lr);
        const char* name = method == 0 ? "local SGD" : "SCAFFOLD";
        std::printf("similarity %3.0f%%, %-9s lr %.3g: %s rounds (last accuracy %.4f)\n",
                    100 * similarity, name, lr, text(run.rounds).c_str(),
                    run.accuracy.back().second);
        std::fflush(stdout);
        if (csv.is_open()) {
          for (const auto& [round, accuracy] : run.accuracy) {
            csv << similarity << ',' << name << ',' << lr << ',' << round << ',' << accuracy
                << '\n';
          }
        }
        if (best_lr[method] == 0.0 || rounds_or_cap(run.rounds) < rounds_or_cap(best[method])) {
          best[method] = run.rounds;
          best_lr[method] = lr;
        }
      }
    }
    const double local = static_cast<double>(rounds_or_cap(best[0]));
    const double scaffold = static_cast<double>(rounds_or_cap(best[1]));
    gaps.push_back(local - scaffold);
    std::printf("similarity %3.0f%%: local SGD %s rounds (lr %.3g), SCAFFOLD %s rounds (lr %.3g)\n",
                100 * similarity, text(best[0]).c_str(), best_lr[0], text(best[1]).c_str(),
                best_lr[1]);
    if (similarity == 0.0) {
      const bool ok = scaffold <= local;
      pass = pass && ok;
      std::printf(
          "CHECK E6b/rounds_scaffold_vs_local_sgd/similarity=0%%: %.3f (goal <= 1) %s  "
          "[SCAFFOLD %s, local SGD %s]\n",
          scaffold / local, ok ? "PASS" : "FAIL", text(best[1]).c_str(), text(best[0]).c_str());
    }
  }
  const bool shrinks = gaps[0] >= gaps[1] && gaps[1] >= gaps[2];
  pass = pass && shrinks;
  std::printf(
      "CHECK E6b/gap_shrinks_as_data_become_iid: local SGD's extra rounds %.0f, %.0f, %.0f at "
      "0%%, 10%%, 100%% (goal: not increasing) %s\n",
      gaps[0], gaps[1], gaps[2], shrinks ? "PASS" : "FAIL");
  return pass ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "e6b_scaffold: %s\n", e.what());
  return 2;
}
