// The MPI transport: round algorithms (Synchronous, LocalSgd) across the processes of an MPI
// job. Each process runs its workers as threads over the shared-memory store, which combines
// them first; the round policies then take part in the job's round through the
// communicator, once per round.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <asyncopt/core/checkpoint.hpp>
#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/guard.hpp>
#include <asyncopt/core/progress.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/threads.hpp>
#include <asyncopt/mpi/communicator.hpp>
#include <asyncopt/transport/shared_memory.hpp>

namespace asyncopt::transport {

/// Round algorithms across the processes of an MPI job (`mpirun`, Slurm's `srun`): every
/// process runs `workers` threads, over its shard of the examples (sharded by the worker's
/// number in the job, rank by rank), and every round the policy combines this process's
/// workers and then all-reduces once across the processes. Every process applies the same
/// update, so the parameters stay the same, bit for bit, on every process.
///
/// Only policies that move workers in rounds run here (Synchronous, LocalSgd): an
/// asynchronous store across processes is the ZeroMQ plug-in's. MPI must be running (see
/// mpi::Environment) before a store is created.
struct Mpi {
  /// The processes of the job; the store works on a duplicate of it, so its collectives
  /// never meet the program's own.
  MPI_Comm communicator = MPI_COMM_WORLD;
  /// Pin worker k to CPU k modulo the CPUs this process may use, as SharedMemory does.
  bool pin_threads = false;

  /// Checkpoints of the job: process 0 writes one file (temporary file, fsync, rename; with
  /// a checksum) every `every_rounds` rounds, holding the parameters, the rule's state, the
  /// round number and where every worker of the job stands in its epoch.
  struct Checkpoints {
    /// The checkpoint file, on process 0's file system; empty: no checkpoints.
    std::filesystem::path path;
    /// Rounds between two checkpoints; 0: none written (a resume still reads `path`).
    std::uint64_t every_rounds = 0;
    /// Whether a store whose `path` exists starts from it: optimize() then continues the
    /// interrupted job, to the same parameters, bit for bit, as a run that was never
    /// interrupted (with the same options, data, rule and policy, and as many workers in
    /// the job).
    bool resume = true;
  };
  /// Where and how often the job checkpoints; by default it does not.
  Checkpoints checkpoints{};

  /// A worker's pulled copy holds the parameters its gradient was computed at.
  static constexpr bool provides_w_seen = true;
  /// Synchronous and LocalSgd run here ...
  static constexpr bool supports_rounds = true;
  /// ... and nothing else.
  static constexpr bool rounds_only = true;

  template <class Scalar, class Rule, class Consistency>
  class Store;

  /// Runs body(worker) repeatedly on one thread per worker of this process until it returns
  /// false, as SharedMemory does.
  template <class Body>
  void run(std::size_t workers, Body&& body) const {
    store::run_threads(workers, body, pin_threads);
  }
};

}  // namespace asyncopt::transport

namespace asyncopt::mpi::detail {

/// The MPI store's communicator: a duplicate of the transport's, and the counting collective
/// the rounds use, made before the shared-memory store that refers to them.
class Endpoint {
 public:
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  Endpoint(Endpoint&&) = delete;
  Endpoint& operator=(Endpoint&&) = delete;

 protected:
  /// Duplicates `comm` (collective over it).
  explicit Endpoint(MPI_Comm comm) : own_(duplicate(comm)), comm_(own_), rounds_(comm_) {}
  /// Frees the duplicate, unless MPI has been finalized already.
  ~Endpoint() {
    int finalized = 0;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && finalized == 0) {
      MPI_Comm_free(&own_);
    }
  }

  /// The store's own communicator.
  [[nodiscard]] Communicator& comm() noexcept { return comm_; }
  /// The collective of the rounds, which counts their traffic.
  [[nodiscard]] Counted<Communicator>& rounds() noexcept { return rounds_; }

 private:
  static MPI_Comm duplicate(MPI_Comm comm) {
    int initialized = 0;
    check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (initialized == 0) {
      throw std::logic_error(
          "asyncopt: MPI is not running; create an asyncopt::mpi::Environment (or call "
          "MPI_Init_thread) at the start of main before the MPI transport's store");
    }
    MPI_Comm own = MPI_COMM_NULL;
    check(MPI_Comm_dup(comm, &own), "MPI_Comm_dup");
    return own;
  }

  MPI_Comm own_;
  Communicator comm_;
  Counted<Communicator> rounds_;
};

}  // namespace asyncopt::mpi::detail

namespace asyncopt::transport {

/// One process's part of the job: the shared-memory store of its workers, whose round
/// policy meets the other processes' through the communicator. Creating it is collective:
/// every process of the communicator creates its store, with the same number of parameters
/// (the numbers of workers may differ), and every process starts from process 0's
/// parameters. The store's worker(id) handles are the shared-memory ones.
///
/// Besides the shared-memory store's members, it offers what optimize() uses to run one job
/// over several processes (each collective: every process calls them at the same points):
/// sync() after each epoch, stats() for the whole job, first_worker() and job_workers() for
/// sharding, and job_sum() for agreeing on when to stop.
template <class Scalar, class Rule, class Consistency>
class Mpi::Store : private mpi::detail::Endpoint,
                   public SharedMemory::Store<Scalar, Rule, Consistency> {
  using Base = SharedMemory::Store<Scalar, Rule, Consistency>;

 public:
  using typename Base::guard_type;
  static_assert(
      !coordinates_rounds_v<Consistency> ||
          hooks::crosses_processes<guard_type, Consistency, Scalar>,
      "asyncopt: transport::Mpi needs a round policy whose guard takes a "
      "collective::Ref and offers idle_round() (as Synchronous, LocalSgd and Scaffold do)");

  /// Attaches to `params` in place for `workers` worker threads of this process, and makes
  /// them process 0's on every process. Collective. Throws std::invalid_argument when
  /// `workers` is 0 or the processes' parameter counts differ, or for checkpoints of a
  /// policy with a compression stage or of Scaffold; std::logic_error when MPI is not
  /// running; and what the shared-memory store's constructor throws.
  Store(const Mpi& transport, const Rule& rule, const Consistency& consistency,
        std::span<Scalar> params, std::size_t workers)
      : Endpoint(transport.communicator),
        Base(rule, consistency, params, workers, collective::Ref(this->rounds())),
        params_(params),
        checkpoints_(transport.checkpoints) {
    if constexpr (requires { consistency.compression.has_value(); }) {
      if (consistency.compression && !checkpoints_.path.empty()) {
        throw std::invalid_argument(
            "asyncopt: transport::Mpi checkpoints do not hold a compression stage's memory "
            "(errors, shifts, round numbers) yet; run a compressed job without checkpoints");
      }
    }
    if constexpr (hooks::corrects<guard_type, Scalar>) {
      if (!checkpoints_.path.empty()) {
        throw std::invalid_argument(
            "asyncopt: transport::Mpi checkpoints do not hold Scaffold's control variates yet; "
            "run a Scaffold job without checkpoints");
      }
    }
    lay_out(params, workers);
    if (!checkpoints_.path.empty() && checkpoints_.resume) {
      resume();
    }
    this->rounds().on_round_closed([this] { round_closed(); });
  }

  /// Stops telling this store about rounds (the shared-memory store's members go after it).
  ~Store() { this->rounds().on_round_closed({}); }

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  Store(Store&&) = delete;
  Store& operator=(Store&&) = delete;

  /// optimize() hands over where it stands, which each checkpoint records; empty: nothing
  /// (a checkpoint then records every worker at the start of epoch 0).
  void track(std::function<void(Progress&)> report) { progress_ = std::move(report); }

  /// Where the job resumed from a checkpoint stands (once: later calls return nothing).
  [[nodiscard]] std::optional<Progress> resume_point() { return std::exchange(resume_, {}); }

  /// This process's rank in the job.
  [[nodiscard]] std::size_t rank() noexcept { return this->comm().rank(); }
  /// The number of processes in the job.
  [[nodiscard]] std::size_t processes() noexcept { return this->comm().size(); }
  /// Whether the job writes or resumes from checkpoints (Mpi::checkpoints has a path).
  [[nodiscard]] bool checkpointing() const noexcept { return !checkpoints_.path.empty(); }
  /// The job's number of this process's worker 0: the workers of the processes of lower
  /// rank come first.
  [[nodiscard]] std::size_t first_worker() const noexcept { return first_worker_; }
  /// The number of workers in the job, over all processes.
  [[nodiscard]] std::size_t job_workers() const noexcept { return job_workers_; }

  /// Sums `values` over the processes, in place. Collective.
  void job_sum(std::span<double> values) { this->comm().all_reduce_sum(values); }

  /// After this process's workers have all left (an epoch's shard is done): takes part in
  /// the rounds the other processes still run, applying their updates, until a round in
  /// which no process contributes; every process's parameters are then the same. Collective.
  void sync() { this->finish_rounds(); }

  /// The counters of the whole job. `updates` counts a Synchronous round once (every
  /// process applies it) and LocalSgd's local steps over all processes; `rejected`,
  /// `wait_seconds`, `collective_bytes`, `collective_seconds`, `compressed_bytes` and
  /// `uncompressed_bytes` are sums over the processes.
  /// Round policies never apply a stale gradient: staleness is 0 throughout. Collective;
  /// call it while no worker is pushing.
  [[nodiscard]] StoreStats stats() {
    const StoreStats mine = Base::stats();
    constexpr bool per_round = hooks::combines_rounds<guard_type, Scalar>;
    std::array<double, 7> sums = {
        per_round && rank() != 0 ? 0.0 : static_cast<double>(mine.updates),
        static_cast<double>(mine.rejected),
        mine.wait_seconds,
        static_cast<double>(this->rounds().bytes()),
        this->rounds().seconds(),
        static_cast<double>(mine.compressed_bytes),
        static_cast<double>(mine.uncompressed_bytes)};
    this->comm().all_reduce_sum(std::span<double>(sums));
    StoreStats job;
    job.updates = static_cast<std::uint64_t>(sums[0]);
    job.rejected = static_cast<std::uint64_t>(sums[1]);
    job.wait_seconds = sums[2];
    job.collective_bytes = static_cast<std::uint64_t>(sums[3]);
    job.collective_seconds = sums[4];
    job.compressed_bytes = static_cast<std::uint64_t>(sums[5]);
    job.uncompressed_bytes = static_cast<std::uint64_t>(sums[6]);
    if (job.updates > 0) {
      job.staleness = {job.updates};
    }
    return job;
  }

 private:
  // Numbers the job's workers rank by rank, checks the parameter counts and starts every
  // process from process 0's parameters.
  void lay_out(std::span<Scalar> params, std::size_t workers) {
    const std::size_t size = processes();
    const std::size_t me = rank();
    std::vector<double> counts(2 * size, 0.0);  // workers, then parameters, per process
    counts[me] = static_cast<double>(workers);
    counts[size + me] = static_cast<double>(params.size());
    this->comm().all_reduce_sum(std::span<double>(counts));
    for (std::size_t r = 0; r < size; ++r) {
      if (counts[size + r] != counts[size]) {
        throw std::invalid_argument("asyncopt: transport::Mpi: process " + std::to_string(r) +
                                    " has " +
                                    std::to_string(static_cast<std::uint64_t>(counts[size + r])) +
                                    " parameters but process 0 has " +
                                    std::to_string(static_cast<std::uint64_t>(counts[size])) +
                                    "; every process must attach the same model");
      }
      if (r < me) {
        first_worker_ += static_cast<std::size_t>(counts[r]);
      }
      worker_counts_.push_back(static_cast<std::size_t>(counts[r]));
      job_workers_ += static_cast<std::size_t>(counts[r]);
    }
    this->comm().broadcast(params, 0);
  }

  // What a checkpoint holds, in this order: a fixed header of counts (checked on resume),
  // the round and update counts, the epoch, per worker of the job what it has taken of its
  // shard and its clock, the parameters, and the rule's state (per worker of the job under a
  // policy that keeps replicas, else one copy).
  static constexpr bool per_worker_state = hooks::replicates<guard_type, Scalar>;
  static constexpr const char* here = "this job";

  [[nodiscard]] std::size_t state_per_block() const noexcept {
    return Rule::state_slots * params_.size();
  }

  // A round of the job was applied, on every process: every every_rounds-th, a checkpoint.
  void round_closed() {
    ++rounds_applied_;
    if (!checkpoints_.path.empty() && checkpoints_.every_rounds != 0 &&
        rounds_applied_ % checkpoints_.every_rounds == 0) {
      save();
    }
  }

  // Collective: gathers the workers' places and (per worker) the rule's state on process 0,
  // which writes the file.
  void save() {
    const std::size_t local = this->workers();
    Progress progress;
    if (progress_) {
      progress_(progress);
    }
    progress.taken.resize(local, 0);
    std::vector<std::uint64_t> mine(2 * local);
    for (std::size_t k = 0; k < local; ++k) {
      mine[2 * k] = progress.taken[k];
      mine[2 * k + 1] = this->clock_of(k);
    }
    const bool root = rank() == 0;
    std::vector<std::uint64_t> places(root ? 2 * job_workers_ : 0);
    gather(std::span<const std::uint64_t>(mine), std::span<std::uint64_t>(places), 2, MPI_UINT64_T);
    const std::span<Scalar> state = this->rule_state();
    std::vector<Scalar> all_state;
    if constexpr (per_worker_state) {
      all_state.resize(root ? state_per_block() * job_workers_ : 0);
      gather(std::span<const Scalar>(state), std::span<Scalar>(all_state), state_per_block(),
             mpi::detail::datatype<Scalar>());
    }
    if (!root) {
      return;
    }
    CheckpointWriter out;
    out.put<std::uint64_t>(sizeof(Scalar));
    out.put<std::uint64_t>(params_.size());
    out.put<std::uint64_t>(job_workers_);
    out.put<std::uint64_t>(Rule::state_slots);
    out.put<std::uint64_t>(per_worker_state ? 1 : 0);
    out.put<std::uint64_t>(rounds_applied_);
    out.put<std::uint64_t>(this->version());
    out.put<std::uint64_t>(progress.epoch);
    out.put(std::span<const std::uint64_t>(places));
    out.put(std::span<const Scalar>(params_));
    out.put(per_worker_state ? std::span<const Scalar>(all_state) : std::span<const Scalar>(state));
    write_checkpoint(checkpoints_.path, out.bytes());
  }

  // Collective: process 0 reads the checkpoint, if there is one, and every process takes its
  // part of it. A checkpoint that cannot be used stops every process with the same error.
  void resume() {
    const bool root = rank() == 0;
    std::array<std::uint64_t, 4> head = {0, 0, 0, 0};  // found, rounds, version, epoch
    std::vector<std::uint64_t> places(2 * job_workers_);
    std::vector<Scalar> all_state;
    std::string error;
    if (root && std::filesystem::exists(checkpoints_.path)) {
      try {
        CheckpointReader in = read_checkpoint(checkpoints_.path);
        in.expect("scalar size", in.get<std::uint64_t>(), sizeof(Scalar), here);
        in.expect("dimension", in.get<std::uint64_t>(), params_.size(), here);
        in.expect("workers", in.get<std::uint64_t>(), job_workers_, here);
        in.expect("rule state slots", in.get<std::uint64_t>(), Rule::state_slots, here);
        in.expect("state per worker", in.get<std::uint64_t>(), per_worker_state ? 1 : 0, here);
        head[1] = in.get<std::uint64_t>();
        head[2] = in.get<std::uint64_t>();
        head[3] = in.get<std::uint64_t>();
        in.get(std::span<std::uint64_t>(places));
        in.get(params_);
        if constexpr (per_worker_state) {
          all_state.resize(state_per_block() * job_workers_);
          in.get(std::span<Scalar>(all_state));
        } else {
          in.get(this->rule_state());
        }
        in.finish();
        head[0] = 1;
      } catch (const std::exception& e) {
        error = e.what();
        head[0] = 2;
      }
    }
    mpi::detail::check(MPI_Bcast(head.data(), static_cast<int>(head.size()), MPI_UINT64_T, 0,
                                 this->comm().handle()),
                       "MPI_Bcast");
    if (head[0] == 2) {
      throw CheckpointError(root ? error
                                 : "asyncopt: process 0 cannot resume from checkpoint " +
                                       checkpoints_.path.string() + " (its error says why)");
    }
    if (head[0] == 0) {
      return;  // no checkpoint yet: a fresh start
    }
    mpi::detail::check(MPI_Bcast(places.data(), static_cast<int>(places.size()), MPI_UINT64_T, 0,
                                 this->comm().handle()),
                       "MPI_Bcast");
    this->comm().broadcast(params_, 0);
    if constexpr (per_worker_state) {
      scatter(std::span<const Scalar>(all_state), this->rule_state(), state_per_block(),
              mpi::detail::datatype<Scalar>());
    } else {
      this->comm().broadcast(this->rule_state(), 0);
    }
    rounds_applied_ = head[1];
    this->restore_version(head[2]);
    Progress progress{.epoch = head[3], .taken = {}};
    for (std::size_t k = 0; k < this->workers(); ++k) {
      progress.taken.push_back(places[2 * (first_worker_ + k)]);
      this->restore_clock(k, places[2 * (first_worker_ + k) + 1]);
    }
    resume_ = std::move(progress);
  }

  // Gathers `per_worker` elements per worker of every process, in the job's worker order,
  // into `all` on process 0.
  template <class T>
  void gather(std::span<const T> mine, std::span<T> all, std::size_t per_worker,
              MPI_Datatype type) {
    const auto [counts, displacements] = layout(per_worker);
    mpi::detail::check(
        MPI_Gatherv(mine.data(), static_cast<int>(mine.size()), type, all.data(), counts.data(),
                    displacements.data(), type, 0, this->comm().handle()),
        "MPI_Gatherv");
  }

  // The reverse: process 0's `all` out to every process's `mine`.
  template <class T>
  void scatter(std::span<const T> all, std::span<T> mine, std::size_t per_worker,
               MPI_Datatype type) {
    const auto [counts, displacements] = layout(per_worker);
    mpi::detail::check(
        MPI_Scatterv(all.data(), counts.data(), displacements.data(), type, mine.data(),
                     static_cast<int>(mine.size()), type, 0, this->comm().handle()),
        "MPI_Scatterv");
  }

  // Per process: how many elements it holds, and where they start, at `per_worker` elements
  // per worker.
  [[nodiscard]] std::pair<std::vector<int>, std::vector<int>> layout(std::size_t per_worker) const {
    std::vector<int> counts(worker_counts_.size());
    std::vector<int> displacements(worker_counts_.size());
    std::size_t at = 0;
    for (std::size_t r = 0; r < worker_counts_.size(); ++r) {
      const std::size_t count = worker_counts_[r] * per_worker;
      if (at + count > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        throw std::length_error(
            "asyncopt: transport::Mpi: a checkpoint's per-worker state exceeds MPI's int counts");
      }
      counts[r] = static_cast<int>(count);
      displacements[r] = static_cast<int>(at);
      at += count;
    }
    return {std::move(counts), std::move(displacements)};
  }

  std::span<Scalar> params_;
  Mpi::Checkpoints checkpoints_;
  std::size_t first_worker_ = 0;
  std::size_t job_workers_ = 0;
  std::vector<std::size_t> worker_counts_;  // per process
  std::uint64_t rounds_applied_ = 0;
  std::function<void(Progress&)> progress_;
  std::optional<Progress> resume_;
};

}  // namespace asyncopt::transport
