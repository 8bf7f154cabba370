// The same with LockFree compiles: the harness can pass for CUDA sources.
#include <span>
#include <vector>

#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/sgd.hpp>

int main() {
  std::vector<float> params(4);
  asyncopt::transport::CudaDevice::Store<float, asyncopt::update::Sgd,
                                         asyncopt::consistency::LockFree>
      store(asyncopt::transport::CudaDevice{}, {}, {}, std::span<float>(params), 2);
}
