// One synchronous round of the MPI transport against a raw loop of MPI_Allreduce and the same
// SGD update, interleaved in one run; run it under mpirun (bench/report mpi runs it with 2 and
// 4 processes).
//
// Every process attaches one worker to
// AsyncOptimizer<float, update::Sgd, consistency::Synchronous, transport::Mpi> and keeps the
// buffers of the baselines beside it. For each n (floats of the model), three kinds of round
// are timed, each in blocks of the same number of rounds on every process:
//
//   library/<p>/<n>     the library's round: h.push_in_place(gradient) and h.clock() on the
//                       worker's handle, as optimize() steps, with the gradient computed in
//                       h.gradient_buffer(), the buffer the store lends the worker. The push
//                       checks that the gradient is finite, closes the round (this process
//                       has one worker), all-reduces the gradient in that buffer with the
//                       count in the slot after it (one MPI_Allreduce of n + 1 floats) and
//                       applies w -= lr * (sum / count), dividing in the update's pass. The
//                       pull before it (h.pull_view(): the parameters where they are, no
//                       copy) is timed apart: step_us is pull + push + clock.
//   raw/<p>/<n>         what an expert writes by hand: MPI_Allreduce(MPI_IN_PLACE) of the
//                       gradient buffer the step has just computed, then one fused loop
//                       w[i] -= (lr / p) * g[i]. In place on the step's own gradient buffer
//                       is the fastest honest form: the non-in-place call (into a sum buffer)
//                       lets Open MPI copy the send buffer into the receive buffer first,
//                       which cost a third more at 1e6 floats on two processes here.
//   raw_copies/<p>/<n>  diagnostic: the raw loop doing the library's passes by hand, each
//                       timed: the finiteness check of the gradient (computed in a buffer of
//                       n + 1 floats), the count into the slot after it, the all-reduce of
//                       n + 1 floats, and w -= lr * (sum / count).

// Before each round of every kind the step's "gradient computation" writes the gradient
// buffer (a copy from a source that differs between processes), untimed, so every kind starts
// its round from a freshly written gradient, as a training step does. Each round is timed
// with std::chrono::steady_clock around its parts; a block's value is the mean round time of
// its rounds, averaged over the processes (the round time's maximum over the processes is
// kept as well). Blocks alternate between the kinds (the order rotates every repetition), with
// an MPI_Barrier before each block; the report takes medians over the repetitions.
//
// The number of rounds per block is calibrated on process 0 (enough rounds for
// --min_block_time seconds of the slowest kind, at least 3) and broadcast, so every process
// runs the same count: a Google Benchmark program under mpirun would pick its iteration
// counts on each process alone, and processes that disagree on the count of a collective
// hang. The program therefore times its own blocks and writes its results as JSON shaped like
// Google Benchmark's (a "context" and a "benchmarks" list of per-repetition runs).
//
// Values are chosen so that every round is exact in float (gradients of 1 or 2 x 2^-10, a
// learning rate of 2^-10, parameters from 0, a power-of-two number of processes): after the
// run each kind's parameters must equal the expected ones bit for bit, and be the same on
// every process; otherwise the program exits 1.
//
// Last, optimize() trains a small least-squares model with Synchronous and with
// LocalSgd{.period = H}, one worker per process, and records Report::collective_bytes and
// Report::examples: the bytes each policy hands the collective per example.
//
// usage: mpirun -np P bench_mpi [--sizes=N,N,...] [--repetitions=R] [--min_block_time=S]
//                               [--local_sgd_period=H] [--out=FILE]

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/mpi/mpi.hpp>
#include <asyncopt/objective/objective.hpp>

#include "job.hpp"  // tests/mpi: the planted problem and the checks the MPI tests use

namespace {

using Clock = std::chrono::steady_clock;
using Rule = asyncopt::update::Sgd;
using asyncopt::consistency::LocalSgd;
using asyncopt::consistency::Synchronous;
using asyncopt::transport::Mpi;
using mpi_tests::checksum;
using mpi_tests::same_everywhere;
using SyncOptimizer = asyncopt::AsyncOptimizer<float, Rule, Synchronous, Mpi>;

// 2^-10: with gradients of 1 or 2 units of 2^-10 every product and mean below is exact.
constexpr double learning_rate = 1.0 / 1024.0;
constexpr float gradient_unit = 1.0F / 1024.0F;
// Untimed rounds of each kind before calibrating, and rounds the calibration times.
constexpr int warm_up_rounds = 2;
constexpr int calibration_rounds = 3;
constexpr std::int64_t min_rounds = 3;
// Rounds of each kind at most, over the whole run of one size. A round moves a parameter by
// at most 2^-19, in multiples of 2^-23 for up to 8 processes: after 10^6 rounds it is still
// at most 2 in magnitude, where float holds every such multiple, so every round is exact.
constexpr std::int64_t max_rounds = 1'000'000;

struct Settings {
  std::vector<std::size_t> sizes{1'000, 100'000, 1'000'000, 10'000'000};
  int repetitions = 9;
  double min_block_time = 0.2;
  std::uint64_t local_sgd_period = 8;
  std::string out;
};

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// MPI's default error handler aborts the job first; this covers MPI_ERRORS_RETURN.
void check_mpi(int code) {
  if (code != MPI_SUCCESS) {
    throw std::runtime_error("MPI_Allreduce failed with error " + std::to_string(code));
  }
}

double seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

constexpr const char* usage =
    "usage: mpirun -np P bench_mpi [--sizes=N,N,...] [--repetitions=R] [--min_block_time=S]\n"
    "                              [--local_sgd_period=H] [--out=FILE]\n";

bool take(std::string_view arg, std::string_view flag, std::string& value) {
  if (arg.size() <= flag.size() + 1 || arg.substr(0, flag.size()) != flag ||
      arg[flag.size()] != '=') {
    return false;
  }
  value = std::string(arg.substr(flag.size() + 1));
  return true;
}

// `text` as a number through `convert` (std::stod, std::stoi, ...), all of it; throws
// std::invalid_argument naming `flag` otherwise.
template <class Convert>
auto number_of(std::string_view flag, const std::string& text, Convert convert) {
  std::size_t used = 0;
  try {
    const auto value = convert(text, &used);
    if (used == text.size()) {
      return value;
    }
  } catch (const std::logic_error&) {  // invalid_argument, out_of_range
  }
  throw std::invalid_argument(std::string(flag) + ": '" + text + "' is not a number");
}

double to_double(const std::string& text, std::size_t* used) {
  return std::stod(text, used);
}
int to_int(const std::string& text, std::size_t* used) {
  return std::stoi(text, used);
}
unsigned long long to_unsigned(const std::string& text, std::size_t* used) {
  if (text.find('-') != std::string::npos) {  // std::stoull would wrap it around
    throw std::invalid_argument("negative");
  }
  return std::stoull(text, used);
}

// Throws std::invalid_argument for a malformed or unknown argument.
Settings parse(int argc, char** argv) {
  Settings settings;
  for (int k = 1; k < argc; ++k) {
    const std::string_view arg(argv[k]);
    std::string value;
    if (take(arg, "--sizes", value)) {
      settings.sizes.clear();
      std::stringstream list(value);
      std::string item;
      while (std::getline(list, item, ',')) {
        const double n = number_of("--sizes", item, to_double);  // accepts 1e6
        if (!(n >= 1.0) || n > 1e9 || n != std::floor(n)) {
          throw std::invalid_argument("--sizes: " + item + " is not a size from 1 to 1e9");
        }
        settings.sizes.push_back(static_cast<std::size_t>(n));
      }
      if (settings.sizes.empty()) {
        throw std::invalid_argument("--sizes: no size given");
      }
    } else if (take(arg, "--repetitions", value)) {
      settings.repetitions = number_of("--repetitions", value, to_int);
      if (settings.repetitions < 1) {
        throw std::invalid_argument("--repetitions must be at least 1");
      }
    } else if (take(arg, "--min_block_time", value)) {
      settings.min_block_time = number_of("--min_block_time", value, to_double);
      if (!(settings.min_block_time >= 0.0) || !std::isfinite(settings.min_block_time)) {
        throw std::invalid_argument("--min_block_time must be finite and non-negative");
      }
    } else if (take(arg, "--local_sgd_period", value)) {
      settings.local_sgd_period = number_of("--local_sgd_period", value, to_unsigned);
      if (settings.local_sgd_period == 0) {
        throw std::invalid_argument("--local_sgd_period must be at least 1");
      }
    } else if (take(arg, "--out", value)) {
      settings.out = value;
    } else {
      throw std::invalid_argument("unknown argument '" + std::string(arg) + "'");
    }
  }
  return settings;
}

// ---------------------------------------------------------------------------------------------
// The three kinds of round
// ---------------------------------------------------------------------------------------------

enum class Kind { library, raw, raw_copies };
constexpr std::array<Kind, 3> kinds{Kind::library, Kind::raw, Kind::raw_copies};

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::library:
      return "library";
    case Kind::raw:
      return "raw";
    case Kind::raw_copies:
      break;
  }
  return "raw_copies";
}

// The timed parts of each kind, in seconds summed over a block's rounds; round is their sum
// (for library, pull is not part of the round).
constexpr std::size_t max_parts = 6;
const std::vector<std::vector<const char*>> part_names{
    {"pull_us", "push_clock_us"},
    {"allreduce_us", "update_us"},
    {"check_us", "count_us", "allreduce_us", "update_us"}};

const std::vector<const char*>& parts_of(Kind kind) {
  return part_names[static_cast<std::size_t>(kind)];
}

// The raw loop's update: one fused pass with the mean's division folded into the step.
[[gnu::noinline]] void fused_update(float* __restrict w, const float* __restrict sum, std::size_t n,
                                    float scale) {
  for (std::size_t i = 0; i < n; ++i) {
    w[i] -= scale * sum[i];
  }
}

// The library's passes, written by hand for the diagnostic loop.
[[gnu::noinline]] bool all_finite(const float* __restrict g, std::size_t n) {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, g + i, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & 0x7f800000U) == 0x7f800000U);
  }
  return bad == 0;
}

// The library's update of a round: the mean's division in the update's pass.
[[gnu::noinline]] void mean_update(float* __restrict w, const float* __restrict sum, std::size_t n,
                                   float lr, float count) {
  for (std::size_t i = 0; i < n; ++i) {
    w[i] -= lr * (sum[i] / count);
  }
}

// Process r's gradient element i, in units of 2^-10: 1 or 2, by bit r of i.
float gradient_value(std::size_t i, int rank) {
  return static_cast<float>(1 + ((i >> static_cast<unsigned>(rank % 32)) & 1U)) * gradient_unit;
}

// One block's result on process 0: per part, the mean over the processes of the mean time of
// one round; the round's mean and maximum over the processes; the library's collective time.
struct Block {
  Kind kind;
  int repetition;
  std::int64_t rounds;
  std::array<double, max_parts> parts{};
  double round = 0.0;
  double round_max = 0.0;
  double step = 0.0;        // library: pull + push + clock
  double collective = 0.0;  // library: seconds in the store's collective per round
};

// Everything one model size needs, on every process.
class Case {
 public:
  Case(std::size_t n, int rank, int size)
      : n_(n),
        size_(size),
        source_(n),
        gradient_(n),
        w_library_(n, 0.0F),
        w_raw_(n, 0.0F),
        w_copies_(n, 0.0F),
        mean_(n + 1),
        optimizer_(Rule{.learning_rate = learning_rate}) {
    for (std::size_t i = 0; i < n; ++i) {
      source_[i] = gradient_value(i, rank);
    }
    store_ = optimizer_.attach(std::span<float>(w_library_), 1);  // collective
    handle_ = std::make_unique<Handle>(store_->worker(0));
  }

  // Runs `rounds` rounds of `kind`, adding each part's seconds to `parts` (and the library's
  // pull to parts[0]).
  void run(Kind kind, std::int64_t rounds, std::array<double, max_parts>& parts) {
    for (std::int64_t k = 0; k < rounds; ++k) {
      switch (kind) {
        case Kind::library:
          library_round(parts);
          break;
        case Kind::raw:
          raw_round(parts);
          break;
        case Kind::raw_copies:
          raw_copies_round(parts);
          break;
      }
    }
    state(kind).rounds += rounds;
  }

  // Seconds the store's rounds have spent in the collective, summed over the processes.
  // Collective.
  double collective_seconds() { return store_->stats().collective_seconds; }

  // Whether each kind's parameters are what its rounds must give, bit for bit where every
  // round is exact, and the same on every process. Collective. Prints what differs.
  bool check(int rank) {
    bool ok = true;
    // A power of two up to 8 divides exactly; other counts of processes round the mean.
    const bool exact = size_ <= 8 && (size_ & (size_ - 1)) == 0;
    for (const Kind kind : kinds) {
      const std::vector<float>& w = state(kind).w;
      const auto rounds = static_cast<double>(state(kind).rounds);
      std::size_t wrong = n_;
      for (std::size_t i = 0; i < n_; ++i) {
        double mean = 0.0;
        for (int r = 0; r < size_; ++r) {
          mean += static_cast<double>(gradient_value(i, r));
        }
        mean /= size_;
        const double expected = -rounds * learning_rate * mean;
        const auto got = static_cast<double>(w[i]);
        const bool right =
            exact ? got == expected : std::abs(got - expected) <= 1e-2 * std::abs(expected) + 1e-9;
        if (!right || !std::isfinite(got)) {
          wrong = i;
          break;
        }
      }
      if (wrong != n_) {
        std::fprintf(stderr,
                     "bench_mpi: process %d, %s at n = %zu: parameter %zu is %.9g after %.0f "
                     "rounds\n",
                     rank, kind_name(kind), n_, wrong, static_cast<double>(w[wrong]), rounds);
        ok = false;
      }
      if (!same_everywhere(checksum(w))) {
        if (rank == 0) {
          std::fprintf(stderr,
                       "bench_mpi: %s at n = %zu: the parameters differ between "
                       "processes\n",
                       kind_name(kind), n_);
        }
        ok = false;
      }
    }
    return ok;
  }

 private:
  using Store = SyncOptimizer::store_type;
  using Handle = Store::Worker;

  // A kind's parameters and the rounds it has run on them.
  struct State {
    std::vector<float>& w;
    std::int64_t& rounds;
  };

  State state(Kind kind) {
    switch (kind) {
      case Kind::library:
        return {w_library_, rounds_library_};
      case Kind::raw:
        return {w_raw_, rounds_raw_};
      case Kind::raw_copies:
        break;
    }
    return {w_copies_, rounds_copies_};
  }

  // The step's gradient computation: untimed, it leaves a freshly written gradient.
  void compute_gradient() { std::copy(source_.begin(), source_.end(), gradient_.begin()); }

  void library_round(std::array<double, max_parts>& parts) {
    const auto t0 = Clock::now();
    const std::span<const float> w = handle_->pull_view();
    const auto t1 = Clock::now();
    const std::span<float> gradient = handle_->gradient_buffer();
    std::copy(source_.begin(), source_.end(), gradient.begin());
    sink_ = w[0];  // the step reads the parameters it was given
    const auto t2 = Clock::now();
    const asyncopt::PushResult result = handle_->push_in_place(gradient);
    handle_->clock();
    const auto t3 = Clock::now();
    if (!result.applied) {
      throw std::runtime_error("a push was not applied");
    }
    parts[0] += seconds(t0, t1);
    parts[1] += seconds(t2, t3);
  }

  void raw_round(std::array<double, max_parts>& parts) {
    compute_gradient();
    const auto t0 = Clock::now();
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, gradient_.data(), static_cast<int>(n_), MPI_FLOAT,
                            MPI_SUM, MPI_COMM_WORLD));
    const auto t1 = Clock::now();
    fused_update(w_raw_.data(), gradient_.data(), n_,
                 static_cast<float>(learning_rate) / static_cast<float>(size_));
    const auto t2 = Clock::now();
    parts[0] += seconds(t0, t1);
    parts[1] += seconds(t1, t2);
  }

  void raw_copies_round(std::array<double, max_parts>& parts) {
    std::copy(source_.begin(), source_.end(), mean_.begin());  // into a buffer of n + 1
    std::array<Clock::time_point, 5> t;
    t[0] = Clock::now();
    if (!all_finite(mean_.data(), n_)) {
      throw std::runtime_error("a gradient is not finite");
    }
    t[1] = Clock::now();
    mean_[n_] = 1.0F;  // this process's count, in the slot after the gradient
    t[2] = Clock::now();
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, mean_.data(), static_cast<int>(n_ + 1), MPI_FLOAT,
                            MPI_SUM, MPI_COMM_WORLD));
    const float count = mean_[n_];
    t[3] = Clock::now();
    mean_update(w_copies_.data(), mean_.data(), n_, static_cast<float>(learning_rate), count);
    t[4] = Clock::now();
    for (std::size_t k = 0; k < 4; ++k) {
      parts[k] += seconds(t[k], t[k + 1]);
    }
  }

  std::size_t n_;
  int size_;
  std::vector<float> source_;
  std::vector<float> gradient_;
  std::vector<float> w_library_;
  std::vector<float> w_raw_;
  std::vector<float> w_copies_;
  std::vector<float> mean_;
  volatile float sink_ = 0.0F;
  SyncOptimizer optimizer_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Handle> handle_;  // after the store: goes before it
  std::int64_t rounds_library_ = 0;
  std::int64_t rounds_raw_ = 0;
  std::int64_t rounds_copies_ = 0;
};

// Runs one block of `kind` on every process and returns, on process 0, its result.
Block time_block(Case& c, Kind kind, int repetition, std::int64_t rounds, int size) {
  const bool library = kind == Kind::library;
  const double collective_before = library ? c.collective_seconds() : 0.0;
  MPI_Barrier(MPI_COMM_WORLD);
  std::array<double, max_parts> parts{};
  c.run(kind, rounds, parts);
  const double collective_after = library ? c.collective_seconds() : 0.0;

  // Per process: each part's mean per round, then the round's.
  const auto count = static_cast<double>(rounds);
  std::array<double, max_parts + 2> mine{};
  double round = 0.0;
  for (std::size_t k = 0; k < max_parts; ++k) {
    mine[k] = parts[k] / count;
    if (!(library && k == 0)) {
      round += mine[k];
    }
  }
  mine[max_parts] = round;
  mine[max_parts + 1] = library ? mine[0] + round : 0.0;
  std::array<double, max_parts + 2> sum{};
  double max_round = 0.0;
  MPI_Reduce(mine.data(), sum.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_SUM, 0,
             MPI_COMM_WORLD);
  MPI_Reduce(&round, &max_round, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

  Block block{.kind = kind, .repetition = repetition, .rounds = rounds};
  for (std::size_t k = 0; k < max_parts; ++k) {
    block.parts[k] = sum[k] / size;
  }
  block.round = sum[max_parts] / size;
  block.round_max = max_round;
  block.step = sum[max_parts + 1] / size;
  block.collective = (collective_after - collective_before) / (count * size);
  return block;
}

// Rounds per block: enough for min_block_time seconds of the slowest kind, timed on process
// 0 and broadcast so that every process runs the same count.
std::int64_t calibrate(Case& c, const Settings& settings, int rank) {
  double slowest = 0.0;
  for (const Kind kind : kinds) {
    std::array<double, max_parts> parts{};
    c.run(kind, warm_up_rounds, parts);
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = Clock::now();
    c.run(kind, calibration_rounds, parts);
    slowest = std::max(slowest, seconds(start, Clock::now()) / calibration_rounds);
  }
  std::int64_t rounds = min_rounds;
  if (rank == 0 && slowest > 0.0) {
    const double wanted = std::ceil(settings.min_block_time / slowest);
    const std::int64_t most =
        (max_rounds - warm_up_rounds - calibration_rounds) / settings.repetitions;
    rounds = wanted >= static_cast<double>(most)
                 ? most
                 : std::max(min_rounds, static_cast<std::int64_t>(wanted));
  }
  MPI_Bcast(&rounds, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  return rounds;
}

// ---------------------------------------------------------------------------------------------
// Bytes per example: Synchronous against LocalSgd through optimize()
// ---------------------------------------------------------------------------------------------

using mpi_tests::LeastSquares;
using mpi_tests::planted;

struct Traffic {
  std::string consistency;
  std::uint64_t period = 1;
  std::uint64_t collective_bytes = 0;
  std::uint64_t examples = 0;
  std::uint64_t updates = 0;
  double final_loss = 0.0;
};

constexpr Eigen::Index traffic_dimension = 256;
constexpr Eigen::Index traffic_examples = 4096;
constexpr asyncopt::Options traffic_options{.workers = 1, .batch_size = 16, .epochs = 3, .seed = 5};

template <class Consistency>
Traffic measure_traffic(const LeastSquares& f, const Consistency& consistency, const char* name,
                        std::uint64_t period) {
  std::vector<float> w(static_cast<std::size_t>(f.dimension()), 0.0F);
  const asyncopt::AsyncOptimizer<float, Rule, Consistency, Mpi> opt(Rule{.learning_rate = 0.01},
                                                                    consistency);
  const asyncopt::Report report = opt.optimize(f, std::span<float>(w), traffic_options);
  return {
      name, period, report.collective_bytes, report.examples, report.updates, report.final_loss()};
}

// ---------------------------------------------------------------------------------------------
// A compressed round against an uncompressed one
// ---------------------------------------------------------------------------------------------

// Synchronous rounds of the library with top-k 1% and error feedback against the same rounds
// uncompressed, at one n: each is pull_view, the gradient written into the lent buffer,
// push_in_place and clock, as the library kind above; blocks of the two alternate.
struct Compressed {
  std::size_t n = 0;
  double round = 0.0;               // seconds, median over the blocks of the mean per round
  double uncompressed_round = 0.0;  // the same, uncompressed
  std::uint64_t compressed_bytes = 0;
  std::uint64_t uncompressed_bytes = 0;
};

const asyncopt::compress::Config top_k_one_percent{
    .codec = asyncopt::compress::TopK{.fraction = 0.01},
    .memory = {.feedback = asyncopt::compress::Feedback::error_feedback}};

Compressed measure_compressed(std::size_t n, const Settings& settings, int rank) {
  std::vector<float> source(n);
  for (std::size_t i = 0; i < n; ++i) {
    source[i] = gradient_value(i, rank);
  }
  std::vector<float> w_plain(n, 0.0F);
  std::vector<float> w_compressed(n, 0.0F);
  const SyncOptimizer plain(Rule{.learning_rate = learning_rate});
  const SyncOptimizer compressed(Rule{.learning_rate = learning_rate},
                                 Synchronous{.compression = top_k_one_percent});
  auto plain_store = plain.attach(std::span<float>(w_plain), 1);  // collective
  auto compressed_store = compressed.attach(std::span<float>(w_compressed), 1);
  auto plain_handle = plain_store->worker(0);
  auto compressed_handle = compressed_store->worker(0);
  volatile float sink = 0.0F;
  auto block = [&](auto& handle, std::int64_t rounds) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = Clock::now();
    for (std::int64_t k = 0; k < rounds; ++k) {
      const std::span<const float> w = handle.pull_view();
      sink = w[0];
      const std::span<float> gradient = handle.gradient_buffer();
      std::copy(source.begin(), source.end(), gradient.begin());
      if (!handle.push_in_place(gradient).applied) {
        throw std::runtime_error("a push was not applied");
      }
      handle.clock();
    }
    double mine = seconds(start, Clock::now()) / static_cast<double>(rounds);
    MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return mine / world_size();
  };
  // Rounds per block: enough for min_block_time of the slower (compressed) round.
  const double once = block(compressed_handle, 1);
  (void)block(plain_handle, 1);
  const auto rounds =
      std::max(min_rounds, static_cast<std::int64_t>(std::ceil(settings.min_block_time / once)));
  std::vector<double> times;
  std::vector<double> plain_times;
  for (int r = 0; r < settings.repetitions; ++r) {
    if (r % 2 == 0) {
      times.push_back(block(compressed_handle, rounds));
      plain_times.push_back(block(plain_handle, rounds));
    } else {
      plain_times.push_back(block(plain_handle, rounds));
      times.push_back(block(compressed_handle, rounds));
    }
  }
  const asyncopt::StoreStats stats = compressed_store->stats();  // collective
  std::sort(times.begin(), times.end());
  std::sort(plain_times.begin(), plain_times.end());
  return {.n = n,
          .round = times[times.size() / 2],
          .uncompressed_round = plain_times[plain_times.size() / 2],
          .compressed_bytes = stats.compressed_bytes,
          .uncompressed_bytes = stats.uncompressed_bytes};
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out += ' ';
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string number(double value) {
  if (!std::isfinite(value)) {
    return "null";
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

std::string mpi_library_version() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(version, &length);
  std::string text(version, static_cast<std::size_t>(length));
  const auto end = text.find_first_of(",\n");
  return end == std::string::npos ? text : text.substr(0, end);
}

double mhz_per_cpu() {
  std::ifstream info("/proc/cpuinfo");
  std::string line;
  while (std::getline(info, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        return std::stod(line.substr(colon + 1));
      }
    }
  }
  return 0.0;
}

// The cost of one steady_clock read, which every timed part carries once.
double clock_read_ns() {
  constexpr int reads = 100'000;
  const auto start = Clock::now();
  Clock::time_point last = start;
  for (int k = 0; k < reads; ++k) {
    last = Clock::now();
  }
  return seconds(start, last) / reads * 1e9;
}

std::string date_text() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[64];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S%z", &local);
  return text;
}

std::string to_json(const Settings& settings, int size, double clock_ns,
                    const std::vector<std::pair<std::size_t, Block>>& blocks,
                    const std::vector<Traffic>& traffic, const Compressed& compressed) {
  std::ostringstream out;
  out << "{\n  \"context\": {\n"
      << "    \"date\": " << json_string(date_text()) << ",\n"
      << "    \"executable\": \"bench_mpi\",\n"
      << "    \"num_cpus\": " << std::thread::hardware_concurrency() << ",\n"
      << "    \"mhz_per_cpu\": " << static_cast<long>(std::lround(mhz_per_cpu())) << ",\n"
      << "    \"ranks\": " << size << ",\n"
      << "    \"mpi_library\": " << json_string(mpi_library_version()) << ",\n"
      << "    \"repetitions\": " << settings.repetitions << ",\n"
      << "    \"min_block_time\": " << number(settings.min_block_time) << ",\n"
      << "    \"clock_read_ns\": " << number(clock_ns) << ",\n"
      << "    \"raw_allreduce\": \"MPI_IN_PLACE on the step's gradient buffer\"\n"
      << "  },\n  \"benchmarks\": [";
  const char* separator = "\n";
  for (const auto& [n, b] : blocks) {
    const std::string name =
        std::string(kind_name(b.kind)) + "/" + std::to_string(size) + "/" + std::to_string(n);
    out << separator << "    {\"name\": " << json_string(name)
        << ", \"run_name\": " << json_string(name) << R"(, "run_type": "iteration")"
        << ", \"repetitions\": " << settings.repetitions
        << ", \"repetition_index\": " << b.repetition << ", \"iterations\": " << b.rounds
        << ", \"real_time\": " << number(b.round * 1e6) << R"(, "time_unit": "us")"
        << ", \"kind\": " << json_string(kind_name(b.kind)) << ", \"ranks\": " << size
        << ", \"n\": " << n << ", \"round_us\": " << number(b.round * 1e6)
        << ", \"round_max_us\": " << number(b.round_max * 1e6);
    const auto& names = parts_of(b.kind);
    for (std::size_t k = 0; k < names.size(); ++k) {
      out << ", " << json_string(names[k]) << ": " << number(b.parts[k] * 1e6);
    }
    if (b.kind == Kind::library) {
      out << ", \"step_us\": " << number(b.step * 1e6)
          << ", \"collective_us\": " << number(b.collective * 1e6);
    }
    out << "}";
    separator = ",\n";
  }
  out << "\n  ],\n  \"traffic\": [";
  separator = "\n";
  for (const Traffic& t : traffic) {
    out << separator << "    {\"consistency\": " << json_string(t.consistency)
        << ", \"period\": " << t.period << ", \"ranks\": " << size
        << ", \"dimension\": " << traffic_dimension
        << ", \"examples_per_epoch\": " << traffic_examples
        << ", \"batch_size\": " << traffic_options.batch_size
        << ", \"epochs\": " << traffic_options.epochs
        << ", \"collective_bytes\": " << t.collective_bytes << ", \"examples\": " << t.examples
        << ", \"updates\": " << t.updates << ", \"bytes_per_example\": "
        << number(t.examples > 0
                      ? static_cast<double>(t.collective_bytes) / static_cast<double>(t.examples)
                      : 0.0)
        << ", \"final_loss\": " << number(t.final_loss) << "}";
    separator = ",\n";
  }
  out << "\n  ],\n  \"compressed\": [\n"
      << "    {\"ranks\": " << size << ", \"n\": " << compressed.n
      << R"(, "codec": "top-k 1% + error feedback")"
      << ", \"round_us\": " << number(compressed.round * 1e6)
      << ", \"uncompressed_round_us\": " << number(compressed.uncompressed_round * 1e6)
      << ", \"compressed_bytes\": " << compressed.compressed_bytes
      << ", \"uncompressed_bytes\": " << compressed.uncompressed_bytes << "}\n  ]\n}\n";
  return out.str();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t m = values.size() / 2;
  return values.size() % 2 == 1 ? values[m] : 0.5 * (values[m - 1] + values[m]);
}

int run(const Settings& settings) {
  const int rank = world_rank();
  const int size = world_size();
  const double clock_ns = clock_read_ns();
  std::vector<std::pair<std::size_t, Block>> blocks;
  bool ok = true;
  for (const std::size_t n : settings.sizes) {
    Case c(n, rank, size);
    const std::int64_t rounds = calibrate(c, settings, rank);
    std::array<std::vector<double>, 3> times;
    for (int r = 0; r < settings.repetitions; ++r) {
      for (std::size_t k = 0; k < kinds.size(); ++k) {
        const Kind kind = kinds[(k + static_cast<std::size_t>(r)) % kinds.size()];
        const Block block = time_block(c, kind, r, rounds, size);
        if (rank == 0) {
          blocks.emplace_back(n, block);
          times[static_cast<std::size_t>(kind)].push_back(block.round);
        }
      }
    }
    ok = c.check(rank) && ok;
    if (rank == 0) {
      const double library = median(times[0]);
      const double raw = median(times[1]);
      std::printf(
          "%d processes, n = %zu: library %.1f us, raw %.1f us (x %.3f), raw_copies "
          "%.1f us; %lld rounds per block\n",
          size, n, library * 1e6, raw * 1e6, library / raw, median(times[2]) * 1e6,
          static_cast<long long>(rounds));
      std::fflush(stdout);
    }
  }

  const LeastSquares f = planted(traffic_examples, traffic_dimension, 3);
  std::vector<Traffic> traffic;
  traffic.push_back(measure_traffic(f, Synchronous{}, "Synchronous", 1));
  traffic.push_back(measure_traffic(f, LocalSgd{.period = settings.local_sgd_period}, "LocalSgd",
                                    settings.local_sgd_period));
  for (const Traffic& t : traffic) {
    if (t.examples == 0 || (size > 1 && t.collective_bytes == 0) || !std::isfinite(t.final_loss)) {
      if (rank == 0) {
        std::fprintf(stderr,
                     "bench_mpi: %s trained on %llu examples, %llu collective bytes, "
                     "final loss %g\n",
                     t.consistency.c_str(), static_cast<unsigned long long>(t.examples),
                     static_cast<unsigned long long>(t.collective_bytes), t.final_loss);
      }
      ok = false;
    }
  }
  // At the largest size: the issue's measure is 1e7 floats.
  const Compressed compressed = measure_compressed(
      *std::max_element(settings.sizes.begin(), settings.sizes.end()), settings, rank);
  if (compressed.compressed_bytes == 0 || !(compressed.round > 0.0)) {
    if (rank == 0) {
      std::fprintf(stderr, "bench_mpi: the compressed rounds sent no bytes\n");
    }
    ok = false;
  }
  if (rank == 0) {
    std::printf(
        "%d processes, n = %zu: a round with top-k 1%% + error feedback %.1f us against %.1f us "
        "uncompressed (x %.3f), %.2f%% of the bytes\n",
        size, compressed.n, compressed.round * 1e6, compressed.uncompressed_round * 1e6,
        compressed.round / compressed.uncompressed_round,
        100.0 * static_cast<double>(compressed.compressed_bytes) /
            static_cast<double>(compressed.uncompressed_bytes));
    for (const Traffic& t : traffic) {
      std::printf("%s (period %llu): %.1f collective bytes per example\n", t.consistency.c_str(),
                  static_cast<unsigned long long>(t.period),
                  static_cast<double>(t.collective_bytes) / static_cast<double>(t.examples));
    }
    if (!settings.out.empty()) {
      std::ofstream file(settings.out);
      file << to_json(settings, size, clock_ns, blocks, traffic, compressed);
      if (!file) {
        std::fprintf(stderr, "bench_mpi: cannot write %s\n", settings.out.c_str());
        ok = false;
      }
    }
  }
  int all_ok = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all_ok == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const asyncopt::mpi::Environment mpi(argc, argv);
    Settings settings;
    try {
      settings = parse(argc, argv);
    } catch (const std::exception& e) {
      // Every process parses the same arguments: they all stop here.
      if (world_rank() == 0) {
        std::fprintf(stderr, "bench_mpi: %s\n%s", e.what(), usage);
      }
      return 2;
    }
    try {
      return run(settings);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_mpi: process %d: %s\n", world_rank(), e.what());
      throw;  // the Environment ends the whole job: the others may wait in a collective
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mpi: %s\n", e.what());  // MPI did not start
    return 1;
  }
}
