// The compression stage: each codec against closed forms or an independent reference, the
// unbiased ones by Monte Carlo against their variance bounds, error feedback's invariant,
// DIANA against synchronous SGD and on heterogeneous workers, and malformed payloads.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/compress.hpp>
#include <asyncopt/core/random.hpp>

namespace compress = asyncopt::compress;
using compress::Step;

namespace {

template <class Scalar>
std::vector<Scalar> random_vector(std::size_t n, std::uint64_t seed) {
  asyncopt::Xoshiro256 rng(seed);
  std::vector<Scalar> v(n);
  for (auto& x : v) {
    x = static_cast<Scalar>(2.0 * rng.uniform() - 1.0);
  }
  return v;
}

template <class Scalar, class C>
std::vector<Scalar> round_trip(C& codec, std::span<const Scalar> x, Step step = {}) {
  compress::Payload p;
  codec.encode(x, step, p);
  std::vector<Scalar> out(x.size(), Scalar{-7});
  codec.decode(std::span<const std::byte>(p), step, std::span<Scalar>(out));
  return out;
}

double squared_norm(std::span<const double> v) {
  double s = 0.0;
  for (const double x : v) {
    s += x * x;
  }
  return s;
}

}  // namespace

TEST_CASE("identity and top-k with k = n give the values back bit for bit") {
  const auto x = random_vector<float>(1000, 1);
  compress::Identity identity;
  CHECK(round_trip<float>(identity, x) == x);
  compress::TopK all{.k = 1000};
  CHECK(round_trip<float>(all, x) == x);
  compress::TopK whole{.fraction = 1.0};
  CHECK(round_trip<float>(whole, x) == x);
  compress::Payload p;
  identity.encode(std::span<const float>(x), {}, p);
  CHECK(p.size() == compress::header_bytes + 4000);
}

TEST_CASE("top-k keeps the k largest magnitudes, ties to the lower index") {
  const std::vector<double> x = {0.5, -3.0, 2.0, 0.0, 3.0, -0.25, 1.0, -2.0};
  compress::TopK codec{.k = 3};
  const auto y = round_trip<double>(codec, x);
  // |x|: 3.0 at 1 and 4, then 2.0 at 2 and 7: the third is index 2.
  CHECK(y == std::vector<double>{0, -3.0, 2.0, 0, 3.0, 0, 0, 0});

  // Against a reference: sort by (|x| descending, index ascending), keep k.
  const auto z = random_vector<float>(5000, 2);
  compress::TopK one_percent{.fraction = 0.01};
  CHECK(one_percent.count(5000) == 50);
  const auto got = round_trip<float>(one_percent, z);
  std::vector<std::size_t> order(z.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return std::abs(z[a]) > std::abs(z[b]) || (std::abs(z[a]) == std::abs(z[b]) && a < b);
  });
  std::vector<float> expected(z.size(), 0.0F);
  for (std::size_t e = 0; e < 50; ++e) {
    expected[order[e]] = z[order[e]];
  }
  CHECK(got == expected);
}

TEST_CASE("fp16 and bf16 round to nearest even and keep infinities and NaN") {
  using compress::from_bf16;
  using compress::from_fp16;
  using compress::to_bf16;
  using compress::to_fp16;
  CHECK(to_fp16(1.0F) == 0x3c00);
  CHECK(to_fp16(-2.0F) == 0xc000);
  CHECK(to_fp16(65504.0F) == 0x7bff);
  CHECK(to_fp16(65519.0F) == 0x7bff);
  CHECK(to_fp16(65520.0F) == 0x7c00);  // the tie goes to the even neighbour, infinity
  CHECK(to_fp16(0x1.0p-24F) == 0x0001);
  CHECK(to_fp16(0x1.0p-25F) == 0x0000);             // a tie with zero goes to zero
  CHECK(to_fp16(0x1.8p-24F) == 0x0002);             // 1.5 units: the tie goes to 2
  CHECK(to_fp16(1.0F + 0x1.0p-11F) == 0x3c00);      // tie, to even
  CHECK(to_fp16(1.0F + 3 * 0x1.0p-11F) == 0x3c02);  // tie, to even (up)
  CHECK(to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(std::isnan(from_fp16(to_fp16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::signbit(from_fp16(to_fp16(-0.0F))));
  CHECK(to_bf16(1.0F + 0x1.0p-8F) == 0x3f80);      // tie, to even
  CHECK(to_bf16(1.0F + 3 * 0x1.0p-8F) == 0x3f82);  // tie, to even (up)
  CHECK(to_bf16(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));

  // Every binary16 value converts to float and back unchanged (NaNs stay NaN).
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = from_fp16(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(from_fp16(to_fp16(f))));
    } else {
      REQUIRE(to_fp16(f) == h);
    }
  }
  // Against an independent rounding: the nearest of the two neighbouring halves, found in
  // double, ties to the even one.
  asyncopt::Xoshiro256 rng(3);
  for (int t = 0; t < 20000; ++t) {
    const auto f = static_cast<float>((rng.uniform() - 0.5) * 131072.0 * rng.uniform());
    const std::uint16_t got = to_fp16(f);
    const double g = from_fp16(got);
    if (std::isinf(g)) {
      REQUIRE(std::abs(f) >= 65520.0F);
      continue;
    }
    const double ulp = std::abs(g) < 0x1.0p-14 ? 0x1.0p-24 : std::ldexp(1.0, std::ilogb(g) - 10);
    REQUIRE(std::abs(g - f) <= ulp / 2);
    if (std::abs(g - f) == ulp / 2) {
      REQUIRE((got & 1U) == 0);
    }
  }

  const auto x = random_vector<float>(100, 4);
  compress::Fp16 fp16;
  compress::Bf16 bf16;
  const auto a = round_trip<float>(fp16, x);
  const auto b = round_trip<float>(bf16, x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    CHECK(a[i] == from_fp16(to_fp16(x[i])));
    CHECK(b[i] == from_bf16(to_bf16(x[i])));
  }
  compress::Payload p;
  fp16.encode(std::span<const float>(x), {}, p);
  CHECK(p.size() == compress::header_bytes + 200);
}

TEST_CASE("sign sends one bit per value and decodes to the mean magnitude") {
  const std::vector<double> x = {1.0, -2.0, 0.0, 4.0, -1.0, 3.0, -1.0, 2.0, -4.0};
  compress::Sign codec;
  const auto y = round_trip<double>(codec, x);
  const double scale = 18.0 / 9.0;
  CHECK(y ==
        std::vector<double>{scale, -scale, scale, scale, -scale, scale, -scale, scale, -scale});
  compress::Payload p;
  codec.encode(std::span<const double>(x), {}, p);
  CHECK(p.size() == compress::header_bytes + 8 + 2);
}

TEST_CASE("random-k: every worker of a round draws the same k indices, scaled by n / k") {
  const auto x = random_vector<double>(1000, 5);
  compress::RandomK codec{.k = 20, .seed = 9};
  const auto a = round_trip<double>(codec, x, {.round = 3, .worker = 0});
  const auto b = round_trip<double>(codec, x, {.round = 3, .worker = 1});
  CHECK(a == b);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (a[i] != 0.0) {
      ++kept;
      CHECK(a[i] == 50.0 * x[i]);
    }
  }
  CHECK(kept == 20);
  const auto c = round_trip<double>(codec, x, {.round = 4, .worker = 0});
  CHECK(c != a);
  compress::RandomK own{.k = 20, .seed = 9, .shared = false};
  CHECK(round_trip<double>(own, x, {.round = 3, .worker = 0}) !=
        round_trip<double>(own, x, {.round = 3, .worker = 1}));
  compress::Payload p;
  codec.encode(std::span<const double>(x), {}, p);
  CHECK(p.size() == compress::header_bytes + 8 + std::size_t{20} * 8);
}

// The mean of `trials` decodes approaches x within 5 standard errors per value, and the mean
// squared error stays within `omega` ||x||^2 (equal to it when `exact`), 5% either way.
template <class C>
void check_unbiased(C codec, const std::vector<double>& x, int trials, bool exact) {
  const std::size_t n = x.size();
  std::vector<double> sum(n, 0.0);
  std::vector<double> squares(n, 0.0);
  double error = 0.0;
  for (int t = 0; t < trials; ++t) {
    const auto y =
        round_trip<double>(codec, x, {.round = static_cast<std::uint64_t>(t), .worker = 1});
    for (std::size_t i = 0; i < n; ++i) {
      sum[i] += y[i];
      squares[i] += y[i] * y[i];
      error += (y[i] - x[i]) * (y[i] - x[i]);
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const double mean = sum[i] / trials;
    const double variance = std::max(squares[i] / trials - mean * mean, 1e-30);
    INFO("value " << i << ": " << x[i] << ", mean of decodes " << mean);
    CHECK(std::abs(mean - x[i]) <= 5.0 * std::sqrt(variance / trials));
  }
  const double mse = error / trials;
  const double bound = codec.omega(n) * squared_norm(x);
  INFO("mean squared error " << mse << ", omega ||x||^2 " << bound);
  CHECK(mse <= 1.05 * bound);
  if (exact) {
    CHECK(mse >= 0.95 * bound);
  }
}

TEST_CASE("random-k and QSGD are unbiased and within their variance bounds") {
  const auto x = random_vector<double>(16, 6);
  // E||C(x) - x||^2 = (n / k - 1) ||x||^2 exactly for scaled random-k.
  check_unbiased(compress::RandomK{.k = 4, .seed = 1}, x, 40000, true);
  check_unbiased(compress::Qsgd{.levels = 2, .seed = 2}, x, 40000, false);
  check_unbiased(compress::Qsgd{.levels = 1, .seed = 3}, x, 40000, false);
  CHECK(compress::Qsgd{.levels = 2}.omega(16) == 2.0);  // min(16 / 4, 4 / 2)
}

TEST_CASE("PowerSGD is exact on matrices of rank at most r") {
  // M = sum of r outer products, 12 x 9, flattened row-major (n = 108, rows = 12).
  for (std::size_t r = 1; r <= 3; ++r) {
    const std::size_t m = 12;
    const std::size_t c = 9;
    const auto u = random_vector<double>(m * r, 10 + r);
    const auto v = random_vector<double>(c * r, 20 + r);
    std::vector<double> x(m * c, 0.0);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < c; ++j) {
        for (std::size_t l = 0; l < r; ++l) {
          x[i * c + j] += u[i * r + l] * v[j * r + l];
        }
      }
    }
    compress::PowerSgd codec{.rank = r, .rows = m, .seed = 5};
    const auto y = round_trip<double>(codec, x);
    const double scale = std::sqrt(squared_norm(x));
    for (std::size_t i = 0; i < x.size(); ++i) {
      REQUIRE(std::abs(y[i] - x[i]) <= 1e-12 * scale);
    }
    // A rank-r + 1 matrix is not: the rank-r codec leaves an error.
    compress::PowerSgd lower{.rank = r, .rows = m, .seed = 5};
    std::vector<double> more = x;
    const auto w = random_vector<double>(m + c, 30 + r);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < c; ++j) {
        more[i * c + j] += w[i] * w[m + j];
      }
    }
    const auto z = round_trip<double>(lower, more);
    double error = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      error += (z[i] - more[i]) * (z[i] - more[i]);
    }
    CHECK(error > 1e-6 * squared_norm(more));
  }
}

TEST_CASE("error feedback keeps x - lr * e = x0 - lr * sum of the gradients") {
  // SGD on f(x) = 0.5 ||x - b||^2 with top-k 10% and error feedback, in float.
  const std::size_t n = 200;
  const auto b = random_vector<float>(n, 7);
  std::vector<float> x(n, 0.0F);
  std::vector<double> reference(n, 0.0);  // x0 - lr * sum of g, in double
  const float lr = 0.1F;
  compress::Sender<float, compress::TopK> sender(
      compress::TopK{.fraction = 0.1}, {.feedback = compress::Feedback::error_feedback}, n);
  compress::Receiver<float, compress::TopK> receiver(compress::TopK{.fraction = 0.1}, {}, n);
  compress::Payload p;
  std::vector<float> g(n);
  std::vector<float> applied(n);
  for (std::uint64_t t = 0; t < 300; ++t) {
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = x[i] - b[i];
      reference[i] -= static_cast<double>(lr) * g[i];
    }
    sender.send(std::span<const float>(g), {.round = t}, p);
    std::fill(applied.begin(), applied.end(), 0.0F);
    receiver.add(std::span<const std::byte>(p), {.round = t}, std::span<float>(applied));
    for (std::size_t i = 0; i < n; ++i) {
      x[i] -= lr * applied[i];
    }
  }
  const auto e = sender.state();
  for (std::size_t i = 0; i < n; ++i) {
    const double invariant = x[i] - static_cast<double>(lr) * e[i];
    REQUIRE(std::abs(invariant - reference[i]) <= 1e-5 * (1.0 + std::abs(reference[i])));
  }
  // And it converged to b, which top-k without the memory cannot be relied on to do.
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(std::abs(x[i] - b[i]) < 1e-3F);
  }
}

namespace {

// Rounds of compressed gradient descent on f(x) = mean_i 0.5 ||x - b_i||^2 over `workers`
// heterogeneous workers: each sends its gradient x - b_i through a Sender; the receiver sums
// the estimates (with DIANA's shifts added back), and x moves by lr times the mean. Returns ||x -
// x*|| after `rounds`.
template <class C>
double compressed_descent(C codec, compress::Memory memory, std::size_t rounds,
                          std::vector<double>* final_x = nullptr) {
  const std::size_t n = 10;
  const std::size_t workers = 4;
  std::vector<std::vector<double>> b;
  for (std::size_t i = 0; i < workers; ++i) {
    b.push_back(random_vector<double>(n, 100 + i));
    for (auto& v : b.back()) {
      v *= 10.0 * static_cast<double>(i + 1);  // heterogeneous: far-apart optima
    }
  }
  std::vector<double> optimum(n, 0.0);
  for (const auto& bi : b) {
    for (std::size_t j = 0; j < n; ++j) {
      optimum[j] += bi[j] / static_cast<double>(workers);
    }
  }
  std::vector<compress::Sender<double, C>> senders;
  for (std::size_t i = 0; i < workers; ++i) {
    senders.emplace_back(codec, memory, n);
  }
  compress::Receiver<double, C> receiver(codec, memory, n);
  std::vector<double> x(n, 0.0);
  std::vector<double> g(n);
  std::vector<double> sum(n);
  compress::Payload p;
  const double lr = 0.1;
  for (std::uint64_t t = 0; t < rounds; ++t) {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (std::size_t i = 0; i < workers; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        g[j] = x[j] - b[i][j];
      }
      const Step step{.round = t, .worker = i};
      senders[i].send(std::span<const double>(g), step, p);
      receiver.add(std::span<const std::byte>(p), step, std::span<double>(sum));
    }
    for (std::size_t j = 0; j < n; ++j) {
      x[j] -= lr * (sum[j] / static_cast<double>(workers));
    }
  }
  if (final_x != nullptr) {
    *final_x = x;
  }
  double error = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    error += (x[j] - optimum[j]) * (x[j] - optimum[j]);
  }
  return std::sqrt(error);
}

}  // namespace

TEST_CASE("DIANA with the identity codec is synchronous gradient descent") {
  std::vector<double> diana;
  std::vector<double> plain;
  compressed_descent(compress::Identity{}, {.feedback = compress::Feedback::diana, .alpha = 1.0},
                     50, &diana);
  compressed_descent(compress::Identity{}, {}, 50, &plain);
  for (std::size_t j = 0; j < plain.size(); ++j) {
    CHECK(std::abs(diana[j] - plain[j]) <= 1e-12 * (1.0 + std::abs(plain[j])));
  }
}

TEST_CASE("DIANA with random-2-of-10 converges where the same codec without the shift stalls") {
  // Each worker draws its own indices; omega = 10 / 2 - 1 = 4, so alpha <= 1 / 5.
  const compress::RandomK codec{.k = 2, .seed = 11, .shared = false};
  const double diana =
      compressed_descent(codec, {.feedback = compress::Feedback::diana, .alpha = 0.2}, 3000);
  const double unshifted =
      compressed_descent(codec, {.feedback = compress::Feedback::diana, .alpha = 0.0}, 3000);
  const double plain = compressed_descent(codec, {}, 3000);
  INFO("distance to the optimum: DIANA " << diana << ", alpha = 0 " << unshifted << ", no memory "
                                         << plain);
  CHECK(diana < 1e-10);
  CHECK(unshifted > 1e-2);
  CHECK(plain == unshifted);  // alpha = 0 keeps every shift at zero: plain compression
}

TEST_CASE("DIANA's estimate is over the workers that sent, whichever they are") {
  // Identity codec, alpha = 1: each worker's shift becomes its last gradient. Round 1: both
  // send, the mean is 20. Round 2: only worker 0 sends, 10, and the mean is its estimate, 10.
  const compress::Memory diana{.feedback = compress::Feedback::diana, .alpha = 1.0};
  std::vector<compress::Sender<double, compress::Identity>> senders;
  senders.emplace_back(compress::Identity{}, diana, 1);
  senders.emplace_back(compress::Identity{}, diana, 1);
  compress::Receiver<double, compress::Identity> receiver(compress::Identity{}, diana, 1);
  compress::Payload p;
  auto round = [&](std::uint64_t t, const std::vector<std::pair<std::size_t, double>>& sent) {
    double sum = 0.0;
    for (const auto& [worker, g] : sent) {
      const Step step{.round = t, .worker = worker};
      senders[worker].send(std::span<const double>(&g, 1), step, p);
      receiver.add(std::span<const std::byte>(p), step, std::span<double>(&sum, 1));
    }
    return sum / static_cast<double>(sent.size());
  };
  CHECK(round(0, {{0, 10.0}, {1, 30.0}}) == 20.0);
  CHECK(round(1, {{0, 10.0}}) == 10.0);
  CHECK(round(2, {{1, 34.0}}) == 34.0);
  CHECK(round(3, {{0, 12.0}, {1, 36.0}}) == 24.0);
  // The receiver's mirrors equal the senders' shifts.
  CHECK(receiver.shift(0)[0] == senders[0].state()[0]);
  CHECK(receiver.shift(1)[0] == senders[1].state()[0]);
}

TEST_CASE("the stage refuses DIANA with a biased codec or too large an alpha") {
  using Catch::Matchers::Contains;
  const compress::Memory diana{.feedback = compress::Feedback::diana, .alpha = 0.2};
  CHECK_THROWS_WITH((compress::Sender<float, compress::TopK>(compress::TopK{.k = 1}, diana, 10)),
                    Contains("DIANA needs an unbiased codec") && Contains("top-k"));
  CHECK_THROWS_WITH(
      (compress::Sender<float, compress::RandomK>(
          compress::RandomK{.k = 2}, {.feedback = compress::Feedback::diana, .alpha = 0.3}, 10)),
      Contains("alpha must be in [0, 1 / (omega + 1)] = [0, 0.2"));
  CHECK_NOTHROW(compress::Sender<float, compress::RandomK>(compress::RandomK{.k = 2}, diana, 10));
  CHECK_THROWS_WITH(compress::Qsgd{.levels = 200}.validate(), Contains("levels must be in 1..127"));
  CHECK_THROWS_WITH(compress::TopK{}.count(10), Contains("set k > 0 or a fraction in (0, 1]"));
  compress::Sender<float, compress::Identity> sender(compress::Identity{}, {}, 4);
  compress::Payload p;
  const std::vector<float> three(3, 1.0F);
  CHECK_THROWS_WITH(sender.send(std::span<const float>(three), {}, p),
                    Contains("send of 3 values, made for 4"));
  const std::vector<float> four(4, 1.0F);
  std::vector<float> decoded(3);
  CHECK_THROWS_WITH(sender.send(std::span<const float>(four), {}, p, std::span<float>(decoded)),
                    Contains("send of 3 decoded values, made for 4"));
}

TEST_CASE("decoders refuse malformed payloads with a clear error") {
  using Catch::Matchers::Contains;
  const auto x = random_vector<float>(40, 8);
  std::vector<float> out(40);
  auto refuses = [&](auto codec, compress::Payload p, const std::string& what) {
    INFO(codec.name() << ": " << what);
    CHECK_THROWS_WITH(codec.decode(std::span<const std::byte>(p), Step{}, std::span<float>(out)),
                      Contains("malformed " + codec.name() + " payload") && Contains(what));
  };
  auto check_codec = [&](auto codec) {
    compress::Payload p;
    codec.encode(std::span<const float>(x), Step{}, p);
    compress::Payload shorter(p.begin(), p.end() - 1);
    refuses(codec, shorter, "it ends after");
    compress::Payload longer = p;
    longer.push_back(std::byte{0});
    refuses(codec, longer, "left over");
    compress::Payload empty;
    refuses(codec, empty, "it ends after 0 bytes");
    compress::Payload other_kind = p;
    other_kind[0] = std::byte{99};
    refuses(codec, other_kind, "written by codec kind 99");
    compress::Payload other_scalar = p;
    other_scalar[1] = std::byte{8};
    refuses(codec, other_scalar, "8-byte scalars, expected 4");
    compress::Payload other_version = p;
    other_version[2] = std::byte{2};
    refuses(codec, other_version, "its format version is 2, this library reads 1");
    compress::Payload padded = p;
    padded[5] = std::byte{1};
    refuses(codec, padded, "padding is not zero");
    std::vector<float> fewer(39);
    CHECK_THROWS_WITH(codec.decode(std::span<const std::byte>(p), Step{}, std::span<float>(fewer)),
                      Contains("encodes 40 values, expected 39"));
  };
  check_codec(compress::Identity{});
  check_codec(compress::Fp16{});
  check_codec(compress::Bf16{});
  check_codec(compress::TopK{.k = 5});
  check_codec(compress::RandomK{.k = 5});
  check_codec(compress::Qsgd{.levels = 4});
  check_codec(compress::Sign{});
  check_codec(compress::PowerSgd{.rank = 2});

  // Codec-specific fields.
  compress::TopK top{.k = 2};
  compress::Payload p;
  top.encode(std::span<const float>(x), Step{}, p);
  const std::size_t index_at = compress::header_bytes + 8;
  compress::Payload far = p;
  const std::uint32_t beyond = 40;
  std::memcpy(far.data() + index_at, &beyond, 4);
  refuses(top, far, "out of range or not increasing");
  compress::Payload repeated = p;
  std::memcpy(repeated.data() + index_at + 4, repeated.data() + index_at, 4);
  refuses(top, repeated, "out of range or not increasing");
  compress::Payload too_many = p;
  const std::uint64_t keep = 41;
  std::memcpy(too_many.data() + compress::header_bytes, &keep, 8);
  refuses(top, too_many, "keeps 41 of 40");

  compress::Qsgd q{.levels = 4};
  q.encode(std::span<const float>(x), Step{}, p);
  compress::Payload level = p;
  level[compress::header_bytes + 4] = std::byte{5};
  refuses(q, level, "level 5 at 0 is beyond 4");
  compress::Payload nan_norm = p;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_norm.data() + compress::header_bytes, &nan, 4);
  refuses(q, nan_norm, "its norm is nan");

  compress::Sign s;
  std::vector<float> odd(37, 1.0F);
  std::vector<float> odd_out(37);
  s.encode(std::span<const float>(odd), Step{}, p);
  p.back() = std::byte{0x80};
  CHECK_THROWS_WITH(s.decode(std::span<const std::byte>(p), Step{}, std::span<float>(odd_out)),
                    Contains("bits are set past the last value"));

  compress::RandomK r{.k = 5};
  r.encode(std::span<const float>(x), Step{}, p);
  refuses(compress::RandomK{.k = 6}, p, "keeps 5 values, this codec 6 of 40");

  compress::PowerSgd power{.rank = 2};
  power.encode(std::span<const float>(x), Step{}, p);
  compress::Payload huge = p;
  const std::uint64_t rank = 1000;
  std::memcpy(huge.data() + compress::header_bytes + 8, &rank, 8);
  refuses(power, huge, "is not this codec's for 40 values");
}

TEST_CASE("codecs stay finite and agree at the edges of the float range") {
  // QSGD of a vector whose norm is below 1e-37 (s / ||x|| overflows a float): finite levels,
  // zeros stay zero, and the signs are kept.
  std::vector<float> tiny(64, 0.0F);
  tiny[0] = 1e-38F;
  tiny[5] = -2e-38F;
  compress::Qsgd q{.levels = 8, .seed = 1};
  const auto y = round_trip<float>(q, tiny);
  for (std::size_t i = 0; i < tiny.size(); ++i) {
    INFO("value " << i);
    CHECK(std::isfinite(y[i]));
    if (tiny[i] == 0.0F) {
      CHECK(y[i] == 0.0F);
    }
  }
  CHECK(y[0] >= 0.0F);
  CHECK(y[5] <= 0.0F);
  // A norm beyond float's range is sent as its largest value, decodable.
  std::vector<float> huge(4, 3e38F);
  const auto z = round_trip<float>(q, huge);
  for (const float v : z) {
    CHECK(std::isfinite(v));
  }
  // Sign's mean magnitude of values near float's largest stays finite.
  compress::Sign sign;
  std::vector<float> big(300, 3e38F);
  const auto b = round_trip<float>(sign, big);
  CHECK(std::isfinite(b[0]));
  CHECK(b[0] == Approx(3e38F).epsilon(1e-6));
  // fp16 keeps a NaN's top payload bits and makes it quiet, one way and back.
  CHECK(compress::to_fp16(std::bit_cast<float>(0x7fffffffU)) == 0x7fffU);
  CHECK(std::bit_cast<std::uint32_t>(compress::from_fp16(0x7c01U)) == 0x7fc02000U);
}

TEST_CASE("PowerSGD refuses more rows than values and a rank above the matrix's side") {
  using Catch::Matchers::Contains;
  const compress::Memory none{};
  CHECK_THROWS_WITH((compress::Sender<double, compress::PowerSgd>(
                        compress::PowerSgd{.rank = 1, .rows = 1000}, none, 100)),
                    Contains("PowerSgd: rows 1000 exceeds the 100 values"));
  CHECK_THROWS_WITH(
      (compress::Sender<double, compress::PowerSgd>(compress::PowerSgd{.rank = 11}, none, 100)),
      Contains("PowerSgd: rank 11 exceeds the smaller side of 10 x 10"));
  CHECK_NOTHROW(
      compress::Sender<double, compress::PowerSgd>(compress::PowerSgd{.rank = 10}, none, 100));
}

TEST_CASE("a PowerSGD payload of another shape or rank is refused") {
  using Catch::Matchers::Contains;
  const auto x = random_vector<float>(40, 9);
  std::vector<float> out(40);
  compress::PowerSgd power{.rank = 2};
  compress::Payload p;
  power.encode(std::span<const float>(x), Step{}, p);
  CHECK_THROWS_WITH(compress::PowerSgd{.rank = 3}.decode(std::span<const std::byte>(p), Step{},
                                                         std::span<float>(out)),
                    Contains("is not this codec's for 40 values (7 rows, rank 3)"));
  compress::Payload rows = p;
  const std::uint64_t m = 39;  // a shape that fits the values, but not the codec's
  std::memcpy(rows.data() + compress::header_bytes, &m, 8);
  CHECK_THROWS_WITH(power.decode(std::span<const std::byte>(rows), Step{}, std::span<float>(out)),
                    Contains("(39 rows, rank 2) is not this codec's"));
}

TEST_CASE("a stage's description and fingerprint tell every option apart") {
  using compress::Config;
  using compress::Feedback;
  const std::vector<Config> configs{
      {.codec = compress::Identity{}},
      {.codec = compress::Fp16{}},
      {.codec = compress::Bf16{}},
      {.codec = compress::Sign{}},
      {.codec = compress::Sign{}, .memory = {.feedback = Feedback::error_feedback}},
      {.codec = compress::TopK{.k = 3}},
      {.codec = compress::TopK{.fraction = 0.05}},
      {.codec = compress::RandomK{.k = 3}},
      {.codec = compress::RandomK{.k = 3, .seed = 1}},
      {.codec = compress::RandomK{.k = 3, .shared = false}},
      {.codec = compress::RandomK{.k = 3, .scaled = false}},
      {.codec = compress::Qsgd{.levels = 4}},
      {.codec = compress::Qsgd{.levels = 4, .seed = 2}},
      {.codec = compress::Qsgd{.levels = 4}, .memory = {.feedback = Feedback::diana, .alpha = 0.1}},
      {.codec = compress::Qsgd{.levels = 4}, .memory = {.feedback = Feedback::diana, .alpha = 0.2}},
      {.codec = compress::PowerSgd{.rank = 2}},
      {.codec = compress::PowerSgd{.rank = 2, .rows = 4}},
  };
  CHECK(compress::describe(configs[6]) == "top-k(k=0, fraction=0.05), no memory");
  CHECK(compress::describe(configs[13]) == "qsgd(levels=4, seed=0), diana(alpha=0.1)");
  CHECK(compress::fingerprint(std::nullopt) == 0);
  for (std::size_t i = 0; i < configs.size(); ++i) {
    CHECK(compress::fingerprint(configs[i]) != 0);
    CHECK(compress::fingerprint(configs[i]) == compress::fingerprint(Config(configs[i])));
    for (std::size_t j = 0; j < i; ++j) {
      INFO(compress::describe(configs[i]) << " against " << compress::describe(configs[j]));
      CHECK(compress::describe(configs[i]) != compress::describe(configs[j]));
      CHECK(compress::fingerprint(configs[i]) != compress::fingerprint(configs[j]));
    }
  }
}

TEMPLATE_TEST_CASE("a message beyond the caches is written as one of the cache's size is", "",
                   compress::Identity, compress::Fp16, compress::Bf16) {
  // Outputs of compress::detail::stream_threshold bytes or more go out with streaming
  // stores, in whole lines; the rest, and every smaller output, as usual. The same values,
  // at any alignment of the output: each message of 1000 values of the large one, encoded and
  // decoded alone, gives the same bytes and the same values.
  const std::size_t n = compress::detail::stream_threshold / 2 + 1237;
  std::vector<float> x(n);
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0F, 100.0F);
  for (float& v : x) {
    v = normal(rng);
  }
  TestType codec;
  compress::Payload whole;
  codec.encode(std::span<const float>(x), {}, whole);
  // The decoded values (n floats) stream; so does the payload's body.
  REQUIRE(compress::detail::streams(n * sizeof(float)));
  REQUIRE(compress::detail::streams(whole.size() - compress::header_bytes));
  for (const std::size_t shift : {0, 1, 3}) {  // the output moved by 0, 4 and 12 bytes
    std::vector<float> storage(n + shift);
    const std::span<float> out(storage.data() + shift, n);
    codec.decode(std::span<const std::byte>(whole), {}, out);
    const std::size_t width = whole.size() - compress::header_bytes == n * 4 ? 4 : 2;
    compress::Payload part;
    std::vector<float> back(1000);
    bool same = true;
    for (std::size_t begin = 0; begin < n && same; begin += 1000) {
      const std::size_t m = std::min<std::size_t>(1000, n - begin);
      codec.encode(std::span<const float>(x).subspan(begin, m), {}, part);
      same = std::memcmp(part.data() + compress::header_bytes,
                         whole.data() + compress::header_bytes + begin * width, m * width) == 0;
      codec.decode(std::span<const std::byte>(part), {}, std::span<float>(back.data(), m));
      same = same && std::memcmp(back.data(), out.data() + begin, m * sizeof(float)) == 0;
    }
    INFO("output shifted by " << shift << " floats");
    CHECK(same);
  }
}
