#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/core/random.hpp>

TEST_CASE("random_permutation yields every id exactly once") {
  for (const std::size_t n : {0, 1, 2, 17, 1000}) {
    std::vector<std::size_t> ids(n, 12345);
    asyncopt::random_permutation(ids, 42);
    std::vector<std::size_t> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::size_t> expected(n);
    std::iota(expected.begin(), expected.end(), std::size_t{0});
    REQUIRE(sorted == expected);
  }
}

TEST_CASE("the same seed shuffles the same way, other seeds and epochs differently") {
  std::vector<std::size_t> a(500);
  std::vector<std::size_t> b(500);
  std::vector<std::size_t> c(500);
  std::vector<std::size_t> d(500);
  asyncopt::random_permutation(a, asyncopt::epoch_seed(7, 1));
  asyncopt::random_permutation(b, asyncopt::epoch_seed(7, 1));
  asyncopt::random_permutation(c, asyncopt::epoch_seed(8, 1));
  asyncopt::random_permutation(d, asyncopt::epoch_seed(7, 2));
  REQUIRE(a == b);
  REQUIRE(a != c);
  REQUIRE(a != d);
}

TEST_CASE("below(bound) stays in range and is close to uniform") {
  asyncopt::Xoshiro256 rng(2024);
  constexpr std::size_t bins = 10;
  constexpr std::size_t draws = 100000;
  std::array<std::size_t, bins> counts{};
  for (std::size_t i = 0; i < draws; ++i) {
    const auto v = rng.below(bins);
    REQUIRE(v < bins);
    ++counts[v];
  }
  // Pearson chi-square with 9 degrees of freedom: P(chi2 > 27.88) = 0.001.
  double chi2 = 0.0;
  const double expected = static_cast<double>(draws) / bins;
  for (const auto count : counts) {
    const double diff = static_cast<double>(count) - expected;
    chi2 += diff * diff / expected;
  }
  REQUIRE(chi2 < 27.88);
}

TEST_CASE("every position of a shuffled element is about equally likely") {
  // For n = 4 there are 24 permutations; count where element 0 lands over many shuffles.
  constexpr std::size_t trials = 40000;
  std::array<std::size_t, 4> position{};
  std::vector<std::size_t> ids(4);
  for (std::size_t t = 0; t < trials; ++t) {
    asyncopt::random_permutation(ids, asyncopt::epoch_seed(99, t));
    ++position[static_cast<std::size_t>(std::find(ids.begin(), ids.end(), 0) - ids.begin())];
  }
  double chi2 = 0.0;
  for (const auto count : position) {
    const double diff = static_cast<double>(count) - trials / 4.0;
    chi2 += diff * diff / (trials / 4.0);
  }
  // 3 degrees of freedom: P(chi2 > 16.27) = 0.001.
  REQUIRE(chi2 < 16.27);
}
