// The general trainer's command line: every option, its check and its --help text, in the
// groups --help shows.
#pragma once

#include <cstddef>
#include <cstdint>

#include <CLI/CLI.hpp>

#include "../cli.hpp"
#include "../dispatch.hpp"
#include "settings.hpp"

namespace examples::train {

/// Adds the trainer's options to `app`, bound to the fields of `s`, with --consistency
/// choosing among `policies` (and only the settings of those policies offered).
template <class... Policies>
void add_options(CLI::App& app, Settings& s,
                 const dispatch::Table<dispatch::PolicySettings, Policies...>& policies) {
  app.add_option("--data", s.data,
                 "fashion-mnist (IDX files, dense), libsvm (sparse), csv (dense) or rcv1-like "
                 "(generated, sparse)")
      ->check(CLI::IsMember({"fashion-mnist", "libsvm", "csv", "rcv1-like"}))
      ->capture_default_str()
      ->group("Data");
  app.add_option("--path", s.path,
                 "the training file (libsvm, csv; gzip or not), or the directory of the four "
                 "MNIST-layout .gz files (fashion-mnist; default $ASYNCOPT_FASHION_MNIST_DIR or "
                 "/usr/share/datasets/fashion-mnist)")
      ->group("Data");
  app.add_option("--test-path", s.test_path, "a test file in the same format (libsvm, csv)")
      ->group("Data");
  app.add_option("--holdout", s.holdout,
                 "hold out this fraction of the examples (the last rows) as the test set")
      ->check(cli::number_in(0.0, 0.9))
      ->capture_default_str()
      ->group("Data");
  app.add_option("--limit", s.limit, "train on the first N training examples only (0 = all)")
      ->check(cli::non_negative_integer<std::size_t>())
      ->capture_default_str()
      ->group("Data");
  app.add_option("--examples", s.examples, "rows of the rcv1-like data (default 100000)")
      ->check(cli::positive_integer<std::size_t>())
      ->group("Data");
  app.add_option("--features", s.features,
                 "columns of the rcv1-like data (default 47236), or of a libsvm file (default: "
                 "its largest index; a larger index is then an error)")
      ->check(cli::positive_integer<std::size_t>())
      ->group("Data");
  app.add_option("--label-column", s.label_column,
                 "the CSV label column, 0-based; negative counts from the end")
      ->check(cli::integer<std::ptrdiff_t>())
      ->capture_default_str()
      ->group("Data");
  app.add_option("--separator", s.separator, "the CSV field separator")
      ->capture_default_str()
      ->group("Data");
  app.add_option("--layout", s.layout,
                 "auto (as the source: libsvm and rcv1-like sparse, the others dense), dense or "
                 "sparse")
      ->check(CLI::IsMember({"auto", "dense", "sparse"}))
      ->capture_default_str()
      ->group("Data");

  app.add_option("--model", s.model,
                 "softmax, logistic, least-squares or mlp (a network of --hidden layers, "
                 "dense data; default: softmax for fashion-mnist, least-squares for csv, "
                 "logistic otherwise)")
      ->check(CLI::IsMember({"softmax", "logistic", "least-squares", "mlp"}))
      ->group("Model");
  app.add_option("--hidden", s.hidden, "mlp: the widths of its one or two hidden layers")
      ->check(cli::positive_integer<std::size_t>())
      ->expected(1, 2)
      ->capture_default_str()
      ->group("Model");
  app.add_option("--activation", s.activation, "mlp: relu or tanh")
      ->check(CLI::IsMember({"relu", "tanh"}))
      ->capture_default_str()
      ->group("Model");
  app.add_option("--positive", s.positive,
                 "logistic: the label that counts as 1 (default: the larger of the two)")
      ->group("Model");
  app.add_option("--l2", s.l2,
                 "L2 penalty on the weights (default: 0 for libsvm and rcv1-like, whose sparse "
                 "steps penalise only the weights they touch; 1e-4 for the others)")
      ->check(cli::non_negative_number())
      ->group("Model");
  app.add_flag("!--no-intercept", s.intercept, "fit no bias")->group("Model");

  dispatch::add_choice(app, "--rule", s.rule, "update rule: ", dispatch::rules)
      ->group("Update rule");
  app.add_option("--lr", s.learning_rate,
                 "learning rate (default: 0.001 for adam, else 0.5 for libsvm and rcv1-like, "
                 "0.01 for the others)")
      ->check(cli::positive_number())
      ->group("Update rule");
  app.add_option("--momentum", s.rules.momentum, "beta (momentum) or mu (heavy-ball, nesterov)")
      ->check(cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--lambda", s.rules.lambda, "lambda of dc")
      ->check(cli::non_negative_number())
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--lambda0", s.rules.lambda0, "lambda0 of dc-adaptive")
      ->check(cli::non_negative_number())
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--mean-square-decay", s.rules.mean_square_decay,
                 "decay of dc-adaptive's mean square")
      ->check(cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--beta1", s.rules.beta1, "adam's beta1")
      ->check(cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--beta2", s.rules.beta2, "adam's beta2")
      ->check(cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--epsilon", s.rules.epsilon, "adam's epsilon")
      ->check(cli::positive_number())
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--storm", s.storm,
                 "each worker pushes STORM's gradient estimate, with weight A in (0, 1] on the "
                 "fresh gradient (two gradients per step; default: off)")
      ->check(cli::number_in(0.0, 1.0, true, false))
      ->group("Update rule");

  dispatch::add_choice(app, "--consistency", s.consistency, "", policies)->group("Consistency");
  if (policies.offers("locked")) {
    app.add_option("--stripes", s.policies.stripes, "locked: lock stripes (1 = one lock)")
        ->check(cli::positive_integer<std::size_t>())
        ->capture_default_str()
        ->group("Consistency");
  }
  if (policies.offers("ssp")) {
    app.add_option("--staleness", s.policies.staleness, "ssp: clocks a worker may run ahead")
        ->check(cli::non_negative_integer<std::uint64_t>())
        ->capture_default_str()
        ->group("Consistency");
  }
  if (policies.offers("local")) {
    app.add_option("--period", s.policies.period, "local, scaffold: steps between rounds")
        ->check(cli::positive_integer<std::uint64_t>())
        ->capture_default_str()
        ->group("Consistency");
  }
  if (policies.offers("scaffold")) {
    app.add_option("--global-lr", s.policies.global_learning_rate,
                   "scaffold: the step of the shared parameters along the mean model delta")
        ->check(cli::positive_number())
        ->capture_default_str()
        ->group("Consistency");
  }
  if (policies.offers("synchronous") || policies.offers("local")) {
    app.add_option("--compress", s.compress,
                   "synchronous and local: compress each worker's message; " +
                       std::string(dispatch::compression_syntax))
        ->check(dispatch::compression_check())
        ->capture_default_str()
        ->group("Consistency");
  }

  app.add_option("--workers", s.workers, "worker threads")
      ->check(cli::positive_integer<std::size_t>())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--epochs", s.epochs, "passes over the training set")
      ->check(cli::positive_integer<std::size_t>())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--batch-size", s.batch_size,
                 "examples per gradient (default: 1 for libsvm and rcv1-like, 8 for the others)")
      ->check(cli::positive_integer<std::size_t>())
      ->group("Run");
  app.add_option("--max-seconds", s.max_seconds, "stop after this much training time (0 = none)")
      ->check(cli::non_negative_number())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--seed", s.seed, "seed of the shuffles and of the rcv1-like data")
      ->check(cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str()
      ->group("Run");

  app.add_option("--csv", s.csv,
                 "where to write the loss curve: epoch, seconds, loss, accuracy (classifiers), "
                 "updates/s, mean staleness")
      ->capture_default_str()
      ->group("Output");
  app.add_option("--plot", s.plot,
                 "also plot loss and accuracy against time into this PNG (needs python3 with "
                 "matplotlib)")
      ->group("Output");
  app.add_option("--plot-script", s.plot_script, "the plotting script")
      ->capture_default_str()
      ->group("Output");
}

/// The trainer's options, with every consistency policy.
inline void add_options(CLI::App& app, Settings& s) {
  add_options(app, s, dispatch::policies);
}

}  // namespace examples::train
