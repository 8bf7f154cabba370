// The sparse path: sparse pulls read only their indices under every policy and transport,
// a sparse push equals the dense push with zeros elsewhere, and optimize() on sparse data
// gives the same run whether it pulls sparsely or densely.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <Eigen/Sparse>
#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/io/synthetic.hpp>
#include <asyncopt/objective/objective.hpp>

using asyncopt::consistency::BoundedStaleness;
using asyncopt::consistency::LocalSgd;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::consistency::Synchronous;
using asyncopt::update::DelayCompensated;
using asyncopt::update::Sgd;

namespace {

// Pulls indices {1, 4, 5} of params 0..7 into a buffer of -1s: exactly those change.
template <class Consistency, class Transport = asyncopt::transport::SharedMemory>
void check_sparse_pull(const Consistency& policy = {}, const Transport& transport = {}) {
  const asyncopt::AsyncOptimizer<double, Sgd, Consistency, Transport> opt(Sgd{}, policy, transport);
  std::vector<double> w = {0, 1, 2, 3, 4, 5, 6, 7};
  auto store = opt.attach(std::span<double>(w), 1);
  auto handle = store->worker(0);
  std::vector<double> out(8, -1.0);
  const std::vector<std::size_t> index = {1, 4, 5};
  handle.pull(index, out);
  CHECK(out == std::vector<double>{-1, 1, -1, -1, 4, 5, -1, -1});

  const std::vector<std::size_t> unordered = {4, 1};
  REQUIRE_THROWS_WITH(handle.pull(unordered, out),
                      "asyncopt: sparse pull indices must be strictly increasing (index 1 "
                      "follows 4)");
  const std::vector<std::size_t> outside = {8};
  REQUIRE_THROWS_WITH(handle.pull(outside, out),
                      "asyncopt: sparse pull index 8 is out of range for 8 parameters");
  std::vector<double> short_out(3);
  REQUIRE_THROWS_AS(handle.pull(index, short_out), std::invalid_argument);
}

}  // namespace

TEST_CASE("the fast index check agrees with a direct check on random lists") {
  // Lists of length 0..6 over 0..7 with limit 7: every failure mode (a repeat, a step down,
  // the last or an inner index at or above the limit) comes up often.
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> length(0, 6);
  std::uniform_int_distribution<std::size_t> value(0, 7);
  std::size_t accepted = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<std::size_t> index(length(rng));
    for (auto& v : index) {
      v = value(rng);
    }
    if (trial % 2 == 0) {
      std::sort(index.begin(), index.end());  // half of them sorted: many accepted
    }
    bool expected = true;
    for (std::size_t k = 0; k < index.size(); ++k) {
      expected = expected && index[k] < 7 && (k == 0 || index[k - 1] < index[k]);
    }
    INFO("trial " << trial);
    REQUIRE(asyncopt::detail::strictly_increasing_below(index, 7) == expected);
    accepted += expected ? 1 : 0;
  }
  REQUIRE(accepted > 1000);
  REQUIRE(accepted < 19000);

  // Indices at and above 2^63, where the fast check's differences could mislead it.
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  constexpr std::size_t half = std::size_t{1} << 63U;
  using List = std::vector<std::size_t>;
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{half + 5, 3}, 10));
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{max}, 10));
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{0, max, 4}, 10));
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{3, half, half + 1}, half));
  REQUIRE(asyncopt::detail::strictly_increasing_below(List{3, half, half + 1}, max));
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{3, half + 1, half}, max));
  REQUIRE(asyncopt::detail::strictly_increasing_below(List{0, 1, half - 1}, half));
  REQUIRE_FALSE(asyncopt::detail::strictly_increasing_below(List{0, 1, half - 1}, half - 1));
}

namespace {

// Pulls indices {1, 4, 5} of params 0..7 packed: values {1, 4, 5}.
template <class Consistency, class Transport = asyncopt::transport::SharedMemory>
void check_pull_values(const Consistency& policy = {}, const Transport& transport = {}) {
  const asyncopt::AsyncOptimizer<double, Sgd, Consistency, Transport> opt(Sgd{}, policy, transport);
  std::vector<double> w = {0, 1, 2, 3, 4, 5, 6, 7};
  auto store = opt.attach(std::span<double>(w), 1);
  auto handle = store->worker(0);
  std::vector<double> values(3, -1.0);
  const std::vector<std::size_t> index = {1, 4, 5};
  handle.pull_values(index, values);
  CHECK(values == std::vector<double>{1, 4, 5});

  std::vector<double> two(2, -1.0);
  REQUIRE_THROWS_WITH(handle.pull_values(index, two),
                      "asyncopt: pull_values with 3 indices into 2 values");
  const std::vector<std::size_t> unordered = {4, 1};
  REQUIRE_THROWS_WITH(handle.pull_values(unordered, two),
                      "asyncopt: sparse pull indices must be strictly increasing (index 1 "
                      "follows 4)");
  const std::vector<std::size_t> outside = {2, 8};
  REQUIRE_THROWS_WITH(handle.pull_values(outside, two),
                      "asyncopt: sparse pull index 8 is out of range for 8 parameters");
  CHECK(two == std::vector<double>{-1, -1});
}

// Both sparse pulls, in place and packed.
template <class Consistency, class Transport = asyncopt::transport::SharedMemory>
void check_sparse_pulls(const Consistency& policy = {}, const Transport& transport = {}) {
  check_sparse_pull<Consistency, Transport>(policy, transport);
  check_pull_values<Consistency, Transport>(policy, transport);
}

}  // namespace

TEST_CASE("sparse pulls read only their indices, in place and packed, under every policy") {
  SECTION("LockFree") {
    check_sparse_pulls<LockFree>();
  }
  SECTION("Locked") {
    check_sparse_pulls<Locked>(Locked{.stripes = 4, .min_stripe_elements = 1});
  }
  SECTION("BoundedStaleness") {
    check_sparse_pulls<BoundedStaleness<>>();
  }
  SECTION("Synchronous") {
    check_sparse_pulls<Synchronous>();
  }
  SECTION("LocalSgd") {
    check_sparse_pulls<LocalSgd>();
  }
  SECTION("Simulated") {
    check_sparse_pulls<Locked, asyncopt::transport::Simulated>(Locked{},
                                                               asyncopt::transport::Simulated{});
  }
}

namespace {

// Pull (positionally into a dense buffer, or packed), let the shared parameters move, push
// a sparse gradient under delay compensation, which reads the pulled values at the push.
template <class Consistency, class Transport = asyncopt::transport::SharedMemory>
std::vector<double> pull_move_push(bool packed, const Transport& transport = {}) {
  const DelayCompensated dc{.learning_rate = 0.1, .lambda = 2.0};
  const asyncopt::AsyncOptimizer<double, DelayCompensated, Consistency, Transport> opt(
      dc, Consistency{}, transport);
  std::vector<double> w = {0.5, -1, 2, 0.25, 4, -5, 6, 7};
  auto store = opt.attach(std::span<double>(w), 1);
  auto handle = store->worker(0);
  const std::vector<std::size_t> index = {1, 4, 5};
  const std::vector<double> value = {0.5, -2, 3};
  std::vector<double> dense(w.size(), 0.0);
  std::vector<double> values(index.size());
  if (packed) {
    handle.pull_values(index, values);
  } else {
    handle.pull(index, dense);
  }
  w[4] -= 0.15;  // as if another worker had pushed since the pull (a replica does not see it)
  REQUIRE(handle.push(index, value).applied);
  std::vector<double> now(w.size());
  handle.pull(now);  // as the worker sees them: its replica under LocalSgd
  return now;
}

}  // namespace

TEST_CASE("a push after pull_values reads the packed values as the parameters seen") {
  SECTION("LockFree") {
    const auto result = pull_move_push<LockFree>(true);
    CHECK(result == pull_move_push<LockFree>(false));
    CHECK(result[4] != 4 - 0.15 + 0.2);  // the correction moved it off plain SGD's value
  }
  SECTION("Locked") {
    CHECK(pull_move_push<Locked>(true) == pull_move_push<Locked>(false));
  }
  SECTION("BoundedStaleness") {
    CHECK(pull_move_push<BoundedStaleness<>>(true) == pull_move_push<BoundedStaleness<>>(false));
  }
  SECTION("LocalSgd") {
    CHECK(pull_move_push<LocalSgd>(true) == pull_move_push<LocalSgd>(false));
  }
  SECTION("Simulated") {
    const asyncopt::transport::Simulated simulated{};
    CHECK(pull_move_push<Locked>(true, simulated) == pull_move_push<Locked>(false, simulated));
  }
}

TEST_CASE("after pull_values a rule that reads the parameters seen refuses other pushes") {
  const DelayCompensated dc{.learning_rate = 0.1, .lambda = 2.0};
  const std::vector<double> start = {0.5, -1, 2, 0.25, 4, -5, 6, 7};
  const std::vector<std::size_t> index = {1, 4, 5};
  const std::vector<double> value = {0.5, -2, 3};
  std::vector<double> values(index.size());

  SECTION("a sparse push with another index list, even an equal copy") {
    const asyncopt::AsyncOptimizer<double, DelayCompensated, LockFree> opt(dc);
    std::vector<double> w = start;
    auto store = opt.attach(std::span<double>(w), 1);
    auto handle = store->worker(0);
    handle.pull_values(index, values);
    // An equal list at another address. NOLINTNEXTLINE(performance-unnecessary-copy-initialization)
    const std::vector<std::size_t> copy = index;
    REQUIRE_THROWS_AS(handle.push(copy, value), std::logic_error);
    REQUIRE_THROWS_WITH(handle.push(copy, value),
                        Catch::Contains("after pull_values(index, values) push with the same "
                                        "index list"));
    CHECK(w == start);
    CHECK(handle.push(index, value).applied);
  }
  SECTION("a dense push") {
    const asyncopt::AsyncOptimizer<double, DelayCompensated, LockFree> opt(dc);
    std::vector<double> w = start;
    auto store = opt.attach(std::span<double>(w), 1);
    auto handle = store->worker(0);
    handle.pull_values(index, values);
    const std::vector<double> gradient(w.size(), 0.5);
    REQUIRE_THROWS_WITH(handle.push(gradient), Catch::Contains("pull them all with pull(out)"));
    CHECK(w == start);
  }
  SECTION("a synchronous round, whose update is dense") {
    const asyncopt::AsyncOptimizer<double, DelayCompensated, Synchronous> opt(dc);
    std::vector<double> w = start;
    auto store = opt.attach(std::span<double>(w), 1);
    auto handle = store->worker(0);
    handle.pull_values(index, values);
    REQUIRE_THROWS_WITH(handle.push(index, value), Catch::Contains("pull them all with pull(out)"));
    CHECK(w == start);
  }
  SECTION("a dense push after a pull of some parameters into a dense buffer") {
    const asyncopt::AsyncOptimizer<double, DelayCompensated, LockFree> opt(dc);
    std::vector<double> w = start;
    auto store = opt.attach(std::span<double>(w), 1);
    auto handle = store->worker(0);
    std::vector<double> local(w.size());
    handle.pull(index, local);
    const std::vector<double> gradient(w.size(), 0.5);
    REQUIRE_THROWS_WITH(handle.push(gradient), Catch::Contains("pull them all with pull(out)"));
    CHECK(w == start);
    CHECK(handle.push(index, value).applied);  // a sparse push reads only what was pulled
    handle.pull(local);
    CHECK(handle.push(gradient).applied);
  }
  SECTION("a rule that does not read them takes any push") {
    const asyncopt::AsyncOptimizer<double, Sgd, LockFree> opt(Sgd{.learning_rate = 0.1});
    std::vector<double> w = start;
    auto store = opt.attach(std::span<double>(w), 1);
    auto handle = store->worker(0);
    handle.pull_values(index, values);
    // An equal list at another address. NOLINTNEXTLINE(performance-unnecessary-copy-initialization)
    const std::vector<std::size_t> copy = index;
    CHECK(handle.push(copy, value).applied);
    CHECK(handle.push(std::vector<double>(w.size(), 0.0)).applied);
  }
}

// With g = 0 the state-free rules leave a parameter exactly as it is, so the two pushes
// must agree bit for bit.
TEMPLATE_TEST_CASE("a sparse push equals the dense push with zeros elsewhere", "", LockFree,
                   Locked) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> start(300);
  for (float& v : start) {
    v = normal(rng);
  }
  std::vector<std::size_t> index;
  std::vector<float> value;
  for (std::size_t i = 3; i < start.size(); i += 7) {
    index.push_back(i);
    value.push_back(normal(rng));
  }
  std::vector<float> dense(start.size(), 0.0f);
  for (std::size_t k = 0; k < index.size(); ++k) {
    dense[index[k]] = value[k];
  }
  auto run = [&](const auto& rule, bool sparse) {
    const asyncopt::AsyncOptimizer<float, std::decay_t<decltype(rule)>, TestType> opt(rule);
    std::vector<float> w = start;
    auto store = opt.attach(std::span<float>(w), 1);
    auto handle = store->worker(0);
    std::vector<float> seen(w.size());
    handle.pull(seen);
    w[0] += 1.0f;  // another worker's update since the pull: DC has something to correct
    if (sparse) {
      handle.push(index, value);
    } else {
      handle.push(dense);
    }
    return w;
  };
  CHECK(run(Sgd{.learning_rate = 0.1}, true) == run(Sgd{.learning_rate = 0.1}, false));
  const DelayCompensated dc{.learning_rate = 0.1, .lambda = 2.0};
  CHECK(run(dc, true) == run(dc, false));
  CHECK(run(Sgd{.learning_rate = 0.1}, true) != start);
}

namespace {

// The same objective without touched(): optimize() then pulls every parameter.
template <class F>
struct DensePull {
  const F* inner;
  [[nodiscard]] std::size_t dimension() const { return inner->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return inner->num_examples(); }
  [[nodiscard]] double loss(std::span<const double> w) const { return inner->loss(w); }
  void gradient(std::span<const double> w, std::span<const std::size_t> batch,
                std::span<double> grad) const {
    inner->gradient(w, batch, grad);
  }
  void sparse_gradient(std::span<const double> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<double>& g) const {
    inner->sparse_gradient(w, batch, g);
  }
};

// The same objective with touched() but without touched_gradient(): optimize() then pulls
// the touched parameters into a dense buffer, in place.
template <class F>
struct PositionalPull : DensePull<F> {
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const {
    this->inner->touched(batch, index);
  }
};

}  // namespace

TEST_CASE("optimize() on sparse data runs the same with packed, positional and dense pulls") {
  using Sparse = Eigen::SparseMatrix<double, Eigen::RowMajor>;
  std::mt19937 rng(9);
  std::normal_distribution<double> normal;
  std::bernoulli_distribution present(0.1);
  constexpr Eigen::Index n = 600;
  constexpr Eigen::Index d = 200;
  std::vector<Eigen::Triplet<double>> entries;
  Eigen::VectorXd y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    double z = 0.0;
    for (Eigen::Index j = 0; j < d; ++j) {
      if (present(rng)) {
        const double v = normal(rng);
        entries.emplace_back(i, j, v);
        z += v * (j % 3 == 0 ? 1.0 : -0.5);
      }
    }
    y[i] = z > 0.0 ? 1.0 : 0.0;
  }
  Sparse x(n, d);
  x.setFromTriplets(entries.begin(), entries.end());
  using F = asyncopt::objective::LogisticRegression<Sparse>;
  const F f(x, y, {.l2 = 1e-3, .intercept = true});
  STATIC_REQUIRE(asyncopt::TouchedGradient<F, double>);
  STATIC_REQUIRE(asyncopt::TouchedParameters<PositionalPull<F>>);
  STATIC_REQUIRE(!asyncopt::TouchedGradient<PositionalPull<F>, double>);
  STATIC_REQUIRE(!asyncopt::TouchedParameters<DensePull<F>>);
  // Delay compensation reads w_seen at the pushed indices, which every pull fills.
  const DelayCompensated dc{.learning_rate = 0.5, .lambda = 0.5};
  auto check = [&](const auto& opt, const asyncopt::Options& options) {
    std::vector<double> packed(static_cast<std::size_t>(d) + 1, 0.0);
    std::vector<double> positional(packed.size(), 0.0);
    std::vector<double> dense(packed.size(), 0.0);
    const auto a = opt.optimize(f, std::span<double>(packed), options);
    const auto b = opt.optimize(PositionalPull<F>{{&f}}, std::span<double>(positional), options);
    const auto c = opt.optimize(DensePull<F>{&f}, std::span<double>(dense), options);
    CHECK(packed == positional);
    CHECK(packed == dense);
    CHECK(a.loss == b.loss);
    CHECK(a.loss == c.loss);
    CHECK(a.loss.back() < 0.5 * a.loss.front());
  };
  SECTION("Locked, one worker") {
    check(asyncopt::AsyncOptimizer<double, DelayCompensated, Locked>(dc),
          {.workers = 1, .batch_size = 3, .epochs = 3, .seed = 4});
  }
  SECTION("Simulated delays") {
    check(
        asyncopt::AsyncOptimizer<double, DelayCompensated, Locked, asyncopt::transport::Simulated>(
            dc),
        {.workers = 2, .batch_size = 2, .epochs = 3, .seed = 5});
  }
  SECTION("Synchronous, whose dense round update makes every worker pull all") {
    check(asyncopt::AsyncOptimizer<double, DelayCompensated, Synchronous>(dc),
          {.workers = 2, .batch_size = 3, .epochs = 3, .seed = 6});
  }
}

namespace {

// Counts the gradients each example takes part in; forwards everything else, touched()
// included, so optimize() takes the sparse path.
template <class F>
struct CountingUses {
  const F* inner;
  std::vector<std::atomic<int>>* uses;
  [[nodiscard]] std::size_t dimension() const { return inner->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return inner->num_examples(); }
  [[nodiscard]] double loss(std::span<const float> w) const { return inner->loss(w); }
  void gradient(std::span<const float> w, std::span<const std::size_t> batch,
                std::span<float> grad) const {
    inner->gradient(w, batch, grad);
  }
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const {
    inner->touched(batch, index);
  }
  void sparse_gradient(std::span<const float> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<float>& g) const {
    for (const std::size_t id : batch) {
      (*uses)[id].fetch_add(1, std::memory_order_relaxed);
    }
    inner->sparse_gradient(w, batch, g);
  }
};

}  // namespace

// Hogwild!'s claim (Niu et al., NIPS 2011): on sparse data, lock-free updates that may
// overwrite each other converge like the serial algorithm. Stated tolerance: 1% of the
// serial run's final loss after 5 epochs.
TEST_CASE("Hogwild! on RCV1-like data ends within 1% of the serial run's loss") {
  using Sparse = Eigen::SparseMatrix<float, Eigen::RowMajor>;
  auto set = asyncopt::io::generate_rcv1_like<float>({.examples = 20'000, .seed = 11});
  // Eigen 3.4's SparseMatrix has no move constructor: the data is copied either way.
  const asyncopt::objective::LogisticRegression<Sparse> f(set.data, std::move(set.labels),
                                                          {.l2 = 1e-5, .intercept = true});
  const asyncopt::AsyncOptimizer<float, Sgd, LockFree> opt(Sgd{.learning_rate = 0.5});
  auto run = [&](std::size_t workers) {
    std::vector<std::atomic<int>> uses(f.num_examples());
    const CountingUses<decltype(f)> counted{&f, &uses};
    std::vector<float> w(f.dimension(), 0.0f);
    const auto report = opt.optimize(counted, std::span<float>(w),
                                     {.workers = workers, .batch_size = 1, .epochs = 5});
    // Every example exactly once per epoch: the same set as the serial run's, 5 times.
    int wrong = 0;
    for (const auto& u : uses) {
      wrong += u.load() == 5 ? 0 : 1;
    }
    CHECK(wrong == 0);
    CHECK(report.examples == 5U * f.num_examples());
    return report.final_loss();
  };
  const double serial = run(1);
  const double hogwild = run(2);
  INFO("serial " << serial << ", Hogwild! with 2 workers " << hogwild);
  CHECK(serial < 0.7 * std::log(2.0));  // it learned: the loss at w = 0 is log 2
  CHECK(std::abs(hogwild - serial) <= 0.01 * serial);
}
