// The general trainer: a linear model (softmax, logistic or least squares) on Fashion-MNIST,
// a LIBSVM or CSV file, or generated RCV1-like data, dense or sparse, trained by asyncopt's
// worker threads with any update rule and consistency policy; writes the loss curve as CSV
// and, where python3 with matplotlib is at hand, as a PNG plot.
//
// Its pieces, under examples/train/: the settings and their defaults (settings.hpp), the
// command line (options.hpp), the data (data.hpp), the type-erased model (model.hpp) and its
// construction (build.hpp), the printed and written results (report.hpp) and the plot
// (plot.hpp). The rule and the policy are picked by name in examples/dispatch.hpp.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "dispatch.hpp"
#include "train/build.hpp"
#include "train/data.hpp"
#include "train/model.hpp"
#include "train/options.hpp"
#include "train/plot.hpp"
#include "train/report.hpp"
#include "train/settings.hpp"

namespace examples::train {
namespace {

int run(Settings& s) {
  resolve_defaults(s);
  const auto start = std::chrono::steady_clock::now();
  Split split = load(s);
  prepare(s, split);
  const DataSummary data = summarize(split);
  const Models models = build(s, std::move(split));
  print_setup(s, data, models,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  std::vector<Scalar> w = models.train->initial_parameters(s.seed);
  LossCurve curve(s, models);
  curve.start(models.train->loss(w), w);
  const EpochCallback callback = [&curve](const asyncopt::EpochInfo<Scalar>& e) { curve(e); };
  const Run job{.model = *models.train,
                .w = w,
                .options = {.workers = s.workers,
                            .batch_size = *s.batch_size,
                            .epochs = s.epochs,
                            .max_seconds = s.max_seconds,
                            .seed = s.seed,
                            .storm = storm_of(s)},
                .callback = callback};
  const asyncopt::Report report =
      dispatch::with_policy(s.consistency, s.policies, [&](const auto& consistency) {
        return dispatch::with_rule(
            s.rule, s.rules, [&](const auto& rule) { return optimize(rule, consistency, job); });
      });
  curve.close();

  print_result(s, models, report, w);
  if (!s.plot.empty()) {
    plot(s, s.model + " on " + data.name + ": " + s.rule + ", " + s.consistency + ", " +
                std::to_string(s.workers) + " workers");
  }
  return cli::finish(report);
}

}  // namespace
}  // namespace examples::train

int main(int argc, char** argv) {
  examples::train::Settings s;
  CLI::App app{
      "Trains a linear model with asyncopt's worker threads on Fashion-MNIST, a LIBSVM or CSV "
      "file, or generated RCV1-like data; writes the loss curve as CSV (and PNG with --plot)"};
  app.get_formatter()->column_width(32);
  app.failure_message(examples::cli::failure_message);
  examples::train::add_options(app, s);
  CLI11_PARSE(app, argc, argv);

  try {
    return examples::train::run(s);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
