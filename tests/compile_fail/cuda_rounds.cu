// Synchronous SGD on the CUDA device store, which runs the asynchronous policies only.
#include <span>
#include <vector>

#include <asyncopt/consistency/synchronous.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/sgd.hpp>

int main() {
  std::vector<float> params(4);
  asyncopt::transport::CudaDevice::Store<float, asyncopt::update::Sgd,
                                         asyncopt::consistency::Synchronous>
      store(asyncopt::transport::CudaDevice{}, {}, {}, std::span<float>(params), 2);
}
