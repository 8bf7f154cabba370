// Least squares on a GPU: the parameters, Adam's moments and the data live in device memory;
// 4 host threads each compute mini-batch gradients with their own kernels on their own
// stream and push them to a CudaDevice store under Locked, without copying anything to the
// host during training. Prints the loss after every epoch and the distance to the planted
// solution at the end; exits with 1 unless the loss fell below 1% of its start, and with 77
// where no GPU is usable.
//
//   cuda_least_squares [epochs] [rows] [dimension]
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/adam.hpp>

namespace {

namespace acu = asyncopt::gpu;
using Store = asyncopt::transport::CudaDevice::Store<float, asyncopt::update::Adam,
                                                     asyncopt::consistency::Locked>;

// r[k] = a[first + k] . w - b[first + k] for the batch's rows.
__global__ void residuals(const float* a, const float* b, const float* w, float* r,
                          std::size_t first, std::size_t rows, std::size_t d) {
  const std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (k < rows) {
    const float* row = a + (first + k) * d;
    float dot = 0.0F;
    for (std::size_t j = 0; j < d; ++j) {
      dot += row[j] * w[j];
    }
    r[k] = dot - b[first + k];
  }
}

// g[j] = sum_k a[first + k][j] r[k] / rows: the mean gradient of 0.5 (a . w - b)^2.
__global__ void gradient(const float* a, const float* r, float* g, std::size_t first,
                         std::size_t rows, std::size_t d) {
  const std::size_t j = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (j < d) {
    float sum = 0.0F;
    for (std::size_t k = 0; k < rows; ++k) {
      sum += a[(first + k) * d + j] * r[k];
    }
    g[j] = sum / static_cast<float>(rows);
  }
}

std::size_t argument(int argc, char** argv, int i, std::size_t fallback) {
  return argc > i ? static_cast<std::size_t>(std::strtoull(argv[i], nullptr, 10)) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t epochs = argument(argc, argv, 1, 5);
  const std::size_t rows = argument(argc, argv, 2, 65536);
  const std::size_t d = argument(argc, argv, 3, 256);
  constexpr std::size_t workers = 4;
  constexpr std::size_t batch = 64;
  if (acu::device_count() == 0) {
    std::printf("no usable CUDA device: this example needs a GPU\n");
    return 77;
  }
  if (epochs == 0 || d == 0 || rows < workers * batch) {
    std::fprintf(stderr, "usage: cuda_least_squares [epochs >= 1] [rows >= %zu] [dimension >= 1]\n",
                 workers * batch);
    return 2;
  }
  try {
    // A planted problem: b = a x* exactly, so the optimum is x* with zero loss.
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0F, 1.0F / std::sqrt(static_cast<float>(d)));
    std::vector<float> a(rows * d);
    std::vector<float> solution(d);
    std::vector<float> b(rows, 0.0F);
    for (float& x : a) {
      x = normal(rng);
    }
    for (float& x : solution) {
      x = normal(rng) * std::sqrt(static_cast<float>(d));
    }
    for (std::size_t i = 0; i < rows; ++i) {
      for (std::size_t j = 0; j < d; ++j) {
        b[i] += a[i * d + j] * solution[j];
      }
    }
    acu::DeviceBuffer<float> device_a(a.size());
    acu::DeviceBuffer<float> device_b(b.size());
    device_a.upload(a);
    device_b.upload(b);

    std::vector<float> params(d, 0.0F);  // the store's host mirror
    Store store(asyncopt::transport::CudaDevice{}, {.learning_rate = 0.01}, {},
                std::span<float>(params), workers);
    struct Lane {
      Store::Worker handle;
      acu::DeviceBuffer<float> w;
      acu::DeviceBuffer<float> r;
      acu::DeviceBuffer<float> g;
      std::size_t step = 0;
    };
    std::vector<Lane> lanes;
    for (std::size_t id = 0; id < workers; ++id) {
      lanes.push_back({store.worker(id), acu::DeviceBuffer<float>(d),
                       acu::DeviceBuffer<float>(batch), acu::DeviceBuffer<float>(d), 0});
    }
    const std::size_t shard = rows / workers;
    const std::size_t steps = shard / batch;  // per worker and epoch
    auto loss = [&] {
      double sum = 0.0;
      for (std::size_t i = 0; i < rows; ++i) {
        double dot = 0.0;
        for (std::size_t j = 0; j < d; ++j) {
          dot += static_cast<double>(a[i * d + j]) * params[j];
        }
        sum += 0.5 * (dot - b[i]) * (dot - b[i]);
      }
      return sum / static_cast<double>(rows);
    };
    std::printf("least squares, %zu rows x %zu, %zu workers on the GPU, Adam under Locked\n", rows,
                d, workers);
    const double initial_loss = loss();
    double final_loss = initial_loss;
    std::printf("epoch 0: loss %.6g\n", initial_loss);
    for (std::size_t epoch = 1; epoch <= epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      asyncopt::transport::CudaDevice{}.run(workers, [&](std::size_t id) {
        Lane& lane = lanes[id];
        const std::size_t first = id * shard + (lane.step % steps) * batch;
        const cudaStream_t stream = lane.handle.stream();
        lane.handle.pull(lane.w.span());
        residuals<<<(batch + 127) / 128, 128, 0, stream>>>(
            device_a.data(), device_b.data(), lane.w.data(), lane.r.data(), first, batch, d);
        acu::check_launch("residuals");
        gradient<<<static_cast<unsigned>((d + 127) / 128), 128, 0, stream>>>(
            device_a.data(), lane.r.data(), lane.g.data(), first, batch, d);
        acu::check_launch("gradient");
        lane.handle.push(acu::DeviceSpan<const float>(lane.g.span()));
        lane.handle.clock();
        return ++lane.step % steps != 0;
      });
      store.sync();  // waits for the device and copies the parameters into `params`
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      final_loss = loss();
      std::printf("epoch %zu: loss %.6g (%.0f updates/s)\n", epoch, final_loss,
                  static_cast<double>(workers * steps) / seconds);
    }
    double distance = 0.0;
    double norm = 0.0;
    for (std::size_t j = 0; j < d; ++j) {
      distance += (params[j] - solution[j]) * (params[j] - solution[j]);
      norm += solution[j] * solution[j];
    }
    const asyncopt::StoreStats stats = store.stats();
    std::printf(
        "relative distance to the solution: %.3g; updates %llu, rejected %llu, "
        "mean staleness %.2f\n",
        std::sqrt(distance / norm), static_cast<unsigned long long>(stats.updates),
        static_cast<unsigned long long>(stats.rejected),
        stats.updates > 0
            ? static_cast<double>(stats.staleness_sum) / static_cast<double>(stats.updates)
            : 0.0);
    // The run is also a test: training must have cut the loss to under 1% of its start.
    if (!(final_loss < 0.01 * initial_loss) || stats.rejected != 0) {
      std::printf("FAILED: the loss fell only from %.6g to %.6g\n", initial_loss, final_loss);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_least_squares: %s\n", e.what());
    return 1;
  }
}
