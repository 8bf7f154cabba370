// The CUDA transport: parameters, rule state and per-worker w_seen in device memory; workers
// are host threads, each with its own stream; a push launches the rule's kernel.
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

#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/step.hpp>
#include <asyncopt/cuda/error.cuh>
#include <asyncopt/cuda/kernels.cuh>
#include <asyncopt/cuda/memory.cuh>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/update/check.hpp>

namespace asyncopt::cuda {

/// What a push on the device did when it was issued: its place in the sequence of updates and
/// its staleness. The update runs later, in the order of the worker's stream; a gradient the
/// device finds non-finite changes nothing and is counted in StoreStats::rejected.
struct Issued {
  /// The update's position in the store's sequence of issued updates (0 for the first).
  std::uint64_t version = 0;
  /// Updates issued between the worker's last pull and this push.
  std::uint64_t staleness = 0;
};

namespace detail {

/// How a consistency policy orders device work: `relaxed` (LockFree: no order, relaxed
/// atomics) or per stripe (Locked: each stripe's kernels run one after another, in the order
/// their host threads took the stripe's lock). BoundedStaleness adds its gate on the host.
template <class C>
struct Ordering {
  static constexpr bool supported = false;
  static constexpr bool relaxed = true;
};
template <>
struct Ordering<consistency::LockFree> {
  static constexpr bool supported = true;
  static constexpr bool relaxed = true;
  static consistency::Locked locked(const consistency::LockFree& /*policy*/) { return {}; }
};
template <>
struct Ordering<consistency::Locked> {
  static constexpr bool supported = true;
  static constexpr bool relaxed = false;
  static consistency::Locked locked(const consistency::Locked& policy) { return policy; }
};
template <class Inner>
struct Ordering<consistency::BoundedStaleness<Inner>>
    : Ordering<typename consistency::BoundedStaleness<Inner>::inner_type> {
  static consistency::Locked locked(const consistency::BoundedStaleness<Inner>& policy) {
    return Ordering<typename consistency::BoundedStaleness<Inner>::inner_type>::locked(
        policy.inner);
  }
};

/// Per-stripe order of device work under Locked: a host mutex and the event of the last
/// device work on the stripe. A thread holding the mutex makes its stream wait for that event,
/// queues its work and records the event again, so the stripe's kernels run one at a time
/// without the host waiting for the device.
template <class Scalar>
class StripeOrder {
 public:
  StripeOrder(const consistency::Locked& policy, std::size_t n, bool used) : n_(n) {
    if (!used) {
      return;
    }
    const consistency::Locked::Guard<Scalar> geometry(policy, n, 1);
    size_ = geometry.stripe_size();
    count_ = geometry.stripes();
    stripes_ = std::make_unique<Stripe[]>(count_);
  }

  /// Calls queue(begin, end) for every stripe, each ordered after the stripe's last work.
  template <class Queue>
  void each(cudaStream_t stream, Queue&& queue) {
    for (std::size_t s = 0; s < count_; ++s) {
      const std::lock_guard lock(stripes_[s].mutex);
      stripes_[s].done.wait_in(stream);
      queue(s * size_, std::min(n_, (s + 1) * size_));
      stripes_[s].done.record(stream);
    }
  }

  /// Calls queue() once, ordered after the last work on every stripe and before the next:
  /// for work whose footprint the host does not know (indices on the device) or that reads
  /// everything (a pull). Takes the stripes' locks in ascending order.
  template <class Queue>
  void all(cudaStream_t stream, Queue&& queue) {
    struct Unlock {  // releases the locks taken so far, also when a call throws
      Stripe* stripes;
      std::size_t locked = 0;
      explicit Unlock(Stripe* all) : stripes(all) {}
      Unlock(const Unlock&) = delete;
      Unlock& operator=(const Unlock&) = delete;
      ~Unlock() {
        for (std::size_t s = 0; s < locked; ++s) {
          stripes[s].mutex.unlock();
        }
      }
    } unlock{stripes_.get()};
    for (std::size_t s = 0; s < count_; ++s) {
      stripes_[s].mutex.lock();
      ++unlock.locked;
      stripes_[s].done.wait_in(stream);
    }
    queue();
    for (std::size_t s = 0; s < count_; ++s) {
      stripes_[s].done.record(stream);
    }
  }

 private:
  struct alignas(cache_line) Stripe {
    std::mutex mutex;
    Event done;
  };
  std::size_t n_;
  std::size_t size_ = 0;
  std::size_t count_ = 0;
  std::unique_ptr<Stripe[]> stripes_;
};

/// Throws std::invalid_argument unless the `size` elements at `p` are memory that `device`
/// can use: its own device memory, or managed memory. An empty span may be null.
inline void require_device_memory(const void* p, std::size_t size, int device, const char* what) {
  if (size == 0) {
    return;
  }
  if (p == nullptr) {
    throw std::invalid_argument(std::string("asyncopt: ") + what + " got a null DeviceSpan of " +
                                std::to_string(size) + " elements");
  }
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, p),
        std::string("cudaPointerGetAttributes for ") + what);
  if (attributes.type == cudaMemoryTypeManaged) {
    return;
  }
  if (attributes.type != cudaMemoryTypeDevice) {
    throw std::invalid_argument(std::string("asyncopt: ") + what +
                                " needs device memory, but its DeviceSpan points at host memory; "
                                "pass a std::span for host memory");
  }
  if (attributes.device != device) {
    throw std::invalid_argument(std::string("asyncopt: ") + what + " got memory of device " +
                                std::to_string(attributes.device) + " for a store on device " +
                                std::to_string(device));
  }
}

/// Makes `device` current on the calling thread.
inline void use_device(int device) {
  check(cudaSetDevice(device), "cudaSetDevice");
}

template <class Kernel, class... Args>
void launch(const char* name, Kernel kernel, unsigned blocks, unsigned threads, cudaStream_t stream,
            const Args&... args) {
  kernel<<<blocks, threads, 0, stream>>>(args...);
  check_launch(name);
}

/// Launches `Kernel` over `items` work items with the geometry's block size and as many blocks
/// as the device holds at once for it.
template <auto Kernel, class... Args>
void launch_over(const char* name, const kernels::Geometry& geometry, std::size_t items,
                 cudaStream_t stream, const Args&... args) {
  launch(name, Kernel, geometry.template blocks<Kernel>(items), geometry.threads(), stream,
         args...);
}

inline bool aligned16(const void* p) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace detail
}  // namespace asyncopt::cuda

namespace asyncopt::transport {

/// CUDA device memory: the store holds the parameters, the rule's state and, for rules that
/// read the parameters a gradient was computed at, one copy of them per worker on one GPU;
/// workers are host threads, each with its own stream. A push checks the gradient and
/// launches the rule's kernel (the per-element formula the CPU kernels run) on the worker's
/// stream and returns without waiting for it. Consistency: LockFree (relaxed device atomics;
/// concurrent kernels may overwrite each other's updates), Locked (each stripe's kernels run
/// one at a time, ordered by events, so the host never waits) and BoundedStaleness over
/// either (its gate runs on the host).
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
    SharedMemory{}.run(workers, [&body, ordinal](std::size_t id) {
      thread_local int current = -1;
      if (current != ordinal) {
        cuda::detail::use_device(ordinal);
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
class CudaDevice::Store {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "asyncopt: transport::CudaDevice stores float or double parameters");
  static_assert(UpdateRule<Rule>, "asyncopt: transport::CudaDevice needs an update rule");
  static_assert(cuda::detail::Ordering<Consistency>::supported,
                "asyncopt: transport::CudaDevice runs the consistency policies LockFree, Locked "
                "and BoundedStaleness<LockFree or Locked>; Synchronous and LocalSgd move workers "
                "in rounds, which need transport::SharedMemory");

  using Ordering = cuda::detail::Ordering<Consistency>;
  using guard_type = typename Consistency::template Guard<Scalar>;

 public:
  /// The type of the parameters and gradients: `Scalar`, float or double.
  using scalar_type = Scalar;
  /// Scalars of rule state kept per parameter (`Rule::state_slots`).
  static constexpr std::size_t slots = Rule::state_slots;
  /// Whether the rule reads the parameters a gradient was computed at (one copy per worker
  /// is kept on the device).
  static constexpr bool keeps_w_seen = needs_w_seen_v<Rule>;
  /// Whether kernels use relaxed atomics and no order (LockFree) instead of per-stripe order.
  static constexpr bool relaxed = Ordering::relaxed;
  /// Whether pulls wait at the policy's gate first (bounded staleness).
  static constexpr bool gated = requires(guard_type & g) {
    g.wait_to_read(std::size_t{0}, std::uint64_t{0});
  };

  class Worker;

  /// Copies `params` (host memory, n parameters) to the device and sets the rule's state to
  /// zero, for `workers` workers. `params` becomes the store's host mirror: sync() copies the
  /// device's parameters back into it, so it must outlive the store (as the shared-memory
  /// store's array does). Throws std::invalid_argument for 0 workers or bad options, what
  /// the rule's validate() throws, and cuda::Error when the device cannot be used or lacks
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
        cuda::DeviceSpan<const Scalar> initial, std::size_t workers)
      : Store(transport, rule, consistency, initial.size(), workers) {
    cuda::detail::require_device_memory(initial.data(), initial.size(), device_,
                                        "the initial parameters");
    if (n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpy(params_.data(), initial.data(), n_ * sizeof(Scalar),
                                     cudaMemcpyDeviceToDevice));
    }
    ASYNCOPT_CUDA_CHECK(cudaDeviceSynchronize());
  }

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  Store(Store&&) = delete;
  Store& operator=(Store&&) = delete;
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
    transport::detail::check_worker_id(id, workers_);
    if (lanes_[id].claimed.exchange(true, std::memory_order_acq_rel)) {
      throw std::logic_error("asyncopt: worker " + std::to_string(id) +
                             " already has a handle; each worker id has one at a time");
    }
    Worker handle(*this, id);
    handle.join();
    return handle;
  }

  /// The number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return n_; }
  /// The number of workers the store was created for.
  [[nodiscard]] std::size_t workers() const noexcept { return workers_; }
  /// Pushes queued so far (each takes a version, also one the device then rejects).
  [[nodiscard]] std::uint64_t version() const noexcept {
    return completed_.load(std::memory_order_acquire);
  }
  /// The CUDA device that holds the store.
  [[nodiscard]] int device() const noexcept { return device_; }

  /// The parameters on the device. Read them after synchronize(), while no worker pushes.
  [[nodiscard]] cuda::DeviceSpan<const Scalar> parameters() const noexcept {
    return {params_.data(), n_};
  }
  /// The rule's state on the device: Rule::state_slots arrays of dimension() scalars, one
  /// after the other. Read or write it only while no worker pulls or pushes.
  [[nodiscard]] cuda::DeviceSpan<Scalar> rule_state() noexcept { return state_.span(); }

  /// Waits for every worker's stream, then copies the parameters into `out` (dimension()
  /// elements of host memory). Throws std::invalid_argument for a wrong size.
  void copy_parameters(std::span<Scalar> out) {
    transport::detail::check_dense_size(out.size(), n_, "copy_parameters");
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

  /// Waits until every worker's queued work has finished; throws cuda::Error for a failure
  /// the device reported meanwhile.
  void synchronize() {
    cuda::detail::use_device(device_);
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
    std::vector<cuda::kernels::Counters> counters(workers_);
    std::vector<unsigned long long> histograms(workers_ * buckets);
    ASYNCOPT_CUDA_CHECK(cudaMemcpy(counters.data(), counters_.data(),
                                   workers_ * sizeof(cuda::kernels::Counters),
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
    cuda::Stream stream;
    cuda::Event pushed;  // recorded after each push when pulls wait for it (gated LockFree)
    double wait_seconds = 0.0;
    unsigned long long bad_index_reported = 0;  // bad index lists synchronize() has reported
    std::atomic<std::uint64_t> clock{0};
    std::atomic<bool> claimed{false};
  };

  Store(const CudaDevice& transport, const Rule& rule, const Consistency& consistency,
        std::size_t n, std::size_t workers)
      : rule_(validated(transport, rule, consistency, workers)),
        device_(transport.device),
        n_(n),
        workers_(workers),
        geometry_((cuda::detail::use_device(device_), device_), transport.threads_per_block),
        params_(n),
        state_(slots * n),
        seen_(keeps_w_seen ? workers * n : 0),
        status_(workers),
        counters_(workers),
        histograms_(workers * StoreStats::staleness_buckets),
        norms_(workers),
        norms_host_(workers),
        gate_(consistency, n, workers),
        order_(Ordering::locked(consistency), n, !relaxed),
        lanes_(std::make_unique<Lane[]>(workers)) {
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
    if (workers == 0) {
      throw std::invalid_argument("asyncopt: a store needs at least one worker");
    }
    transport.validate();
    update::validate(rule, Precision::of<Scalar>());
    consistency.validate();
    return rule;
  }

  [[nodiscard]] Scalar* w_seen(std::size_t id) const noexcept {
    return keeps_w_seen ? seen_.data() + id * n_ : nullptr;
  }

  void leave(std::size_t id) {
    if constexpr (requires(guard_type & g) { g.leave(id); }) {
      gate_.leave(id);
    }
  }

  Rule rule_;
  std::span<Scalar> host_{};
  int device_;
  std::size_t n_;
  std::size_t workers_;
  cuda::kernels::Geometry geometry_;
  cuda::DeviceBuffer<Scalar> params_;
  cuda::DeviceBuffer<Scalar> state_;
  cuda::DeviceBuffer<Scalar> seen_;
  cuda::DeviceBuffer<unsigned> status_;
  cuda::DeviceBuffer<cuda::kernels::Counters> counters_;
  cuda::DeviceBuffer<unsigned long long> histograms_;
  cuda::DeviceBuffer<double> norms_;
  cuda::PinnedBuffer<double> norms_host_;
  std::array<Scalar*, slots> state_pointers_{};
  guard_type gate_;
  cuda::detail::StripeOrder<Scalar> order_;
  // Versions taken by pushes, and pushes whose device work is queued: a pull reads the
  // second, so a push that has a version but is not queued yet counts as stale.
  alignas(cache_line) std::atomic<std::uint64_t> started_{0};
  alignas(cache_line) std::atomic<std::uint64_t> completed_{0};
  std::unique_ptr<Lane[]> lanes_;
};

/// A worker's handle on a device store: pull, push, clock, each queued on the worker's own
/// stream. Gradients and pull targets in device memory (cuda::DeviceSpan) keep everything on
/// the device; std::span overloads take host memory (pinned memory, cuda::PinnedBuffer, copies
/// fastest) and satisfy asyncopt::WorkerHandle.
template <class Scalar, class Rule, class Consistency>
class CudaDevice::Store<Scalar, Rule, Consistency>::Worker {
 public:
  /// The worker's stream. Queue the kernels that compute a gradient here: a push queued
  /// after them reads the finished gradient without the host waiting.
  [[nodiscard]] cudaStream_t stream() const noexcept { return lane().stream.get(); }

  /// Queues a copy of the parameters into `out` (device memory, dimension() elements) and
  /// remembers the version, so that the next push knows its staleness; for rules that need
  /// it the store keeps the copy as this worker's w_seen. Waits first at a bounded-staleness
  /// gate.
  void pull(cuda::DeviceSpan<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    cuda::detail::require_device_memory(out.data(), out.size(), store_->device_, "pull");
    begin_pull();
    copy_out(out.data());
    seen_ = Seen::all;
  }

  /// Copies the parameters into `out` (host memory, dimension() elements) and waits for the
  /// copy (a bad index list queued before is left for synchronize() to report).
  void pull(std::span<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    begin_pull();
    Scalar* const staged = keeps_w_seen ? store_->w_seen(id_) : staging(values_, store_->n_);
    copy_out(staged);
    if (store_->n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(out.data(), staged, store_->n_ * sizeof(Scalar),
                                          cudaMemcpyDeviceToHost, stream()));
    }
    seen_ = Seen::all;
    lane().stream.synchronize();
  }

  /// Queues a copy of the parameters at `index` (device memory, strictly increasing, each
  /// below dimension()) into the same positions of `out` (device memory, dimension()
  /// elements; the others are left as they are). A bad index list copies nothing and is
  /// reported by the next synchronize().
  void pull(cuda::DeviceSpan<const std::size_t> index, cuda::DeviceSpan<Scalar> out) {
    prepare();
    check_size(out.size(), "pull");
    cuda::detail::require_device_memory(index.data(), index.size(), store_->device_,
                                        "pull's index list");
    cuda::detail::require_device_memory(out.data(), out.size(), store_->device_, "pull");
    begin_pull();
    gather(index.data(), index.size(), out.data());
    if (seen_ == Seen::none) {
      seen_ = Seen::some;
    }
  }

  /// Queues a dense push of `gradient` (device memory, dimension() elements) computed at the
  /// last pulled parameters: the device checks it and, when every value is finite, applies
  /// the rule's kernel. Returns without waiting; a rule that clips by norm waits for the norm.
  cuda::Issued push(cuda::DeviceSpan<const Scalar> gradient) {
    prepare();
    check_size(gradient.size(), "push");
    cuda::detail::require_device_memory(gradient.data(), gradient.size(), store_->device_, "push");
    require_seen(true);
    return push_dense(gradient.data());
  }

  /// The same from host memory: the gradient is copied to the device first, and the host
  /// buffer may be reused when this returns (the call waits for the copy, and so for the
  /// work queued before it).
  cuda::Issued push(std::span<const Scalar> gradient) {
    prepare();
    check_size(gradient.size(), "push");
    require_seen(true);
    Scalar* const staged = staging(values_, store_->n_);
    if (store_->n_ > 0) {
      ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(staged, gradient.data(), store_->n_ * sizeof(Scalar),
                                          cudaMemcpyHostToDevice, stream()));
      lane().stream.synchronize();  // from pinned memory the copy is asynchronous
    }
    return push_dense(staged);
  }

  /// Queues a sparse push (device memory): strictly increasing indices below dimension() with
  /// their values. A bad index list or a non-finite value changes nothing; the first is
  /// reported by the next synchronize(), the second counted in StoreStats::rejected. Throws
  /// std::invalid_argument at once when the sizes differ.
  cuda::Issued push(cuda::DeviceSpan<const std::size_t> index,
                    cuda::DeviceSpan<const Scalar> value) {
    prepare();
    transport::detail::check_sparse_sizes(index.size(), value.size());
    cuda::detail::require_device_memory(index.data(), index.size(), store_->device_,
                                        "push's index list");
    cuda::detail::require_device_memory(value.data(), value.size(), store_->device_,
                                        "push's values");
    require_seen(false);
    return push_sparse(index.data(), value.data(), index.size());
  }

  /// The same from host memory, checked on the host first: throws std::invalid_argument for a
  /// bad index list, as the shared-memory store does. Waits for the copy, as the dense push
  /// from host memory does.
  cuda::Issued push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    prepare();
    transport::detail::check_sparse_push(index, value, store_->n_);
    require_seen(false);
    const std::size_t count = index.size();
    std::size_t* const index_staged = staging(indices_, count);
    Scalar* const value_staged = staging(values_, std::max(count, store_->n_));
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
  cuda::Issued push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step (bounded staleness counts clocks).
  void clock() {
    const std::uint64_t now = lane().clock.fetch_add(1, std::memory_order_acq_rel) + 1;
    if constexpr (requires(guard_type & g) { g.clock(id_, now); }) {
      store_->gate_.clock(id_, now);
    }
  }

  /// Stops holding other workers back (bounded staleness) until join(). Destroying the
  /// handle leaves as well.
  void leave() { store_->leave(id_); }

  /// Takes part again after leave(), at this worker's clock.
  void join() {
    if constexpr (requires(guard_type & g) { g.join(id_, std::uint64_t{0}); }) {
      store_->gate_.join(id_, clock_count());
    }
  }

  /// Waits for this worker's stream. Throws cuda::Error for a failure the device reported,
  /// and std::invalid_argument when a sparse push or pull queued since the last call had a
  /// bad index list (it changed nothing).
  void synchronize() {
    prepare();
    cuda::kernels::Counters counters;
    ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(&counters, store_->counters_.data() + id_,
                                        sizeof(cuda::kernels::Counters), cudaMemcpyDeviceToHost,
                                        stream()));
    lane().stream.synchronize();
    const unsigned long long bad = counters.bad_push + counters.bad_pull;
    unsigned long long& reported = lane().bad_index_reported;
    if (bad > reported) {
      const unsigned long long fresh = bad - reported;
      reported = bad;
      throw std::invalid_argument(
          "asyncopt: " + std::to_string(fresh) + " sparse push(es) or pull(s) of worker " +
          std::to_string(id_) +
          " had an index list with an index out of range or not strictly increasing; they "
          "changed nothing");
    }
  }

  /// The worker id this handle was created for.
  [[nodiscard]] std::size_t id() const noexcept { return id_; }
  /// The store's version at the last pull.
  [[nodiscard]] std::uint64_t seen_version() const noexcept { return seen_version_; }
  /// Steps this worker has finished.
  [[nodiscard]] std::uint64_t clock_count() const noexcept {
    return lane().clock.load(std::memory_order_acquire);
  }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  /// Takes over `other`'s worker id, last pull and staging buffers; `other` may then only
  /// be destroyed or assigned to.
  Worker(Worker&& other) noexcept
      : store_(std::exchange(other.store_, nullptr)),
        id_(other.id_),
        seen_version_(other.seen_version_),
        seen_(other.seen_),
        values_(std::move(other.values_)),
        indices_(std::move(other.indices_)) {}
  /// Releases this handle's worker id as the destructor does, then takes over `other`'s.
  Worker& operator=(Worker&& other) noexcept {
    if (this != &other) {
      release();
      store_ = std::exchange(other.store_, nullptr);
      id_ = other.id_;
      seen_version_ = other.seen_version_;
      seen_ = other.seen_;
      values_ = std::move(other.values_);
      indices_ = std::move(other.indices_);
    }
    return *this;
  }
  /// Waits for the worker's stream, leaves and releases the worker id.
  ~Worker() { release(); }

 private:
  friend class Store;
  enum class Seen { none, some, all };

  Worker(Store& store, std::size_t id) : store_(&store), id_(id) {}

  [[nodiscard]] Lane& lane() const noexcept { return store_->lanes_[id_]; }

  void release() noexcept {
    if (store_ != nullptr) {
      try {
        store_->leave(id_);  // first: a failure below must not hold the other workers back
      } catch (...) {        // a destructor cannot report a failure
      }
      try {
        cuda::detail::use_device(store_->device_);
        lane().stream.synchronize();  // the staging buffers may still be read
      } catch (...) {
      }
      lane().claimed.store(false, std::memory_order_release);
      store_ = nullptr;
    }
  }

  void prepare() const { cuda::detail::use_device(store_->device_); }

  void check_size(std::size_t size, const char* what) const {
    transport::detail::check_dense_size(size, store_->n_, what);
  }

  // Rules that read w_seen need a pull first; a dense update needs every parameter pulled.
  void require_seen(bool dense) const {
    if constexpr (keeps_w_seen) {
      if (seen_ == Seen::none) {
        throw std::logic_error(
            "asyncopt: this update rule needs the parameters the gradient was computed at; "
            "pull before the first push");
      }
      if (dense && seen_ != Seen::all) {
        throw std::logic_error(
            "asyncopt: this update rule needs every parameter the gradient was computed at for "
            "a dense update, but the pulls so far read only some of them; pull them all first");
      }
    }
  }

  template <class T>
  T* staging(cuda::DeviceBuffer<T>& buffer, std::size_t size) {
    if (buffer.size() < size) {
      lane().stream.synchronize();  // the old buffer may still be read
      buffer = cuda::DeviceBuffer<T>(size);
    }
    return buffer.data();
  }

  // Waits at the policy's gate, if it has one, and remembers the version the pull sees: the
  // pushes queued so far. Under LockFree with a gate the pull's stream also waits for every
  // other worker's last push, so the device sees what the gate let through (under Locked the
  // stripes' events order it already).
  void begin_pull() {
    if constexpr (gated) {
      lane().wait_seconds += store_->gate_.wait_to_read(id_, clock_count());
      if constexpr (relaxed) {
        for (std::size_t other = 0; other < store_->workers_; ++other) {
          if (other != id_) {
            store_->lanes_[other].pushed.wait_in(stream());
          }
        }
      }
    }
    seen_version_ = store_->completed_.load(std::memory_order_acquire);
  }

  [[nodiscard]] unsigned* status() const noexcept { return store_->status_.data() + id_; }

  void reset_status() {
    ASYNCOPT_CUDA_CHECK(cudaMemsetAsync(status(), 0, sizeof(unsigned), stream()));
  }

  // Counts the push by its status on the device, then marks the end of its work on the
  // stream for gated LockFree pulls.
  void end_push(std::uint64_t staleness) {
    constexpr std::size_t buckets = StoreStats::staleness_buckets;
    cuda::detail::launch("account_push", cuda::kernels::account_push<>, 1, 1, stream(),
                         static_cast<const unsigned*>(status()), store_->counters_.data() + id_,
                         store_->histograms_.data() + id_ * buckets, buckets,
                         static_cast<unsigned long long>(staleness));
    if constexpr (relaxed && gated) {
      lane().pushed.record(stream());
    }
  }

  // Counts a push as queued when it leaves push_dense or push_sparse, also by an exception,
  // so that the versions pulls see never stop short of one that was taken.
  struct QueuedOnExit {
    std::atomic<std::uint64_t>& completed;
    explicit QueuedOnExit(std::atomic<std::uint64_t>& counter) : completed(counter) {}
    QueuedOnExit(const QueuedOnExit&) = delete;
    QueuedOnExit& operator=(const QueuedOnExit&) = delete;
    ~QueuedOnExit() { completed.fetch_add(1, std::memory_order_release); }
  };

  // The parameters into dst and, for rules that keep it, into this worker's w_seen.
  void copy_out(Scalar* dst) {
    namespace k = cuda::kernels;
    Store& s = *store_;
    const std::size_t n = s.n_;
    if (n == 0) {
      return;
    }
    Scalar* const seen = s.w_seen(id_);
    Scalar* const second = seen == dst ? nullptr : seen;
    const Scalar* const src = s.params_.data();
    if constexpr (relaxed) {
      cuda::detail::launch_over<k::copy<k::DeviceRelaxed, false, Scalar>>(
          "copy", s.geometry_, n, stream(), src, dst, second, n);
    } else {
      s.order_.all(stream(), [&] {
        if (cuda::detail::aligned16(dst) && cuda::detail::aligned16(second)) {
          constexpr std::size_t width = k::detail::Chunk<Scalar>::width;
          cuda::detail::launch_over<k::copy<k::DevicePlain, true, Scalar>>(
              "copy", s.geometry_, n / width + 1, stream(), src, dst, second, n);
        } else {
          cuda::detail::launch_over<k::copy<k::DevicePlain, false, Scalar>>(
              "copy", s.geometry_, n, stream(), src, dst, second, n);
        }
      });
    }
  }

  void gather(const std::size_t* index, std::size_t count, Scalar* dst) {
    namespace k = cuda::kernels;
    if (count == 0) {
      return;
    }
    Store& s = *store_;
    reset_status();
    cuda::detail::launch_over<k::check_sparse<Scalar>>("check_sparse", s.geometry_, count, stream(),
                                                       index, static_cast<const Scalar*>(nullptr),
                                                       count, s.n_, status());
    Scalar* const seen = s.w_seen(id_);
    const unsigned* const st = status();
    const Scalar* const src = s.params_.data();
    if constexpr (relaxed) {
      cuda::detail::launch_over<k::gather<k::DeviceRelaxed, Scalar>>(
          "gather", s.geometry_, count, stream(), src, dst, seen, index, count, st);
    } else {
      s.order_.all(stream(), [&] {
        cuda::detail::launch_over<k::gather<k::DevicePlain, Scalar>>(
            "gather", s.geometry_, count, stream(), src, dst, seen, index, count, st);
      });
    }
    cuda::detail::launch("account_pull", k::account_pull<>, 1, 1, stream(), st,
                         s.counters_.data() + id_);
  }

  // Takes the next version and the rule's coefficients for it.
  template <class Values>
  auto begin_push(Values norm_of, cuda::Issued& issued) {
    const double norm = needs_gradient_norm_v<Rule> ? norm_of() : 0.0;
    const std::uint64_t slot = store_->started_.fetch_add(1, std::memory_order_acq_rel);
    issued = {.version = slot, .staleness = slot >= seen_version_ ? slot - seen_version_ : 0};
    return store_->rule_.template step<Scalar>(StepInfo{
        .staleness = issued.staleness, .version = slot, .worker = id_, .gradient_norm = norm});
  }

  // The Euclidean norm of v[0, count) on the device, read back by the host.
  double norm(const Scalar* v, std::size_t count) {
    Store& s = *store_;
    double* const sum = s.norms_.data() + id_;
    ASYNCOPT_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double), stream()));
    if (count > 0) {
      cuda::detail::launch_over<cuda::kernels::sum_squares<Scalar>>("sum_squares", s.geometry_,
                                                                    count, stream(), v, count, sum);
    }
    ASYNCOPT_CUDA_CHECK(cudaMemcpyAsync(s.norms_host_.data() + id_, sum, sizeof(double),
                                        cudaMemcpyDeviceToHost, stream()));
    lane().stream.synchronize();
    return std::sqrt(s.norms_host_.data()[id_]);
  }

  cuda::Issued push_dense(const Scalar* g) {
    namespace k = cuda::kernels;
    Store& s = *store_;
    const std::size_t n = s.n_;
    reset_status();
    if (n > 0) {
      cuda::detail::launch_over<k::check_dense<Scalar>>("check_dense", s.geometry_, n, stream(), g,
                                                        n, status());
    }
    cuda::Issued issued;
    const auto step = begin_push([&] { return norm(g, n); }, issued);
    const QueuedOnExit queued(s.completed_);
    using Step = std::decay_t<decltype(step)>;
    static_assert(needs_w_seen_v<Rule> == needs_w_seen_v<Step>,
                  "asyncopt: a rule and its step must agree on needs_w_seen");
    k::DenseArgs<Scalar, slots> args{.w = s.params_.data(),
                                     .g = g,
                                     .state = s.state_pointers_,
                                     .w_seen = s.w_seen(id_),
                                     .begin = 0,
                                     .end = n,
                                     .status = status()};
    if (n > 0) {
      if constexpr (relaxed) {
        cuda::detail::launch_over<k::apply_dense<k::DeviceRelaxed, false, Step, Scalar, slots>>(
            "apply_dense", s.geometry_, n, stream(), step, args);
      } else {
        s.order_.each(stream(), [&](std::size_t begin, std::size_t end) {
          args.begin = begin;
          args.end = end;
          launch_plain_dense(step, args);
        });
      }
    }
    end_push(issued.staleness);
    return issued;
  }

  // The dense kernel over [args.begin, args.end) with plain access: 16 bytes at a time when
  // every array is aligned there.
  template <class Step>
  void launch_plain_dense(const Step& step, const cuda::kernels::DenseArgs<Scalar, slots>& args) {
    namespace k = cuda::kernels;
    const Store& s = *store_;
    bool aligned = cuda::detail::aligned16(args.w + args.begin) &&
                   cuda::detail::aligned16(args.g + args.begin) &&
                   (args.w_seen == nullptr || cuda::detail::aligned16(args.w_seen + args.begin));
    if constexpr (slots > 0) {
      for (std::size_t j = 0; j < slots; ++j) {
        aligned = aligned && cuda::detail::aligned16(args.state[j] + args.begin);
      }
    }
    const std::size_t length = args.end - args.begin;
    if (aligned) {
      constexpr std::size_t width = k::detail::Chunk<Scalar>::width;
      cuda::detail::launch_over<k::apply_dense<k::DevicePlain, true, Step, Scalar, slots>>(
          "apply_dense", s.geometry_, length / width + 1, stream(), step, args);
    } else {
      cuda::detail::launch_over<k::apply_dense<k::DevicePlain, false, Step, Scalar, slots>>(
          "apply_dense", s.geometry_, length, stream(), step, args);
    }
  }

  cuda::Issued push_sparse(const std::size_t* index, const Scalar* value, std::size_t count) {
    namespace k = cuda::kernels;
    Store& s = *store_;
    reset_status();
    if (count > 0) {
      cuda::detail::launch_over<k::check_sparse<Scalar>>(
          "check_sparse", s.geometry_, count, stream(), index, value, count, s.n_, status());
    }
    cuda::Issued issued;
    const auto step = begin_push([&] { return norm(value, count); }, issued);
    const QueuedOnExit queued(s.completed_);
    using Step = std::decay_t<decltype(step)>;
    const k::SparseArgs<Scalar, slots> args{.w = s.params_.data(),
                                            .index = index,
                                            .value = value,
                                            .count = count,
                                            .state = s.state_pointers_,
                                            .w_seen = s.w_seen(id_),
                                            .status = status()};
    if (count > 0) {
      if constexpr (relaxed) {
        cuda::detail::launch_over<k::apply_sparse<k::DeviceRelaxed, Step, Scalar, slots>>(
            "apply_sparse", s.geometry_, count, stream(), step, args);
      } else {
        s.order_.all(stream(), [&] {
          cuda::detail::launch_over<k::apply_sparse<k::DevicePlain, Step, Scalar, slots>>(
              "apply_sparse", s.geometry_, count, stream(), step, args);
        });
      }
    }
    end_push(issued.staleness);
    return issued;
  }

  Store* store_;
  std::size_t id_;
  std::uint64_t seen_version_ = 0;
  Seen seen_ = Seen::none;
  cuda::DeviceBuffer<Scalar> values_;
  cuda::DeviceBuffer<std::size_t> indices_;
};

}  // namespace asyncopt::transport
