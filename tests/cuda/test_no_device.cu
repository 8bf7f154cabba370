// Where no GPU is usable, creating a device store throws asyncopt::gpu::Error carrying the
// CUDA runtime's own description of the failure. Exits with 77 (skipped) where a GPU is usable.
#include <cstdio>
#include <string>
#include <vector>

#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/sgd.hpp>

int main() {
  if (asyncopt::gpu::device_count() > 0) {
    std::printf("SKIPPED: a CUDA device is usable; test_cuda covers it\n");
    return 77;
  }
  int count = 0;
  const cudaError_t expected = cudaGetDeviceCount(&count);
  static_cast<void>(cudaGetLastError());
  std::vector<float> initial(16, 1.0F);
  try {
    using Store = asyncopt::transport::CudaDevice::Store<float, asyncopt::update::Sgd,
                                                         asyncopt::consistency::LockFree>;
    const Store store(asyncopt::transport::CudaDevice{}, asyncopt::update::Sgd{},
                      asyncopt::consistency::LockFree{}, std::span<float>(initial), 2);
    std::printf("FAILED: the store was created without a usable device\n");
    return 1;
  } catch (const asyncopt::gpu::Error& e) {
    const std::string what = e.what();
    std::printf("gpu::Error: %s\n", e.what());
    if (e.code() != expected || what.find(cudaGetErrorString(expected)) == std::string::npos ||
        what.find(cudaGetErrorName(expected)) == std::string::npos) {
      std::printf("FAILED: expected the error %s (%s)\n", cudaGetErrorName(expected),
                  cudaGetErrorString(expected));
      return 1;
    }
  }
  std::printf("passed\n");
  return 0;
}
