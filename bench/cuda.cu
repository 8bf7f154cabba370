// Bandwidth of every rule's device kernel against a device-to-device copy kernel, on one GPU.
//
//   copy/<n>                 the baseline: dst[i] = src[i] for n floats, the kernel a pull
//                            runs (16-byte accesses, grid-stride loop); 2 x 4n bytes moved
//   kernel/<Rule>/<n>        the rule's dense kernel over n floats as a Locked push runs it
//                            (plain 16-byte accesses): reads w, g, the rule's state and, for
//                            delay compensation, w_seen; writes w and the state:
//                            (3 + 2 x slots + w_seen) x 4n bytes
//   relaxed/<Rule>/<n>       the same kernel as a LockFree push runs it: one element per
//                            access, relaxed device-scope atomics on w and the state
//   push/<Rule>/<n>          a whole dense push through a CudaDevice store under Locked (the
//                            default 64 stripes): the status reset, the finiteness check (one
//                            more read of g), one kernel per stripe ordered by events, the
//                            accounting; bytes counted as for kernel/ (ClipByNorm also reads g
//                            for its norm and waits for it on the host)
//
// Every kernel is launched as the store launches it: grid-stride loops over as many blocks of
// 256 threads as the GPU holds at once for that kernel (its occupancy). Every benchmark is
// timed with CUDA events around its kernels on one stream (manual time); bytes_per_second is
// the bytes above over that time. At n = 2^20 a kernel takes a few microseconds and the
// launch latency inside the events weighs in; bench/report cuda judges the rules at n = 256Mi
// (268435456) floats, dividing each rule's bytes_per_second by the copy's.
//
// Without a usable CUDA device the program prints why and exits with 77.
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/update.hpp>

namespace {

namespace acu = asyncopt::gpu;
namespace update = asyncopt::update;

__global__ void fill(float* x, std::size_t n, float value) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    x[i] = value;
  }
}

constexpr unsigned threads = 256;

// Times `body(stream)` per iteration with events on one stream.
template <class Body>
void timed(benchmark::State& state, cudaStream_t stream, Body&& body) {
  acu::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  acu::check(cudaEventCreate(&start), "cudaEventCreate");
  acu::check(cudaEventCreate(&stop), "cudaEventCreate");
  body(stream);  // warm-up: first launch of the kernel
  for (auto _ : state) {
    acu::check(cudaEventRecord(start, stream), "cudaEventRecord");
    body(stream);
    acu::check(cudaEventRecord(stop, stream), "cudaEventRecord");
    acu::check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0F;
    acu::check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    state.SetIterationTime(static_cast<double>(ms) * 1e-3);
  }
  acu::check(cudaEventDestroy(start), "cudaEventDestroy");
  acu::check(cudaEventDestroy(stop), "cudaEventDestroy");
}

acu::DeviceBuffer<float> filled(std::size_t n, float value) {
  acu::DeviceBuffer<float> x(n);
  if (n > 0) {
    fill<<<1024, threads>>>(x.data(), n, value);
    acu::check_launch("fill");
    // The benchmarks' streams are non-blocking: they do not wait for the default stream.
    acu::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  return x;
}

void copy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const acu::kernels::Geometry geometry(0, threads);
  const acu::DeviceBuffer<float> src = filled(n, 1.0F);
  acu::DeviceBuffer<float> dst = filled(n, 0.0F);
  const acu::Stream stream;
  timed(state, stream.get(), [&](cudaStream_t s) {
    acu::detail::launch_over<acu::kernels::copy<acu::kernels::DevicePlain, true, float>>(
        "copy", geometry, n / 4 + 1, s, static_cast<const float*>(src.data()), dst.data(),
        static_cast<float*>(nullptr), n);
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * n * sizeof(float)));
}

template <class Rule>
std::size_t kernel_bytes(std::size_t n) {
  return (3 + 2 * Rule::state_slots + (asyncopt::needs_w_seen_v<Rule> ? 1 : 0)) * n * sizeof(float);
}

// The rule's dense kernel over [0, n), plain (Chunked) or relaxed.
template <class Rule, class Access, bool Chunked>
void kernel(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t slots = Rule::state_slots;
  const acu::kernels::Geometry geometry(0, threads);
  acu::DeviceBuffer<float> w = filled(n, 1.0F);
  const acu::DeviceBuffer<float> g = filled(n, 0.5F);
  acu::DeviceBuffer<float> state_slots = filled(slots * n, 0.0F);
  const acu::DeviceBuffer<float> seen = filled(asyncopt::needs_w_seen_v<Rule> ? n : 0, 0.75F);
  acu::kernels::DenseArgs<float, slots> args{.w = w.data(),
                                             .g = g.data(),
                                             .state = {},
                                             .w_seen = seen.data(),
                                             .begin = 0,
                                             .end = n,
                                             .status = nullptr};
  if constexpr (slots > 0) {
    for (std::size_t k = 0; k < slots; ++k) {
      args.state[k] = state_slots.data() + k * n;
    }
  }
  const auto formula = Rule{}.template formula<float>(asyncopt::UpdateInfo{.gradient_norm = 1.0});
  using Formula = std::decay_t<decltype(formula)>;
  const acu::Stream stream;
  timed(state, stream.get(), [&](cudaStream_t s) {
    acu::detail::launch_over<acu::kernels::apply_dense<Access, Chunked, Formula, float, slots>>(
        "apply_dense", geometry, Chunked ? n / 4 + 1 : n, s, formula, args);
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kernel_bytes<Rule>(n)));
}

// A whole dense push through a store under Locked, from a pulled copy (for w_seen rules).
template <class Rule>
void push(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  using Store = asyncopt::transport::CudaDevice::Store<float, Rule, asyncopt::consistency::Locked>;
  const acu::DeviceBuffer<float> initial = filled(n, 1.0F);
  Store store(asyncopt::transport::CudaDevice{}, Rule{}, asyncopt::consistency::Locked{},
              acu::DeviceSpan<const float>(initial.span()), 1);
  auto worker = store.worker(0);
  acu::DeviceBuffer<float> pulled(n);
  worker.pull(pulled.span());
  const acu::DeviceBuffer<float> g = filled(n, 0.5F);
  acu::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  timed(state, worker.stream(),
        [&](cudaStream_t /*s*/) { worker.push(acu::DeviceSpan<const float>(g.span())); });
  worker.synchronize();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kernel_bytes<Rule>(n)));
}

template <class Rule>
void register_rule(const std::string& name) {
  const std::vector<std::int64_t> sizes{std::int64_t{1} << 20, std::int64_t{1} << 28};
  for (const std::int64_t n : sizes) {
    benchmark::RegisterBenchmark(("kernel/" + name).c_str(),
                                 kernel<Rule, acu::kernels::DevicePlain, true>)
        ->Arg(n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("relaxed/" + name).c_str(),
                                 kernel<Rule, acu::kernels::DeviceRelaxed, false>)
        ->Arg(n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("push/" + name).c_str(), push<Rule>)
        ->Arg(n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (acu::device_count() == 0) {
    std::printf("SKIPPED: no usable CUDA device; bench_cuda needs a GPU\n");
    return 77;
  }
  cudaDeviceProp properties{};
  acu::check(cudaGetDeviceProperties(&properties, 0), "cudaGetDeviceProperties");
  benchmark::AddCustomContext("cuda_device", properties.name);
  benchmark::AddCustomContext(
      "cuda_memory_GiB",
      std::to_string(static_cast<double>(properties.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0)));
  benchmark::AddCustomContext("cuda_multiprocessors",
                              std::to_string(properties.multiProcessorCount));
  for (const std::int64_t n : {std::int64_t{1} << 20, std::int64_t{1} << 28}) {
    benchmark::RegisterBenchmark("copy", copy)
        ->Arg(n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  register_rule<update::Sgd>("Sgd");
  register_rule<update::MomentumCorrection>("MomentumCorrection");
  register_rule<update::HeavyBall>("HeavyBall");
  register_rule<update::DelayCompensated>("DelayCompensated");
  register_rule<update::AdaptiveDelayCompensated>("AdaptiveDelayCompensated");
  register_rule<update::Adam>("Adam");
  register_rule<update::StalenessAware<update::Sgd>>("StalenessAware<Sgd>");
  register_rule<update::WeightDecay<update::MomentumCorrection>>("WeightDecay<MomentumCorrection>");
  register_rule<update::ClipByValue<update::Sgd>>("ClipByValue<Sgd>");
  register_rule<update::ClipByNorm<update::Adam>>("ClipByNorm<Adam>");
  register_rule<update::Scheduled<update::HeavyBall, asyncopt::schedule::Exponential>>(
      "Scheduled<HeavyBall,Exponential>");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
