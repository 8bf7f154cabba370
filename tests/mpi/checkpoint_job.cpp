// A small job for the checkpoint and fault tests (tests/mpi/faults.sh): synchronous or local
// SGD on a planted least-squares problem across the processes of mpiexec, with checkpoints,
// and a process that can kill itself (SIGKILL) part-way.
//
//   checkpoint_job --policy sync|local --epochs E --out FILE
//                  [--checkpoint PATH --every ROUNDS] [--die-after GRADIENTS]
//
// Checks that every process ends with the same parameters (else exits 1), writes them to
// FILE and prints "gradients: N", the gradients it computed (process 0). With --die-after, the last
// process kills itself with SIGKILL when its worker starts its GRADIENTS-th gradient.
#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include <asyncopt/mpi/mpi.hpp>
#include <asyncopt/objective/objective.hpp>

#include "job.hpp"

namespace {

using mpi_tests::LeastSquares;

// The objective, killing this process at its `die_at`-th gradient (0: never).
struct Dying {
  const LeastSquares* f = nullptr;
  long die_at = 0;
  std::atomic<long>* calls = nullptr;

  [[nodiscard]] std::size_t dimension() const { return f->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return f->num_examples(); }
  [[nodiscard]] double loss(std::span<const float> w) const { return f->loss(w); }
  void gradient(std::span<const float> w, std::span<const std::size_t> batch,
                std::span<float> grad) const {
    const long call = calls->fetch_add(1) + 1;
    if (die_at > 0 && call == die_at) {
      std::raise(SIGKILL);
    }
    f->gradient(w, batch, grad);
  }
};

struct Arguments {
  std::string policy = "sync";
  std::size_t epochs = 3;
  std::string out;
  std::string checkpoint;
  std::uint64_t every = 0;
  long die_after = 0;
};

Arguments parse(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--policy") {
      a.policy = value;
    } else if (key == "--epochs") {
      a.epochs = std::stoul(value);
    } else if (key == "--out") {
      a.out = value;
    } else if (key == "--checkpoint") {
      a.checkpoint = value;
    } else if (key == "--every") {
      a.every = std::stoull(value);
    } else if (key == "--die-after") {
      a.die_after = std::stol(value);
    } else {
      throw std::invalid_argument("checkpoint_job: unknown option " + key);
    }
  }
  if ((argc - 1) % 2 != 0 || a.out.empty() || (a.policy != "sync" && a.policy != "local")) {
    throw std::invalid_argument(
        "usage: checkpoint_job --policy sync|local --epochs E --out FILE [--checkpoint PATH "
        "--every ROUNDS] [--die-after GRADIENTS]");
  }
  return a;
}

// Gradients this process computed, printed at the end: a resumed job computes fewer.
std::atomic<long> gradients{0};

template <class Consistency>
std::vector<float> train(const Arguments& a, const Consistency& consistency, int rank, int size) {
  const LeastSquares f = mpi_tests::planted(600, 16, 3, true);
  const Dying objective{.f = &f, .die_at = rank == size - 1 ? a.die_after : 0, .calls = &gradients};
  asyncopt::transport::Mpi mpi;
  mpi.checkpoints = {.path = a.checkpoint, .every_rounds = a.every, .resume = true};
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Adam, Consistency,
                                 asyncopt::transport::Mpi>
      opt(asyncopt::update::Adam{.learning_rate = 0.01}, consistency, mpi);
  std::vector<float> w(f.dimension(), 0.0F);
  const asyncopt::Options options{
      .workers = 1, .batch_size = 8, .epochs = a.epochs, .seed = 5, .evaluate_loss = false};
  (void)opt.optimize(objective, std::span<float>(w), options);
  return w;
}

// The job on every process; an error ends the whole job (MPI_Abort) with status 1.
void run(int argc, char** argv) {
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    const Arguments a = parse(argc, argv);
    const std::vector<float> w =
        a.policy == "sync" ? train(a, asyncopt::consistency::Synchronous{}, rank, size)
                           : train(a, asyncopt::consistency::LocalSgd{.period = 4}, rank, size);
    // A resumed job must have restored every process, not only the one that writes.
    if (!mpi_tests::same_everywhere(mpi_tests::checksum(w))) {
      throw std::runtime_error("checkpoint_job: the processes ended with different parameters");
    }
    if (rank == 0) {
      std::printf("gradients: %ld\n", gradients.load());
      std::ofstream out(a.out, std::ios::binary);
      out.write(reinterpret_cast<const char*>(w.data()),
                static_cast<std::streamsize>(w.size() * sizeof(float)));
      if (!out) {
        throw std::runtime_error("checkpoint_job: cannot write " + a.out);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    asyncopt::mpi::Environment::abort(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const asyncopt::mpi::Environment mpi(argc, argv);
    run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
