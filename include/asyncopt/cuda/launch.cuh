// Device-side plumbing of the CUDA store: the order of device work on ranges of the
// parameters, device-memory checks and kernel launches.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <asyncopt/core/config.hpp>
#include <asyncopt/cuda/error.cuh>
#include <asyncopt/cuda/kernels.cuh>
#include <asyncopt/cuda/memory.cuh>

namespace asyncopt::gpu::detail {

/// A range [begin, end) of the parameters that a consistency guard writes as one piece.
struct Range {
  std::size_t begin = 0;  ///< first parameter
  std::size_t end = 0;    ///< one past the last
};

/// The order of device work on the ranges a consistency guard writes with exclusive (plain)
/// access, such as Locked's stripes: per range, a host mutex and the event of the last
/// device work on it. A thread holding the mutex makes its stream wait for that event,
/// queues its work and records the event again, so a range's kernels run one at a time
/// without the host waiting for the device.
class RangeOrder {
 public:
  /// No ranges: nothing is ordered (relaxed access).
  RangeOrder() = default;
  /// One mutex and event per range; `ranges` tile [0, n) in ascending order.
  explicit RangeOrder(std::vector<Range> ranges)
      : ranges_(std::move(ranges)), slots_(std::make_unique<Slot[]>(ranges_.size())) {}

  /// Calls queue(begin, end) for every range, each ordered after the range's last work.
  template <class Queue>
  void each(cudaStream_t stream, Queue&& queue) {
    for (std::size_t r = 0; r < ranges_.size(); ++r) {
      const std::lock_guard lock(slots_[r].mutex);
      slots_[r].done.wait_in(stream);
      queue(ranges_[r].begin, ranges_[r].end);
      slots_[r].done.record(stream);
    }
  }

  /// Calls queue() once, ordered after the last work on every range and before the next:
  /// for work whose footprint the host does not know (indices on the device) or that reads
  /// everything (a pull). Takes the ranges' locks in ascending order.
  template <class Queue>
  void all(cudaStream_t stream, Queue&& queue) {
    struct Unlock {  // releases the locks taken so far, also when a call throws
      Slot* slots;
      std::size_t locked = 0;
      explicit Unlock(Slot* all) : slots(all) {}
      Unlock(const Unlock&) = delete;
      Unlock& operator=(const Unlock&) = delete;
      ~Unlock() {
        for (std::size_t r = 0; r < locked; ++r) {
          slots[r].mutex.unlock();
        }
      }
    } unlock{slots_.get()};
    for (std::size_t r = 0; r < ranges_.size(); ++r) {
      slots_[r].mutex.lock();
      ++unlock.locked;
      slots_[r].done.wait_in(stream);
    }
    queue();
    for (std::size_t r = 0; r < ranges_.size(); ++r) {
      slots_[r].done.record(stream);
    }
  }

 private:
  struct alignas(cache_line) Slot {
    std::mutex mutex;
    Event done;
  };
  std::vector<Range> ranges_;
  std::unique_ptr<Slot[]> slots_;
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

}  // namespace asyncopt::gpu::detail
