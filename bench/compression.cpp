// Encode + decode throughput of the compression codecs against a memory copy, one thread.
//
//   baseline/copy/<n>        std::memcpy of n floats: the bandwidth a codec's pass is held to
//   codec/<name>/<n>         encode n floats into a payload, then decode it into n floats
//
// Every benchmark reports bytes_per_second as 4n bytes of input per iteration, so the ratio
// of a codec's rate to the copy's is the fraction of copy bandwidth it reaches on its input.
// Before timing, each codec's round trip is checked against what it must give back (exact for
// identity and top-k of all, the codec's own rounding for the others), so a fast wrong codec
// cannot pass.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <asyncopt/compress.hpp>
#include <asyncopt/core/random.hpp>

namespace compress = asyncopt::compress;

namespace {

std::vector<float> input(std::size_t n) {
  asyncopt::Xoshiro256 rng(42);
  std::vector<float> x(n);
  for (auto& v : x) {
    v = static_cast<float>(rng.uniform() - 0.5);
  }
  return x;
}

void bm_copy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> x = input(n);
  std::vector<float> y(n);
  for (auto _ : state) {
    std::memcpy(y.data(), x.data(), n * sizeof(float));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
}

template <class C>
void bm_codec(benchmark::State& state, C codec) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> x = input(n);
  std::vector<float> y(n);
  compress::Payload payload;
  std::uint64_t round = 0;
  for (auto _ : state) {
    const compress::Step step{.round = round++, .worker = 0};
    codec.encode(std::span<const float>(x), step, payload);
    codec.decode(std::span<const std::byte>(payload), step, std::span<float>(y));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
  state.counters["payload_bytes"] = static_cast<double>(payload.size());
}

// A codec's round trip against what it must give back; false, with a line, when it does not.
template <class C, class Expected>
bool check(const char* name, C codec, Expected expected) {
  const std::size_t n = 4099;
  const std::vector<float> x = input(n);
  std::vector<float> y(n);
  compress::Payload payload;
  codec.encode(std::span<const float>(x), {}, payload);
  codec.decode(std::span<const std::byte>(payload), {}, std::span<float>(y));
  for (std::size_t i = 0; i < n; ++i) {
    if (!expected(x, y, i)) {
      std::fprintf(stderr, "bench_compression: %s gives %g for %g at %zu\n", name,
                   static_cast<double>(y[i]), static_cast<double>(x[i]), i);
      return false;
    }
  }
  return true;
}

bool check_codecs() {
  using V = const std::vector<float>&;
  auto exact = [](V x, V y, std::size_t i) { return y[i] == x[i]; };
  auto fp16 = [](V x, V y, std::size_t i) {
    return y[i] == compress::from_fp16(compress::to_fp16(x[i]));
  };
  auto bf16 = [](V x, V y, std::size_t i) {
    return y[i] == compress::from_bf16(compress::to_bf16(x[i]));
  };
  auto sign = [](V x, V y, std::size_t i) {
    return std::signbit(y[i]) == std::signbit(x[i]) && std::abs(y[i]) == std::abs(y[0]);
  };
  auto qsgd = [](V x, V y, std::size_t i) {
    return y[i] == 0.0F || std::signbit(y[i]) == std::signbit(x[i]);
  };
  return check("identity", compress::Identity{}, exact) && check("fp16", compress::Fp16{}, fp16) &&
         check("bf16", compress::Bf16{}, bf16) &&
         check("top-k of all", compress::TopK{.fraction = 1.0}, exact) &&
         check("sign", compress::Sign{}, sign) && check("qsgd", compress::Qsgd{.levels = 8}, qsgd);
}

const std::vector<std::int64_t> sizes = {1 << 16, 1 << 20, 1 << 24};

template <class C>
void add(const std::string& name, C codec) {
  auto* b = benchmark::RegisterBenchmark(("codec/" + name).c_str(),
                                         [codec](benchmark::State& s) { bm_codec(s, codec); });
  for (const auto n : sizes) {
    b->Arg(n);
  }
  b->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  if (!check_codecs()) {
    return 1;
  }
  auto* copy = benchmark::RegisterBenchmark("baseline/copy", bm_copy);
  for (const auto n : sizes) {
    copy->Arg(n);
  }
  copy->UseRealTime();
  add("identity", compress::Identity{});
  add("fp16", compress::Fp16{});
  add("bf16", compress::Bf16{});
  add("sign", compress::Sign{});
  add("qsgd", compress::Qsgd{.levels = 8, .seed = 1});
  add("top_k", compress::TopK{.fraction = 0.01});
  add("random_k", compress::RandomK{.fraction = 0.01, .seed = 1});
  add("powersgd", compress::PowerSgd{.rank = 4, .seed = 1});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 2;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
