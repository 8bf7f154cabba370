// What the general trainer prints and writes: the data and the job before training, the loss
// curve (a line per epoch on stdout and in the CSV file --csv) and the result after it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include <asyncopt/core/report.hpp>

#include "../cli.hpp"
#include "build.hpp"
#include "data.hpp"
#include "model.hpp"
#include "settings.hpp"

namespace examples::train {

/// The two lines before training: the data, loaded in `load_seconds`; the model, rule,
/// policy and run, with `processes` > 1 for a job across processes (MPI) whose every process
/// runs --workers threads.
inline void print_setup(const Settings& s, const DataSummary& data, const Models& models,
                        double load_seconds, std::size_t processes = 1) {
  const Model& train_set = *models.train;
  std::printf("%s: %zu training", data.description.c_str(), train_set.num_examples());
  if (models.test) {
    std::printf(" and %zu test", models.test->num_examples());
  }
  std::printf(" examples, %zu features (%s, %.1f non-zeros per row), ", data.features,
              train_set.sparse() ? "sparse" : "dense",
              data.nonzeros / static_cast<double>(train_set.num_examples()));
  if (models.classes > 2) {
    std::printf("%d classes, ", models.classes);
  }
  std::printf("loaded in %.2f s\n", load_seconds);
  std::string workers = std::to_string(s.workers) + " workers";
  if (processes > 1) {
    workers = std::to_string(processes) + " processes x " + std::to_string(s.workers) +
              (s.workers == 1 ? " worker" : " workers");
  }
  std::printf(
      "model %s with %zu parameters, l2 %g; rule %s, lr %g; consistency %s; %s, batch %zu\n",
      s.model.c_str(), train_set.dimension(), *s.l2, s.rule.c_str(), *s.learning_rate,
      s.consistency.c_str(), workers.c_str(), *s.batch_size);
}

/// What a line of the loss curve ends with: the mean staleness of the epoch's updates, or,
/// for a job across processes (MPI), whose round policies keep the staleness at 0, the bytes
/// the epoch's rounds handed to all-reduces.
enum class LastColumn { mean_staleness, collective_bytes };

/// The loss curve: the loss, the accuracy of a classifier (on the test set where there is
/// one), the updates per second and the mean staleness (or the bytes all-reduced) of every
/// epoch, printed and written to --csv.
class LossCurve {
 public:
  /// Opens --csv and writes its header; throws std::runtime_error when it cannot.
  LossCurve(const Settings& s, const Models& models, LastColumn last = LastColumn::mean_staleness)
      : scored_(&models.scored()),
        scored_name_(models.scored_name()),
        classifies_(models.classes != 0),
        last_(last),
        csv_(s.csv) {
    if (!csv_) {
      throw std::runtime_error("cannot write '" + s.csv + "'");
    }
    csv_ << "epoch,seconds,loss"
         << (classifies_ ? std::string(",") + scored_name_ + "_accuracy" : "")
         << ",updates_per_second,"
         << (last_ == LastColumn::mean_staleness ? "mean_staleness" : "collective_bytes") << '\n';
  }

  /// Epoch 0: the training loss `loss` of the initial parameters `w`.
  void start(double loss, std::span<const Scalar> w) { write(0, 0.0, loss, w, 0.0, 0.0); }

  /// An epoch the optimizer finished; its rate counts the updates since the epoch before.
  void operator()(const asyncopt::EpochInfo<Scalar>& e) {
    write(e.epoch, e.seconds, e.loss, e.params, rate(e), e.mean_staleness);
  }

  /// The same, for LastColumn::collective_bytes: the epoch's rounds handed
  /// `collective_bytes` to all-reduces, summed over the processes.
  void operator()(const asyncopt::EpochInfo<Scalar>& e, std::uint64_t collective_bytes) {
    write(e.epoch, e.seconds, e.loss, e.params, rate(e), static_cast<double>(collective_bytes));
  }

  void close() { csv_.close(); }

 private:
  double rate(const asyncopt::EpochInfo<Scalar>& e) {
    const double r =
        static_cast<double>(e.updates - last_updates_) / std::max(1e-9, e.seconds - last_seconds_);
    last_seconds_ = e.seconds;
    last_updates_ = e.updates;
    return r;
  }

  void write(std::size_t epoch, double seconds, double loss, std::span<const Scalar> params,
             double rate, double last) {
    const std::optional<double> accuracy = classifies_ ? scored_->accuracy(params) : std::nullopt;
    std::printf("epoch %2zu  %7.2f s  loss %-11.6g", epoch, seconds, loss);
    if (accuracy) {
      std::printf("  %s accuracy %.4f", scored_name_, *accuracy);
    }
    if (epoch != 0) {
      std::printf("  updates/s %9.0f", rate);
      if (last_ == LastColumn::mean_staleness) {
        std::printf("  mean staleness %.3f", last);
      } else {
        std::printf("  all-reduced %7.2f MB", last / 1e6);
      }
    }
    std::printf("\n");
    std::fflush(stdout);
    csv_ << epoch << ',' << seconds << ',' << loss;
    if (accuracy) {
      csv_ << ',' << *accuracy;
    }
    csv_ << ',' << rate << ',';
    if (last_ == LastColumn::mean_staleness) {
      csv_ << last << '\n';
    } else {
      csv_ << static_cast<std::uint64_t>(last) << '\n';
    }
  }

  const Model* scored_;
  const char* scored_name_;
  bool classifies_;
  LastColumn last_;
  std::ofstream csv_;
  double last_seconds_ = 0.0;
  std::uint64_t last_updates_ = 0;
};

/// The lines after training: the run's numbers, the final loss, and the accuracy of a
/// classifier with the trained parameters `w`.
inline void print_result(const Settings& s, const Models& models, const asyncopt::Report& report,
                         std::span<const Scalar> w) {
  const double seconds = report.training_seconds;
  std::printf(
      "%llu updates in %.2f s (%.0f updates/s, %.0f examples/s), mean staleness %.3f, max %llu, "
      "rejected %llu; loss curve in %s\n",
      static_cast<unsigned long long>(report.updates), seconds, report.updates_per_second(),
      seconds > 0.0 ? static_cast<double>(report.examples) / seconds : 0.0, report.mean_staleness(),
      static_cast<unsigned long long>(report.max_staleness()),
      static_cast<unsigned long long>(report.rejected), s.csv.c_str());
  cli::print_compression(report);
  std::printf("final loss: %.4e\n", report.final_loss());
  if (models.classes != 0) {
    std::printf("%s accuracy: %.4f\n", models.scored_name(),
                models.scored().accuracy(w).value_or(0.0));
  }
}

}  // namespace examples::train
