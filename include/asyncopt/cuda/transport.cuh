// The CUDA transport: parameters, rule state and per-worker w_seen in device memory; workers
// are host threads, each with its own stream; a push launches the rule's kernel. One
// cohesive thing, hence its length: the device store and its worker handle, which share the
// streams, the device buffers and the order of device work (launch.cuh holds the plumbing).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/guard.hpp>
#include <asyncopt/core/handle.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/store.hpp>
#include <asyncopt/core/threads.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/core/versions.hpp>
#include <asyncopt/cuda/error.cuh>
#include <asyncopt/cuda/kernels.cuh>
#include <asyncopt/cuda/launch.cuh>
#include <asyncopt/cuda/memory.cuh>
#include <asyncopt/kernels/access.hpp>

namespace asyncopt::gpu {

/// What a push on the device did when it was issued: a PushResult (`applied` is true: the
/// update is queued; a gradient the device finds non-finite changes nothing and is counted
/// in StoreStats::rejected) and its place in the sequence of updates. The update runs later,
/// in the order of the worker's stream.
struct Issued : PushResult {
  /// The update's position in the store's sequence of issued updates (0 for the first).
  std::uint64_t version = 0;
};

}  // namespace asyncopt::gpu

namespace asyncopt::transport {

/// CUDA device memory: the store holds the parameters, the rule's state and, for rules that
/// read the parameters a gradient was computed at, one copy of them per worker on one GPU;
/// workers are host threads, each with its own stream. A push checks the gradient and
/// launches the rule's kernel (the per-element formula the CPU kernels run) on the worker's
/// stream and returns without waiting for it. Consistency: any asynchronous policy. Its guard's
/// write_dense() tells the store how to treat device memory: with relaxed access (LockFree)
/// kernels use relaxed device atomics and concurrent kernels may overwrite each other's
/// updates; with plain access per range (Locked's stripes) each range's kernels run one at
/// a time, ordered by events, so the host never waits. A gate (BoundedStaleness) runs on
/// the host.
struct CudaDevice {
  /// The CUDA device (ordinal) that holds the store.
  int device = 0;
  /// Threads per block of every kernel: a multiple of 32 in [32, 1024].
  unsigned threads_per_block = 256;

  /// The store keeps each worker's pulled parameters on the device, as delay compensation
  /// needs.
  static constexpr bool provides_w_seen = true;

  template <class Scalar, class Rule, class Consistency>
  class Store;

  /// Throws std::invalid_argument for a negative device or a bad block size.
  void validate() const {
    if (device < 0) {
      throw std::invalid_argument("asyncopt: CudaDevice::device must be >= 0, got " +
                                  std::to_string(device));
    }
    if (threads_per_block < 32 || threads_per_block > 1024 || threads_per_block % 32 != 0) {
      throw std::invalid_argument(
          "asyncopt: CudaDevice::threads_per_block must be a multiple of 32 in [32, 1024], got " +
          std::to_string(threads_per_block));
    }
  }

  /// Runs body(worker) repeatedly on one host thread per worker, each with `device` current,
  /// until it returns false; rethrows the first exception a body threw once every thread has
  /// finished.
  template <class Body>
  void run(std::size_t workers, Body&& body) const {
    const int ordinal = device;
    store::run_threads(workers, [&body, ordinal](std::size_t id) {
      thread_local int current = -1;
      if (current != ordinal) {
        gpu::detail::use_device(ordinal);
        current = ordinal;
      }
      return body(id);
    });
  }
};

/// The parameters, the rule's state, the workers' w_seen and their streams on one device.
///
/// Each worker id has at most one live handle at a time; a handle is used by one host thread
/// at a time (any thread: every call makes the store's device current). Versions count queued
/// pushes; the kernels of one stripe (Locked) run in the order their host threads took the
/// stripe's lock.
template <class Scalar, class Rule, class Consistency>
class CudaDevice::Store : store::Immovable {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "asyncopt: transport::CudaDevice stores float or double parameters");
  static_assert(UpdateRule<Rule>, "asyncopt: transport::CudaDevice needs an update rule");
  static_assert(ConsistencyPolicy<Consistency> && !coordinates_rounds_v<Consistency>,
                "asyncopt: transport::CudaDevice runs asynchronous consistency policies "
                "(LockFree, Locked, BoundedStaleness or one of your own); Synchronous and "
                "LocalSgd move workers in rounds, which need transport::SharedMemory");
  static_assert(!sends_momentum_v<Rule>,
                "asyncopt: this update rule's rounds send momenta (OneBitAdam), which only "
                "consistency::Synchronous runs, on transport::SharedMemory or transport::Mpi");

  using guard_type = typename Consistency::template Guard<Scalar>;

 public:
  /// The type of the parameters and gradients: `Scalar`, float or double.
  using scalar_type = Scalar;
  /// Scalars of rule state kept per parameter (`Rule::state_slots`).
  static constexpr std::size_t slots = Rule::state_slots;
  /// Whether the rule reads the parameters a gradient was computed at (one copy per worker
  /// is kept on the device).
  static constexpr bool keeps_w_seen = needs_w_seen_v<Rule>;
  /// Whether pulls wait at the policy's gate first (bounded staleness).
  static constexpr bool gated = hooks::has_gate<guard_type>;

  class Worker;

  /// Copies `params` (host memory, n parameters) to the device and sets the rule's state to
  /// zero, for `workers` workers. `params` becomes the store's host mirror: sync() copies the
  /// device's parameters back into it, so it must outlive the store (as the shared-memory
  /// store's array does). Throws std::invalid_argument for 0 workers or bad options, what
  /// the rule's validate() throws, and gpu::Error when the device cannot be used or lacks
  /// memory.
  Store(const CudaDevice& transport, const Rule& rule, const Consistency& consistency,
        std::span<Scalar> params, std::size_t workers)
      : Store(transport, rule, consistency, params.size(), workers) {
    host_ = params;
    if (n_ > 0) {
      ASYNCOPT_CUDA_CHECK(
          cudaMemcpy(params_.data(), params.data(), n_ * sizeof(Scalar), cudaMemcpyHostToDevice));
    }
    // The workers' streams do not wait for the default stream's copies and zeroing.
    ASYNCOPT_CUDA_CHECK(cudaDeviceSynchronize());
  }

  /// The same from `initial` in device memory; the store has no host mirror.
  Store(const CudaDevice& transport, const Rule& rule, const Consistency& consistency,
        gpu::DeviceSpan<const Scalar> initial, std::size_t workers)
      : Store(transport, rule, consistency, initial.size(), workers) {
    gpu::detail::require_device_memory(initial.data(), initial.size(), device_,
                                       "the initial parameters");
    if (n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpy(params_.data(), initial.data(), n_ * sizeof(Scalar),
                                     cudaMemcpyDeviceToDevice));
    }
    ASYNCOPT_CUDA_CHECK(cudaDeviceSynchronize());
  }

  /// Waits for the workers' streams, then frees the device memory.
  ~Store() {
    try {
      synchronize();
    } catch (...) {  // a destructor cannot report a failure
    }
  }

  /// The handle of worker `id` (0 <= id < workers()). Throws std::out_of_range for a bad id
  /// and std::logic_error while another handle of the id is alive.
  [[nodiscard]] Worker worker(std::size_t id) {
    store::check_worker_id(id, workers_);
    claims_.claim(id);
    Worker handle(*this, id);
    handle.join();
    return handle;
  }

  /// The number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return n_; }
  /// The number of workers the store was created for.
  [[nodiscard]] std::size_t workers() const noexcept { return workers_; }
  /// Pushes queued so far (each takes a version, also one the device then rejects).
  [[nodiscard]] std::uint64_t version() const noexcept { return versions_.completed(); }
  /// The CUDA device that holds the store.
  [[nodiscard]] int device() const noexcept { return device_; }

  /// The parameters on the device. Read them after synchronize(), while no worker pushes.
  [[nodiscard]] gpu::DeviceSpan<const Scalar> parameters() const noexcept {
    return {params_.data(), n_};
  }
  /// The rule's state on the device: Rule::state_slots arrays of dimension() scalars, one
  /// after the other. Read or write it only while no worker pulls or pushes.
  [[nodiscard]] gpu::DeviceSpan<Scalar> rule_state() noexcept { return state_.span(); }

  /// Waits for every worker's stream, then copies the parameters into `out` (dimension()
  /// elements of host memory). Throws std::invalid_argument for a wrong size.
  void copy_parameters(std::span<Scalar> out) {
    store::check_dense_size(out.size(), n_, "copy_parameters");
    synchronize();
    if (n_ > 0) {
      ASYNCOPT_CUDA_CHECK(
          cudaMemcpy(out.data(), params_.data(), n_ * sizeof(Scalar), cudaMemcpyDeviceToHost));
    }
  }

  /// Waits for every worker's stream, then copies the parameters into the host mirror (the
  /// span the store was created from; nothing for a store created from device memory).
  /// optimize() calls it after every epoch.
  void sync() {
    if (!host_.empty()) {
      copy_parameters(host_);
    }
  }

  /// Waits until every worker's queued work has finished; throws gpu::Error for a failure
  /// the device reported meanwhile.
  void synchronize() {
    gpu::detail::use_device(device_);
    for (std::size_t id = 0; id < workers_; ++id) {
      lanes_[id].stream.synchronize();
    }
  }

  /// Every worker's counters, merged: the pushes the device applied and their staleness,
  /// the pushes it rejected (NaN or Inf), and the time spent at a bounded-staleness gate.
  /// Waits for every worker's stream; call it while no worker is pushing.
  [[nodiscard]] StoreStats stats() {
    synchronize();
    constexpr std::size_t buckets = StoreStats::staleness_buckets;
    std::vector<gpu::kernels::Counters> counters(workers_);
    std::vector<unsigned long long> histograms(workers_ * buckets);
    ASYNCOPT_CUDA_CHECK(cudaMemcpy(counters.data(), counters_.data(),
                                   workers_ * sizeof(gpu::kernels::Counters),
                                   cudaMemcpyDeviceToHost));
    ASYNCOPT_CUDA_CHECK(cudaMemcpy(histograms.data(), histograms_.data(),
                                   histograms.size() * sizeof(unsigned long long),
                                   cudaMemcpyDeviceToHost));
    StoreStats total;
    for (std::size_t id = 0; id < workers_; ++id) {
      StoreStats one;
      one.updates = counters[id].applied;
      one.rejected = counters[id].rejected;
      one.staleness_sum = counters[id].staleness_sum;
      one.staleness_max = counters[id].staleness_max;
      const auto first = histograms.begin() + static_cast<std::ptrdiff_t>(id * buckets);
      one.staleness.assign(first, first + static_cast<std::ptrdiff_t>(buckets));
      one.wait_seconds = lanes_[id].wait_seconds;
      total.merge(one);
    }
    return total;
  }

 private:
  struct alignas(cache_line) Lane {
    gpu::Stream stream;
    gpu::Event pushed;  // recorded after each push when pulls wait for it (gated LockFree)
    double wait_seconds = 0.0;
    unsigned long long bad_index_reported = 0;  // bad index lists synchronize() has reported
    std::atomic<std::uint64_t> clock{0};
  };

  Store(const CudaDevice& transport, const Rule& rule, const Consistency& consistency,
        std::size_t n, std::size_t workers)
      : rule_(validated(transport, rule, consistency, workers)),
        device_(transport.device),
        n_(n),
        workers_(workers),
        geometry_((gpu::detail::use_device(device_), device_), transport.threads_per_block),
        params_(n),
        state_(slots * n),
        seen_(keeps_w_seen ? workers * n : 0),
        status_(workers),
        counters_(workers),
        histograms_(workers * StoreStats::staleness_buckets),
        norms_(workers),
        norms_host_(workers),
        guard_(consistency, n, workers),
        lanes_(std::make_unique<Lane[]>(workers)),
        claims_(workers) {
    probe_ranges();
    state_.zero();
    seen_.zero();
    status_.zero();
    counters_.zero();
    histograms_.zero();
    if constexpr (slots > 0) {
      for (std::size_t k = 0; k < slots; ++k) {
        state_pointers_[k] = state_.data() + k * n;
      }
    }
  }

  static const Rule& validated(const CudaDevice& transport, const Rule& rule,
                               const Consistency& consistency, std::size_t workers) {
    store::check_workers(workers);
    transport.validate();
    update::validate(rule, Precision::of<Scalar>());
    consistency.validate();
    return rule;
  }

  [[nodiscard]] Scalar* w_seen(std::size_t id) const noexcept {
    return keeps_w_seen ? seen_.data() + id * n_ : nullptr;
  }

  // How the guard writes the parameters: asks its write_dense() once for the ranges and the
  // access it would use. Relaxed access needs no order; plain access gets an order per range.
  void probe_ranges() {
    std::vector<gpu::detail::Range> ranges;
    bool relaxed = false;
    guard_.write_dense([&](auto access, std::size_t begin, std::size_t end) {
      relaxed = relaxed || std::is_same_v<decltype(access), kernels::RelaxedAccess>;
      ranges.push_back({begin, end});
    });
    relaxed_ = relaxed;
    pulls_follow_pushes_ = relaxed && gated;
    if (!relaxed_) {
      order_ = gpu::detail::RangeOrder(std::move(ranges));
    }
  }

  void leave(std::size_t id) { hooks::leave(guard_, id, std::span<Scalar>{}); }

  // A handle of `id` went (store::Handle calls this): it leaves, its stream finishes (the
  // staging buffers may still be read), and the id is free for a new handle.
  void release(std::size_t id) noexcept {
    try {
      leave(id);     // first: a failure below must not hold the other workers back
    } catch (...) {  // a destructor cannot report a failure
    }
    try {
      gpu::detail::use_device(device_);
      lanes_[id].stream.synchronize();
    } catch (...) {
    }
    claims_.release(id);
  }

  friend class store::Handle<Store>;

  Rule rule_;
  std::span<Scalar> host_{};
  int device_;
  std::size_t n_;
  std::size_t workers_;
  gpu::kernels::Geometry geometry_;
  gpu::DeviceBuffer<Scalar> params_;
  gpu::DeviceBuffer<Scalar> state_;
  gpu::DeviceBuffer<Scalar> seen_;
  gpu::DeviceBuffer<unsigned> status_;
  gpu::DeviceBuffer<gpu::kernels::Counters> counters_;
  gpu::DeviceBuffer<unsigned long long> histograms_;
  gpu::DeviceBuffer<double> norms_;
  gpu::PinnedBuffer<double> norms_host_;
  std::array<Scalar*, slots> state_pointers_{};
  guard_type guard_;
  bool relaxed_ = true;
  // Relaxed access behind a gate: a pull's stream waits for the other workers' last pushes.
  bool pulls_follow_pushes_ = false;
  gpu::detail::RangeOrder order_;
  // Versions taken by pushes, and pushes whose device work is queued: a pull reads the
  // second, so a push that has a version but is not queued yet counts as stale.
  store::Versions versions_;
  std::unique_ptr<Lane[]> lanes_;
  store::Claims claims_;
};

/// A worker's handle on a device store: pull, push, clock, each queued on the worker's own
/// stream. Gradients and pull targets in device memory (gpu::DeviceSpan) keep everything on
/// the device; std::span overloads take host memory (pinned memory, gpu::PinnedBuffer, copies
/// fastest) and satisfy asyncopt::WorkerHandle.
template <class Scalar, class Rule, class Consistency>
class CudaDevice::Store<Scalar, Rule, Consistency>::Worker : public store::Handle<Store> {
  using Base = store::Handle<Store>;

 public:
  using Base::id;

  /// The worker's stream. Queue the kernels that compute a gradient here: a push queued
  /// after them reads the finished gradient without the host waiting.
  [[nodiscard]] cudaStream_t stream() const noexcept { return lane().stream.get(); }

  /// Queues a copy of the parameters into `out` (device memory, dimension() elements) and
  /// remembers the version, so that the next push knows its staleness; for rules that need
  /// it the store keeps the copy as this worker's w_seen. Waits first at a bounded-staleness
  /// gate.
  void pull(gpu::DeviceSpan<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    gpu::detail::require_device_memory(out.data(), out.size(), this->store().device_, "pull");
    begin_pull();
    copy_out(out.data());
    seen_pulled(false);
  }

  /// Copies the parameters into `out` (host memory, dimension() elements) and waits for the
  /// copy (a bad index list queued before is left for synchronize() to report).
  void pull(std::span<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    begin_pull();
    Scalar* const staged =
        keeps_w_seen ? this->store().w_seen(id()) : staging(values_, this->store().n_);
    copy_out(staged);
    if (this->store().n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(out.data(), staged, this->store().n_ * sizeof(Scalar),
                                          cudaMemcpyDeviceToHost, stream()));
    }
    seen_pulled(false);
    lane().stream.synchronize();
  }

  /// Queues a copy of the parameters at `index` (device memory, strictly increasing, each
  /// below dimension()) into the same positions of `out` (device memory, dimension()
  /// elements; the others are left as they are). A bad index list copies nothing and is
  /// reported by the next synchronize().
  void pull(gpu::DeviceSpan<const std::size_t> index, gpu::DeviceSpan<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    gpu::detail::require_device_memory(index.data(), index.size(), this->store().device_,
                                       "pull's index list");
    gpu::detail::require_device_memory(out.data(), out.size(), this->store().device_, "pull");
    begin_pull();
    gather(index.data(), index.size(), out.data());
    if (seen_.params == nullptr) {  // after a full pull, the store's copy stays whole
      seen_pulled(true);
    }
  }

  /// Queues a dense push of `gradient` (device memory, dimension() elements) computed at the
  /// last pulled parameters: the device checks it and, when every value is finite, applies
  /// the rule's kernel. Returns without waiting; a rule that clips by norm waits for the norm.
  gpu::Issued push(gpu::DeviceSpan<const Scalar> gradient) {
    prepare();
    check_size(gradient.size(), "push");
    gpu::detail::require_device_memory(gradient.data(), gradient.size(), this->store().device_,
                                       "push");
    static_cast<void>(seen_.template dense<Rule>());
    return push_dense(gradient.data());
  }

  /// The same from host memory: the gradient is copied to the device first, and the host
  /// buffer may be reused when this returns (the call waits for the copy, and so for the
  /// work queued before it).
  gpu::Issued push(std::span<const Scalar> gradient) {
    prepare();
    check_size(gradient.size(), "push");
    static_cast<void>(seen_.template dense<Rule>());
    Scalar* const staged = staging(values_, this->store().n_);
    if (this->store().n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(staged, gradient.data(),
                                          this->store().n_ * sizeof(Scalar), cudaMemcpyHostToDevice,
                                          stream()));
      lane().stream.synchronize();  // from pinned memory the copy is asynchronous
    }
    return push_dense(staged);
  }

  /// Queues a sparse push (device memory): strictly increasing indices below dimension() with
  /// their values. A bad index list or a non-finite value changes nothing; the first is
  /// reported by the next synchronize(), the second counted in StoreStats::rejected. Throws
  /// std::invalid_argument at once when the sizes differ.
  gpu::Issued push(gpu::DeviceSpan<const std::size_t> index, gpu::DeviceSpan<const Scalar> value) {
    prepare();
    store::check_sparse_sizes(index.size(), value.size());
    gpu::detail::require_device_memory(index.data(), index.size(), this->store().device_,
                                       "push's index list");
    gpu::detail::require_device_memory(value.data(), value.size(), this->store().device_,
                                       "push's values");
    store::require_seen<Rule>(seen_.params != nullptr);
    return push_sparse(index.data(), value.data(), index.size());
  }

  /// The same from host memory, checked on the host first: throws std::invalid_argument for a
  /// bad index list, as the shared-memory store does. Waits for the copy, as the dense push
  /// from host memory does.
  gpu::Issued push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    prepare();
    store::check_sparse_push(index, value, this->store().n_);
    store::require_seen<Rule>(seen_.params != nullptr);
    const std::size_t count = index.size();
    std::size_t* const index_staged = staging(indices_, count);
    Scalar* const value_staged = staging(values_, std::max(count, this->store().n_));
    if (count > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(index_staged, index.data(), count * sizeof(std::size_t),
                                          cudaMemcpyHostToDevice, stream()));
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(value_staged, value.data(), count * sizeof(Scalar),
                                          cudaMemcpyHostToDevice, stream()));
      lane().stream.synchronize();
    }
    return push_sparse(index_staged, value_staged, count);
  }

  /// The same as push(gradient.indices(), gradient.values()).
  gpu::Issued push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step (bounded staleness counts clocks).
  void clock() {
    const std::uint64_t now = lane().clock.fetch_add(1, std::memory_order_acq_rel) + 1;
    lane().wait_seconds += hooks::clock(this->store().guard_, id(), now, std::span<Scalar>{});
  }

  /// Stops holding other workers back (bounded staleness) until join(). Destroying the
  /// handle leaves as well.
  void leave() { this->store().leave(id()); }

  /// Takes part again after leave(), at this worker's clock.
  void join() { hooks::join(this->store().guard_, id(), clock_count(), std::span<const Scalar>{}); }

  /// Waits for this worker's stream. Throws gpu::Error for a failure the device reported,
  /// and std::invalid_argument when a sparse push or pull queued since the last call had a
  /// bad index list (it changed nothing).
  void synchronize() {
    prepare();
    gpu::kernels::Counters counters;
    ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(&counters, this->store().counters_.data() + id(),
                                        sizeof(gpu::kernels::Counters), cudaMemcpyDeviceToHost,
                                        stream()));
    lane().stream.synchronize();
    const unsigned long long bad = counters.bad_push + counters.bad_pull;
    unsigned long long& reported = lane().bad_index_reported;
    if (bad > reported) {
      const unsigned long long fresh = bad - reported;
      reported = bad;
      throw std::invalid_argument(
          "asyncopt: " + std::to_string(fresh) + " sparse push(es) or pull(s) of worker " +
          std::to_string(id()) +
          " had an index list with an index out of range or not strictly increasing; they "
          "changed nothing");
    }
  }

  /// The store's version at the last pull.
  [[nodiscard]] std::uint64_t seen_version() const noexcept { return seen_version_; }
  /// Steps this worker has finished.
  [[nodiscard]] std::uint64_t clock_count() const noexcept {
    return lane().clock.load(std::memory_order_acquire);
  }

  /// Takes over `other`'s worker id, last pull and staging buffers; `other` may then only
  /// be destroyed or assigned to.
  Worker(Worker&& other) noexcept = default;
  /// Releases this handle's worker id as the destructor does, then takes over `other`'s.
  Worker& operator=(Worker&& other) noexcept = default;
  /// Waits for the worker's stream, leaves and releases the worker id.
  ~Worker() { this->release(); }  // before the staging buffers go

 private:
  friend class Store;

  Worker(Store& store, std::size_t id) : Base(store, id) {}

  [[nodiscard]] Lane& lane() const noexcept { return this->store().lanes_[id()]; }

  void prepare() const { gpu::detail::use_device(this->store().device_); }

  void check_size(std::size_t size, const char* what) const {
    store::check_dense_size(size, this->store().n_, what);
  }

  // A pull of some (`partial`) or all parameters into the store's copy of them, for the
  // rules that read w_seen (null for the others).
  void seen_pulled(bool partial) noexcept {
    seen_.params = this->store().w_seen(id());
    seen_.partial = partial;
  }

  template <class T>
  T* staging(gpu::DeviceBuffer<T>& buffer, std::size_t size) {
    if (buffer.size() < size) {
      lane().stream.synchronize();  // the old buffer may still be read
      buffer = gpu::DeviceBuffer<T>(size);
    }
    return buffer.data();
  }

  // Waits at the policy's gate, if it has one, and remembers the version the pull sees: the
  // pushes queued so far. Under LockFree with a gate the pull's stream also waits for every
  // other worker's last push, so the device sees what the gate let through (under Locked the
  // stripes' events order it already).
  void begin_pull() {
    Store& s = this->store();
    lane().wait_seconds += hooks::wait_to_read(s.guard_, id(), clock_count());
    if (s.pulls_follow_pushes_) {
      for (std::size_t other = 0; other < s.workers_; ++other) {
        if (other != id()) {
          s.lanes_[other].pushed.wait_in(stream());
        }
      }
    }
    seen_version_ = s.versions_.completed();
  }

  [[nodiscard]] unsigned* status() const noexcept { return this->store().status_.data() + id(); }

  void reset_status() {
    ASYNCOPT_CUDA_CHECK(cudaMemsetAsync(status(), 0, sizeof(unsigned), stream()));
  }

  // Counts the push by its status on the device, then marks the end of its work on the
  // stream for gated LockFree pulls.
  void end_push(std::uint64_t staleness) {
    constexpr std::size_t buckets = StoreStats::staleness_buckets;
    gpu::detail::launch("account_push", gpu::kernels::account_push<>, 1, 1, stream(),
                        static_cast<const unsigned*>(status()),
                        this->store().counters_.data() + id(),
                        this->store().histograms_.data() + id() * buckets, buckets,
                        static_cast<unsigned long long>(staleness));
    if (this->store().pulls_follow_pushes_) {
      lane().pushed.record(stream());
    }
  }

  // The parameters into dst and, for rules that keep it, into this worker's w_seen.
  void copy_out(Scalar* dst) {
    namespace k = gpu::kernels;
    Store& s = this->store();
    const std::size_t n = s.n_;
    if (n == 0) {
      return;
    }
    Scalar* const seen = s.w_seen(id());
    Scalar* const second = seen == dst ? nullptr : seen;
    const Scalar* const src = s.params_.data();
    if (s.relaxed_) {
      gpu::detail::launch_over<k::copy<k::DeviceRelaxed, false, Scalar>>(
          "copy", s.geometry_, n, stream(), src, dst, second, n);
    } else {
      s.order_.all(stream(), [&] {
        if (gpu::detail::aligned16(dst) && gpu::detail::aligned16(second)) {
          constexpr std::size_t width = k::detail::Chunk<Scalar>::width;
          gpu::detail::launch_over<k::copy<k::DevicePlain, true, Scalar>>(
              "copy", s.geometry_, n / width + 1, stream(), src, dst, second, n);
        } else {
          gpu::detail::launch_over<k::copy<k::DevicePlain, false, Scalar>>(
              "copy", s.geometry_, n, stream(), src, dst, second, n);
        }
      });
    }
  }

  void gather(const std::size_t* index, std::size_t count, Scalar* dst) {
    namespace k = gpu::kernels;
    if (count == 0) {
      return;
    }
    Store& s = this->store();
    reset_status();
    gpu::detail::launch_over<k::check_sparse<Scalar>>("check_sparse", s.geometry_, count, stream(),
                                                      index, static_cast<const Scalar*>(nullptr),
                                                      count, s.n_, status());
    Scalar* const seen = s.w_seen(id());
    const unsigned* const st = status();
    const Scalar* const src = s.params_.data();
    if (s.relaxed_) {
      gpu::detail::launch_over<k::gather<k::DeviceRelaxed, Scalar>>(
          "gather", s.geometry_, count, stream(), src, dst, seen, index, count, st);
    } else {
      s.order_.all(stream(), [&] {
        gpu::detail::launch_over<k::gather<k::DevicePlain, Scalar>>(
            "gather", s.geometry_, count, stream(), src, dst, seen, index, count, st);
      });
    }
    gpu::detail::launch("account_pull", k::account_pull<>, 1, 1, stream(), st,
                        s.counters_.data() + id());
  }

  // The rule's coefficients for the update that holds `ticket`, and what the push returns.
  template <class Values>
  auto begin_push(Values norm_of, const store::Versions::Ticket& ticket, gpu::Issued& issued) {
    const double norm = needs_gradient_norm_v<Rule> ? norm_of() : 0.0;
    issued.applied = true;
    issued.staleness = ticket.staleness(seen_version_);
    issued.version = ticket.slot();
    return this->store().rule_.template formula<Scalar>(UpdateInfo{.staleness = issued.staleness,
                                                                   .version = issued.version,
                                                                   .worker = id(),
                                                                   .gradient_norm = norm});
  }

  // The Euclidean norm of v[0, count) on the device, read back by the host.
  double norm(const Scalar* v, std::size_t count) {
    Store& s = this->store();
    double* const sum = s.norms_.data() + id();
    ASYNCOPT_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double), stream()));
    if (count > 0) {
      gpu::detail::launch_over<gpu::kernels::sum_squares<Scalar>>("sum_squares", s.geometry_, count,
                                                                  stream(), v, count, sum);
    }
    ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(s.norms_host_.data() + id(), sum, sizeof(double),
                                        cudaMemcpyDeviceToHost, stream()));
    lane().stream.synchronize();
    return std::sqrt(s.norms_host_.data()[id()]);
  }

  gpu::Issued push_dense(const Scalar* g) {
    namespace k = gpu::kernels;
    Store& s = this->store();
    const std::size_t n = s.n_;
    reset_status();
    if (n > 0) {
      gpu::detail::launch_over<k::check_dense<Scalar>>("check_dense", s.geometry_, n, stream(), g,
                                                       n, status());
    }
    gpu::Issued issued;
    const auto ticket = s.versions_.take();  // counts as queued when it goes
    const auto formula = begin_push([&] { return norm(g, n); }, ticket, issued);
    using Formula = std::decay_t<decltype(formula)>;
    static_assert(needs_w_seen_v<Rule> == needs_w_seen_v<Formula>,
                  "asyncopt: a rule and its formula must agree on needs_w_seen");
    k::DenseArgs<Scalar, slots> args{.w = s.params_.data(),
                                     .g = g,
                                     .state = s.state_pointers_,
                                     .w_seen = s.w_seen(id()),
                                     .begin = 0,
                                     .end = n,
                                     .status = status()};
    if (n > 0) {
      if (s.relaxed_) {
        gpu::detail::launch_over<k::apply_dense<k::DeviceRelaxed, false, Formula, Scalar, slots>>(
            "apply_dense", s.geometry_, n, stream(), formula, args);
      } else {
        s.order_.each(stream(), [&](std::size_t begin, std::size_t end) {
          args.begin = begin;
          args.end = end;
          launch_plain_dense(formula, args);
        });
      }
    }
    end_push(issued.staleness);
    return issued;
  }

  // The dense kernel over [args.begin, args.end) with plain access: 16 bytes at a time when
  // every array is aligned there.
  template <class Formula>
  void launch_plain_dense(const Formula& formula,
                          const gpu::kernels::DenseArgs<Scalar, slots>& args) {
    namespace k = gpu::kernels;
    const Store& s = this->store();
    bool aligned = gpu::detail::aligned16(args.w + args.begin) &&
                   gpu::detail::aligned16(args.g + args.begin) &&
                   (args.w_seen == nullptr || gpu::detail::aligned16(args.w_seen + args.begin));
    if constexpr (slots > 0) {
      for (std::size_t j = 0; j < slots; ++j) {
        aligned = aligned && gpu::detail::aligned16(args.state[j] + args.begin);
      }
    }
    const std::size_t length = args.end - args.begin;
    if (aligned) {
      constexpr std::size_t width = k::detail::Chunk<Scalar>::width;
      gpu::detail::launch_over<k::apply_dense<k::DevicePlain, true, Formula, Scalar, slots>>(
          "apply_dense", s.geometry_, length / width + 1, stream(), formula, args);
    } else {
      gpu::detail::launch_over<k::apply_dense<k::DevicePlain, false, Formula, Scalar, slots>>(
          "apply_dense", s.geometry_, length, stream(), formula, args);
    }
  }

  gpu::Issued push_sparse(const std::size_t* index, const Scalar* value, std::size_t count) {
    namespace k = gpu::kernels;
    Store& s = this->store();
    reset_status();
    if (count > 0) {
      gpu::detail::launch_over<k::check_sparse<Scalar>>(
          "check_sparse", s.geometry_, count, stream(), index, value, count, s.n_, status());
    }
    gpu::Issued issued;
    const auto ticket = s.versions_.take();  // counts as queued when it goes
    const auto formula = begin_push([&] { return norm(value, count); }, ticket, issued);
    using Formula = std::decay_t<decltype(formula)>;
    const k::SparseArgs<Scalar, slots> args{.w = s.params_.data(),
                                            .index = index,
                                            .value = value,
                                            .count = count,
                                            .state = s.state_pointers_,
                                            .w_seen = s.w_seen(id()),
                                            .status = status()};
    if (count > 0) {
      if (s.relaxed_) {
        gpu::detail::launch_over<k::apply_sparse<k::DeviceRelaxed, Formula, Scalar, slots>>(
            "apply_sparse", s.geometry_, count, stream(), formula, args);
      } else {
        s.order_.all(stream(), [&] {
          gpu::detail::launch_over<k::apply_sparse<k::DevicePlain, Formula, Scalar, slots>>(
              "apply_sparse", s.geometry_, count, stream(), formula, args);
        });
      }
    }
    end_push(issued.staleness);
    return issued;
  }

  std::uint64_t seen_version_ = 0;
  store::Seen<Scalar> seen_;
  gpu::DeviceBuffer<Scalar> values_;
  gpu::DeviceBuffer<std::size_t> indices_;
};

}  // namespace asyncopt::transport
