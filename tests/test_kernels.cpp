#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/update/sgd.hpp>

namespace {

template <class T>
std::vector<T> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<T> v(n);
  for (auto& x : v) {
    x = static_cast<T>(normal(rng));
  }
  return v;
}

// Lengths around the SIMD widths (4, 8 and 16 floats; 2, 4 and 8 doubles) and their tails.
const std::vector<std::size_t> lengths = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1001};

template <class T>
using Operands = asyncopt::kernels::DenseOperands<T, 0>;

template <class T>
constexpr double relative_bound = std::is_same_v<T, float> ? 1e-6 : 1e-14;

}  // namespace

TEMPLATE_TEST_CASE("the Sgd kernel matches a double-precision reference on every length", "", float,
                   double) {
  const asyncopt::update::Sgd rule{.learning_rate = 0.37};
  const auto step = rule.formula<TestType>({});
  for (const std::size_t n : lengths) {
    INFO("n = " << n);
    auto w = random_vector<TestType>(n, 1);
    const auto g = random_vector<TestType>(n, 2);
    const auto w0 = w;
    asyncopt::kernels::apply_dense<asyncopt::kernels::PlainAccess>(
        step, Operands<TestType>{.w = w.data(), .g = g.data()}, 0, n);
    for (std::size_t i = 0; i < n; ++i) {
      const double expected =
          static_cast<double>(w0[i]) -
          static_cast<double>(static_cast<TestType>(0.37)) * static_cast<double>(g[i]);
      REQUIRE(std::abs(static_cast<double>(w[i]) - expected) <=
              relative_bound<TestType> * (std::abs(expected) + 1.0));
    }
  }
}

TEMPLATE_TEST_CASE("the relaxed-atomic path and the SIMD path agree", "", float, double) {
  const asyncopt::update::Sgd rule{.learning_rate = 0.05};
  const auto step = rule.formula<TestType>({});
  for (const std::size_t n : lengths) {
    INFO("n = " << n);
    auto plain = random_vector<TestType>(n, 3);
    auto relaxed = plain;
    const auto g = random_vector<TestType>(n, 4);
    asyncopt::kernels::apply_dense<asyncopt::kernels::PlainAccess>(
        step, Operands<TestType>{.w = plain.data(), .g = g.data()}, 0, n);
    asyncopt::kernels::apply_dense<asyncopt::kernels::RelaxedAccess>(
        step, Operands<TestType>{.w = relaxed.data(), .g = g.data()}, 0, n);
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(std::abs(static_cast<double>(plain[i]) - static_cast<double>(relaxed[i])) <=
              relative_bound<TestType> * (std::abs(static_cast<double>(plain[i])) + 1.0));
    }
  }
}

TEMPLATE_TEST_CASE("a kernel over a sub-range leaves the rest alone", "", float, double) {
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  const auto step = rule.formula<TestType>({});
  std::vector<TestType> w(50, TestType{1});
  const std::vector<TestType> g(50, TestType{1});
  asyncopt::kernels::apply_dense<asyncopt::kernels::PlainAccess>(
      step, Operands<TestType>{.w = w.data(), .g = g.data()}, 5, 37);
  for (std::size_t i = 0; i < w.size(); ++i) {
    REQUIRE(w[i] == ((i >= 5 && i < 37) ? TestType{0} : TestType{1}));
  }
}

TEMPLATE_TEST_CASE("the sparse kernel applies each listed entry once and nothing else", "", float,
                   double) {
  const asyncopt::update::Sgd rule{.learning_rate = 0.5};
  const auto step = rule.formula<TestType>({});
  const auto w0 = random_vector<TestType>(40, 5);
  auto w = w0;
  const std::vector<std::size_t> index = {0, 3, 4, 17, 39};
  const std::vector<TestType> value = {TestType{1}, TestType{-2}, TestType{0.25}, TestType{8},
                                       TestType{-0.5}};
  asyncopt::kernels::apply_sparse<asyncopt::kernels::RelaxedAccess>(
      step,
      asyncopt::kernels::SparseOperands<TestType, 0>{
          .w = w.data(), .index = index.data(), .value = value.data()},
      0, index.size());
  std::size_t k = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (k < index.size() && index[k] == i) {
      const double expected = static_cast<double>(w0[i]) - 0.5 * static_cast<double>(value[k]);
      REQUIRE(std::abs(static_cast<double>(w[i]) - expected) <=
              relative_bound<TestType> * (std::abs(expected) + 1.0));
      ++k;
    } else {
      REQUIRE(w[i] == w0[i]);
    }
  }
}

TEMPLATE_TEST_CASE("all_finite finds a NaN or an infinity at any position", "", float, double) {
  using Limits = std::numeric_limits<TestType>;
  REQUIRE(asyncopt::kernels::all_finite(std::span<const TestType>{}));
  for (const std::size_t n : {1, 5, 16, 37, 64, 100, 131}) {
    std::vector<TestType> v(n, Limits::max());
    REQUIRE(asyncopt::kernels::all_finite(std::span<const TestType>(v)));
    for (const TestType bad : {Limits::quiet_NaN(), Limits::infinity(), -Limits::infinity()}) {
      for (std::size_t i = 0; i < n; ++i) {
        auto copy = v;
        copy[i] = bad;
        INFO("n = " << n << ", position " << i << ", value " << bad);
        REQUIRE_FALSE(asyncopt::kernels::all_finite(std::span<const TestType>(copy)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("copy_all_finite copies every value and agrees with all_finite", "", float,
                   double) {
  using Limits = std::numeric_limits<TestType>;
  for (const std::size_t n : {0, 1, 5, 16, 37, 64, 100, 131}) {
    auto v = random_vector<TestType>(n, 3);
    for (std::size_t bad = 0; bad <= n; ++bad) {  // bad == n: all finite
      auto src = v;
      if (bad < n) {
        src[bad] = bad % 2 == 0 ? Limits::quiet_NaN() : -Limits::infinity();
      }
      // An odd offset: the destination need not be aligned.
      std::vector<TestType> out(n + 1, TestType{-7});
      const bool finite =
          asyncopt::kernels::copy_all_finite(std::span<const TestType>(src), out.data() + 1);
      INFO("n = " << n << ", bad position " << bad);
      REQUIRE(finite == asyncopt::kernels::all_finite(std::span<const TestType>(src)));
      REQUIRE(finite == (bad == n));
      REQUIRE(out[0] == TestType{-7});
      for (std::size_t i = 0; i < n; ++i) {
        if (i != bad) {
          REQUIRE(out[i + 1] == src[i]);
        } else {
          REQUIRE(std::isnan(out[i + 1]) == std::isnan(src[i]));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("copy reads a range through either access mode", "", float, double) {
  const auto src = random_vector<TestType>(45, 6);
  std::vector<TestType> plain(45, TestType{-1});
  std::vector<TestType> relaxed(45, TestType{-1});
  asyncopt::kernels::copy<asyncopt::kernels::PlainAccess>(src.data(), plain.data(), 3, 44);
  asyncopt::kernels::copy<asyncopt::kernels::RelaxedAccess>(src.data(), relaxed.data(), 3, 44);
  for (std::size_t i = 0; i < src.size(); ++i) {
    const TestType expected = (i >= 3 && i < 44) ? src[i] : TestType{-1};
    REQUIRE(plain[i] == expected);
    REQUIRE(relaxed[i] == expected);
  }
}
