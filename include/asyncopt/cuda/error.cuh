// CUDA runtime errors as exceptions that carry the runtime's own description.
#pragma once

#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

/// The CUDA plug-in: parameters, rule state and updates in device memory (compiled by nvcc).
namespace asyncopt::gpu {

/// A CUDA runtime call failed. what() names the call and carries the runtime's description
/// and error name, e.g. "asyncopt: cudaMalloc of 4096 bytes failed: out of memory
/// (cudaErrorMemoryAllocation)".
class Error : public std::runtime_error {
 public:
  /// An error `code` returned by the call described by `what_failed`.
  Error(cudaError_t code, const std::string& what_failed)
      : std::runtime_error("asyncopt: " + what_failed + " failed: " + cudaGetErrorString(code) +
                           " (" + cudaGetErrorName(code) + ")"),
        code_(code) {}

  /// The CUDA runtime's error code.
  [[nodiscard]] cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

/// Throws Error(code, what) unless `code` is cudaSuccess. The runtime's last error is
/// cleared first, so that a later check_launch() does not report this failure again.
inline void check(cudaError_t code, const std::string& what) {
  if (code != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    throw Error(code, what);
  }
}

/// Throws Error when the last kernel launch on this thread failed (a bad configuration, no
/// device, no image for this GPU's architecture), naming `kernel`.
inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), std::string("launch of kernel ") + kernel);
}

/// The number of CUDA devices this process can use: 0 when there is none or no usable
/// driver. The error such a query leaves behind is cleared, so later calls start clean.
[[nodiscard]] inline int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return 0;
  }
  return count;
}

}  // namespace asyncopt::gpu

/// Calls a CUDA runtime function and throws asyncopt::gpu::Error, naming the call, when it
/// does not return cudaSuccess.
#define ASYNCOPT_CUDA_CHECK(call) ::asyncopt::gpu::check((call), #call)
