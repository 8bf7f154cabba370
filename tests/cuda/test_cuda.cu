// The CUDA plug-in on a GPU: every rule's device kernel against the CPU kernel, the checks
// that guard a push, concurrent workers on least squares, and CUDA errors as exceptions.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/cuda/cuda.cuh>
#include <asyncopt/update/update.hpp>

#include "reference.hpp"

namespace {

namespace acu = asyncopt::gpu;
using asyncopt::consistency::BoundedStaleness;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::transport::CudaDevice;
using reference::Formula;
namespace rules = reference::rules;

template <class Rule, class Policy>
using DeviceStore = CudaDevice::Store<float, Rule, Policy>;

// Small stripes, so that a dense push runs one kernel per stripe and the tail of the last
// stripe is not a whole 16-byte chunk.
const Locked small_stripes{.stripes = 4, .min_stripe_elements = 64};

constexpr std::size_t dimension = 1003;  // not a multiple of the 4 floats of a chunk

std::vector<float> initial_parameters() {
  std::vector<float> w(dimension);
  for (std::size_t i = 0; i < dimension; ++i) {
    w[i] = 0.5F * std::cos(0.11F * static_cast<float>(i));
  }
  return w;
}

// Six pushes, a pull before the first and the fourth, so that pushes are 0, 1 and 2 updates
// stale and w differs from w_seen. Sparse pushes touch every third parameter, shifted per step.
std::vector<Formula> sequence(bool sparse) {
  std::vector<Formula> steps;
  for (std::size_t k = 0; k < 6; ++k) {
    Formula step;
    step.pull = k % 3 == 0;
    for (std::size_t i = k % 3; i < dimension; i += sparse ? 3 : 1) {
      if (sparse) {
        step.index.push_back(i);
      }
      step.value.push_back(std::sin(0.37F * static_cast<float>(i) + static_cast<float>(k)));
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

template <class T>
acu::DeviceBuffer<T> to_device(const std::vector<T>& host) {
  acu::DeviceBuffer<T> buffer(host.size());
  buffer.upload(host);
  return buffer;
}

template <class T>
std::vector<T> to_host(acu::DeviceSpan<const T> device) {
  std::vector<T> host(device.size());
  if (!host.empty()) {
    acu::check(cudaMemcpy(host.data(), device.data(), device.size_bytes(), cudaMemcpyDeviceToHost),
               "cudaMemcpy");
  }
  return host;
}

// Runs the sequence on a one-worker device store, every pull and push in device memory.
template <class Rule, class Policy>
reference::Result run_device(const Rule& rule, const Policy& policy,
                             const std::vector<float>& initial, const std::vector<Formula>& steps) {
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<Rule, Policy> store(CudaDevice{}, rule, policy, std::span<float>(mirror), 1);
  acu::DeviceBuffer<float> pulled(initial.size());
  {
    auto worker = store.worker(0);
    for (const Formula& step : steps) {
      if (step.pull) {
        worker.pull(pulled.span());
      }
      const acu::DeviceBuffer<float> value = to_device(step.value);
      if (step.index.empty()) {
        worker.push(acu::DeviceSpan<const float>(value.span()));
      } else {
        const acu::DeviceBuffer<std::size_t> index = to_device(step.index);
        worker.push(acu::DeviceSpan<const std::size_t>(index.span()),
                    acu::DeviceSpan<const float>(value.span()));
        worker.synchronize();  // the index and value buffers are freed next
      }
      worker.synchronize();
    }
  }
  reference::Result result;
  result.params.resize(initial.size());
  store.copy_parameters(result.params);
  result.state = to_host<float>(store.rule_state());
  return result;
}

// |device - cpu| <= 1e-5 * max |cpu| for every element: float rounding of the same formula
// (nvcc fuses multiply-adds, the host build does not), a few updates deep.
void require_close(const std::vector<float>& device, const std::vector<float>& cpu,
                   const char* what) {
  REQUIRE(device.size() == cpu.size());
  float scale = 0.0F;
  for (const float c : cpu) {
    scale = std::max(scale, std::abs(c));
  }
  const float tolerance = 1e-5F * std::max(scale, 1e-6F);
  std::size_t worst = 0;
  float worst_error = 0.0F;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    const float error = std::abs(device[i] - cpu[i]);
    if (!(error <= worst_error)) {
      worst_error = error;
      worst = i;
    }
  }
  INFO(what << ": largest difference " << worst_error << " at " << worst << " (device "
            << (device.empty() ? 0.0F : device[worst]) << ", cpu "
            << (cpu.empty() ? 0.0F : cpu[worst]) << "), tolerance " << tolerance);
  CHECK(worst_error <= tolerance);
}

template <class Rule>
Rule configured() {
  if constexpr (std::is_same_v<Rule, rules::Sgd>) {
    return {.learning_rate = 0.05};
  } else if constexpr (std::is_same_v<Rule, rules::MomentumCorrection>) {
    return {.learning_rate = 0.05, .beta = 0.8};
  } else if constexpr (std::is_same_v<Rule, rules::HeavyBall>) {
    return {.learning_rate = 0.05, .momentum = 0.7, .nesterov = true};
  } else if constexpr (std::is_same_v<Rule, rules::DelayCompensated>) {
    return {.learning_rate = 0.05, .lambda = 20.0};
  } else if constexpr (std::is_same_v<Rule, rules::AdaptiveDelayCompensated>) {
    return {.learning_rate = 0.05, .lambda0 = 2.0, .mean_square_decay = 0.9, .epsilon = 1e-7};
  } else if constexpr (std::is_same_v<Rule, rules::Adam>) {
    return {.learning_rate = 0.01};
  } else if constexpr (std::is_same_v<Rule, rules::StaleSgd>) {
    return {.inner = {.learning_rate = 0.05}};
  } else if constexpr (std::is_same_v<Rule, rules::DecayMomentum>) {
    return {.inner = {.learning_rate = 0.05, .beta = 0.8}, .decay = 0.01};
  } else if constexpr (std::is_same_v<Rule, rules::ClipValueSgd>) {
    return {.inner = {.learning_rate = 0.05}, .limit = 0.5};
  } else if constexpr (std::is_same_v<Rule, rules::ClipNormAdam>) {
    return {.inner = {.learning_rate = 0.01}, .max_norm = 2.0};
  } else {
    static_assert(std::is_same_v<Rule, rules::ScheduledHeavyBall>);
    return {.inner = {.learning_rate = 0.05, .momentum = 0.7}, .schedule = {.gamma = 0.9}};
  }
}

}  // namespace

TEMPLATE_TEST_CASE("every rule's device kernel matches the CPU kernel, dense and sparse",
                   "[cuda][rules]", rules::Sgd, rules::MomentumCorrection, rules::HeavyBall,
                   rules::DelayCompensated, rules::AdaptiveDelayCompensated, rules::Adam,
                   rules::StaleSgd, rules::DecayMomentum, rules::ClipValueSgd, rules::ClipNormAdam,
                   rules::ScheduledHeavyBall) {
  const TestType rule = configured<TestType>();
  const std::vector<float> initial = initial_parameters();
  for (const bool sparse : {false, true}) {
    const std::vector<Formula> steps = sequence(sparse);
    const reference::Result cpu = reference::run_cpu(rule, initial, steps);
    // The sequence moves the parameters: a comparison with the initial values would fail.
    REQUIRE(std::abs(cpu.params[3] - initial[3]) > 1e-4F);
    {
      INFO((sparse ? "sparse" : "dense") << " pushes under LockFree");
      const reference::Result device = run_device(rule, LockFree{}, initial, steps);
      require_close(device.params, cpu.params, "parameters");
      require_close(device.state, cpu.state, "rule state");
    }
    {
      INFO((sparse ? "sparse" : "dense") << " pushes under Locked with 4 stripes");
      const reference::Result device = run_device(rule, small_stripes, initial, steps);
      require_close(device.params, cpu.params, "parameters");
      require_close(device.state, cpu.state, "rule state");
    }
  }
}

TEST_CASE("pushes and pulls through host memory match those through device memory", "[cuda]") {
  const rules::Adam rule{.learning_rate = 0.01};
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  for (const bool pinned : {false, true}) {
    for (const bool sparse : {false, true}) {
      INFO((pinned ? "pinned" : "pageable")
           << " host memory, " << (sparse ? "sparse" : "dense") << " pushes");
      const std::vector<Formula> steps = sequence(sparse);
      const reference::Result cpu = reference::run_cpu(rule, initial, steps);
      DeviceStore<rules::Adam, Locked> store(CudaDevice{}, rule, small_stripes,
                                             std::span<float>(mirror), 1);
      std::vector<float> pageable(initial.size());
      acu::PinnedBuffer<float> pinned_pull(initial.size());
      acu::PinnedBuffer<float> pinned_values(initial.size());
      const std::span<float> pulled = pinned ? pinned_pull.span() : std::span<float>(pageable);
      {
        auto worker = store.worker(0);
        for (const Formula& step : steps) {
          if (step.pull) {
            worker.pull(pulled);
          }
          std::span<const float> value(step.value);
          if (pinned) {
            std::copy(step.value.begin(), step.value.end(), pinned_values.data());
            value = pinned_values.span().first(step.value.size());
          }
          if (step.index.empty()) {
            worker.push(value);
          } else {
            worker.push(std::span<const std::size_t>(step.index), value);
          }
          // The host buffer may be reused once push() returns: a copy still in flight would
          // read these NaNs and the push would be rejected.
          std::fill(pinned_values.data(), pinned_values.data() + pinned_values.size(),
                    std::nanf(""));
        }
      }
      std::vector<float> params(initial.size());
      store.copy_parameters(params);
      require_close(params, cpu.params, "parameters");
      CHECK(store.stats().rejected == 0);
      // The host pull returned the parameters as they were at the pull.
      CHECK(!std::equal(pulled.begin(), pulled.end(), params.begin()));
    }
  }
}

TEST_CASE("bad transport options are refused before anything is allocated", "[cuda]") {
  std::vector<float> mirror(8, 0.0F);
  using Store = DeviceStore<rules::Sgd, LockFree>;
  CHECK_THROWS_WITH(Store(CudaDevice{.threads_per_block = 48}, {}, {}, std::span<float>(mirror), 1),
                    Catch::Contains("threads_per_block must be a multiple of 32 in [32, 1024]"));
  CHECK_THROWS_WITH(Store(CudaDevice{.device = -1}, {}, {}, std::span<float>(mirror), 1),
                    Catch::Contains("CudaDevice::device must be >= 0"));
  CHECK_THROWS_WITH(Store(CudaDevice{}, {}, {}, std::span<float>(mirror), 0),
                    Catch::Contains("at least one worker"));
  CHECK_THROWS_WITH(acu::kernels::Geometry(0, 2048),
                    Catch::Contains("multiple of 32 in [32, 1024], got 2048"));
}

TEST_CASE("a sparse pull copies just the listed parameters", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  for (const bool locked : {false, true}) {
    INFO((locked ? "Locked" : "LockFree"));
    const std::vector<std::size_t> index{0, 5, 6, 500, dimension - 1};
    const acu::DeviceBuffer<std::size_t> device_index = to_device(index);
    acu::DeviceBuffer<float> out = to_device(std::vector<float>(dimension, -7.0F));
    auto check = [&](auto& store) {
      auto worker = store.worker(0);
      worker.pull(acu::DeviceSpan<const std::size_t>(device_index.span()), out.span());
      worker.synchronize();
      const std::vector<float> got = to_host<float>(out.span());
      std::size_t listed = 0;
      for (std::size_t i = 0; i < dimension; ++i) {
        const bool in = listed < index.size() && index[listed] == i;
        CHECK(got[i] == (in ? initial[i] : -7.0F));
        listed += in ? 1 : 0;
      }
    };
    if (locked) {
      DeviceStore<rules::Sgd, Locked> store(CudaDevice{}, {}, small_stripes,
                                            std::span<float>(mirror), 1);
      check(store);
    } else {
      DeviceStore<rules::Sgd, LockFree> store(CudaDevice{}, {}, {}, std::span<float>(mirror), 1);
      check(store);
    }
  }
}

TEST_CASE("a gradient holding NaN or Inf changes nothing and is counted as rejected", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<rules::MomentumCorrection, Locked> store(CudaDevice{}, {}, small_stripes,
                                                       std::span<float>(mirror), 1);
  auto worker = store.worker(0);
  std::vector<float> dense(dimension, 1.0F);
  dense[777] = std::nanf("");
  worker.push(std::span<const float>(dense));
  const std::vector<std::size_t> index{1, 2, 900};
  const std::vector<float> value{1.0F, INFINITY, 1.0F};
  worker.push(std::span<const std::size_t>(index), std::span<const float>(value));
  worker.synchronize();
  const asyncopt::StoreStats stats = store.stats();
  CHECK(stats.rejected == 2);
  CHECK(stats.updates == 0);
  std::vector<float> params(dimension);
  store.copy_parameters(params);
  CHECK(params == initial);
  const std::vector<float> momentum = to_host<float>(store.rule_state());
  CHECK(std::all_of(momentum.begin(), momentum.end(), [](float m) { return m == 0.0F; }));
  // A good push afterwards is applied.
  std::fill(dense.begin(), dense.end(), 1.0F);
  worker.push(std::span<const float>(dense));
  store.copy_parameters(params);
  CHECK(params[0] == Approx(initial[0] - 0.01F * 0.1F));
}

TEST_CASE("a bad index list on the device changes nothing and synchronize() says so", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<rules::Sgd, LockFree> store(CudaDevice{}, {}, {}, std::span<float>(mirror), 1);
  auto worker = store.worker(0);
  const acu::DeviceBuffer<float> value = to_device(std::vector<float>{1.0F, 1.0F, 1.0F});
  for (const std::vector<std::size_t>& bad :
       {std::vector<std::size_t>{1, 2, dimension}, std::vector<std::size_t>{4, 4, 9},
        std::vector<std::size_t>{9, 3, 10}}) {
    const acu::DeviceBuffer<std::size_t> index = to_device(bad);
    worker.push(acu::DeviceSpan<const std::size_t>(index.span()),
                acu::DeviceSpan<const float>(value.span()));
    CHECK_THROWS_WITH(worker.synchronize(),
                      Catch::Contains("index out of range or not strictly increasing"));
  }
  worker.synchronize();  // reported once
  std::vector<float> params(dimension);
  store.copy_parameters(params);
  CHECK(params == initial);
  // From host memory the list is checked at once.
  const std::vector<std::size_t> bad{3, 2};
  const std::vector<float> two{1.0F, 1.0F};
  CHECK_THROWS_AS(worker.push(std::span<const std::size_t>(bad), std::span<const float>(two)),
                  std::invalid_argument);
  CHECK_THROWS_WITH(
      worker.push(acu::DeviceSpan<const std::size_t>(), acu::DeviceSpan<const float>(value.span())),
      Catch::Contains("0 indices but 3 values"));
}

TEST_CASE("a DeviceSpan that points at host memory is refused", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<rules::Sgd, LockFree> store(CudaDevice{}, {}, {}, std::span<float>(mirror), 1);
  auto worker = store.worker(0);
  std::vector<float> host(dimension, 1.0F);
  CHECK_THROWS_WITH(worker.push(acu::DeviceSpan<const float>(host.data(), host.size())),
                    Catch::Contains("points at host memory"));
  CHECK_THROWS_WITH(worker.pull(acu::DeviceSpan<float>(host.data(), host.size())),
                    Catch::Contains("points at host memory"));
  CHECK_THROWS_WITH(worker.push(std::span<const float>(host.data(), 5)),
                    Catch::Contains("push of 5 elements into a store of 1003 parameters"));
}

TEST_CASE("delay compensation needs the parameters the gradient was computed at", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<rules::DelayCompensated, Locked> store(CudaDevice{}, {}, small_stripes,
                                                     std::span<float>(mirror), 1);
  auto worker = store.worker(0);
  const std::vector<float> g(dimension, 1.0F);
  CHECK_THROWS_WITH(worker.push(std::span<const float>(g)), Catch::Contains("pull before"));
  const acu::DeviceBuffer<std::size_t> index = to_device(std::vector<std::size_t>{1, 2});
  acu::DeviceBuffer<float> out(dimension);
  worker.pull(acu::DeviceSpan<const std::size_t>(index.span()), out.span());
  CHECK_THROWS_WITH(worker.push(std::span<const float>(g)), Catch::Contains("read only some"));
  worker.synchronize();  // before `out` and `index` are freed
}

TEST_CASE("each push's version and staleness count the updates issued since its pull", "[cuda]") {
  const std::vector<float> initial = initial_parameters();
  std::vector<float> mirror = initial;  // the store's host mirror
  DeviceStore<rules::Sgd, LockFree> store(CudaDevice{}, {}, {}, std::span<float>(mirror), 2);
  auto first = store.worker(0);
  auto second = store.worker(1);
  acu::DeviceBuffer<float> a(dimension);
  acu::DeviceBuffer<float> b(dimension);
  const acu::DeviceBuffer<float> g = to_device(std::vector<float>(dimension, 0.5F));
  first.pull(a.span());
  second.pull(b.span());
  const acu::Issued one = second.push(acu::DeviceSpan<const float>(g.span()));
  const acu::Issued two = second.push(acu::DeviceSpan<const float>(g.span()));
  second.synchronize();  // LockFree: the third push must not overlap the first two
  const acu::Issued three = first.push(acu::DeviceSpan<const float>(g.span()));
  CHECK(one.version == 0);
  CHECK(one.staleness == 0);
  CHECK(two.version == 1);
  CHECK(two.staleness == 1);
  CHECK(three.version == 2);
  CHECK(three.staleness == 2);
  CHECK(store.version() == 3);
  const asyncopt::StoreStats stats = store.stats();
  CHECK(stats.updates == 3);
  CHECK(stats.staleness_sum == 3);
  CHECK(stats.staleness_max == 2);
  std::vector<float> params(dimension);
  store.copy_parameters(params);
  CHECK(params[10] == Approx(initial[10] - 3 * 0.01F * 0.5F));
  CHECK_THROWS_AS(store.worker(1), std::logic_error);
  CHECK_THROWS_AS(store.worker(2), std::out_of_range);
}

namespace {

// Least squares on the device: r = A_B w - b_B for a batch of rows, then
// g = A_B^T r / |B|, each by a small kernel on the worker's stream.
__global__ void batch_residuals(const float* a, const float* b, const float* w, float* r,
                                std::size_t first, std::size_t rows, std::size_t d) {
  const std::size_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < rows) {
    const float* row = a + (first + k) * d;
    float dot = 0.0F;
    for (std::size_t j = 0; j < d; ++j) {
      dot += row[j] * w[j];
    }
    r[k] = dot - b[first + k];
  }
}

__global__ void batch_gradient(const float* a, const float* r, float* g, std::size_t first,
                               std::size_t rows, std::size_t d) {
  const std::size_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j < d) {
    float sum = 0.0F;
    for (std::size_t k = 0; k < rows; ++k) {
      sum += a[(first + k) * d + j] * r[k];
    }
    g[j] = sum / static_cast<float>(rows);
  }
}

// A policy written outside the library: three ranges, each under a mutex of its own, with
// plain access. The device store takes its ranges from write_dense() and orders each
// range's kernels, as for Locked, without knowing the type.
struct ThreeRanges {
  void validate() const {}
  template <class Scalar>
  class Guard {
   public:
    Guard(const ThreeRanges& /*policy*/, std::size_t n, std::size_t /*workers*/)
        : n_(n), mutexes_(std::make_unique<std::mutex[]>(3)) {}
    void read(const Scalar* src, Scalar* dst) {
      write_dense([&](auto /*access*/, std::size_t begin, std::size_t end) {
        std::copy(src + begin, src + end, dst + begin);
      });
    }
    template <class F>
    void write_dense(F&& apply) {
      for (std::size_t r = 0; r < 3; ++r) {
        const std::lock_guard lock(mutexes_[r]);
        apply(asyncopt::kernels::PlainAccess{}, r * n_ / 3, (r + 1) * n_ / 3);
      }
    }
    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) {
      const std::scoped_lock lock(mutexes_[0], mutexes_[1], mutexes_[2]);
      apply(asyncopt::kernels::PlainAccess{}, std::size_t{0}, index.size());
    }

   private:
    std::size_t n_;
    std::unique_ptr<std::mutex[]> mutexes_;
  };
};
static_assert(asyncopt::ConsistencyPolicy<ThreeRanges>);

template <class Policy>
void converge_with_four_workers(const Policy& policy) {
  constexpr std::size_t rows = 4096;
  constexpr std::size_t d = 24;
  constexpr std::size_t workers = 4;
  constexpr std::size_t batch = 16;
  constexpr std::size_t steps = 2500;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0F, 1.0F);
  std::vector<float> a(rows * d);
  std::vector<float> solution(d);
  std::vector<float> b(rows, 0.0F);
  for (float& x : a) {
    x = uniform(rng);
  }
  for (float& x : solution) {
    x = uniform(rng);
  }
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < d; ++j) {
      b[i] += a[i * d + j] * solution[j];
    }
  }
  const acu::DeviceBuffer<float> device_a = to_device(a);
  const acu::DeviceBuffer<float> device_b = to_device(b);
  std::vector<float> zero(d, 0.0F);
  DeviceStore<rules::Sgd, Policy> store(CudaDevice{}, {.learning_rate = 0.1}, policy,
                                        std::span<float>(zero), workers);
  struct Lane {
    acu::DeviceBuffer<float> w{d};
    acu::DeviceBuffer<float> r{batch};
    acu::DeviceBuffer<float> g{d};
    std::size_t done = 0;
  };
  std::vector<Lane> lanes(workers);
  std::vector<typename DeviceStore<rules::Sgd, Policy>::Worker> handles;
  for (std::size_t id = 0; id < workers; ++id) {
    handles.push_back(store.worker(id));
  }
  CudaDevice{}.run(workers, [&](std::size_t id) {
    Lane& lane = lanes[id];
    auto& worker = handles[id];
    try {
      const std::size_t shard = rows / workers;
      const std::size_t first = id * shard + (lane.done * batch) % shard;
      worker.pull(lane.w.span());
      batch_residuals<<<1, batch, 0, worker.stream()>>>(
          device_a.data(), device_b.data(), lane.w.data(), lane.r.data(), first, batch, d);
      acu::check_launch("batch_residuals");
      batch_gradient<<<1, 32, 0, worker.stream()>>>(device_a.data(), lane.r.data(), lane.g.data(),
                                                    first, batch, d);
      acu::check_launch("batch_gradient");
      worker.push(acu::DeviceSpan<const float>(lane.g.span()));
      worker.clock();
      if (++lane.done == steps) {
        worker.synchronize();
        worker.leave();
        return false;
      }
      return true;
    } catch (...) {
      worker.leave();  // a failed worker must not hold the others at the staleness gate
      throw;
    }
  });
  std::vector<float> w(d);
  store.copy_parameters(w);
  double error = 0.0;
  double norm = 0.0;
  for (std::size_t j = 0; j < d; ++j) {
    error += (w[j] - solution[j]) * (w[j] - solution[j]);
    norm += solution[j] * solution[j];
  }
  INFO("relative error " << std::sqrt(error / norm));
  CHECK(std::sqrt(error / norm) < 1e-3);
  CHECK(store.stats().updates == workers * steps);
}

}  // namespace

TEST_CASE("concurrent pushes from 4 host threads converge on least squares", "[cuda]") {
  SECTION("LockFree") {
    converge_with_four_workers(LockFree{});
  }
  SECTION("Locked, 4 stripes") {
    converge_with_four_workers(Locked{.stripes = 4, .min_stripe_elements = 4});
  }
  SECTION("BoundedStaleness<LockFree>, staleness 2") {
    converge_with_four_workers(BoundedStaleness<LockFree>{.staleness = 2});
  }
  SECTION("a policy defined outside the library, three ranges") {
    converge_with_four_workers(ThreeRanges{});
  }
}

TEST_CASE("a failing CUDA call surfaces as gpu::Error carrying the CUDA error string", "[cuda]") {
  SECTION("out of device memory") {
    try {
      const acu::DeviceBuffer<float> huge(std::size_t{1} << 50);
      FAIL("a 4 PiB allocation succeeded");
    } catch (const acu::Error& e) {
      CHECK(e.code() == cudaErrorMemoryAllocation);
      CHECK_THAT(e.what(), Catch::Contains(cudaGetErrorString(cudaErrorMemoryAllocation)) &&
                               Catch::Contains("cudaMalloc of 4503599627370496 bytes"));
    }
  }
  SECTION("a device that does not exist") {
    std::vector<float> mirror(8, 0.0F);
    const CudaDevice transport{.device = acu::device_count()};
    try {
      const DeviceStore<rules::Sgd, LockFree> store(transport, {}, {}, std::span<float>(mirror), 1);
      FAIL("a store was created on a device that does not exist");
    } catch (const acu::Error& e) {
      CHECK(e.code() == cudaErrorInvalidDevice);
      CHECK_THAT(e.what(), Catch::Contains(cudaGetErrorString(cudaErrorInvalidDevice)));
    }
  }
  SECTION("a kernel launch with too many threads per block") {
    acu::DeviceBuffer<float> x(4);
    try {
      acu::detail::launch("copy", acu::kernels::copy<acu::kernels::DevicePlain, false, float>, 1,
                          4096, nullptr, static_cast<const float*>(x.data()), x.data(),
                          static_cast<float*>(nullptr), std::size_t{4});
      FAIL("a launch of 4096 threads per block succeeded");
    } catch (const acu::Error& e) {
      CHECK(e.code() == cudaErrorInvalidConfiguration);
      CHECK_THAT(e.what(), Catch::Contains(cudaGetErrorString(cudaErrorInvalidConfiguration)) &&
                               Catch::Contains("launch of kernel copy"));
    }
  }
}
