// The worker-handle API of the shared-memory store: pull, push, clock.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>

using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::update::Sgd;

namespace {

// Locked with small stripes, so that a few hundred parameters span several of them.
const Locked small_stripes{.stripes = 8, .min_stripe_elements = 16};

template <class Scalar, class Consistency>
using Opt = asyncopt::AsyncOptimizer<Scalar, Sgd, Consistency>;

template <class Consistency>
Consistency make_policy() {
  if constexpr (std::is_same_v<Consistency, Locked>) {
    return small_stripes;
  } else {
    return Consistency{};
  }
}

}  // namespace

TEMPLATE_TEST_CASE("staleness counts the updates applied between a worker's pull and its push", "",
                   Locked, LockFree) {
  std::vector<double> w(10, 0.0);
  const Opt<double, TestType> opt(Sgd{.learning_rate = 1.0}, make_policy<TestType>());
  auto store = opt.attach(w, 3);
  auto a = store->worker(0);
  auto b = store->worker(1);
  auto c = store->worker(2);
  std::vector<double> buffer(10);
  const std::vector<double> g(10, 1.0);

  a.pull(buffer);
  b.pull(buffer);
  c.pull(buffer);
  REQUIRE(a.push(std::span<const double>(g)).staleness == 0);
  REQUIRE(b.push(std::span<const double>(g)).staleness == 1);
  REQUIRE(c.push(std::span<const double>(g)).staleness == 2);
  a.pull(buffer);
  REQUIRE(a.seen_version() == 3);
  REQUIRE(a.push(std::span<const double>(g)).staleness == 0);

  REQUIRE(store->version() == 4);
  const auto stats = store->stats();
  REQUIRE(stats.updates == 4);
  REQUIRE(stats.staleness == std::vector<std::uint64_t>{2, 1, 1});
  REQUIRE(stats.staleness_sum == 3);
  REQUIRE(stats.max_staleness() == 2);
  REQUIRE(stats.mean_staleness() == Approx(0.75));
  for (const double x : w) {
    REQUIRE(x == -4.0);
  }
}

TEMPLATE_TEST_CASE("pull copies the parameters and push applies w -= lr * g", "", Locked,
                   LockFree) {
  constexpr std::size_t n = 301;
  std::vector<float> w(n);
  std::iota(w.begin(), w.end(), 0.0f);
  const Opt<float, TestType> opt(Sgd{.learning_rate = 0.5}, make_policy<TestType>());
  auto store = opt.attach(w, 1);
  auto h = store->worker(0);
  std::vector<float> pulled(n, -1.0f);
  h.pull(pulled);
  REQUIRE(pulled == w);
  std::vector<float> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    g[i] = static_cast<float>(i % 7);
  }
  const auto result = h.push(std::span<const float>(g));
  REQUIRE(result.applied);
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(w[i] == static_cast<float>(i) - 0.5f * static_cast<float>(i % 7));
  }
  h.clock();
  h.clock();
  REQUIRE(h.clock_count() == 2);
}

TEMPLATE_TEST_CASE(
    "a push's accepted callback comes before the update, with its result, and "
    "never for a rejected gradient",
    "", Locked, LockFree) {
  constexpr std::size_t n = 40;
  std::vector<float> w(n, 1.0f);
  const Opt<float, TestType> opt(Sgd{.learning_rate = 1.0}, make_policy<TestType>());
  auto store = opt.attach(w, 2);
  auto other = store->worker(1);
  auto h = store->proxy(0);  // the handle a server acts through
  std::vector<float> pulled(n);
  h.pull(pulled);
  other.push(std::span<const float>(std::vector<float>(n, 1.0f)));  // w = 0; h is 1 behind
  int calls = 0;
  float seen_at_call = -1.0f;
  asyncopt::PushResult told{};
  auto accepted = [&](const asyncopt::PushResult& r) noexcept {
    ++calls;
    told = r;
    seen_at_call = w[0];
  };
  const std::vector<float> g(n, 2.0f);
  const auto result = h.push(std::span<const float>(g), accepted);
  REQUIRE(calls == 1);
  REQUIRE(seen_at_call == 0.0f);  // the update had not run yet
  REQUIRE(w[0] == -2.0f);         // and ran after it
  REQUIRE(told.applied == result.applied);
  REQUIRE(told.staleness == result.staleness);
  REQUIRE(result.staleness == 1);
  // Sparse, the same.
  const std::vector<std::size_t> index{3, 7};
  const std::vector<float> value{1.0f, 1.0f};
  REQUIRE(
      h.push(std::span<const std::size_t>(index), std::span<const float>(value), accepted).applied);
  REQUIRE(calls == 2);
  REQUIRE(seen_at_call == -2.0f);
  REQUIRE(w[3] == -3.0f);
  // A rejected gradient is not accepted.
  std::vector<float> bad(n, 0.0f);
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_FALSE(h.push(std::span<const float>(bad), accepted).applied);
  REQUIRE(calls == 2);
}

// The server-side entry points, as concepts (a requires-expression on a concrete type outside
// a template would be a hard error).
template <class H>
concept AcceptsPush = requires(H& h, std::span<const float> g, asyncopt::store::IgnoreAccepted a) {
  h.push(g, a);
};
template <class H>
concept ClocksTo = requires(H& h) {
  h.clock_to(std::uint64_t{1});
};
template <class H>
concept MayPull = requires(H& h) {
  h.may_pull();
};

TEST_CASE(
    "a worker's handle shows only what users call and the server's entry points are on Proxy") {
  using Store = asyncopt::transport::SharedMemory::Store<float, Sgd, Locked>;
  using Worker = Store::Worker;
  using Proxy = Store::Proxy;
  STATIC_REQUIRE(asyncopt::WorkerHandle<Worker, float>);
  STATIC_REQUIRE_FALSE(AcceptsPush<Worker>);
  STATIC_REQUIRE_FALSE(ClocksTo<Worker>);
  STATIC_REQUIRE_FALSE(MayPull<Worker>);
  STATIC_REQUIRE(AcceptsPush<Proxy>);
  STATIC_REQUIRE(ClocksTo<Proxy>);
  STATIC_REQUIRE(MayPull<Proxy>);
  // A proxy claims its worker id as a worker handle does.
  std::vector<float> w(8, 0.0f);
  Store store(asyncopt::transport::SharedMemory{}, Sgd{}, Locked{}, std::span<float>(w), 2);
  const Proxy proxy = store.proxy(0);
  REQUIRE_THROWS_WITH(store.worker(0), Catch::Contains("worker 0 already has a handle"));
}

TEMPLATE_TEST_CASE("a sparse push and the equivalent dense push give identical parameters", "",
                   Locked, LockFree) {
  constexpr std::size_t n = 257;
  std::vector<float> dense_w(n);
  for (std::size_t i = 0; i < n; ++i) {
    dense_w[i] = 0.01f * static_cast<float>(i) - 1.0f;
  }
  std::vector<float> sparse_w = dense_w;
  const Opt<float, TestType> opt(Sgd{.learning_rate = 0.3}, make_policy<TestType>());
  auto dense_store = opt.attach(dense_w, 1);
  auto sparse_store = opt.attach(sparse_w, 1);

  asyncopt::SparseGradient<float> sparse;
  std::vector<float> dense(n, 0.0f);
  for (const std::size_t i : {0, 1, 15, 16, 17, 100, 200, 255, 256}) {
    const float v = 0.1f * static_cast<float>(i) + 0.3f;
    sparse.push_back(i, v);
    dense[i] = v;
  }
  for (int round = 0; round < 5; ++round) {
    REQUIRE(dense_store->worker(0).push(std::span<const float>(dense)).applied);
    REQUIRE(sparse_store->worker(0).push(sparse).applied);
  }
  REQUIRE(dense_w == sparse_w);
}

TEMPLATE_TEST_CASE("a gradient with NaN or Inf is rejected whole and counted", "", Locked,
                   LockFree) {
  std::vector<double> w(20, 1.0);
  const auto before = w;
  const Opt<double, TestType> opt(Sgd{.learning_rate = 0.1}, make_policy<TestType>());
  auto store = opt.attach(w, 1);
  auto h = store->worker(0);
  std::vector<double> g(20, 1.0);
  g[13] = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_FALSE(h.push(std::span<const double>(g)).applied);
  g[13] = -std::numeric_limits<double>::infinity();
  REQUIRE_FALSE(h.push(std::span<const double>(g)).applied);
  const std::vector<std::size_t> index = {2, 5};
  const std::vector<double> value = {1.0, std::numeric_limits<double>::infinity()};
  REQUIRE_FALSE(h.push(index, value).applied);
  REQUIRE(w == before);
  REQUIRE(store->version() == 0);
  REQUIRE(store->stats().rejected == 3);
  REQUIRE(store->stats().updates == 0);
}

TEMPLATE_TEST_CASE("malformed pushes and pulls raise clear errors and change nothing", "", Locked,
                   LockFree) {
  std::vector<float> w(12, 2.0f);
  const auto before = w;
  const Opt<float, TestType> opt(Sgd{.learning_rate = 0.1}, make_policy<TestType>());
  auto store = opt.attach(w, 2);
  auto h = store->worker(1);
  std::vector<float> wrong(11, 1.0f);
  REQUIRE_THROWS_WITH(h.push(std::span<const float>(wrong)),
                      Catch::Contains("push of 11 elements into a store of 12 parameters"));
  REQUIRE_THROWS_WITH(h.pull(wrong), Catch::Contains("pull of 11 elements"));
  const std::vector<float> two = {1.0f, 1.0f};
  const std::vector<std::size_t> out_of_range = {3, 12};
  REQUIRE_THROWS_WITH(h.push(out_of_range, two), Catch::Contains("index 12 is out of range"));
  const std::vector<std::size_t> unsorted = {5, 2};
  REQUIRE_THROWS_WITH(h.push(unsorted, two), Catch::Contains("strictly increasing"));
  const std::vector<std::size_t> repeated = {4, 4};
  REQUIRE_THROWS_WITH(h.push(repeated, two), Catch::Contains("strictly increasing"));
  const std::vector<std::size_t> three = {1, 2, 3};
  REQUIRE_THROWS_WITH(h.push(three, two), Catch::Contains("3 indices but 2 values"));
  REQUIRE_THROWS_AS(store->worker(2), std::out_of_range);
  REQUIRE_THROWS_WITH(store->worker(1), Catch::Contains("worker 1 already has a handle"));
  REQUIRE(w == before);
  REQUIRE(store->version() == 0);
}

TEMPLATE_TEST_CASE("step(index, values, gradient) pulls, pushes and clocks as the three calls do",
                   "", Locked, LockFree) {
  constexpr std::size_t n = 40;
  std::vector<float> w(n);
  for (std::size_t i = 0; i < n; ++i) {
    w[i] = 0.25f * static_cast<float>(i) - 3.0f;
  }
  const auto start = w;
  std::vector<float> reference_w = w;
  const Opt<float, TestType> opt(Sgd{.learning_rate = 0.5}, make_policy<TestType>());
  auto store = opt.attach(w, 1);
  auto reference = opt.attach(reference_w, 1);
  auto h = store->worker(0);
  auto r = reference->worker(0);
  const std::vector<std::size_t> index = {0, 3, 17, 18, 39};
  // A gradient that reads what was pulled: g_k = w_k^2 - k.
  auto gradient_of = [](std::span<const float> pulled, std::vector<float>& g) {
    g.resize(pulled.size());
    for (std::size_t k = 0; k < pulled.size(); ++k) {
      g[k] = pulled[k] * pulled[k] - static_cast<float>(k);
    }
  };
  std::vector<float> values(index.size());
  std::vector<float> g;
  std::vector<float> reference_values(index.size());
  std::vector<float> reference_g;
  for (int step = 0; step < 3; ++step) {
    const auto result = h.step(index, values, [&](std::span<const float> pulled) {
      REQUIRE(pulled.data() == values.data());
      gradient_of(pulled, g);
      return std::span<const float>(g);
    });
    r.pull_values(index, reference_values);
    gradient_of(reference_values, reference_g);
    const auto expected = r.push(index, reference_g);
    r.clock();
    REQUIRE(result.applied == expected.applied);
    REQUIRE(values == reference_values);
    if (step == 0) {  // the closed form: w_i - 0.5 * (w_i^2 - k) at i = index[k]
      for (std::size_t k = 0; k < index.size(); ++k) {
        const double w0 = start[index[k]];
        REQUIRE(w[index[k]] == Approx(w0 - 0.5 * (w0 * w0 - static_cast<double>(k))).epsilon(1e-6));
      }
    }
  }
  REQUIRE(w == reference_w);
  REQUIRE(w[17] != start[17]);
  REQUIRE(w[1] == start[1]);
  REQUIRE(h.clock_count() == 3);
  REQUIRE(store->version() == 3);

  // A gradient with NaN is rejected whole; the step still ends with the clock.
  const auto before = w;
  const auto nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> bad(index.size(), 1.0f);
  bad[2] = nan;
  REQUIRE_FALSE(h.step(index, values, [&](std::span<const float>) {
                   return std::span<const float>(bad);
                 }).applied);
  REQUIRE(w == before);
  REQUIRE(h.clock_count() == 4);
  REQUIRE(store->stats().rejected == 1);

  // A bad index list or a gradient of the wrong length is refused, changing nothing.
  bool called = false;
  auto must_not_run = [&](std::span<const float>) {
    called = true;
    return std::span<const float>(bad);
  };
  const std::vector<std::size_t> unsorted = {5, 2, 7, 8, 9};
  REQUIRE_THROWS_WITH(h.step(unsorted, values, must_not_run),
                      Catch::Contains("strictly increasing"));
  REQUIRE_FALSE(called);
  const std::vector<float> short_g(index.size() - 1, 1.0f);
  REQUIRE_THROWS_WITH(
      h.step(index, values,
             [&](std::span<const float>) { return std::span<const float>(short_g); }),
      Catch::Contains("5 indices but 4 values"));
  std::vector<float> short_values(index.size() - 1);
  REQUIRE_THROWS_WITH(h.step(index, short_values, must_not_run),
                      Catch::Contains("pull_values with 5 indices into 4 values"));
  REQUIRE_FALSE(called);
  REQUIRE(w == before);
  REQUIRE(h.clock_count() == 4);
  REQUIRE(store->version() == 3);

  // A gradient that throws ends the step after the pull: nothing pushed, no clock.
  REQUIRE_THROWS_AS(h.step(index, values,
                           [](std::span<const float>) -> std::span<const float> {
                             throw std::runtime_error("no gradient");
                           }),
                    std::runtime_error);
  REQUIRE(w == before);
  REQUIRE(h.clock_count() == 4);
  REQUIRE(store->version() == 3);

  // A gradient returned by value lives to the end of the step.
  REQUIRE(h.step(index, values, [](std::span<const float> pulled) {
             return std::vector<float>(pulled.size(), 2.0f);
           }).applied);
  for (const std::size_t i : index) {
    REQUIRE(w[i] == before[i] - 1.0f);
  }
  REQUIRE(h.clock_count() == 5);
}

TEST_CASE("Locked stripes partition the vector on cache-line boundaries") {
  using Guard = Locked::Guard<float>;
  for (const std::size_t n : {1, 15, 16, 1000, 10000, 100003}) {
    for (const std::size_t stripes : {1, 3, 64}) {
      INFO("n = " << n << ", stripes = " << stripes);
      Guard guard(Locked{.stripes = stripes, .min_stripe_elements = 100}, n, 1);
      REQUIRE(guard.stripes() >= 1);
      REQUIRE(guard.stripes() <= stripes);
      std::vector<int> covered(n, 0);
      std::size_t previous_end = 0;
      guard.write_dense([&](auto access, std::size_t begin, std::size_t end) {
        STATIC_REQUIRE(std::is_same_v<decltype(access), asyncopt::kernels::PlainAccess>);
        REQUIRE(begin == previous_end);
        REQUIRE(begin % 16 == 0);
        previous_end = end;
        for (std::size_t i = begin; i < end; ++i) {
          ++covered[i];
        }
      });
      REQUIRE(previous_end == n);
      REQUIRE(std::all_of(covered.begin(), covered.end(), [](int c) { return c == 1; }));
    }
  }
}

TEST_CASE("a sparse write locks only the stripes it touches, one run per stripe") {
  Locked::Guard<float> guard(Locked{.stripes = 4, .min_stripe_elements = 16, .max_sparse_span = 4},
                             256, 1);
  REQUIRE(guard.stripes() == 4);
  const std::vector<std::size_t> index = {1, 2, 63, 64, 200, 255};
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  guard.write_sparse(index, [&](auto /*access*/, std::size_t begin, std::size_t end) {
    runs.emplace_back(begin, end);
  });
  const std::vector<std::pair<std::size_t, std::size_t>> expected = {{0, 3}, {3, 4}, {4, 6}};
  REQUIRE(runs == expected);
}

TEST_CASE("a sparse write reaching over max_sparse_span stripes or more runs once, whole") {
  // Stripes of 64: {1, 2, 63, 64, 200, 255} reaches 254 elements, over 3.97 stripes, and
  // touches stripes 0, 1 and 3; its first four entries reach 63 elements, within stripes 0
  // and 1.
  const std::vector<std::size_t> index = {1, 2, 63, 64, 200, 255};
  for (const std::size_t limit : {0, 1, 2, 3, 4}) {
    INFO("max_sparse_span = " << limit);
    Locked::Guard<float> guard(
        Locked{.stripes = 4, .min_stripe_elements = 16, .max_sparse_span = limit}, 256, 1);
    std::vector<std::pair<std::size_t, std::size_t>> runs;
    guard.write_sparse(index, [&](auto /*access*/, std::size_t begin, std::size_t end) {
      runs.emplace_back(begin, end);
    });
    const auto whole = std::vector<std::pair<std::size_t, std::size_t>>{{0, 6}};
    const auto striped = std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {3, 4}, {4, 6}};
    REQUIRE(runs == (limit < 4 ? whole : striped));
    // A reach of 63 elements: whole only for a span of 0 stripes.
    runs.clear();
    guard.read_sparse(std::span<const std::size_t>(index).first(4),
                      [&](auto /*access*/, std::size_t begin, std::size_t end) {
                        runs.emplace_back(begin, end);
                      });
    const auto two = limit < 1 ? std::vector<std::pair<std::size_t, std::size_t>>{{0, 4}}
                               : std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {3, 4}};
    REQUIRE(runs == two);
  }
}

TEST_CASE("striped Locked with scattered and narrow sparse pushes and dense pulls loses nothing") {
  // Mostly a target for ThreadSanitizer: sparse pushes over many stripes (the whole vector's
  // lock), within one stripe (that stripe's lock) and dense pulls (every stripe) at once.
  constexpr std::size_t n = 2048;
  constexpr int threads = 4;
  constexpr int pushes = 200;
  std::vector<float> w(n, 0.0f);
  const Opt<float, Locked> opt(Sgd{.learning_rate = 1.0},
                               Locked{.stripes = 16, .min_stripe_elements = 64});
  auto store = opt.attach(w, threads);
  std::atomic<int> refused{0};
  {
    std::vector<std::jthread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto h = store->worker(static_cast<std::size_t>(t));
        std::vector<float> seen(n);
        asyncopt::SparseGradient<float> scattered;
        for (std::size_t i = 0; i < n; i += 7) {
          scattered.push_back(i, 1.0f);
        }
        asyncopt::SparseGradient<float> narrow;
        for (std::size_t i = 130; i < 140; ++i) {
          narrow.push_back(i, 1.0f);
        }
        for (int k = 0; k < pushes; ++k) {
          h.pull(seen);
          if (!h.push((k + t) % 2 == 0 ? scattered : narrow).applied) {
            ++refused;
          }
        }
      });
    }
  }
  REQUIRE(refused.load() == 0);
  // Element i received every push that touched it: threads * pushes / 2 of each kind.
  const float per_kind = static_cast<float>(threads) * static_cast<float>(pushes) / 2.0F;
  for (std::size_t i = 0; i < n; ++i) {
    const float expected =
        -(static_cast<float>(i % 7 == 0) + static_cast<float>(i >= 130 && i < 140)) * per_kind;
    REQUIRE(w[i] == expected);
  }
  REQUIRE(store->stats().updates == static_cast<std::uint64_t>(threads * pushes));
}

TEST_CASE("a wide sparse push under striped Locked is not starved by dense pulls") {
  // Two threads pull densely without pause while a third pushes a row that reaches over the
  // whole vector: the push waits only for the pulls under way, never for ones that start
  // after it began waiting. The pullers stop when the pusher is done, or after a bound that
  // a starved pusher would let them reach.
  constexpr std::size_t n = 1 << 20;
  constexpr int wide_pushes = 20;
  constexpr int pull_bound = 2000;
  std::vector<float> w(n, 0.0f);
  const Opt<float, Locked> opt(Sgd{.learning_rate = 1.0}, Locked{});
  auto store = opt.attach(w, 3);
  std::atomic<bool> done{false};
  std::atomic<int> pulling{0};
  std::atomic<int> most_pulls{0};
  {
    std::vector<std::jthread> pool;
    pool.reserve(3);
    for (std::size_t t = 0; t < 2; ++t) {
      pool.emplace_back([&, t] {
        auto h = store->worker(t);
        std::vector<float> seen(n);
        int pulls = 0;
        while (!done.load() && pulls < pull_bound) {
          h.pull(seen);
          if (++pulls == 1) {
            ++pulling;
          }
        }
        int before = most_pulls.load();
        while (before < pulls && !most_pulls.compare_exchange_weak(before, pulls)) {
        }
      });
    }
    pool.emplace_back([&] {
      auto h = store->worker(2);
      asyncopt::SparseGradient<float> wide;
      wide.push_back(0, 1.0f);
      wide.push_back(n - 1, 1.0f);
      while (pulling.load() < 2) {  // both pullers are under way (each pulls at least once)
        std::this_thread::yield();
      }
      for (int k = 0; k < wide_pushes; ++k) {
        static_cast<void>(h.push(wide));
      }
      done.store(true);
    });
  }
  REQUIRE(most_pulls.load() < pull_bound);
  REQUIRE(w[0] == -static_cast<float>(wide_pushes));
  REQUIRE(w[n - 1] == -static_cast<float>(wide_pushes));
}

TEST_CASE("Locked with concurrent pushes loses no update, and one stripe makes pulls atomic") {
  constexpr std::size_t n = 4096;
  constexpr int threads = 4;
  constexpr int pushes = 300;
  for (const std::size_t stripes : {1, 16}) {
    INFO("stripes = " << stripes);
    std::vector<float> w(n, 0.0f);
    const Opt<float, Locked> opt(Sgd{.learning_rate = 1.0},
                                 Locked{.stripes = stripes, .min_stripe_elements = 64});
    auto store = opt.attach(w, threads);
    std::atomic<int> torn_reads{0};
    {
      std::vector<std::jthread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          auto h = store->worker(static_cast<std::size_t>(t));
          std::vector<float> g(n, 1.0f);
          std::vector<float> seen(n);
          for (int k = 0; k < pushes; ++k) {
            h.pull(seen);
            // With one lock, a pull sees whole pushes only: every element is equal.
            if (stripes == 1 &&
                std::any_of(seen.begin(), seen.end(), [&](float x) { return x != seen[0]; })) {
              ++torn_reads;
            }
            h.push(std::span<const float>(g));
          }
        });
      }
    }
    REQUIRE(torn_reads.load() == 0);
    for (const float x : w) {
      REQUIRE(x == -static_cast<float>(threads * pushes));
    }
    REQUIRE(store->stats().updates == static_cast<std::uint64_t>(threads * pushes));
  }
}

// Mostly a target for ThreadSanitizer, which checks that concurrent Hogwild! pushes and pulls
// are free of data races.
TEST_CASE("LockFree with concurrent sparse pushes is race-free and keeps every value in range") {
  constexpr std::size_t n = 64;
  constexpr int threads = 4;
  constexpr int pushes = 2000;
  std::vector<double> w(n, 0.0);
  const Opt<double, LockFree> opt(Sgd{.learning_rate = 1.0});
  auto store = opt.attach(w, threads);
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto h = store->worker(static_cast<std::size_t>(t));
        std::vector<double> seen(n);
        asyncopt::SparseGradient<double> g;
        for (int k = 0; k < pushes; ++k) {
          h.pull(seen);
          g.clear();
          for (std::size_t i = static_cast<std::size_t>(k % 3); i < n; i += 3) {
            g.push_back(i, 1.0);
          }
          h.push(g);
        }
      });
    }
  }
  // Hogwild! may lose updates that race, never invent them: each coordinate received at
  // most the pushes offered to it, a whole number of them, and not none.
  for (std::size_t i = 0; i < n; ++i) {
    const double received = -w[i];
    const int offered_per_thread = (pushes + 2 - static_cast<int>(i % 3)) / 3;
    const double offered = threads * static_cast<double>(offered_per_thread);
    REQUIRE(received <= offered);
    REQUIRE(received >= 1.0);
    REQUIRE(received == std::floor(received));
  }
}

namespace {

// Sgd whose step, for worker 1, first waits until `release` is set: it holds an update
// between taking its place in the sequence and writing it.
struct HeldSgd {
  double learning_rate = 1.0;
  std::atomic<bool>* release = nullptr;
  std::atomic<bool>* holding = nullptr;
  static constexpr std::size_t state_slots = 0;

  template <class Scalar>
  [[nodiscard]] Sgd::Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    if (info.worker == 1) {
      holding->store(true);
      while (!release->load()) {
        std::this_thread::yield();
      }
    }
    return Sgd{.learning_rate = learning_rate}.formula<Scalar>(info);
  }
  void validate() const {}
};

}  // namespace

TEST_CASE("an update still being written when a worker pulls counts towards its staleness") {
  std::vector<double> w(4, 0.0);
  std::atomic<bool> release{false};
  std::atomic<bool> holding{false};
  const asyncopt::AsyncOptimizer<double, HeldSgd, Locked> opt(
      HeldSgd{.release = &release, .holding = &holding});
  auto store = opt.attach(w, 2);
  auto a = store->worker(0);
  const std::vector<double> g(4, 1.0);
  std::vector<double> seen(4);
  std::jthread b_thread([&] {
    auto b = store->worker(1);
    b.pull(seen);
    (void)b.push(std::span<const double>(g));
  });
  while (!holding.load()) {
    std::this_thread::yield();
  }
  // B has started its update but not written it: A's pull cannot include it.
  std::vector<double> mine(4);
  a.pull(mine);
  REQUIRE(mine[0] == 0.0);
  release.store(true);
  b_thread.join();
  REQUIRE(w[0] == -1.0);
  // One update was applied between A's pull and A's push.
  REQUIRE(a.push(std::span<const double>(g)).staleness == 1);
}
