// The general trainer's settings: what its command line sets (train/options.hpp), and the
// defaults that depend on the data source and the rule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <asyncopt/core/options.hpp>

#include "../dispatch.hpp"

#ifndef ASYNCOPT_PLOT_SCRIPT
#define ASYNCOPT_PLOT_SCRIPT "scripts/plot_loss.py"
#endif

namespace examples::train {

struct Settings {
  // Data.
  std::string data = "fashion-mnist";
  std::string path;
  std::string test_path;
  std::string layout = "auto";
  std::optional<std::size_t> examples;  // rcv1-like: 100,000 unless given
  std::optional<std::size_t> features;  // rcv1-like: 47,236 unless given; libsvm: the width
  double holdout = 0.0;
  std::size_t limit = 0;
  std::ptrdiff_t label_column = -1;
  char separator = ',';
  std::optional<double> positive;
  // Model.
  std::string model;
  std::optional<double> l2;
  std::vector<std::size_t> hidden = {128};  // mlp: the hidden layers' widths
  std::string activation = "relu";          // mlp: relu or tanh
  bool intercept = true;
  // Rule.
  std::string rule = "sgd";
  std::optional<double> learning_rate;
  std::optional<double> storm;   // STORM's a: each worker pushes STORM's estimate
  dispatch::RuleSettings rules;  // the library's defaults; resolve_defaults() sets the lr
  // Consistency policy.
  std::string consistency = "lockfree";
  dispatch::PolicySettings policies;  // 64 stripes, staleness 2, period 8
  std::string compress = "none";      // synchronous and local: dispatch::parse_compression
  // Run.
  std::size_t workers = 2;
  std::size_t epochs = 10;
  std::optional<std::size_t> batch_size;
  double max_seconds = 0.0;
  std::uint64_t seed = 1;
  // Output.
  std::string csv = "train_loss.csv";
  std::string plot;
  std::string plot_script = ASYNCOPT_PLOT_SCRIPT;
};

/// Options::storm from --storm.
inline std::optional<asyncopt::Storm> storm_of(const Settings& s) {
  return s.storm ? std::optional<asyncopt::Storm>(asyncopt::Storm{.a = *s.storm}) : std::nullopt;
}

/// Fills in what the command line left to the data source and the rule:
/// - the model: softmax for Fashion-MNIST, least squares for CSV, logistic otherwise;
/// - the batch: 1 for the sparse sources (Hogwild!), 8 for the dense ones;
/// - the learning rate: 0.001 for Adam, whose steps are normalised; else 0.5 for the sparse
///   sources (unit-norm rows), 0.01 for the dense ones;
/// - L2: 0 for the sparse sources, where a sparse step penalises only the weights it touches
///   (the Hogwild! convention), so rare features' weights escape a penalty that the reported
///   loss counts in full; 1e-4 for the dense ones.
inline void resolve_defaults(Settings& s) {
  const bool sparse = s.data == "libsvm" || s.data == "rcv1-like";
  if (s.model.empty()) {
    s.model = s.data == "fashion-mnist" ? "softmax"
              : s.data == "csv"         ? "least-squares"
                                        : "logistic";
  }
  if (!s.batch_size) {
    s.batch_size = sparse ? 1 : 8;
  }
  if (!s.learning_rate) {
    s.learning_rate = s.rule == "adam" ? 1e-3 : sparse ? 0.5 : 0.01;
  }
  s.rules.learning_rate = *s.learning_rate;
  if (!s.l2) {
    s.l2 = sparse ? 0.0 : 1e-4;
  }
  s.policies.compression = dispatch::parse_compression(s.compress);
  if (s.policies.compression && s.consistency != "synchronous" && s.consistency != "local") {
    throw std::invalid_argument(
        "--compress applies to the messages of rounds: use it with "
        "--consistency synchronous or local, not " +
        s.consistency);
  }
}

}  // namespace examples::train
