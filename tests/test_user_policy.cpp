// A consistency policy written outside the library runs, unedited, on every transport that
// can run an asynchronous policy: the stores call the guard's hooks and nothing else.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>

namespace user {

// What the guard saw, shared between the policy's copies and the test.
struct Tally {
  std::atomic<std::uint64_t> writes{0};
  std::atomic<std::uint64_t> clocks{0};
  std::atomic<std::uint64_t> leaves{0};
};

// One mutex for the whole vector, and a tally of what went through it. It has the members
// asyncopt::ConsistencyPolicy names, plus the optional clock and leave hooks.
struct OneMutex {
  std::shared_ptr<Tally> tally = std::make_shared<Tally>();

  void validate() const {}

  template <class Scalar>
  class Guard {
   public:
    Guard(const OneMutex& policy, std::size_t n, std::size_t /*workers*/)
        : tally_(policy.tally), n_(n), mutex_(std::make_unique<std::mutex>()) {}

    void read(const Scalar* src, Scalar* dst) {
      const std::lock_guard lock(*mutex_);
      std::copy(src, src + n_, dst);
    }
    template <class F>
    void write_dense(F&& apply) {
      const std::lock_guard lock(*mutex_);
      tally_->writes.fetch_add(1);
      apply(asyncopt::kernels::PlainAccess{}, std::size_t{0}, n_);
    }
    template <class F>
    void write_sparse(std::span<const std::size_t> index, F&& apply) {
      const std::lock_guard lock(*mutex_);
      tally_->writes.fetch_add(1);
      apply(asyncopt::kernels::PlainAccess{}, std::size_t{0}, index.size());
    }
    void clock(std::size_t /*id*/, std::uint64_t /*clock*/) { tally_->clocks.fetch_add(1); }
    void leave(std::size_t /*id*/) { tally_->leaves.fetch_add(1); }

   private:
    std::shared_ptr<Tally> tally_;
    std::size_t n_;
    std::unique_ptr<std::mutex> mutex_;
  };
};

static_assert(asyncopt::ConsistencyPolicy<OneMutex>);

// f(w) = 0.5 |w - c|^2 for every example: the optimum is c, and SGD with rate lr contracts
// the error by (1 - lr) per fresh update.
struct Bowl {
  std::vector<float> c{1.5f, -2.0f, 0.25f};
  [[nodiscard]] std::size_t dimension() const { return c.size(); }
  [[nodiscard]] static std::size_t num_examples() { return 64; }
  [[nodiscard]] double loss(std::span<const float> w) const {
    double sum = 0.0;
    for (std::size_t i = 0; i < c.size(); ++i) {
      sum += 0.5 * static_cast<double>(w[i] - c[i]) * static_cast<double>(w[i] - c[i]);
    }
    return sum;
  }
  void gradient(std::span<const float> w, std::span<const std::size_t> /*batch*/,
                std::span<float> grad) const {
    for (std::size_t i = 0; i < c.size(); ++i) {
      grad[i] = w[i] - c[i];
    }
  }
};

}  // namespace user

using asyncopt::update::Sgd;

TEST_CASE("a user-written policy runs on shared memory through its hooks") {
  const user::OneMutex policy;
  const asyncopt::AsyncOptimizer<float, Sgd, user::OneMutex> opt(Sgd{.learning_rate = 0.1}, policy);
  const user::Bowl bowl;
  std::vector<float> w(3, 0.0f);
  const auto report =
      opt.optimize(bowl, std::span<float>(w), {.workers = 2, .batch_size = 4, .epochs = 5});
  // 5 epochs of 64 examples in batches of 4: 80 pushes and steps, each write under the lock.
  CHECK(report.updates == 80);
  CHECK(policy.tally->writes.load() == 80);
  CHECK(policy.tally->clocks.load() == 80);
  CHECK(policy.tally->leaves.load() >= 2);  // each worker leaves when its shard is done
  // 80 updates at lr 0.1, a few of them stale, bring an error of at most 2 below 0.01
  // (0.9^80 is 2e-4 when all are fresh).
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(std::abs(w[i] - bowl.c[i]) < 1e-2f);
  }
}

TEST_CASE("a user-written policy runs on the simulator: tau = 0 is sequential SGD") {
  const user::OneMutex policy;
  const asyncopt::AsyncOptimizer<float, Sgd, user::OneMutex, asyncopt::transport::Simulated> opt(
      Sgd{.learning_rate = 0.1}, policy, asyncopt::transport::Simulated{});
  const user::Bowl bowl;
  std::vector<float> w(3, 0.0f);
  const auto report =
      opt.optimize(bowl, std::span<float>(w), {.workers = 2, .batch_size = 8, .epochs = 2});
  CHECK(report.updates == 16);
  CHECK(policy.tally->writes.load() == 16);
  CHECK(report.max_staleness() == 0);
  // Sixteen fresh steps from 0: w = c (1 - 0.9^16), computed independently in double.
  const double left = std::pow(0.9, 16.0);
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(w[i] == Approx(bowl.c[i] * (1.0 - left)).epsilon(1e-5));
  }
}

TEST_CASE("a user-written policy runs on the simulator with stale gradients") {
  const user::OneMutex policy;
  const asyncopt::transport::Simulated simulated{.delay = asyncopt::delay::fixed(1)};
  const asyncopt::AsyncOptimizer<float, Sgd, user::OneMutex, asyncopt::transport::Simulated> opt(
      Sgd{.learning_rate = 0.1}, policy, simulated);
  const user::Bowl bowl;
  std::vector<float> w(3, 0.0f);
  const auto report =
      opt.optimize(bowl, std::span<float>(w), {.workers = 2, .batch_size = 8, .epochs = 1});
  CHECK(report.updates == 8);
  CHECK(policy.tally->writes.load() == 8);
  CHECK(report.max_staleness() == 1);
  // e_{k+1} = e_k - 0.1 e_{k-1} with e = w - c, e_0 = e_1' = -c: the first update is fresh
  // (nothing to be stale against), every later one one update old.
  for (std::size_t i = 0; i < w.size(); ++i) {
    double previous = -static_cast<double>(bowl.c[i]);
    double current = previous * 0.9;  // first update, fresh
    for (int k = 1; k < 8; ++k) {
      const double next = current - 0.1 * previous;
      previous = current;
      current = next;
    }
    CHECK(w[i] - bowl.c[i] == Approx(current).epsilon(1e-4));
  }
}
