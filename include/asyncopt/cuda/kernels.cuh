// The device kernels: a rule's per-element formula (the same code the CPU kernels run) over a
// dense range or a sparse list, the checks that guard them, and the copies of a pull.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cuda/atomic>
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/cuda/error.cuh>

namespace asyncopt::gpu::kernels {

/// Plain device loads and stores: the caller orders this kernel after every other writer of
/// the range (Locked). The dense kernel may move 16 bytes per access.
struct DevicePlain {
  /// True: kernels may load and store whole 16-byte chunks.
  static constexpr bool vectorizable = true;
  /// Returns *p.
  template <class T>
  __device__ static T load(const T* p) noexcept {
    return *p;
  }
  /// *p <- v.
  template <class T>
  __device__ static void store(T* p, T v) noexcept {
    *p = v;
  }
};

/// Relaxed device-scope atomic loads and stores (cuda::atomic_ref): concurrent kernels may
/// overwrite each other's updates, as in Hogwild!, but never race (LockFree). One element per
/// access.
struct DeviceRelaxed {
  /// False: one element per access.
  static constexpr bool vectorizable = false;
  /// Returns *p, read with a relaxed atomic load.
  template <class T>
  __device__ static T load(const T* p) noexcept {
    // atomic_ref of a const T is not available; the load does not write.
    return ::cuda::atomic_ref<T, ::cuda::thread_scope_device>(*const_cast<T*>(p))
        .load(::cuda::std::memory_order_relaxed);
  }
  /// *p <- v, written with a relaxed atomic store.
  template <class T>
  __device__ static void store(T* p, T v) noexcept {
    ::cuda::atomic_ref<T, ::cuda::thread_scope_device>(*p).store(v,
                                                                 ::cuda::std::memory_order_relaxed);
  }
};

/// Bits of a push's or pull's status word, set by the checks; an update or gather whose status
/// is not 0 changes nothing.
enum Status : unsigned {
  status_non_finite = 1U,  ///< a gradient value is NaN or infinite
  status_bad_index = 2U,   ///< an index is out of range, or the list is not strictly increasing
};

/// What the device counts per worker: the pushes it applied (and their staleness), rejected
/// for a non-finite gradient, or refused for a bad index list, and the sparse pulls it refused.
struct Counters {
  unsigned long long applied = 0;        ///< pushes applied
  unsigned long long rejected = 0;       ///< pushes with a NaN or infinite value
  unsigned long long bad_push = 0;       ///< sparse pushes with a bad index list
  unsigned long long bad_pull = 0;       ///< sparse pulls with a bad index list
  unsigned long long staleness_sum = 0;  ///< sum of the applied pushes' staleness
  unsigned long long staleness_max = 0;  ///< largest staleness of an applied push
};

/// What a dense update reads and writes, for elements [begin, end). `status` (may be null)
/// points at the push's status word.
template <class Scalar, std::size_t Slots>
struct DenseArgs {
  Scalar* w = nullptr;                 ///< the parameters, updated in place
  const Scalar* g = nullptr;           ///< the gradient, one value per parameter
  std::array<Scalar*, Slots> state{};  ///< the rule's state slots, one value per parameter each
  const Scalar* w_seen = nullptr;      ///< the parameters the gradient was computed at
  std::size_t begin = 0;               ///< first element
  std::size_t end = 0;                 ///< one past the last element
  const unsigned* status = nullptr;    ///< skip the update unless *status == 0
};

/// What a sparse update reads and writes: entries (index[k], value[k]) for k < count; state and
/// w_seen are dense arrays indexed by index[k].
template <class Scalar, std::size_t Slots>
struct SparseArgs {
  Scalar* w = nullptr;                 ///< the full parameter vector, updated at index[k]
  const std::size_t* index = nullptr;  ///< the entries' parameter indices
  const Scalar* value = nullptr;       ///< the entries' gradient values
  std::size_t count = 0;               ///< the number of entries
  std::array<Scalar*, Slots> state{};  ///< the rule's state slots, dense
  const Scalar* w_seen = nullptr;      ///< the parameters the gradient was computed at, dense
  const unsigned* status = nullptr;    ///< skip the update unless *status == 0
};

namespace detail {

/// 16 bytes of scalars, loaded and stored as one vector access.
template <class Scalar>
struct alignas(16) Chunk {
  static constexpr std::size_t width = 16 / sizeof(Scalar);
  Scalar v[width];
};

template <std::size_t Slots, class F>
__device__ __forceinline__ void each_slot(F&& f) {
  if constexpr (Slots > 0) {
#pragma unroll
    for (std::size_t k = 0; k < Slots; ++k) {
      f(k);
    }
  }
}

template <class Formula, class Scalar, std::size_t Slots>
__device__ __forceinline__ void element(const Formula& formula, Scalar& w, Scalar g,
                                        std::array<Scalar, Slots>& state, Scalar w_seen) {
  if constexpr (needs_w_seen_v<Formula>) {
    formula(w, g, state, w_seen);
  } else {
    formula(w, g, state);
  }
}

__device__ __forceinline__ std::size_t first_thread() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ std::size_t thread_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}

template <class Scalar>
__device__ __forceinline__ bool finite(Scalar x) {
  return x - x == Scalar(0);  // NaN for NaN and infinities
}

template <class Scalar>
__device__ __forceinline__ Chunk<Scalar> load_chunk(const Scalar* p) {
  return *reinterpret_cast<const Chunk<Scalar>*>(p);
}

template <class Scalar>
__device__ __forceinline__ void store_chunk(Scalar* p, const Chunk<Scalar>& c) {
  *reinterpret_cast<Chunk<Scalar>*>(p) = c;
}

}  // namespace detail

/// w[i], state[.][i] <- formula(w[i], g[i], state[.][i] [, w_seen[i]]) for i in [begin, end), in a
/// grid-stride loop. `Chunked` (plain access only; every pointer + begin 16-byte aligned) moves
/// 16 bytes per access and runs the formula on each of the chunk's elements.
template <class Access, bool Chunked, class Formula, class Scalar, std::size_t Slots>
__global__ void apply_dense(Formula formula, DenseArgs<Scalar, Slots> a) {
  static_assert(!Chunked || Access::vectorizable, "asyncopt: chunked access must be plain");
  if (a.status != nullptr && *a.status != 0) {
    return;
  }
  const std::size_t stride = detail::thread_stride();
  std::size_t tail = a.begin;
  if constexpr (Chunked) {
    using C = detail::Chunk<Scalar>;
    constexpr std::size_t width = C::width;
    const std::size_t chunks = (a.end - a.begin) / width;
    for (std::size_t c = detail::first_thread(); c < chunks; c += stride) {
      const std::size_t i = a.begin + c * width;
      C w = detail::load_chunk(a.w + i);
      const C g = detail::load_chunk(a.g + i);
      C seen{};
      if constexpr (needs_w_seen_v<Formula>) {
        seen = detail::load_chunk(a.w_seen + i);
      }
      std::array<C, Slots> s{};
      detail::each_slot<Slots>([&](std::size_t k) { s[k] = detail::load_chunk(a.state[k] + i); });
#pragma unroll
      for (std::size_t j = 0; j < width; ++j) {
        std::array<Scalar, Slots> e{};
        detail::each_slot<Slots>([&](std::size_t k) { e[k] = s[k].v[j]; });
        detail::element(formula, w.v[j], g.v[j], e, seen.v[j]);
        detail::each_slot<Slots>([&](std::size_t k) { s[k].v[j] = e[k]; });
      }
      detail::store_chunk(a.w + i, w);
      detail::each_slot<Slots>([&](std::size_t k) { detail::store_chunk(a.state[k] + i, s[k]); });
    }
    tail = a.begin + chunks * width;
  }
  for (std::size_t i = tail + detail::first_thread(); i < a.end; i += stride) {
    Scalar w = Access::load(a.w + i);
    std::array<Scalar, Slots> e{};
    detail::each_slot<Slots>([&](std::size_t k) { e[k] = Access::load(a.state[k] + i); });
    const Scalar seen = needs_w_seen_v<Formula> ? a.w_seen[i] : Scalar(0);
    detail::element(formula, w, a.g[i], e, seen);
    Access::store(a.w + i, w);
    detail::each_slot<Slots>([&](std::size_t k) { Access::store(a.state[k] + i, e[k]); });
  }
}

/// The same formula over a sparse gradient: entry k updates parameter index[k].
template <class Access, class Formula, class Scalar, std::size_t Slots>
__global__ void apply_sparse(Formula formula, SparseArgs<Scalar, Slots> a) {
  if (a.status != nullptr && *a.status != 0) {
    return;
  }
  for (std::size_t k = detail::first_thread(); k < a.count; k += detail::thread_stride()) {
    const std::size_t i = a.index[k];
    Scalar w = Access::load(a.w + i);
    std::array<Scalar, Slots> e{};
    detail::each_slot<Slots>([&](std::size_t j) { e[j] = Access::load(a.state[j] + i); });
    const Scalar seen = needs_w_seen_v<Formula> ? a.w_seen[i] : Scalar(0);
    detail::element(formula, w, a.value[k], e, seen);
    Access::store(a.w + i, w);
    detail::each_slot<Slots>([&](std::size_t j) { Access::store(a.state[j] + i, e[j]); });
  }
}

/// Sets status_non_finite in *status when any of g[0, n) is NaN or infinite.
template <class Scalar>
__global__ void check_dense(const Scalar* g, std::size_t n, unsigned* status) {
  int bad = 0;
  for (std::size_t i = detail::first_thread(); i < n; i += detail::thread_stride()) {
    bad |= detail::finite(g[i]) ? 0 : 1;
  }
  if (__syncthreads_or(bad) != 0 && threadIdx.x == 0) {
    atomicOr(status, status_non_finite);
  }
}

/// Checks a sparse list of `count` entries for n parameters: sets status_bad_index when an
/// index is >= n or not above the one before it, and status_non_finite when a value (if
/// `value` is not null) is NaN or infinite.
template <class Scalar>
__global__ void check_sparse(const std::size_t* index, const Scalar* value, std::size_t count,
                             std::size_t n, unsigned* status) {
  int non_finite = 0;
  int bad_index = 0;
  for (std::size_t k = detail::first_thread(); k < count; k += detail::thread_stride()) {
    const std::size_t i = index[k];
    bad_index |= (i >= n || (k > 0 && index[k - 1] >= i)) ? 1 : 0;
    if (value != nullptr) {
      non_finite |= detail::finite(value[k]) ? 0 : 1;
    }
  }
  const unsigned bits = (__syncthreads_or(non_finite) != 0 ? status_non_finite : 0U) |
                        (__syncthreads_or(bad_index) != 0 ? status_bad_index : 0U);
  if (bits != 0 && threadIdx.x == 0) {
    atomicOr(status, bits);
  }
}

/// Counts a push by its status word (one thread): refused for a bad index list, rejected
/// for a non-finite value, or applied with `staleness`, which goes into `histogram`
/// (`buckets` entries; the last counts every larger staleness).
template <class = void>
__global__ void account_push(const unsigned* status, Counters* counters,
                             unsigned long long* histogram, std::size_t buckets,
                             unsigned long long staleness) {
  const unsigned s = *status;
  if ((s & status_bad_index) != 0) {
    ++counters->bad_push;
  } else if ((s & status_non_finite) != 0) {
    ++counters->rejected;
  } else {
    ++counters->applied;
    counters->staleness_sum += staleness;
    counters->staleness_max =
        staleness > counters->staleness_max ? staleness : counters->staleness_max;
    ++histogram[staleness < buckets ? staleness : buckets - 1];
  }
}

/// Counts a sparse pull refused for a bad index list (one thread).
template <class = void>
__global__ void account_pull(const unsigned* status, Counters* counters) {
  if ((*status & status_bad_index) != 0) {
    ++counters->bad_pull;
  }
}

/// *sum += the sum of v[k]^2 for k < n, in double (for rules that clip by norm); *sum starts
/// at 0.
template <class Scalar>
__global__ void sum_squares(const Scalar* v, std::size_t n, double* sum) {
  double s = 0.0;
  for (std::size_t k = detail::first_thread(); k < n; k += detail::thread_stride()) {
    const double x = static_cast<double>(v[k]);
    s += x * x;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    s += __shfl_down_sync(0xffffffffU, s, offset);
  }
  if ((threadIdx.x & 31U) == 0) {
    atomicAdd(sum, s);
  }
}

/// dst[i] <- src[i] for i < n, and the same into dst2 when it is not null (a pull that also
/// keeps the worker's w_seen). `Chunked` as for apply_dense.
template <class Access, bool Chunked, class Scalar>
__global__ void copy(const Scalar* src, Scalar* dst, Scalar* dst2, std::size_t n) {
  static_assert(!Chunked || Access::vectorizable, "asyncopt: chunked access must be plain");
  const std::size_t stride = detail::thread_stride();
  std::size_t tail = 0;
  if constexpr (Chunked) {
    using C = detail::Chunk<Scalar>;
    const std::size_t chunks = n / C::width;
    for (std::size_t c = detail::first_thread(); c < chunks; c += stride) {
      const C v = detail::load_chunk(src + c * C::width);
      detail::store_chunk(dst + c * C::width, v);
      if (dst2 != nullptr) {
        detail::store_chunk(dst2 + c * C::width, v);
      }
    }
    tail = chunks * C::width;
  }
  for (std::size_t i = tail + detail::first_thread(); i < n; i += stride) {
    const Scalar v = Access::load(src + i);
    dst[i] = v;
    if (dst2 != nullptr) {
      dst2[i] = v;
    }
  }
}

/// dst[index[k]] <- src[index[k]] for k < count (and into dst2 when not null): a sparse pull,
/// skipped unless *status == 0.
template <class Access, class Scalar>
__global__ void gather(const Scalar* src, Scalar* dst, Scalar* dst2, const std::size_t* index,
                       std::size_t count, const unsigned* status) {
  if (*status != 0) {
    return;
  }
  for (std::size_t k = detail::first_thread(); k < count; k += detail::thread_stride()) {
    const std::size_t i = index[k];
    const Scalar v = Access::load(src + i);
    dst[i] = v;
    if (dst2 != nullptr) {
      dst2[i] = v;
    }
  }
}

/// Launch geometry for grid-stride kernels on one device: as many blocks as the device
/// holds at once for the kernel at hand (its occupancy), fewer for short ranges.
class Geometry {
 public:
  /// For `device`, with `threads` threads per block. Throws std::invalid_argument unless
  /// `threads` is a multiple of 32 in [32, 1024].
  Geometry(int device, unsigned threads) : threads_(threads) {
    if (threads < 32 || threads > 1024 || threads % 32 != 0) {
      throw std::invalid_argument(
          "asyncopt: threads per block must be a multiple of 32 in [32, 1024], got " +
          std::to_string(threads));
    }
    check(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device),
          "cudaDeviceGetAttribute(multiprocessor count)");
  }
  /// Threads per block.
  [[nodiscard]] unsigned threads() const noexcept { return threads_; }
  /// Blocks for `items` work items of `Kernel`: ceil(items / threads), at least 1, at most
  /// the number of blocks of `Kernel` the device runs at once.
  template <auto Kernel>
  [[nodiscard]] unsigned blocks(std::size_t items) const {
    const std::size_t wanted = (items + threads_ - 1) / threads_;
    const std::size_t resident =
        static_cast<std::size_t>(multiprocessors_) * resident_per_multiprocessor<Kernel>(threads_);
    return static_cast<unsigned>(
        std::clamp<std::size_t>(wanted, 1, std::max<std::size_t>(resident, 1)));
  }

 private:
  // Blocks of `Kernel` one multiprocessor holds at `threads` per block, asked of the runtime
  // once per kernel and block size (the process's GPUs are taken to be of one kind).
  template <auto Kernel>
  static std::size_t resident_per_multiprocessor(unsigned threads) {
    static std::array<std::atomic<int>, 1024 / 32 + 1> known{};  // by threads / 32; 0: unknown
    std::atomic<int>& slot = known[threads / 32];
    int blocks = slot.load(std::memory_order_relaxed);
    if (blocks == 0) {
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel,
                                                          static_cast<int>(threads), 0),
            "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
      blocks = std::max(blocks, 1);
      slot.store(blocks, std::memory_order_relaxed);
    }
    return static_cast<std::size_t>(blocks);
  }

  unsigned threads_;
  int multiprocessors_ = 1;
};

}  // namespace asyncopt::gpu::kernels
