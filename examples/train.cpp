// The general trainer: a linear model (softmax, logistic or least squares) on Fashion-MNIST,
// a LIBSVM or CSV file, or generated RCV1-like data, dense or sparse, trained by asyncopt's
// worker threads with any update rule and consistency policy; writes the loss curve as CSV
// and, where python3 with matplotlib is at hand, as a PNG plot.
//
// Compile time: every rule x policy pair instantiates one optimizer, and each of those
// instantiates optimize() twice, once for dense and once for sparse data. The objectives
// reach it through two small views over a type-erased Model, so the six objective types
// (three models, dense or sparse) do not multiply the 7 x 5 x 2 instantiations.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>

#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/local_sgd.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/consistency/synchronous.hpp>
#include <asyncopt/io/csv.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/io/synthetic.hpp>
#include <asyncopt/objective/objective.hpp>
#include <asyncopt/optimizer.hpp>
#include <asyncopt/update/update.hpp>

#include "cli.hpp"

#ifndef ASYNCOPT_PLOT_SCRIPT
#define ASYNCOPT_PLOT_SCRIPT "scripts/plot_loss.py"
#endif

namespace {

using Scalar = float;
using DenseMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using SparseMatrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor>;
using Labels = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using Features = std::variant<DenseMatrix, SparseMatrix>;
using asyncopt::io::DataError;

// ---- Settings ---------------------------------------------------------------------------------

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
  bool intercept = true;
  // Rule.
  std::string rule = "sgd";
  std::optional<double> learning_rate;
  double momentum = 0.9;
  double lambda = 0.04;
  double lambda0 = 2.0;
  double mean_square_decay = 0.95;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  // Consistency policy.
  std::string consistency = "lockfree";
  std::size_t stripes = 64;
  std::uint64_t staleness = 2;
  std::uint64_t period = 8;
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

/// Fills in what the command line left to the data source and the rule:
/// - the model: softmax for Fashion-MNIST, least squares for CSV, logistic otherwise;
/// - the batch: 1 for the sparse sources (Hogwild!), 8 for the dense ones;
/// - the learning rate: 0.001 for Adam, whose steps are normalised; else 0.5 for the sparse
///   sources (unit-norm rows), 0.01 for the dense ones;
/// - L2: 0 for the sparse sources, where a sparse step penalises only the weights it touches
///   (the Hogwild! convention), so rare features' weights escape a penalty that the reported
///   loss counts in full; 1e-4 for the dense ones.
void resolve_defaults(Settings& s) {
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
  if (!s.l2) {
    s.l2 = sparse ? 0.0 : 1e-4;
  }
}

// ---- The model behind a type-erased interface ------------------------------------------------

/// A trained model as the trainer sees it: the objective's methods, and its accuracy where it
/// classifies. One implementation per objective type; the optimizer sees it through
/// DenseView or SparseView.
class Model {
 public:
  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&&) = delete;
  Model& operator=(Model&&) = delete;
  virtual ~Model() = default;

  [[nodiscard]] virtual bool sparse() const = 0;
  [[nodiscard]] virtual std::size_t dimension() const = 0;
  [[nodiscard]] virtual std::size_t num_examples() const = 0;
  [[nodiscard]] virtual double loss(std::span<const Scalar> w) const = 0;
  virtual void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                        std::span<Scalar> grad) const = 0;
  virtual void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                               asyncopt::SparseGradient<Scalar>& g) const = 0;
  virtual void touched(std::span<const std::size_t> batch,
                       std::vector<std::size_t>& index) const = 0;
  /// The fraction of examples classified right; nullopt for regression.
  [[nodiscard]] virtual std::optional<double> accuracy(std::span<const Scalar> w) const = 0;
};

template <class F>
class ModelOf final : public Model {
 public:
  explicit ModelOf(F f) : f_(std::move(f)) {}

  [[nodiscard]] bool sparse() const override { return asyncopt::TouchedParameters<F>; }
  [[nodiscard]] std::size_t dimension() const override { return f_.dimension(); }
  [[nodiscard]] std::size_t num_examples() const override { return f_.num_examples(); }
  [[nodiscard]] double loss(std::span<const Scalar> w) const override { return f_.loss(w); }
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const override {
    f_.gradient(w, batch, grad);
  }
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<Scalar>& g) const override {
    if constexpr (requires { f_.sparse_gradient(w, batch, g); }) {
      f_.sparse_gradient(w, batch, g);
    } else {
      throw std::logic_error("sparse_gradient called on a dense model");
    }
  }
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const override {
    if constexpr (requires { f_.touched(batch, index); }) {
      f_.touched(batch, index);
    } else {
      throw std::logic_error("touched called on a dense model");
    }
  }
  [[nodiscard]] std::optional<double> accuracy(std::span<const Scalar> w) const override {
    if constexpr (requires { f_.accuracy(w); }) {
      return f_.accuracy(w);
    } else {
      return std::nullopt;
    }
  }

 private:
  F f_;
};

/// A Model as an asyncopt::Objective: optimize() pushes dense gradients.
struct DenseView {
  const Model* model;
  [[nodiscard]] std::size_t dimension() const { return model->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return model->num_examples(); }
  [[nodiscard]] double loss(std::span<const Scalar> w) const { return model->loss(w); }
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    model->gradient(w, batch, grad);
  }
};

/// A sparse Model as an asyncopt::SparseObjective with TouchedParameters: optimize() pulls
/// the parameters a batch touches and pushes sparse gradients.
struct SparseView : DenseView {
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<Scalar>& g) const {
    model->sparse_gradient(w, batch, g);
  }
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const {
    model->touched(batch, index);
  }
};

// ---- Data ---------------------------------------------------------------------------------------

/// The shortest decimal that reads back as `v`, for messages.
std::string number(double v) {
  return asyncopt::io::detail::format_number(v);
}

struct Data {
  Features x;
  Labels y;
};

struct Split {
  Data train;
  std::optional<Data> test;
  std::string description;  // where the data came from, for the first line printed
  std::string name;         // a short name, for the plot's title
};

Eigen::Index rows_of(const Features& x) {
  return std::visit([](const auto& m) { return m.rows(); }, x);
}

Eigen::Index cols_of(const Features& x) {
  return std::visit([](const auto& m) { return m.cols(); }, x);
}

/// Rows [begin, begin + count) of `x`.
Features take_rows(const Features& x, Eigen::Index begin, Eigen::Index count) {
  return std::visit(
      [&](const auto& m) -> Features {
        using M = std::decay_t<decltype(m)>;
        return M(m.middleRows(begin, count));
      },
      x);
}

Labels labels_of(const Eigen::VectorXi& labels) {
  return labels.cast<Scalar>();
}

Split load(const Settings& s) {
  if (s.examples && s.data != "rcv1-like") {
    throw std::invalid_argument("--examples applies to --data rcv1-like only");
  }
  if (s.features && s.data != "rcv1-like" && s.data != "libsvm") {
    throw std::invalid_argument("--features applies to --data rcv1-like and libsvm only; " +
                                s.data + " files give their own width");
  }
  Split out;
  if (s.data == "fashion-mnist") {
    const std::filesystem::path dir =
        s.path.empty() ? asyncopt::io::default_fashion_mnist_dir() : std::filesystem::path(s.path);
    auto data = asyncopt::io::load_fashion_mnist<Scalar>(dir);
    out.train = {std::move(data.train.images), labels_of(data.train.labels)};
    out.test = Data{std::move(data.test.images), labels_of(data.test.labels)};
    out.description = "Fashion-MNIST (" + dir.string() + ")";
    out.name = "Fashion-MNIST";
    return out;
  }
  if (s.data == "rcv1-like") {
    auto data = asyncopt::io::generate_rcv1_like<Scalar>({.examples = s.examples.value_or(100'000),
                                                          .features = s.features.value_or(47'236),
                                                          .seed = s.seed});
    out.train = {std::move(data.data), std::move(data.labels)};
    out.description = "RCV1-like (generated, seed " + std::to_string(s.seed) + ")";
    out.name = "RCV1-like";
    return out;
  }
  if (s.path.empty()) {
    throw std::invalid_argument("--data " + s.data + " needs --path FILE");
  }
  if (s.data == "libsvm") {
    // --features sets the width: an index beyond it is an error, and a file that uses fewer
    // columns is read as this wide.
    auto train = asyncopt::io::read_libsvm<Scalar>(s.path, {.features = s.features});
    out.train = {std::move(train.data), std::move(train.labels)};
    if (!s.test_path.empty()) {
      // Read with the training set's width; a feature beyond it is an error.
      auto test = asyncopt::io::read_libsvm<Scalar>(
          s.test_path, {.features = static_cast<std::size_t>(cols_of(out.train.x))});
      out.test = Data{std::move(test.data), std::move(test.labels)};
    }
    out.description = "LIBSVM '" + s.path + "'";
    out.name = std::filesystem::path(s.path).filename().string();
    return out;
  }
  const asyncopt::io::CsvReadOptions options{.label_column = s.label_column,
                                             .separator = s.separator};
  auto train = asyncopt::io::read_csv<Scalar>(s.path, options);
  out.train = {std::move(train.data), std::move(train.labels)};
  if (!s.test_path.empty()) {
    auto test = asyncopt::io::read_csv<Scalar>(s.test_path, options);
    if (test.data.cols() != std::get<DenseMatrix>(out.train.x).cols()) {
      throw DataError("'" + s.test_path + "' has " + std::to_string(test.data.cols()) +
                      " feature columns but '" + s.path + "' has " +
                      std::to_string(std::get<DenseMatrix>(out.train.x).cols()));
    }
    out.test = Data{std::move(test.data), std::move(test.labels)};
  }
  out.description = "CSV '" + s.path + "'";
  out.name = std::filesystem::path(s.path).filename().string();
  return out;
}

/// Holds out the last rows as the test set, keeps the first --limit training rows, and
/// converts to the layout asked for.
void prepare(const Settings& s, Split& split) {
  if (s.holdout > 0.0) {
    if (split.test) {
      throw std::invalid_argument(
          "--holdout and a test set (--test-path, or Fashion-MNIST's) exclude each other");
    }
    const Eigen::Index n = rows_of(split.train.x);
    const auto held = static_cast<Eigen::Index>(std::floor(s.holdout * static_cast<double>(n)));
    if (held == 0 || held == n) {
      throw std::invalid_argument("--holdout " + number(s.holdout) + " of " + std::to_string(n) +
                                  " examples leaves no test or no training example");
    }
    split.test = Data{take_rows(split.train.x, n - held, held), split.train.y.tail(held)};
    split.train = {take_rows(split.train.x, 0, n - held), Labels(split.train.y.head(n - held))};
  }
  if (s.limit != 0 && static_cast<Eigen::Index>(s.limit) < rows_of(split.train.x)) {
    const auto n = static_cast<Eigen::Index>(s.limit);
    split.train = {take_rows(split.train.x, 0, n), Labels(split.train.y.head(n))};
  }
  auto convert = [&](Features& x) {
    if (s.layout == "sparse" && std::holds_alternative<DenseMatrix>(x)) {
      x = SparseMatrix(std::get<DenseMatrix>(x).sparseView());
    } else if (s.layout == "dense" && std::holds_alternative<SparseMatrix>(x)) {
      const auto& m = std::get<SparseMatrix>(x);
      constexpr double max_bytes = 16.0 * (1 << 30);
      const double bytes =
          static_cast<double>(m.rows()) * static_cast<double>(m.cols()) * sizeof(Scalar);
      if (bytes > max_bytes) {
        throw std::invalid_argument("--layout dense: " + std::to_string(m.rows()) + " x " +
                                    std::to_string(m.cols()) +
                                    " dense would take more than 16 GiB");
      }
      x = DenseMatrix(m);
    }
  };
  convert(split.train.x);
  if (split.test) {
    convert(split.test->x);
  }
}

// ---- Labels for each model ----------------------------------------------------------------------

/// Softmax classes: the distinct labels of both sets, in increasing order, become 0..K-1.
struct Classes {
  std::map<Scalar, int> index;

  Classes(const Labels& train, const Labels* test) {
    constexpr std::size_t max_classes = 1000;
    auto add = [&](const Labels& y) {
      for (Eigen::Index i = 0; i < y.size(); ++i) {
        index.emplace(y[i], 0);
        if (index.size() > max_classes) {
          throw DataError("softmax: more than " + std::to_string(max_classes) +
                          " distinct labels; softmax needs class labels (use --model "
                          "least-squares for real-valued targets)");
        }
      }
    };
    add(train);
    if (test != nullptr) {
      add(*test);
    }
    int k = 0;
    for (auto& [label, id] : index) {
      id = k++;
    }
  }

  [[nodiscard]] int count() const { return static_cast<int>(index.size()); }

  [[nodiscard]] Eigen::VectorXi map(const Labels& y) const {
    Eigen::VectorXi out(y.size());
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      out[i] = index.at(y[i]);
    }
    return out;
  }
};

/// Logistic labels: the positive label (--positive, else the larger training label) becomes
/// 1, the other 0. A test label must be one of the training set's two.
struct BinaryLabels {
  Scalar positive = 1;
  std::optional<Scalar> negative;

  BinaryLabels(const Labels& train, std::optional<double> chosen) {
    const std::optional<Scalar> given =
        chosen ? std::optional<Scalar>(static_cast<Scalar>(*chosen)) : std::nullopt;
    // Checks that there are at most two labels and that the positive one is among them.
    try {
      (void)asyncopt::io::binary_labels<Scalar>(train, given);
    } catch (const DataError& e) {
      throw DataError(std::string(e.what()) +
                      " (logistic regression takes two classes: try --model softmax)");
    }
    const Scalar low = train.minCoeff();
    const Scalar high = train.maxCoeff();
    positive = given.value_or(high);
    if (low != high) {
      negative = positive == high ? low : high;
    }
  }

  [[nodiscard]] Labels map(const Labels& y, const char* set) const {
    Labels out(y.size());
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      if (y[i] == positive) {
        out[i] = 1;
      } else if (!negative || y[i] == *negative) {
        out[i] = 0;
      } else {
        throw DataError(std::string("logistic: the ") + set + " label " + number(y[i]) +
                        " at row " + std::to_string(i) + " is neither of the training labels " +
                        number(positive) + " and " + number(*negative));
      }
    }
    return out;
  }
};

struct Models {
  std::unique_ptr<Model> train;
  std::unique_ptr<Model> test;  // null without a test set
  int classes = 0;              // 0 for least squares
};

std::unique_ptr<Model> build_one(const Settings& s, Data data,
                                 const std::optional<Classes>& classes,
                                 const std::optional<BinaryLabels>& binary, const char* set) {
  return std::visit(
      [&](auto& x) -> std::unique_ptr<Model> {
        using Matrix = std::decay_t<decltype(x)>;
        namespace objective = asyncopt::objective;
        if (classes) {
          using F = objective::SoftmaxRegression<Matrix>;
          return std::make_unique<ModelOf<F>>(F(std::move(x), classes->map(data.y),
                                                classes->count(),
                                                {.l2 = *s.l2, .intercept = s.intercept}));
        }
        if (binary) {
          using F = objective::LogisticRegression<Matrix>;
          return std::make_unique<ModelOf<F>>(
              F(std::move(x), binary->map(data.y, set), {.l2 = *s.l2, .intercept = s.intercept}));
        }
        using F = objective::LeastSquares<Matrix>;
        return std::make_unique<ModelOf<F>>(
            F(std::move(x), std::move(data.y), {.l2 = *s.l2, .intercept = s.intercept}));
      },
      data.x);
}

Models build(const Settings& s, Split split) {
  std::optional<Classes> classes;
  std::optional<BinaryLabels> binary;
  if (s.model == "softmax") {
    classes.emplace(split.train.y, split.test ? &split.test->y : nullptr);
  } else if (s.model == "logistic") {
    binary.emplace(split.train.y, s.positive);
  }
  Models out;
  out.classes = classes ? classes->count() : (binary ? 2 : 0);
  out.train = build_one(s, std::move(split.train), classes, binary, "training");
  if (split.test) {
    out.test = build_one(s, std::move(*split.test), classes, binary, "test");
  }
  return out;
}

// ---- Training: rule x policy dispatch -----------------------------------------------------------

using EpochCallback = std::function<void(const asyncopt::EpochInfo<Scalar>&)>;

struct Run {
  const Model& model;
  std::span<Scalar> w;
  asyncopt::Options options;
  const EpochCallback& callback;
};

template <class Rule, class Consistency>
asyncopt::Report optimize_with(const Rule& rule, const Consistency& consistency, const Run& run) {
  const asyncopt::AsyncOptimizer<Scalar, Rule, Consistency> optimizer(rule, consistency);
  if (run.model.sparse()) {
    return optimizer.optimize(SparseView{{&run.model}}, run.w, run.options, run.callback);
  }
  return optimizer.optimize(DenseView{&run.model}, run.w, run.options, run.callback);
}

template <class Consistency>
asyncopt::Report with_rule(const Settings& s, const Consistency& consistency, const Run& run) {
  namespace update = asyncopt::update;
  const double lr = *s.learning_rate;
  if (s.rule == "sgd") {
    return optimize_with(update::Sgd{.learning_rate = lr}, consistency, run);
  }
  if (s.rule == "momentum") {
    return optimize_with(update::MomentumCorrection{.learning_rate = lr, .beta = s.momentum},
                         consistency, run);
  }
  if (s.rule == "heavy-ball" || s.rule == "nesterov") {
    return optimize_with(
        update::HeavyBall{
            .learning_rate = lr, .momentum = s.momentum, .nesterov = s.rule == "nesterov"},
        consistency, run);
  }
  if (s.rule == "dc") {
    return optimize_with(update::DelayCompensated{.learning_rate = lr, .lambda = s.lambda},
                         consistency, run);
  }
  if (s.rule == "dc-adaptive") {
    return optimize_with(
        update::AdaptiveDelayCompensated{
            .learning_rate = lr, .lambda0 = s.lambda0, .mean_square_decay = s.mean_square_decay},
        consistency, run);
  }
  if (s.rule == "staleness-aware") {
    return optimize_with(update::StalenessAware<update::Sgd>{.inner = {.learning_rate = lr}},
                         consistency, run);
  }
  if (s.rule == "adam") {
    return optimize_with(
        update::Adam{.learning_rate = lr, .beta1 = s.beta1, .beta2 = s.beta2, .epsilon = s.epsilon},
        consistency, run);
  }
  throw std::invalid_argument("unknown rule '" + s.rule + "'");
}

asyncopt::Report train(const Settings& s, const Run& run) {
  namespace consistency = asyncopt::consistency;
  if (s.consistency == "locked") {
    return with_rule(s, consistency::Locked{.stripes = s.stripes}, run);
  }
  if (s.consistency == "lockfree") {
    return with_rule(s, consistency::LockFree{}, run);
  }
  if (s.consistency == "ssp") {
    return with_rule(s, consistency::BoundedStaleness<>{.staleness = s.staleness}, run);
  }
  if (s.consistency == "synchronous") {
    return with_rule(s, consistency::Synchronous{}, run);
  }
  if (s.consistency == "local") {
    return with_rule(s, consistency::LocalSgd{.period = s.period}, run);
  }
  throw std::invalid_argument("unknown consistency policy '" + s.consistency + "'");
}

// ---- Plotting -----------------------------------------------------------------------------------

/// Runs a program found on PATH (or at a path) with `args`, without a shell; with `quiet`
/// its output goes to /dev/null. Returns its exit status, or -1 when it could not run.
int run_program(std::vector<std::string> args, bool quiet) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return -1;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Plots the CSV loss curve into `png` with scripts/plot_loss.py, using the first python3
/// that has matplotlib: the one on PATH, else Debian's. Never fails the run: when no plot
/// can be made it says why and how to make it later.
void plot(const Settings& s, const std::string& title) {
  const std::string later = "the loss curve is in " + s.csv + "; plot it with: python3 " +
                            s.plot_script + " " + s.csv + " -o " + s.plot;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(s.plot_script, ec)) {
    std::printf("no plot: the plotting script %s is missing (--plot-script); %s\n",
                s.plot_script.c_str(), later.c_str());
    return;
  }
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    if (run_program({python, "-c", "import matplotlib"}, true) != 0) {
      continue;
    }
    if (run_program({python, s.plot_script, s.csv, "-o", s.plot, "--title", title}, false) == 0) {
      std::printf("plot in %s\n", s.plot.c_str());
    } else {
      std::printf("no plot: %s %s failed; %s\n", python, s.plot_script.c_str(), later.c_str());
    }
    return;
  }
  std::printf(
      "no plot: no python3 with matplotlib found (Debian: apt-get install python3-matplotlib); "
      "%s\n",
      later.c_str());
}

// ---- The job ------------------------------------------------------------------------------------

std::string layout_name(const Model& m) {
  return m.sparse() ? "sparse" : "dense";
}

int run(Settings& s) {
  resolve_defaults(s);
  const auto start = std::chrono::steady_clock::now();
  Split split = load(s);
  prepare(s, split);
  const std::string description = split.description;
  const std::string name = split.name;
  const auto features = static_cast<std::size_t>(cols_of(split.train.x));
  const auto nonzeros = std::visit(
      [](const auto& m) -> double {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, SparseMatrix>) {
          return static_cast<double>(m.nonZeros());
        } else {
          return static_cast<double>(m.size());
        }
      },
      split.train.x);
  const Models models = build(s, std::move(split));
  const Model& train_set = *models.train;
  const Model* test_set = models.test.get();
  const Model& scored = test_set != nullptr ? *test_set : train_set;
  const char* scored_name = test_set != nullptr ? "test" : "train";
  const bool classifies = models.classes != 0;

  std::printf("%s: %zu training", description.c_str(), train_set.num_examples());
  if (test_set != nullptr) {
    std::printf(" and %zu test", test_set->num_examples());
  }
  std::printf(" examples, %zu features (%s, %.1f non-zeros per row), ", features,
              layout_name(train_set).c_str(),
              nonzeros / static_cast<double>(train_set.num_examples()));
  if (models.classes > 2) {
    std::printf("%d classes, ", models.classes);
  }
  std::printf("loaded in %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::printf(
      "model %s with %zu parameters, l2 %g; rule %s, lr %g; consistency %s; %zu workers, "
      "batch %zu\n",
      s.model.c_str(), train_set.dimension(), *s.l2, s.rule.c_str(), *s.learning_rate,
      s.consistency.c_str(), s.workers, *s.batch_size);

  std::vector<Scalar> w(train_set.dimension(), Scalar(0));
  std::ofstream csv(s.csv);
  if (!csv) {
    throw std::runtime_error("cannot write '" + s.csv + "'");
  }
  csv << "epoch,seconds,loss" << (classifies ? std::string(",") + scored_name + "_accuracy" : "")
      << ",updates_per_second,mean_staleness\n";

  auto report_epoch = [&](std::size_t epoch, double seconds, double loss,
                          std::span<const Scalar> params, double rate, double staleness) {
    const std::optional<double> accuracy = classifies ? scored.accuracy(params) : std::nullopt;
    std::printf("epoch %2zu  %7.2f s  loss %-11.6g", epoch, seconds, loss);
    if (accuracy) {
      std::printf("  %s accuracy %.4f", scored_name, *accuracy);
    }
    if (epoch != 0) {
      std::printf("  updates/s %9.0f  mean staleness %.3f", rate, staleness);
    }
    std::printf("\n");
    std::fflush(stdout);
    csv << epoch << ',' << seconds << ',' << loss;
    if (accuracy) {
      csv << ',' << *accuracy;
    }
    csv << ',' << rate << ',' << staleness << '\n';
  };
  report_epoch(0, 0.0, train_set.loss(w), w, 0.0, 0.0);

  double last_seconds = 0.0;
  std::uint64_t last_updates = 0;
  const EpochCallback callback = [&](const asyncopt::EpochInfo<Scalar>& e) {
    const double rate =
        static_cast<double>(e.updates - last_updates) / std::max(1e-9, e.seconds - last_seconds);
    last_seconds = e.seconds;
    last_updates = e.updates;
    report_epoch(e.epoch, e.seconds, e.loss, e.params, rate, e.mean_staleness);
  };
  const asyncopt::Report report = train(s, Run{.model = train_set,
                                               .w = w,
                                               .options = {.workers = s.workers,
                                                           .batch_size = *s.batch_size,
                                                           .epochs = s.epochs,
                                                           .max_seconds = s.max_seconds,
                                                           .seed = s.seed},
                                               .callback = callback});
  csv.close();

  const double seconds = report.training_seconds;
  std::printf(
      "%llu updates in %.2f s (%.0f updates/s, %.0f examples/s), mean staleness %.3f, max %llu, "
      "rejected %llu; loss curve in %s\n",
      static_cast<unsigned long long>(report.updates), seconds, report.updates_per_second(),
      seconds > 0.0 ? static_cast<double>(report.examples) / seconds : 0.0, report.mean_staleness(),
      static_cast<unsigned long long>(report.max_staleness()),
      static_cast<unsigned long long>(report.rejected), s.csv.c_str());
  std::printf("final loss: %.4e\n", report.final_loss());
  if (classifies) {
    std::printf("%s accuracy: %.4f\n", scored_name, scored.accuracy(w).value_or(0.0));
  }
  if (!s.plot.empty()) {
    plot(s, s.model + " on " + name + ": " + s.rule + ", " + s.consistency + ", " +
                std::to_string(s.workers) + " workers");
  }
  return examples::cli::finish(report);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Trains a linear model with asyncopt's worker threads on Fashion-MNIST, a LIBSVM or CSV "
      "file, or generated RCV1-like data; writes the loss curve as CSV (and PNG with --plot)"};
  app.get_formatter()->column_width(32);
  app.failure_message(examples::cli::failure_message);

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
      ->check(examples::cli::number_in(0.0, 0.9))
      ->capture_default_str()
      ->group("Data");
  app.add_option("--limit", s.limit, "train on the first N training examples only (0 = all)")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str()
      ->group("Data");
  app.add_option("--examples", s.examples, "rows of the rcv1-like data (default 100000)")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->group("Data");
  app.add_option("--features", s.features,
                 "columns of the rcv1-like data (default 47236), or of a libsvm file (default: "
                 "its largest index; a larger index is then an error)")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->group("Data");
  app.add_option("--label-column", s.label_column,
                 "the CSV label column, 0-based; negative counts from the end")
      ->check(examples::cli::integer<std::ptrdiff_t>())
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
                 "softmax, logistic or least-squares (default: softmax for fashion-mnist, "
                 "least-squares for csv, logistic otherwise)")
      ->check(CLI::IsMember({"softmax", "logistic", "least-squares"}))
      ->group("Model");
  app.add_option("--positive", s.positive,
                 "logistic: the label that counts as 1 (default: the larger of the two)")
      ->group("Model");
  app.add_option("--l2", s.l2,
                 "L2 penalty on the weights (default: 0 for libsvm and rcv1-like, whose sparse "
                 "steps penalise only the weights they touch; 1e-4 for the others)")
      ->check(examples::cli::non_negative_number())
      ->group("Model");
  app.add_flag("!--no-intercept", s.intercept, "fit no bias")->group("Model");

  app.add_option("--rule", s.rule,
                 "update rule: sgd, momentum (EMA), heavy-ball, nesterov, dc (delay-compensated), "
                 "dc-adaptive, staleness-aware (sgd with lr / staleness), adam")
      ->check(CLI::IsMember({"sgd", "momentum", "heavy-ball", "nesterov", "dc", "dc-adaptive",
                             "staleness-aware", "adam"}))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--lr", s.learning_rate,
                 "learning rate (default: 0.001 for adam, else 0.5 for libsvm and rcv1-like, "
                 "0.01 for the others)")
      ->check(examples::cli::positive_number())
      ->group("Update rule");
  app.add_option("--momentum", s.momentum, "beta (momentum) or mu (heavy-ball, nesterov)")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--lambda", s.lambda, "lambda of dc")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--lambda0", s.lambda0, "lambda0 of dc-adaptive")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--mean-square-decay", s.mean_square_decay, "decay of dc-adaptive's mean square")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--beta1", s.beta1, "adam's beta1")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--beta2", s.beta2, "adam's beta2")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str()
      ->group("Update rule");
  app.add_option("--epsilon", s.epsilon, "adam's epsilon")
      ->check(examples::cli::positive_number())
      ->capture_default_str()
      ->group("Update rule");

  app.add_option("--consistency", s.consistency,
                 "locked (striped mutexes), lockfree (Hogwild!), ssp (bounded staleness over "
                 "lockfree), synchronous (mean gradient per round), local (local SGD: replicas "
                 "averaged every --period steps)")
      ->check(CLI::IsMember({"locked", "lockfree", "ssp", "synchronous", "local"}))
      ->capture_default_str()
      ->group("Consistency");
  app.add_option("--stripes", s.stripes, "locked: lock stripes (1 = one lock)")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str()
      ->group("Consistency");
  app.add_option("--staleness", s.staleness, "ssp: clocks a worker may run ahead")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str()
      ->group("Consistency");
  app.add_option("--period", s.period, "local: steps between averages")
      ->check(examples::cli::positive_integer<std::uint64_t>())
      ->capture_default_str()
      ->group("Consistency");

  app.add_option("--workers", s.workers, "worker threads")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--epochs", s.epochs, "passes over the training set")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--batch-size", s.batch_size,
                 "examples per gradient (default: 1 for libsvm and rcv1-like, 8 for the others)")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->group("Run");
  app.add_option("--max-seconds", s.max_seconds, "stop after this much training time (0 = none)")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str()
      ->group("Run");
  app.add_option("--seed", s.seed, "seed of the shuffles and of the rcv1-like data")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
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
  CLI11_PARSE(app, argc, argv);

  try {
    return run(s);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
