// The general trainer across the processes of an MPI job: the same data, models, rules and
// command line as examples/train (examples/train/), with the MPI transport and the round
// policies: synchronous SGD, local SGD and SCAFFOLD. Every process loads the whole data set
// and runs --workers threads on its shard; each round (synchronous) or every --period steps
// (local, scaffold) the processes all-reduce once and apply the same update, so their
// parameters stay equal bit for bit. Process 0 prints, writes the loss curve and plots it.
//
//   mpirun -np 4 build/release/examples/mpi_train --consistency local --period 8
//
// Bad input stops every process with one error: before training, the processes agree on
// whether the setup worked on all of them, so none is left waiting for another.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include <asyncopt/mpi/mpi.hpp>

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

/// This process's place in MPI_COMM_WORLD.
struct Place {
  int rank = 0;
  int size = 1;
};

Place place_in_world() {
  Place place;
  MPI_Comm_rank(MPI_COMM_WORLD, &place.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &place.size);
  return place;
}

/// "error: <what>" on stderr, naming this process unless it is process 0.
void print_error(const Place& place, const char* what) {
  std::fflush(stdout);
  if (place.rank != 0) {
    std::fprintf(stderr, "error: process %d: %s\n", place.rank, what);
  } else {
    std::fprintf(stderr, "error: %s\n", what);
  }
}

/// Thrown on every process when a step before training failed on one of them, which has
/// printed why.
struct SetupFailed {};

/// Runs `step` on this process, then agrees with the others on whether it worked on all of
/// them: where it threw anywhere, the lowest process on which it did prints its error and
/// every process throws SetupFailed. So a bad option, a missing file or an unwritable --csv
/// ends every process with one error line, before any of them waits in a collective.
template <class Step>
void on_every_process(const Place& place, Step&& step) {
  std::string error;
  try {
    step();
  } catch (const std::exception& e) {
    error = e.what();
  }
  int first = error.empty() ? place.size : place.rank;
  MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == place.size) {
    return;
  }
  if (first == place.rank) {
    print_error(place, error.c_str());
  }
  throw SetupFailed{};
}

int train(Settings& s, const Place& place) {
  const bool printer = place.rank == 0;
  const auto start = std::chrono::steady_clock::now();
  DataSummary data;
  Models models;
  std::optional<LossCurve> curve;
  asyncopt::Options options;
  on_every_process(place, [&] {
    resolve_defaults(s);
    options = {.workers = s.workers,
               .batch_size = *s.batch_size,
               .epochs = s.epochs,
               .max_seconds = s.max_seconds,
               .seed = s.seed,
               .storm = storm_of(s)};
    options.validate();
    dispatch::with_rule(s.rule, s.rules, [](const auto& rule) {
      asyncopt::update::validate(rule, asyncopt::Precision::of<Scalar>());
    });
    dispatch::round_policies.with(s.consistency, s.policies,
                                  [](const auto& consistency) { consistency.validate(); });
    Split split = load(s);
    prepare(s, split);
    data = summarize(split);
    models = build(s, std::move(split));
    const std::size_t examples = models.train->num_examples();
    if (s.workers > examples) {
      throw std::invalid_argument("--workers " + std::to_string(s.workers) + " is more than the " +
                                  std::to_string(examples) + " training examples");
    }
    if (printer) {
      curve.emplace(s, models, LastColumn::collective_bytes);
    }
  });
  if (printer) {
    print_setup(s, data, models,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                static_cast<std::size_t>(place.size));
  }

  // Training: every process runs the same epochs and calls the callback after each. An
  // error from here on may be one process's alone, while the others wait for it in a
  // collective: it ends the whole job (MPI_Abort).
  std::vector<Scalar> w = models.train->initial_parameters(s.seed);
  if (curve) {
    curve->start(models.train->loss(w), w);
  }
  const asyncopt::transport::Mpi transport;
  std::uint64_t bytes_before = 0;
  const EpochCallback callback = [&](const asyncopt::EpochInfo<Scalar>& e) {
    if (curve) {
      (*curve)(e, e.collective_bytes - bytes_before);
    }
    bytes_before = e.collective_bytes;
  };
  const Run job{.model = *models.train, .w = w, .options = options, .callback = callback};
  const asyncopt::Report report =
      dispatch::round_policies.with(s.consistency, s.policies, [&](const auto& consistency) {
        return dispatch::with_rule(s.rule, s.rules, [&](const auto& rule) {
          return optimize(rule, consistency, job, transport);
        });
      });

  // The Report is the job's, and every process stopped after the same epoch: process 0's
  // verdict is every process's exit status.
  int status = 0;
  if (curve) {
    curve->close();
    const double seconds = report.training_seconds;
    std::printf(
        "%llu updates in %.2f s (%.0f updates/s, %.0f examples/s); all-reduced %.2f MB in "
        "%.2f s (summed over %d process%s); loss curve in %s\n",
        static_cast<unsigned long long>(report.updates), seconds, report.updates_per_second(),
        seconds > 0.0 ? static_cast<double>(report.examples) / seconds : 0.0,
        static_cast<double>(report.collective_bytes) / 1e6, report.collective_seconds, place.size,
        place.size == 1 ? "" : "es", s.csv.c_str());
    if (!s.plot.empty()) {
      plot(s, s.model + " on " + data.name + ": " + s.rule + ", " + s.consistency + ", " +
                  std::to_string(place.size) + " processes x " + std::to_string(s.workers) +
                  " workers");
    }
    cli::print_compression(report);
    status = cli::finish(report);
    std::printf("final loss: %.4e\n", report.final_loss());
    if (models.classes != 0) {
      std::printf("%s accuracy: %.4f\n", models.scored_name(),
                  models.scored().accuracy(w).value_or(0.0));
    }
    std::fflush(stdout);
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return status;
}

int run(int argc, char** argv) {
  const Place place = place_in_world();
  Settings s;
  s.consistency = "synchronous";
  s.csv = "mpi_train_loss.csv";
  CLI::App app{
      "Trains a linear model or an MLP across the processes of an MPI job (start it with mpirun or "
      "srun): every process loads the same data and runs --workers threads, and the processes "
      "all-reduce once per round (synchronous) or every --period steps (local, scaffold). "
      "Process 0 "
      "prints and writes the loss curve."};
  app.get_formatter()->column_width(32);
  app.failure_message(cli::failure_message);
  add_options(app, s, dispatch::round_policies);
  app.get_option("--workers")->description("worker threads per process");
  app.get_option("--csv")->description(
      "where process 0 writes the loss curve: epoch, seconds, loss, accuracy (classifiers), "
      "updates/s, bytes all-reduced in the epoch (summed over the processes)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every process parses the same arguments and exits alike; process 0 speaks.
    std::ostream silent(nullptr);
    return place.rank == 0 ? app.exit(e) : app.exit(e, silent, silent);
  }

  try {
    return train(s, place);
  } catch (const SetupFailed&) {
    return 1;
  } catch (const std::exception& e) {
    print_error(place, e.what());
    asyncopt::mpi::Environment::abort(1);
  }
}

}  // namespace
}  // namespace examples::train

int main(int argc, char** argv) {
  try {
    const asyncopt::mpi::Environment mpi(argc, argv);
    return examples::train::run(argc, argv);
  } catch (const std::exception& e) {  // MPI did not start
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
