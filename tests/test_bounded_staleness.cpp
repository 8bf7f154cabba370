// Bounded staleness (SSP): the clock gate, leaving workers, and the waiting time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>

using asyncopt::consistency::BoundedStaleness;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::update::Sgd;

namespace {

constexpr std::uint64_t done = std::numeric_limits<std::uint64_t>::max();

// Runs `threads` workers for `steps` steps each, with random sleeps, and returns the largest
// lead over the slowest unfinished worker that any worker had when its pull returned.
template <class Inner>
std::uint64_t largest_lead(std::uint64_t s, int threads, int steps) {
  std::vector<float> w(64, 0.0f);
  const asyncopt::AsyncOptimizer<float, Sgd, BoundedStaleness<Inner>> opt(
      Sgd{.learning_rate = 1e-3}, BoundedStaleness<Inner>{.staleness = s});
  auto store = opt.attach(w, static_cast<std::size_t>(threads));
  // Each worker publishes its clock here before the store sees it, so this view is never
  // behind the gate's and a lead measured on it never exceeds the gate's.
  std::vector<std::atomic<std::uint64_t>> clocks(static_cast<std::size_t>(threads));
  std::atomic<std::uint64_t> worst{0};
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const auto id = static_cast<std::size_t>(t);
        auto h = store->worker(id);
        std::mt19937 rng(static_cast<unsigned>(t) + 1);
        std::uniform_int_distribution<int> micros(0, 300);
        std::vector<float> local(64);
        const std::vector<float> g(64, 1.0f);
        for (int k = 0; k < steps; ++k) {
          h.pull(local);
          const std::uint64_t mine = h.clock_count();
          std::uint64_t slowest = mine;
          for (std::size_t other = 0; other < clocks.size(); ++other) {
            const std::uint64_t c = clocks[other].load();
            if (other != id && c != done) {
              slowest = std::min(slowest, c);
            }
          }
          std::uint64_t seen = worst.load();
          while (mine - slowest > seen && !worst.compare_exchange_weak(seen, mine - slowest)) {
          }
          std::this_thread::sleep_for(std::chrono::microseconds(micros(rng)));
          (void)h.push(std::span<const float>(g));
          clocks[id].store(mine + 1);
          h.clock();
        }
        clocks[id].store(done);
        h.leave();
      });
    }
  }
  REQUIRE(store->stats().updates == static_cast<std::uint64_t>(threads * steps));
  return worst.load();
}

}  // namespace

TEST_CASE("bounded staleness never lets a worker read more than s clocks ahead") {
  for (const std::uint64_t s : {0, 1, 3}) {
    INFO("s = " << s);
    REQUIRE(largest_lead<LockFree>(s, 4, 60) <= s);
    REQUIRE(largest_lead<Locked>(s, 4, 60) <= s);
  }
}

TEST_CASE("without a bound the same workers drift apart (the check above can fail)") {
  // The control: with random sleeps and no gate, four workers over 60 steps end up more than
  // one clock apart at some read.
  std::uint64_t lead = 0;
  for (int attempt = 0; attempt < 5 && lead <= 1; ++attempt) {
    lead = largest_lead<LockFree>(BoundedStaleness<LockFree>::unbounded, 4, 60);
  }
  REQUIRE(lead > 1);
}

TEST_CASE("the gate waits for the slowest live worker and lets go when it leaves") {
  using Guard = BoundedStaleness<LockFree>::Guard<float>;
  Guard guard(BoundedStaleness<LockFree>{.staleness = 1}, 8, 2);
  // Worker 0 at clock 2 is two ahead of worker 1 at clock 0: it must wait.
  guard.clock(0, 2);
  REQUIRE(guard.lead(0, 2) == 2);
  std::atomic<bool> passed{false};
  std::jthread reader([&] {
    (void)guard.wait_to_read(0, 2);
    passed.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE_FALSE(passed.load());
  guard.clock(1, 1);  // now one behind: within the bound
  reader.join();
  REQUIRE(passed.load());

  // A worker that left holds nobody back; it counts again after it joins.
  guard.clock(0, 5);
  guard.leave(1);
  REQUIRE(guard.lead(0, 5) == 0);
  REQUIRE(guard.wait_to_read(0, 5) == 0.0);
  guard.join(1, 1);
  REQUIRE(guard.lead(0, 5) == 4);
}

namespace {

// A least-squares objective whose worker-1 gradients sleep: a straggler.
struct Straggling {
  std::size_t dimension() const { return 4; }
  std::size_t num_examples() const { return 400; }
  double loss(std::span<const double> w) const {
    double s = 0.0;
    for (const double x : w) {
      s += 0.5 * (x - 1.0) * (x - 1.0);
    }
    return s;
  }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    if (batch[0] % 4 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    for (std::size_t j = 0; j < w.size(); ++j) {
      grad[j] = w[j] - 1.0;
    }
  }
};

}  // namespace

TEST_CASE("waiting at the gate is reported, and vanishes without a bound") {
  std::vector<double> w(4, 0.0);
  const asyncopt::AsyncOptimizer<double, Sgd, BoundedStaleness<LockFree>> strict(
      Sgd{.learning_rate = 0.01}, BoundedStaleness<LockFree>{.staleness = 0});
  const auto r = strict.optimize(Straggling{}, std::span<double>(w),
                                 {.workers = 2, .batch_size = 1, .epochs = 2});
  REQUIRE(r.updates == 800);
  REQUIRE(r.wait_seconds > 0.0);

  const asyncopt::AsyncOptimizer<double, Sgd, BoundedStaleness<LockFree>> loose(
      Sgd{.learning_rate = 0.01},
      BoundedStaleness<LockFree>{.staleness = BoundedStaleness<LockFree>::unbounded});
  const auto free_run = loose.optimize(Straggling{}, std::span<double>(w),
                                       {.workers = 2, .batch_size = 1, .epochs = 2});
  REQUIRE(free_run.updates == 800);
  REQUIRE(free_run.wait_seconds == 0.0);
}

namespace {

struct ThrowsAtHalf {
  std::size_t dimension() const { return 2; }
  std::size_t num_examples() const { return 1000; }
  double loss(std::span<const float> /*w*/) const { return 0.0; }
  void gradient(std::span<const float> /*w*/, std::span<const std::size_t> batch,
                std::span<float> grad) const {
    if (batch[0] == 500) {
      throw std::runtime_error("example 500 is broken");
    }
    grad[0] = grad[1] = 0.0f;
  }
};

}  // namespace

TEST_CASE("a worker that throws under s = 0 does not hang the others") {
  // If the thrower kept its clock set, the others would wait for it forever at s = 0 and this
  // test would never end; ctest's timeout bounds it.
  const asyncopt::AsyncOptimizer<float, Sgd, BoundedStaleness<Locked>> opt(
      Sgd{.learning_rate = 0.1}, BoundedStaleness<Locked>{.staleness = 0});
  std::vector<float> w(2, 0.0f);
  REQUIRE_THROWS_WITH(opt.optimize(ThrowsAtHalf{}, std::span<float>(w),
                                   {.workers = 4, .batch_size = 1, .epochs = 2}),
                      "example 500 is broken");
}

TEST_CASE("bounded staleness converges like its inner policy on least squares") {
  std::vector<double> w(4, 0.0);
  const asyncopt::AsyncOptimizer<double, Sgd, BoundedStaleness<Locked>> opt(
      Sgd{.learning_rate = 0.05}, BoundedStaleness<Locked>{.staleness = 2});
  const auto r = opt.optimize(Straggling{}, std::span<double>(w),
                              {.workers = 2, .batch_size = 1, .epochs = 3});
  for (const double x : w) {
    REQUIRE(x == Approx(1.0).margin(1e-6));
  }
  // Between a pull at clock c (the other worker at c - s or later) and the push, the other
  // worker can finish at most 2s + 1 steps before the gate stops it; one more update may be
  // in flight at the pull, and the store counts it too.
  REQUIRE(r.max_staleness() <= 2 * 2 + 2);
}
