// The MPI transport, run under mpirun with 2 and 4 processes: Synchronous and LocalSgd across
// processes against the shared-memory store with as many workers (bit for bit where the sums
// are the same, to 1e-6 relative where only their grouping differs), parameters equal on
// every process after every epoch, uneven shards, the Report of the whole job, agreement on
// when to stop, and the errors of bad input.
#define CATCH_CONFIG_RUNNER  // NOLINT(readability-identifier-naming): Catch2 names it
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <asyncopt/mpi/mpi.hpp>
#include <asyncopt/objective/objective.hpp>
#include <asyncopt/solver/giant.hpp>

#include "job.hpp"

using asyncopt::Options;
using asyncopt::consistency::LocalSgd;
using asyncopt::consistency::Scaffold;
using asyncopt::consistency::Synchronous;
using asyncopt::transport::Mpi;
using asyncopt::transport::SharedMemory;

namespace {

using mpi_tests::checksum;
using mpi_tests::LeastSquares;
using mpi_tests::planted;
using mpi_tests::same_everywhere;

std::size_t rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return static_cast<std::size_t>(r);
}

std::size_t processes() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return static_cast<std::size_t>(s);
}

// Whether `holds` holds on every process.
bool everywhere(bool holds) {
  int all = holds ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

double relative_difference(std::span<const float> a, std::span<const float> b) {
  double diff = 0.0;
  double norm = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

// A job's parameters against the single process's: bit for bit, or to 1e-6 relative where
// the all-reduce sums in another order than the single process does.
void check_same(std::span<const float> job, std::span<const float> single, bool bitwise) {
  if (bitwise) {
    REQUIRE(job.size() == single.size());
    CHECK(std::memcmp(job.data(), single.data(), job.size_bytes()) == 0);
  } else {
    CHECK(relative_difference(job, single) <= 1e-6);
  }
}

struct Run {
  std::vector<float> params;
  asyncopt::Report report;
  std::vector<std::uint64_t> epoch_checksums;
  std::vector<std::uint64_t> epoch_bytes;  // EpochInfo::collective_bytes after each epoch
};

// optimize() from zero with `workers` workers on `Transport`, recording the parameters'
// checksum after every epoch.
template <class Rule, class Consistency, class Transport>
Run train(const LeastSquares& f, const Rule& rule, const Consistency& consistency,
          const Options& options) {
  Run run;
  run.params.assign(f.dimension(), 0.0F);
  const asyncopt::AsyncOptimizer<float, Rule, Consistency, Transport> opt(rule, consistency);
  run.report = opt.optimize(f, std::span<float>(run.params), options,
                            [&](const asyncopt::EpochInfo<float>& info) {
                              run.epoch_checksums.push_back(checksum(info.params));
                              run.epoch_bytes.push_back(info.collective_bytes);
                            });
  return run;
}

// The MPI run of `local` workers per process against the shared-memory run with as many
// workers as the job, for one rule and policy.
template <class Rule, class Consistency>
void check_against_shared_memory(const Rule& rule, const Consistency& consistency,
                                 std::size_t local, std::size_t examples, bool bitwise) {
  const std::size_t p = processes();
  const LeastSquares f = planted(static_cast<Eigen::Index>(examples), 12, 7);
  Options options{.workers = local, .batch_size = 4, .epochs = 3, .seed = 11};
  const Run job = train<Rule, Consistency, Mpi>(f, rule, consistency, options);
  options.workers = local * p;
  const Run single = train<Rule, Consistency, SharedMemory>(f, rule, consistency, options);

  // The parameters are the same on every process after every epoch.
  REQUIRE(job.epoch_checksums.size() == 3);
  for (const std::uint64_t sum : job.epoch_checksums) {
    CHECK(same_everywhere(sum));
  }
  check_same(job.params, single.params, bitwise);
  // The Report covers the whole job: the same counts as the single process's.
  CHECK(job.report.updates == single.report.updates);
  CHECK(job.report.examples == single.report.examples);
  CHECK(job.report.epochs == 3);
  CHECK(job.report.rejected == 0);
  CHECK((job.report.collective_bytes > 0) == (p > 1));  // one process needs no collective
  CHECK((job.report.collective_seconds > 0.0) == (p > 1));
  // Each epoch's callback sees the job's bytes so far: growing, and the Report's at the end.
  REQUIRE(job.epoch_bytes.size() == 3);
  CHECK(std::is_sorted(job.epoch_bytes.begin(), job.epoch_bytes.end()));
  CHECK(job.epoch_bytes.back() == job.report.collective_bytes);
  CHECK((job.epoch_bytes.front() > 0) == (p > 1));
  CHECK(single.report.collective_bytes == 0);
  // A compression stage encodes the same messages: the same bytes over the job.
  CHECK(job.report.compressed_bytes == single.report.compressed_bytes);
  CHECK(job.report.uncompressed_bytes == single.report.uncompressed_bytes);
}

}  // namespace

TEST_CASE("synchronous SGD across processes equals the shared-memory store with as many workers") {
  const std::size_t p = processes();
  const asyncopt::update::Sgd sgd{.learning_rate = 0.02};
  SECTION("one worker per process") {
    // Two processes sum g0 + g1 as two threads do: the same bits.
    check_against_shared_memory(sgd, Synchronous{}, 1, 400, p <= 2);
  }
  SECTION("two workers per process") {
    // Each process sums its two in the round's pairwise tree, a subtree of the job's: two
    // processes add the two subtrees as one process does.
    check_against_shared_memory(sgd, Synchronous{}, 2, 400, p <= 2);
  }
}

TEST_CASE("every rule runs across processes with the parameters equal everywhere") {
  const std::size_t p = processes();
  SECTION("heavy ball") {
    check_against_shared_memory(asyncopt::update::HeavyBall{.learning_rate = 0.01}, Synchronous{},
                                1, 240, p <= 2);
  }
  SECTION("Adam") {
    check_against_shared_memory(asyncopt::update::Adam{.learning_rate = 0.01}, Synchronous{}, 1,
                                240, p <= 2);
  }
  SECTION("delay compensation") {
    check_against_shared_memory(asyncopt::update::DelayCompensated{.learning_rate = 0.01},
                                Synchronous{}, 1, 240, p <= 2);
  }
  SECTION("momentum correction under local SGD") {
    check_against_shared_memory(asyncopt::update::MomentumCorrection{.learning_rate = 0.01},
                                LocalSgd{.period = 3}, 1, 240, p <= 2);
  }
}

TEST_CASE("local SGD across processes equals the shared-memory store with as many workers") {
  const std::size_t p = processes();
  const asyncopt::update::Sgd sgd{.learning_rate = 0.02};
  SECTION("period 8, one worker per process") {
    check_against_shared_memory(sgd, LocalSgd{.period = 8}, 1, 400, p <= 2);
  }
  SECTION("period 4, two workers per process") {
    check_against_shared_memory(sgd, LocalSgd{.period = 4}, 2, 400, p <= 2);
  }
}

// A round all-reduces both deltas and the count: two processes of one worker sum them as two
// threads do.
TEST_CASE("SCAFFOLD across processes equals the shared-memory store with as many workers") {
  const std::size_t p = processes();
  SECTION("period 4, one worker per process") {
    check_against_shared_memory(asyncopt::update::Sgd{.learning_rate = 0.02}, Scaffold{.period = 4},
                                1, 400, p <= 2);
  }
  SECTION("period 3, two workers per process, heavy ball as the local solver") {
    check_against_shared_memory(asyncopt::update::HeavyBall{.learning_rate = 0.01},
                                Scaffold{.period = 3, .global_learning_rate = 0.5}, 2, 400, p <= 2);
  }
  SECTION("uneven shards: a process with nothing left still moves c with the others") {
    const asyncopt::update::Sgd sgd{.learning_rate = 0.03};
    for (const std::size_t examples : {4 * p + 1, 9 * p + 1}) {
      INFO("examples = " << examples);
      const LeastSquares f = planted(static_cast<Eigen::Index>(examples), 6, 5);
      Options options{.workers = 1, .batch_size = 3, .epochs = 2, .seed = 2};
      const Run job =
          train<asyncopt::update::Sgd, Scaffold, Mpi>(f, sgd, Scaffold{.period = 2}, options);
      options.workers = p;
      const Run single = train<asyncopt::update::Sgd, Scaffold, SharedMemory>(
          f, sgd, Scaffold{.period = 2}, options);
      CHECK(same_everywhere(checksum(job.params)));
      CHECK(job.report.updates == single.report.updates);
      check_same(job.params, single.params, p <= 2);
    }
  }
}

TEST_CASE("checkpoints of a SCAFFOLD job are refused in one sentence") {
  using Catch::Matchers::Contains;
  const LeastSquares f = planted(40, 4, 1);
  std::vector<float> w(4, 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Scaffold, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01}, Scaffold{},
      Mpi{.checkpoints = {.path = "/nonexistent/asyncopt-scaffold.ckpt", .every_rounds = 1}});
  CHECK_THROWS_WITH(opt.optimize(f, std::span<float>(w), {.workers = 1, .epochs = 1}),
                    Contains("checkpoints do not hold Scaffold's control variates"));
  CHECK(w == std::vector<float>(4, 0.0F));
}

// GIANT over the collective seam: each process's workers sum their weighted vectors in the
// pairwise tree, then one all-reduce per vector; two processes add their two subtrees as one
// process does.
TEST_CASE("GIANT across processes equals one process with as many workers") {
  const std::size_t p = processes();
  const LeastSquares f = planted(400, 12, 7);
  for (const std::size_t local : {1, 2}) {
    INFO("workers per process = " << local);
    const asyncopt::Giant options{.workers = local, .rounds = 3, .cg_iterations = 20};
    std::vector<float> job(f.dimension(), 0.0F);
    asyncopt::mpi::Communicator comm;
    const auto report =
        asyncopt::giant(f, std::span<float>(job), options, asyncopt::collective::Ref(comm));
    asyncopt::Giant single_options = options;
    single_options.workers = local * p;
    std::vector<float> single(f.dimension(), 0.0F);
    const auto single_report = asyncopt::giant(f, std::span<float>(single), single_options);
    CHECK(same_everywhere(checksum(job)));
    check_same(job, single, p <= 2);
    CHECK(report.rounds == 3);
    CHECK(report.hessian_vector_products == single_report.hessian_vector_products);
    CHECK((report.collective_bytes > 0) == (p > 1));
    CHECK(report.loss.back() < report.loss.front());
  }
}

TEST_CASE("STORM with checkpoints is refused in one sentence") {
  using Catch::Matchers::Contains;
  const LeastSquares f = planted(40, 4, 1);
  std::vector<float> w(4, 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01}, Synchronous{},
      Mpi{.checkpoints = {.path = "/nonexistent/asyncopt-storm.ckpt", .every_rounds = 1}});
  CHECK_THROWS_WITH(opt.optimize(f, std::span<float>(w),
                                 {.workers = 1, .epochs = 1, .storm = asyncopt::Storm{.a = 0.5}}),
                    Contains("checkpoints do not hold the workers' STORM estimates"));
  CHECK(w == std::vector<float>(4, 0.0F));
}

TEST_CASE("local SGD with period 1 across processes equals synchronous SGD") {
  const LeastSquares f = planted(300, 10, 3);
  const Options options{.workers = 1, .batch_size = 5, .epochs = 2, .seed = 4};
  const asyncopt::update::Sgd sgd{.learning_rate = 0.02};
  const Run sync = train<asyncopt::update::Sgd, Synchronous, Mpi>(f, sgd, Synchronous{}, options);
  const Run local =
      train<asyncopt::update::Sgd, LocalSgd, Mpi>(f, sgd, LocalSgd{.period = 1}, options);
  // The mean of (w - lr g_k) and w - lr mean(g_k) round differently: equal to a few ulps.
  CHECK(relative_difference(local.params, sync.params) <= 1e-6);
  CHECK(same_everywhere(checksum(local.params)));
}

// Every process gathers every message and sums the decoded ones in the order of the job's
// worker ids, as one process sums its workers: the same bits whatever the layout. Messages
// that keep the same positions are all-reduced instead, summed as uncompressed rounds are.
TEST_CASE(
    "compressed rounds across processes equal the shared-memory store with as many "
    "workers") {
  namespace compress = asyncopt::compress;
  const asyncopt::update::Sgd sgd{.learning_rate = 0.02};
  const compress::Config top_k{.codec = compress::TopK{.k = 3},
                               .memory = {.feedback = compress::Feedback::error_feedback}};
  SECTION("synchronous, top-k with error feedback, one worker per process") {
    check_against_shared_memory(sgd, Synchronous{.compression = top_k}, 1, 400, true);
  }
  SECTION("synchronous, top-k with error feedback, two workers per process") {
    check_against_shared_memory(sgd, Synchronous{.compression = top_k}, 2, 400, true);
  }
  SECTION("synchronous, QSGD with DIANA (each worker's own draws)") {
    // omega = min(12 / 16, sqrt(12) / 4) = 0.75 for 12 values and 4 levels: alpha <= 0.57.
    const compress::Config qsgd{.codec = compress::Qsgd{.levels = 4, .seed = 3},
                                .memory = {.feedback = compress::Feedback::diana, .alpha = 0.5}};
    check_against_shared_memory(sgd, Synchronous{.compression = qsgd}, 1, 240, true);
  }
  SECTION("1-bit Adam: a warm-up, then sign-compressed momenta with error feedback") {
    const asyncopt::update::OneBitAdam one_bit_adam{.adam = {.learning_rate = 0.01}, .freeze = 10};
    const compress::Config sign{.codec = compress::Sign{},
                                .memory = {.feedback = compress::Feedback::error_feedback}};
    // The warm-up's rounds are uncompressed synchronous rounds, summed in the all-reduce's
    // order: bit for bit where those are (one worker on each of two processes).
    const std::size_t p = processes();
    check_against_shared_memory(one_bit_adam, Synchronous{.compression = sign}, 1, 400, p <= 2);
    check_against_shared_memory(one_bit_adam, Synchronous{.compression = sign}, 2, 400, p <= 2);
  }
  SECTION("local SGD, QSGD with error feedback, one worker per process") {
    const compress::Config qsgd{.codec = compress::Qsgd{.levels = 2, .seed = 9},
                                .memory = {.feedback = compress::Feedback::error_feedback}};
    check_against_shared_memory(sgd, LocalSgd{.period = 3, .compression = qsgd}, 1, 240, true);
  }
  SECTION("random-k with shared indices rides an all-reduce, summed as rounds are") {
    // Its messages keep the same positions, so their values are summed within each process
    // and then all-reduced: bit for bit where an uncompressed round is.
    const std::size_t p = processes();
    const compress::Config random_k{.codec = compress::RandomK{.k = 4, .seed = 5, .scaled = false},
                                    .memory = {.feedback = compress::Feedback::error_feedback}};
    check_against_shared_memory(sgd, LocalSgd{.period = 4, .compression = random_k}, 2, 400,
                                p <= 2);
    check_against_shared_memory(sgd, Synchronous{.compression = random_k}, 1, 400, p <= 2);
  }
}

TEST_CASE("uneven shards across processes neither hang nor bias the mean") {
  // 4 workers per process's count of examples: the shards differ in length, so the last
  // rounds have fewer processes contributing; a process with nothing left takes part with a
  // count of 0, and the mean is over the contributions alone, as within one process.
  const std::size_t p = processes();
  const asyncopt::update::Sgd sgd{.learning_rate = 0.03};
  for (const std::size_t examples : {4 * p + 1, 4 * p + p - 1, 9 * p + 1}) {
    INFO("examples = " << examples);
    const LeastSquares f = planted(static_cast<Eigen::Index>(examples), 6, 5);
    Options options{.workers = 1, .batch_size = 3, .epochs = 2, .seed = 2};
    const Run job = train<asyncopt::update::Sgd, Synchronous, Mpi>(f, sgd, Synchronous{}, options);
    const Run local =
        train<asyncopt::update::Sgd, LocalSgd, Mpi>(f, sgd, LocalSgd{.period = 2}, options);
    options.workers = p;
    const Run single =
        train<asyncopt::update::Sgd, Synchronous, SharedMemory>(f, sgd, Synchronous{}, options);
    const Run single_local = train<asyncopt::update::Sgd, LocalSgd, SharedMemory>(
        f, sgd, LocalSgd{.period = 2}, options);
    CHECK(same_everywhere(checksum(job.params)));
    CHECK(same_everywhere(checksum(local.params)));
    CHECK(job.report.updates == single.report.updates);
    check_same(job.params, single.params, p <= 2);
    check_same(local.params, single_local.params, p <= 2);
  }
}

TEST_CASE("checkpoints of a compressed job are refused in one sentence") {
  using Catch::Matchers::Contains;
  namespace compress = asyncopt::compress;
  const LeastSquares f = planted(40, 4, 1);
  std::vector<float> w(4, 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01},
      Synchronous{.compression = compress::Config{.codec = compress::TopK{.k = 1}}},
      Mpi{.checkpoints = {.path = "/nonexistent/asyncopt-compressed.ckpt", .every_rounds = 1}});
  CHECK_THROWS_WITH(opt.optimize(f, std::span<float>(w), {.workers = 1, .epochs = 1}),
                    Contains("checkpoints do not hold a compression stage's memory"));
  CHECK(w == std::vector<float>(4, 0.0F));
}

TEST_CASE("compressed rounds with uneven shards equal shared memory bit for bit") {
  // As above, with QSGD and error feedback: the draws follow the job's round numbers, which a
  // process whose workers have left keeps counting through its idle rounds.
  namespace compress = asyncopt::compress;
  const std::size_t p = processes();
  const asyncopt::update::Sgd sgd{.learning_rate = 0.03};
  const compress::Config qsgd{.codec = compress::Qsgd{.levels = 2, .seed = 8},
                              .memory = {.feedback = compress::Feedback::error_feedback}};
  for (const std::size_t examples : {4 * p + 1, 9 * p + 1}) {
    INFO("examples = " << examples);
    const LeastSquares f = planted(static_cast<Eigen::Index>(examples), 6, 5);
    Options options{.workers = 1, .batch_size = 3, .epochs = 2, .seed = 2};
    const Synchronous sync{.compression = qsgd};
    const LocalSgd local_sgd{.period = 2, .compression = qsgd};
    const Run job = train<asyncopt::update::Sgd, Synchronous, Mpi>(f, sgd, sync, options);
    const Run local = train<asyncopt::update::Sgd, LocalSgd, Mpi>(f, sgd, local_sgd, options);
    options.workers = p;
    const Run single =
        train<asyncopt::update::Sgd, Synchronous, SharedMemory>(f, sgd, sync, options);
    const Run single_local =
        train<asyncopt::update::Sgd, LocalSgd, SharedMemory>(f, sgd, local_sgd, options);
    CHECK(same_everywhere(checksum(job.params)));
    CHECK(same_everywhere(checksum(local.params)));
    CHECK(job.params == single.params);
    CHECK(local.params == single_local.params);
    CHECK(job.report.compressed_bytes == single.report.compressed_bytes);
    // 1-bit Adam: a process whose workers have left asks the rule, as the others do, whether
    // a round is past the warm-up.
    const asyncopt::update::OneBitAdam one_bit_adam{.adam = {.learning_rate = 0.02}, .freeze = 3};
    const Synchronous sign{
        .compression = compress::Config{
            .codec = compress::Sign{}, .memory = {.feedback = compress::Feedback::error_feedback}}};
    options.workers = 1;
    const Run adam_job =
        train<asyncopt::update::OneBitAdam, Synchronous, Mpi>(f, one_bit_adam, sign, options);
    options.workers = p;
    const Run adam_single = train<asyncopt::update::OneBitAdam, Synchronous, SharedMemory>(
        f, one_bit_adam, sign, options);
    CHECK(same_everywhere(checksum(adam_job.params)));
    // Its warm-up rounds sum in the all-reduce's order: bit for bit on up to two processes.
    check_same(adam_job.params, adam_single.params, p <= 2);
    CHECK(adam_job.report.compressed_bytes == adam_single.report.compressed_bytes);
    // Random-k with shared indices, summed in an all-reduce: an idle process adds nothing
    // and a count of 0, and draws the round's positions as the others do.
    const Synchronous random_k{.compression = compress::Config{
                                   .codec = compress::RandomK{.k = 2, .seed = 6},
                                   .memory = {.feedback = compress::Feedback::error_feedback}}};
    options.workers = 1;
    const Run summed_job =
        train<asyncopt::update::Sgd, Synchronous, Mpi>(f, sgd, random_k, options);
    options.workers = p;
    const Run summed_single =
        train<asyncopt::update::Sgd, Synchronous, SharedMemory>(f, sgd, random_k, options);
    CHECK(same_everywhere(checksum(summed_job.params)));
    check_same(summed_job.params, summed_single.params, p <= 2);
    CHECK(summed_job.report.updates == summed_single.report.updates);
  }
}

namespace {

// f(w) = mean over examples i of |w - t_i|^2 / 2, with t_i[j] = sin(7 i + j): a cheap
// objective of many parameters, whose rounds count their contributions apart.
struct Centers {
  std::size_t d = 0;
  std::size_t examples = 0;

  [[nodiscard]] std::size_t dimension() const { return d; }
  [[nodiscard]] std::size_t num_examples() const { return examples; }
  [[nodiscard]] static float target(std::size_t i, std::size_t j) {
    return std::sin(static_cast<float>(7 * i + j));
  }
  [[nodiscard]] double loss(std::span<const float> w) const {
    double sum = 0.0;
    for (std::size_t i = 0; i < examples; ++i) {
      for (std::size_t j = 0; j < d; ++j) {
        const double r = static_cast<double>(w[j]) - target(i, j);
        sum += 0.5 * r * r;
      }
    }
    return sum / static_cast<double>(examples);
  }
  void gradient(std::span<const float> w, std::span<const std::size_t> batch,
                std::span<float> grad) const {
    for (std::size_t j = 0; j < d; ++j) {
      float mean = 0.0F;
      for (const std::size_t i : batch) {
        mean += target(i, j);
      }
      grad[j] = w[j] - mean / static_cast<float>(batch.size());
    }
  }
};

template <class Consistency, class Transport>
std::vector<float> train_centers(const Centers& f, const Consistency& consistency,
                                 const Options& options, std::uint64_t* bytes = nullptr) {
  std::vector<float> w(f.dimension(), 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Consistency, Transport> opt(
      asyncopt::update::Sgd{.learning_rate = 0.1}, consistency);
  const auto report = opt.optimize(f, std::span<float>(w), options);
  if (bytes != nullptr) {
    *bytes = report.collective_bytes;
  }
  return w;
}

}  // namespace

TEST_CASE("rounds of many parameters carry the count in the lent buffer and equal shared memory") {
  // optimize() computes each gradient in the buffer the store lends the worker, so a round
  // sums there and all-reduces n + 1 floats, the count in the last.
  const std::size_t p = processes();
  const Centers f{.d = 20003, .examples = 4 * p + 1};
  Options options{.workers = 1, .batch_size = 2, .epochs = 2, .seed = 6, .evaluate_loss = false};
  std::uint64_t bytes = 0;
  const auto job = train_centers<Synchronous, Mpi>(f, Synchronous{}, options, &bytes);
  if (p > 1) {
    CHECK(bytes % ((f.d + 1) * sizeof(float)) == 0);
    CHECK(bytes > 0);
  }
  const auto local = train_centers<LocalSgd, Mpi>(f, LocalSgd{.period = 2}, options);
  options.workers = p;
  const auto single = train_centers<Synchronous, SharedMemory>(f, Synchronous{}, options);
  const auto single_local =
      train_centers<LocalSgd, SharedMemory>(f, LocalSgd{.period = 2}, options);
  CHECK(same_everywhere(checksum(job)));
  CHECK(same_everywhere(checksum(local)));
  if (p <= 2) {
    CHECK(job == single);
    CHECK(local == single_local);
  } else {
    CHECK(relative_difference(job, single) <= 1e-6);
    CHECK(relative_difference(local, single_local) <= 1e-6);
  }
}

TEST_CASE("a gradient in the caller's buffer or in the lent one makes the same round") {
  // Every round all-reduces n + 1 floats, the count last: from the lent buffer in place, from
  // the caller's own buffer after a copy next to the count. Both give the same parameters,
  // and the closed form: process r pushes (r + 1) / 4 everywhere, so the mean is (p + 1) / 8
  // and after R rounds of lr = 1/2, w = -R (p + 1) / 16, exact in float.
  const std::size_t p = processes();
  const std::size_t n = 20005;
  constexpr std::size_t rounds = 6;
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.5});
  std::vector<float> own_w(n, 0.0F);
  std::vector<float> lent_w(n, 0.0F);
  auto own = opt.attach(std::span<float>(own_w), 1);
  auto lent = opt.attach(std::span<float>(lent_w), 1);
  const float mine = static_cast<float>(rank() + 1) / 4.0F;
  {
    auto h = own->worker(0);
    auto g = lent->worker(0);
    std::vector<float> pulled(n);
    std::vector<float> gradient(n);
    for (std::size_t k = 0; k < rounds; ++k) {
      h.pull(std::span<float>(pulled));
      std::fill(gradient.begin(), gradient.end(), mine);
      CHECK(h.push_in_place(std::span<float>(gradient)).applied);
      h.clock();
      const std::span<const float> view = g.pull_view();
      CHECK(view.data() == lent_w.data());  // the parameters themselves, no copy
      CHECK(std::equal(view.begin(), view.end(), pulled.begin()));
      const std::span<float> buffer = g.gradient_buffer();
      REQUIRE(buffer.size() == n);
      std::fill(buffer.begin(), buffer.end(), mine);
      CHECK(g.push_in_place(buffer).applied);
      g.clock();
    }
  }
  own->sync();
  lent->sync();
  const float expected = -static_cast<float>(rounds * (p + 1)) / 16.0F;
  CHECK(own_w == std::vector<float>(n, expected));
  CHECK(lent_w == own_w);
  const asyncopt::StoreStats own_stats = own->stats();
  const asyncopt::StoreStats lent_stats = lent->stats();
  CHECK(own_stats.updates == rounds);
  CHECK(lent_stats.updates == rounds);
  // Each process counts every all-reduce's buffer once; sync() ends with one round to which
  // nobody contributes.
  const std::uint64_t bytes = p > 1 ? p * (rounds + 1) * (n + 1) * sizeof(float) : 0;
  CHECK(own_stats.collective_bytes == bytes);
  CHECK(lent_stats.collective_bytes == bytes);
}

TEST_CASE("a process that pushes from its own buffer and one that has left make the same call") {
  // Process 0 pushes three rounds from its own buffer, the others two and then leave: the
  // third round is process 0's gradient alone, which the others join with nothing (sync()),
  // and every process must make the same collective call in it whatever it holds.
  const std::size_t p = processes();
  const std::size_t n = 20007;
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.5});
  std::vector<float> w(n, 0.0F);
  auto store = opt.attach(std::span<float>(w), 1);
  {
    auto h = store->worker(0);
    std::vector<float> pulled(n);
    std::vector<float> gradient(n);
    const std::size_t rounds = rank() == 0 ? 3 : 2;
    for (std::size_t k = 0; k < rounds; ++k) {
      h.pull(std::span<float>(pulled));
      std::fill(gradient.begin(), gradient.end(), static_cast<float>(rank() + 1) / 4.0F);
      CHECK(h.push_in_place(std::span<float>(gradient)).applied);
      h.clock();
    }
  }
  store->sync();
  // Two rounds of mean (p + 1) / 8, then one of process 0's 1/4 alone.
  const float expected = -0.5F * (2.0F * static_cast<float>(p + 1) / 8.0F + 0.25F);
  CHECK(w == std::vector<float>(n, expected));
  CHECK(same_everywhere(checksum(w)));
  CHECK(store->stats().updates == 3);
}

TEST_CASE("the bytes of the rounds are counted for the whole job") {
  // Every round all-reduces n + 1 floats (the sum and the count) on every process, and each
  // epoch ends with one round to which nobody contributes; a job of one process has nobody
  // to reduce with.
  const std::size_t p = processes();
  const LeastSquares f = planted(200, 9, 1);
  const Options options{.workers = 1, .batch_size = 10, .epochs = 2, .seed = 3};
  const Run job = train<asyncopt::update::Sgd, Synchronous, Mpi>(
      f, asyncopt::update::Sgd{.learning_rate = 0.01}, Synchronous{}, options);
  const std::uint64_t rounds = job.report.updates + job.report.epochs;
  CHECK(job.report.updates == 2 * ((200 / p + 9) / 10));
  CHECK(job.report.collective_bytes == (p > 1 ? p * rounds * (9 + 1) * sizeof(float) : 0));
}

TEST_CASE("the processes stop after the same epoch") {
  const LeastSquares f = planted(120, 5, 8);
  const Options options{.workers = 1, .batch_size = 6, .epochs = 10, .seed = 1};
  std::vector<float> w(5, 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01});
  std::size_t calls = 0;
  // Only the last process's callback asks to stop, after epoch 2.
  const auto report =
      opt.optimize(f, std::span<float>(w), options, [&](const asyncopt::EpochInfo<float>& info) {
        ++calls;
        return !(rank() + 1 == processes() && info.epoch == 2);
      });
  CHECK(calls == 2);
  CHECK(report.epochs == 2);
  CHECK(report.stop == asyncopt::StopReason::callback);
}

TEST_CASE("every process starts from process 0's parameters") {
  std::vector<float> w(4, static_cast<float>(rank()) + 1.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01});
  auto store = opt.attach(std::span<float>(w), 1);
  CHECK(w == std::vector<float>(4, 1.0F));
  CHECK(store->first_worker() == rank());
  CHECK(store->job_workers() == processes());
}

TEST_CASE("processes that attach different models are refused with a clear error") {
  if (processes() < 2) {
    return;
  }
  std::vector<float> w(rank() == 1 ? 5 : 4, 0.0F);
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Synchronous, Mpi> opt(
      asyncopt::update::Sgd{.learning_rate = 0.01});
  CHECK_THROWS_WITH(opt.attach(std::span<float>(w), 1),
                    "asyncopt: transport::Mpi: process 1 has 5 parameters but process 0 has 4; "
                    "every process must attach the same model");
  CHECK(everywhere(true));
}

int main(int argc, char** argv) {
  try {
    const asyncopt::mpi::Environment mpi(argc, argv);
    return Catch::Session().run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_mpi: %s\n", e.what());
    return 1;
  }
}
