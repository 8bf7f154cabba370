// Uses the installed CUDA plug-in as a user's CUDA source would: a device store, a worker,
// a pull and a push from device memory. Built by the install test; it needs a GPU to run.
#include <cstdio>
#include <vector>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/adam.hpp>

int main() {
  namespace acu = asyncopt::gpu;
  using Store = asyncopt::transport::CudaDevice::Store<float, asyncopt::update::Adam,
                                                       asyncopt::consistency::Locked>;
  if (acu::device_count() == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  std::vector<float> initial(1024, 1.0F);
  Store store(asyncopt::transport::CudaDevice{}, {}, {}, std::span<float>(initial), 1);
  auto worker = store.worker(0);
  acu::DeviceBuffer<float> w(initial.size());
  worker.pull(w.span());
  worker.push(acu::DeviceSpan<const float>(w.span()));
  worker.synchronize();
  std::printf("version %llu\n", static_cast<unsigned long long>(store.version()));
  return 0;
}
