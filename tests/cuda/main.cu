// The CUDA tests' main: runs the Catch2 session where a GPU is usable, and otherwise exits
// with 77, which CTest reports as skipped. Listing the tests needs no GPU.
#define CATCH_CONFIG_RUNNER
#include <cstdio>

#include <catch2/catch.hpp>

#include <asyncopt/cuda/error.cuh>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) {
    return rc;
  }
  const Catch::ConfigData& config = session.configData();
  const bool listing =
      config.listTests || config.listTestNamesOnly || config.listTags || config.listReporters;
  if (!listing && asyncopt::gpu::device_count() == 0) {
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    static_cast<void>(cudaGetLastError());
    std::printf("SKIPPED: no usable CUDA device (%s: %s)\n", cudaGetErrorName(error),
                cudaGetErrorString(error));
    return 77;
  }
  return session.run();
}
