// The codecs of the compression stage: what a worker's gradient (or model delta) becomes on
// the wire, and back. Each one encodes n values into a Payload and decodes a Payload into n
// values, refusing a malformed one with std::invalid_argument. Unbiased codecs
// (E[decode(encode(x))] = x) give their variance factor omega(n): E||C(x) - x||^2 <= omega
// ||x||^2, which DIANA's step alpha <= 1 / (omega + 1) needs.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncopt/compress/payload.hpp>
#include <asyncopt/core/random.hpp>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace asyncopt::compress {

/// A codec for Scalar: `encode(x, step, payload)` (it may keep state between calls: PowerSGD's
/// warm start), `decode(bytes, step, out)` with out.size() = n (it writes every element),
/// `name()`, `validate()` (throws std::invalid_argument for bad options), and `omega(n)`: the
/// variance factor of an unbiased codec, infinity for a biased one.
template <class C, class Scalar>
concept Codec = requires(C& c, const C& cc, std::span<const Scalar> x, Step step, Payload& p,
                         std::span<const std::byte> bytes, std::span<Scalar> out, std::size_t n) {
  c.encode(x, step, p);
  cc.decode(bytes, step, out);
  cc.validate();
  { cc.omega(n) } -> std::convertible_to<double>;
  { cc.name() } -> std::convertible_to<std::string>;
};

namespace detail {

[[noreturn]] inline void bad_option(const std::string& what) {
  throw std::invalid_argument("asyncopt: " + what);
}

// The number of entries a k-of-n codec keeps: `k` if set, else ceil(fraction * n), at least
// 1 (for n > 0) and at most n.
inline std::size_t keep_count(const char* codec, std::size_t k, double fraction, std::size_t n) {
  if (k == 0 && !(fraction > 0.0 && fraction <= 1.0)) {
    bad_option(std::string(codec) + ": set k > 0 or a fraction in (0, 1], got k = 0 and fraction " +
               std::to_string(fraction));
  }
  std::size_t keep =
      k != 0 ? k : static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(n)));
  keep = std::max<std::size_t>(keep, n > 0 ? 1 : 0);
  return std::min(keep, n);
}

inline void check_index_width(const char* codec, std::size_t n) {
  if (n > std::numeric_limits<std::uint32_t>::max()) {
    bad_option(std::string(codec) + ": " + std::to_string(n) + " values do not fit 32-bit indices");
  }
}

// A seed for one step: mixes the codec's seed with the round and, unless shared, the worker.
inline std::uint64_t step_seed(std::uint64_t seed, Step step, bool shared) noexcept {
  std::uint64_t state = seed;
  std::uint64_t mixed = splitmix64(state) ^ step.round;
  mixed = splitmix64(mixed);
  if (!shared) {
    mixed ^= step.worker + 0x632be59bd9b4e019ULL;
    mixed = splitmix64(mixed);
  }
  return mixed;
}

// Four xoshiro256** generators side by side (Blackman and Vigna 2018), each seeded from `seed`
// and its number: 256 random bits per call, in a shape a compiler vectorizes.
class Streams4 {
 public:
  explicit Streams4(std::uint64_t seed) noexcept {
    for (std::size_t k = 0; k < 4; ++k) {
      std::uint64_t state = seed ^ (0x9e3779b97f4a7c15ULL * (k + 1));
      for (auto& word : s_) {
        word[k] = splitmix64(state);
      }
    }
  }
  /// The state, word by word, each word's four streams side by side (for a vector
  /// implementation of next(), which must then give the same bits).
  [[nodiscard]] std::array<std::array<std::uint64_t, 4>, 4>& state() noexcept { return s_; }

  std::array<std::uint64_t, 4> next() noexcept {
    std::array<std::uint64_t, 4> result{};
    for (std::size_t k = 0; k < 4; ++k) {
      result[k] = rotl(s_[1][k] * 5, 7) * 9;
      const std::uint64_t t = s_[1][k] << 17U;
      s_[2][k] ^= s_[0][k];
      s_[3][k] ^= s_[1][k];
      s_[1][k] ^= s_[2][k];
      s_[0][k] ^= s_[3][k];
      s_[2][k] ^= t;
      s_[3][k] = rotl(s_[3][k], 45);
    }
    return result;
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::array<std::array<std::uint64_t, 4>, 4> s_{};  // s_[word][stream]
};

// Values converted a block at a time through a local buffer.
inline constexpr std::size_t block = 256;

// The value of x as a float rounded to nearest even (double goes through float first).
template <class Scalar>
float as_float(Scalar x) noexcept {
  return static_cast<float>(x);
}

}  // namespace detail

/// IEEE binary16 from a float, rounded to nearest even; overflow gives infinity, NaN stays a
/// (quiet) NaN.
[[nodiscard]] inline std::uint16_t to_fp16(float f) noexcept {
  const auto x = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16U) & 0x8000U);
  const std::uint32_t mag = x & 0x7fffffffU;
  if (mag >= 0x7f800000U) {  // infinity, or NaN: quiet, its payload's top bits kept (as F16C)
    return static_cast<std::uint16_t>(sign | 0x7c00U |
                                      (mag > 0x7f800000U ? 0x200U | ((mag >> 13U) & 0x3ffU) : 0U));
  }
  if (mag >= 0x477ff000U) {  // 65520 and above round to infinity
    return static_cast<std::uint16_t>(sign | 0x7c00U);
  }
  if (mag < 0x38800000U) {  // below 2^-14: a subnormal half (units of 2^-24) or zero
    const float scaled = std::bit_cast<float>(mag) * 16777216.0F;  // exact
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(scaled)));
  }
  std::uint32_t m = mag - (112U << 23U);  // exponent bias 127 -> 15
  m += 0xfffU + ((m >> 13U) & 1U);        // round the 13 dropped bits to nearest even
  return static_cast<std::uint16_t>(sign | (m >> 13U));
}

/// The float a binary16 value stands for (exact).
[[nodiscard]] inline float from_fp16(std::uint16_t h) noexcept {
  const std::uint32_t sign = (static_cast<std::uint32_t>(h) & 0x8000U) << 16U;
  const std::uint32_t exponent = (h >> 10U) & 0x1fU;
  const std::uint32_t mantissa = h & 0x3ffU;
  if (exponent == 0) {
    const float value = static_cast<float>(mantissa) * 0x1.0p-24F;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(value));
  }
  if (exponent == 31) {  // infinity, or NaN made quiet (as F16C)
    return std::bit_cast<float>(sign | 0x7f800000U | (mantissa << 13U) |
                                (mantissa != 0 ? 0x400000U : 0U));
  }
  return std::bit_cast<float>(sign | ((exponent + 112U) << 23U) | (mantissa << 13U));
}

/// bfloat16 from a float, rounded to nearest even; NaN stays a (quiet) NaN.
[[nodiscard]] inline std::uint16_t to_bf16(float f) noexcept {
  const auto x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffU) > 0x7f800000U) {
    return static_cast<std::uint16_t>((x >> 16U) | 0x40U);
  }
  return static_cast<std::uint16_t>((x + 0x7fffU + ((x >> 16U) & 1U)) >> 16U);
}

/// The float a bfloat16 value stands for (exact).
[[nodiscard]] inline float from_bf16(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16U);
}

/// No compression: the values as they are. Unbiased with omega = 0.
struct Identity {
  /// Unbiased and exact: 0.
  [[nodiscard]] static double omega(std::size_t /*n*/) noexcept { return 0.0; }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "identity"; }
  /// Nothing to check: no options.
  static void validate() noexcept {}

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step /*step*/, Payload& out) const {
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::identity, x.size());
    w.put_all(x);
  }
  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    compress::detail::Reader r(in, "identity");
    r.header<Scalar>(Kind::identity, out.size());
    r.get_all(out);
    r.finish();
  }
};

/// Two bytes per value: IEEE binary16 (`Fp16`) or bfloat16 (`Bf16`), rounded to nearest even
/// (a double is rounded to float first). Biased by rounding only. A finite value beyond the
/// format's range (65504 for binary16) is sent as the largest finite value of its sign, so a
/// message never turns a finite gradient into an infinite one; error feedback then carries
/// the rest.
template <Kind K>
struct HalfPrecision {
  static_assert(K == Kind::fp16 || K == Kind::bf16);
  /// Biased: infinity.
  [[nodiscard]] static double omega(std::size_t /*n*/) noexcept {
    return std::numeric_limits<double>::infinity();
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return K == Kind::fp16 ? "fp16" : "bf16"; }
  /// Nothing to check: no options.
  static void validate() noexcept {}

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step /*step*/, Payload& out) const {
    compress::detail::Writer w(out);
    w.header<Scalar>(K, x.size());
    std::byte* const base = w.reserve<std::uint16_t>(x.size()).base;
    // A block at a time through a local buffer, so the conversion vectorizes.
    detail::write_blocks<std::uint16_t, detail::block>(
        base, x.size(), [&](std::size_t begin, std::size_t m, std::uint16_t* into) {
          convert_block(x.data() + begin, m, into);
        });
  }
  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    compress::detail::Reader r(in, name());
    r.header<Scalar>(K, out.size());
    const auto bytes = r.values<std::uint16_t>(out.size());
    r.finish();
    std::array<std::uint16_t, detail::block> buffer{};
    auto expand = [&](std::size_t begin, std::size_t m, Scalar* into) {
      std::memcpy(buffer.data(), bytes.data() + begin * sizeof(std::uint16_t),
                  m * sizeof(std::uint16_t));
      expand_block(buffer.data(), m, into);
    };
    if (detail::streams(out.size_bytes())) {  // through a local buffer, then streamed out
      detail::write_blocks<Scalar, detail::block>(
          reinterpret_cast<std::byte*>(out.data()),  // NOLINT
          out.size(), expand);
      return;
    }
    for (std::size_t begin = 0; begin < out.size(); begin += buffer.size()) {
      expand(begin, std::min(buffer.size(), out.size() - begin), out.data() + begin);
    }
  }

 private:
  // The largest finite magnitude of the format, and its infinity, as bits.
  static constexpr std::uint32_t largest = K == Kind::fp16 ? 0x7bffU : 0x7f7fU;
  static constexpr std::uint32_t infinity = K == Kind::fp16 ? 0x7c00U : 0x7f80U;

  template <class Scalar>
  static void convert_block(const Scalar* x, std::size_t m, std::uint16_t* h) noexcept {
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (K == Kind::fp16 && std::is_same_v<Scalar, float>) {
      // The hardware conversion rounds to nearest even; finite values are clamped first.
      const __m256 top = _mm256_set1_ps(65504.0F);
      const __m256 bottom = _mm256_set1_ps(-65504.0F);
      const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
      const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      std::size_t i = 0;
      for (; i + 8 <= m; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        const __m256 finite = _mm256_cmp_ps(_mm256_and_ps(v, magnitude), inf, _CMP_LT_OQ);
        v = _mm256_blendv_ps(v, _mm256_min_ps(_mm256_max_ps(v, bottom), top), finite);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),  // NOLINT: intrinsic's pointer type
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
      }
      for (; i < m; ++i) {
        h[i] = one(x[i]);
      }
      return;
    }
#endif
    for (std::size_t i = 0; i < m; ++i) {
      h[i] = one(x[i]);
    }
  }

  template <class Scalar>
  static void expand_block(const std::uint16_t* h, std::size_t m, Scalar* out) noexcept {
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (K == Kind::fp16 && std::is_same_v<Scalar, float>) {
      std::size_t i = 0;
      for (; i + 8 <= m; i += 8) {
        _mm256_storeu_ps(
            out + i,
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));  // NOLINT
      }
      for (; i < m; ++i) {
        out[i] = from_fp16(h[i]);
      }
      return;
    }
#endif
    for (std::size_t i = 0; i < m; ++i) {
      out[i] = static_cast<Scalar>(K == Kind::fp16 ? from_fp16(h[i]) : from_bf16(h[i]));
    }
  }

  // One value, rounded to nearest even; a finite value beyond the range saturates.
  template <class Scalar>
  static std::uint16_t one(Scalar value) noexcept {
    const float f = detail::as_float(value);
    const std::uint32_t h = K == Kind::fp16 ? to_fp16(f) : to_bf16(f);
    const bool saturate = (h & 0x7fffU) == infinity && std::isfinite(value);
    return static_cast<std::uint16_t>(saturate ? (h & 0x8000U) | largest : h);
  }
};
using Fp16 = HalfPrecision<Kind::fp16>;
using Bf16 = HalfPrecision<Kind::bf16>;

/// The k entries largest in magnitude (ties: the lower index), sent as 32-bit indices and
/// values; the rest decode to zero. Biased (a contraction): use it with error feedback.
/// k = `k` if set, else ceil(fraction * n).
struct TopK {
  /// How many values to keep; 0: use `fraction`.
  std::size_t k = 0;
  /// The fraction of the values to keep, in (0, 1], when k = 0.
  double fraction = 0.0;

  /// Biased: infinity.
  [[nodiscard]] static double omega(std::size_t /*n*/) noexcept {
    return std::numeric_limits<double>::infinity();
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "top-k"; }
  /// Throws std::invalid_argument unless k > 0 or fraction is in (0, 1].
  void validate() const { (void)count(1); }

  /// How many entries of n it keeps.
  [[nodiscard]] std::size_t count(std::size_t n) const {
    return detail::keep_count("TopK", k, fraction, n);
  }

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step /*step*/, Payload& out) {
    detail::check_index_width("TopK", x.size());
    const std::size_t keep = count(x.size());
    order.resize(x.size());
    std::iota(order.begin(), order.end(), std::uint32_t{0});
    auto larger = [&](std::uint32_t a, std::uint32_t b) {
      const Scalar ma = std::abs(x[a]);
      const Scalar mb = std::abs(x[b]);
      return ma > mb || (ma == mb && a < b);
    };
    if (keep < x.size()) {
      std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep),
                       order.end(), larger);
    }
    std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep));
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::top_k, x.size());
    w.put(static_cast<std::uint64_t>(keep));
    w.put_all(std::span<const std::uint32_t>(order.data(), keep));
    const auto values = w.reserve<Scalar>(keep);
    for (std::size_t e = 0; e < keep; ++e) {
      values.set(e, x[order[e]]);
    }
  }

  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    compress::detail::Reader r(in, "top-k");
    r.header<Scalar>(Kind::top_k, out.size());
    const auto keep = r.get<std::uint64_t>();
    if (keep > out.size()) {
      r.fail("it keeps " + std::to_string(keep) + " of " + std::to_string(out.size()) + " values");
    }
    const auto index = r.values<std::uint32_t>(keep);
    const auto values = r.values<Scalar>(keep);
    r.finish();
    std::fill(out.begin(), out.end(), Scalar{0});
    std::uint64_t previous = 0;
    for (std::size_t e = 0; e < keep; ++e) {
      const auto i = compress::detail::load<std::uint32_t>(index, e);
      if (i >= out.size() || (e > 0 && i <= previous)) {
        r.fail("index " + std::to_string(i) + " at entry " + std::to_string(e) +
               " is out of range or not increasing");
      }
      previous = i;
      out[i] = compress::detail::load<Scalar>(values, e);
    }
  }

  /// Working memory, not an option: reused from one encode to the next.
  std::vector<std::uint32_t> order{};
};

/// k entries drawn uniformly without replacement, sent as values only: the receiver draws the
/// same indices from the seed and the round. With `shared` (the default) every worker of a
/// round draws the same indices, so their payloads can be summed as they are (one
/// all-reduce of k values); otherwise each worker draws its own. With `scaled` (the default)
/// the values are multiplied by n / k, which makes the codec unbiased with omega = n / k - 1;
/// without, it is a contraction for error feedback.
struct RandomK {
  /// How many values to keep; 0: use `fraction`.
  std::size_t k = 0;
  /// The fraction of the values to keep, in (0, 1], when k = 0.
  double fraction = 0.0;
  /// The seed the indices are drawn from, with the round (and the worker unless `shared`).
  std::uint64_t seed = 0;
  /// Whether every worker of a round draws the same indices.
  bool shared = true;
  /// Whether the kept values are multiplied by n / k (unbiased) or sent as they are.
  bool scaled = true;

  /// n / k - 1 when scaled, infinity (biased) otherwise.
  [[nodiscard]] double omega(std::size_t n) const {
    const std::size_t keep = count(n);
    if (!scaled) {
      return std::numeric_limits<double>::infinity();
    }
    return keep == 0 ? 0.0 : static_cast<double>(n) / static_cast<double>(keep) - 1.0;
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "random-k"; }
  /// Throws std::invalid_argument unless k > 0 or fraction is in (0, 1].
  void validate() const { (void)count(1); }

  /// How many entries of n it keeps.
  [[nodiscard]] std::size_t count(std::size_t n) const {
    return detail::keep_count("RandomK", k, fraction, n);
  }

  /// The indices step `step` keeps of n, increasing, into `index`.
  void indices(std::size_t n, Step step, std::vector<std::uint32_t>& index) const {
    detail::check_index_width("RandomK", n);
    const std::size_t keep = count(n);
    // Floyd's sampling into a bitmap, read back in increasing order.
    marked.assign((n + 63) / 64, 0);
    Xoshiro256 rng(detail::step_seed(seed, step, shared));
    for (std::size_t j = n - keep; j < n; ++j) {
      auto t = static_cast<std::size_t>(rng.below(j + 1));
      if ((marked[t / 64] >> (t % 64) & 1U) != 0) {
        t = j;
      }
      marked[t / 64] |= std::uint64_t{1} << (t % 64);
    }
    index.clear();
    for (std::size_t word = 0; word < marked.size(); ++word) {
      for (std::uint64_t bits = marked[word]; bits != 0; bits &= bits - 1) {
        index.push_back(static_cast<std::uint32_t>(
            word * 64 + static_cast<std::size_t>(std::countr_zero(bits))));
      }
    }
  }

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step step, Payload& out) const {
    indices(x.size(), step, index_list);
    const auto scale = factor<Scalar>(x.size());
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::random_k, x.size());
    w.put(static_cast<std::uint64_t>(index_list.size()));
    const auto values = w.reserve<Scalar>(index_list.size());
    for (std::size_t e = 0; e < index_list.size(); ++e) {
      values.set(e, scale * x[index_list[e]]);
    }
  }

  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step step, std::span<Scalar> out) const {
    compress::detail::Reader r(in, "random-k");
    r.header<Scalar>(Kind::random_k, out.size());
    const auto keep = r.get<std::uint64_t>();
    if (keep != count(out.size())) {
      r.fail("it keeps " + std::to_string(keep) + " values, this codec " +
             std::to_string(count(out.size())) + " of " + std::to_string(out.size()));
    }
    const auto values = r.values<Scalar>(keep);
    r.finish();
    indices(out.size(), step, index_list);
    std::fill(out.begin(), out.end(), Scalar{0});
    for (std::size_t e = 0; e < index_list.size(); ++e) {
      out[index_list[e]] = compress::detail::load<Scalar>(values, e);
    }
  }

  /// Working memory, not an option: reused from one call to the next.
  mutable std::vector<std::uint64_t> marked{};
  /// Working memory, not an option.
  mutable std::vector<std::uint32_t> index_list{};

 private:
  template <class Scalar>
  Scalar factor(std::size_t n) const {
    const std::size_t keep = count(n);
    return scaled && keep > 0
               ? static_cast<Scalar>(static_cast<double>(n) / static_cast<double>(keep))
               : Scalar{1};
  }
};

/// QSGD (Alistarh et al. 2017) with s levels: ||x||_2, then per value its sign and a level in
/// 0..s chosen by unbiased stochastic rounding of s |x_i| / ||x||, one byte per value
/// (s <= 127). Unbiased with omega = min(n / s^2, sqrt(n) / s). The rounding draws from the
/// seed, the round and the worker.
struct Qsgd {
  /// s, the number of levels of a value's magnitude relative to the norm: 1..127.
  unsigned levels = 8;
  /// The seed the rounding draws from, with the round and the worker.
  std::uint64_t seed = 0;

  /// min(n / s^2, sqrt(n) / s) (Alistarh et al. 2017, Lemma 3.1).
  [[nodiscard]] double omega(std::size_t n) const {
    const double s = levels;
    const auto d = static_cast<double>(n);
    return std::min(d / (s * s), std::sqrt(d) / s);
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "qsgd"; }

  /// Throws std::invalid_argument unless levels is in 1..127.
  void validate() const {
    if (levels < 1 || levels > 127) {
      detail::bad_option("Qsgd: levels must be in 1..127, got " + std::to_string(levels));
    }
  }

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step step, Payload& out) const {
    validate();
    const std::size_t n = x.size();
    // ||x||^2 summed in 16 double lanes (value i in lane i % 16), added in a fixed tree: four
    // independent chains of vector additions.
    std::array<double, 16> lanes{};
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (std::size_t j = 0; j < 16; ++j) {
        const auto v = static_cast<double>(x[i + j]);
        lanes[j] += v * v;
      }
    }
    for (; i < n; ++i) {
      const auto v = static_cast<double>(x[i]);
      lanes[i % 16] += v * v;
    }
    for (std::size_t width = 8; width >= 1; width /= 2) {
      for (std::size_t j = 0; j < width; ++j) {
        lanes[j] += lanes[j + width];
      }
    }
    const double norm = std::sqrt(lanes[0]);
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::qsgd, n);
    // A norm beyond Scalar's range is sent as its largest finite value (finite in, finite out).
    w.put(static_cast<Scalar>(
        std::min(norm, static_cast<double>(std::numeric_limits<Scalar>::max()))));
    std::byte* const base = w.reserve<std::int8_t>(n).base;
    // s |x_i| / ||x|| = l + p rounds up to l + 1 with probability p: a 24-bit uniform draw
    // below p. Two sets of four xoshiro256** streams side by side give 16 draws per step
    // (value e of a group of 16 takes set e / 8, stream e % 4, half (e % 8) / 4), in float:
    // the loops vectorize, the two sets' chains overlap, and every build draws the same.
    const std::uint64_t mixed = detail::step_seed(seed, step, false);
    detail::Streams4 first(mixed);
    detail::Streams4 second(~mixed);
    // s / ||x|| in float, unless it overflows (a norm below about 1e-37): then each level is
    // formed in double, value by value, with no vector path.
    const double per_norm = norm > 0.0 ? static_cast<double>(levels) / norm : 0.0;
    const bool tiny = per_norm > static_cast<double>(std::numeric_limits<float>::max());
    const auto to_level = static_cast<float>(tiny ? 0.0 : per_norm);
    const auto top = static_cast<float>(levels);
    std::array<std::int8_t, detail::block> buffer{};
    for (std::size_t begin = 0; begin < n; begin += detail::block) {
      const std::size_t m = std::min(detail::block, n - begin);
      std::size_t j = 0;
#if defined(__AVX2__)
      if constexpr (std::is_same_v<Scalar, float>) {
        if (!tiny) {
          j = quantize_avx2(x.data() + begin, m, to_level, top, first, second, buffer.data());
        }
      }
#endif
      for (; j < m; j += 16) {
        const std::array<std::array<std::uint64_t, 4>, 2> bits = {first.next(), second.next()};
        const std::size_t group = std::min<std::size_t>(16, m - j);
        std::array<float, 16> v{};
        for (std::size_t e = 0; e < group; ++e) {
          v[e] = static_cast<float>(x[begin + j + e]);
        }
        std::array<std::int8_t, 16> q{};
        for (std::size_t e = 0; e < 16; ++e) {
          const auto draw = static_cast<std::uint32_t>(bits[e / 8][e % 4] >> (32 * ((e % 8) / 4)));
          const float u = static_cast<float>(draw >> 8U) * 0x1.0p-24F;
          const float r =
              tiny ? static_cast<float>(std::abs(static_cast<double>(
                                            x[begin + j + std::min<std::size_t>(e, group - 1)])) /
                                        norm * static_cast<double>(levels))
                   : std::abs(v[e]) * to_level;
          const float floor = std::floor(r);
          const float l = std::min(floor + (u < r - floor ? 1.0F : 0.0F), top);
          const auto magnitude = static_cast<int>(l);
          q[e] = static_cast<std::int8_t>(std::signbit(v[e]) ? -magnitude : magnitude);
        }
        std::memcpy(buffer.data() + j, q.data(), group);
      }
      std::memcpy(base + begin, buffer.data(), m);
    }
  }

#if defined(__AVX2__)
  // One xoshiro256** step of four streams side by side: their outputs.
  struct Lanes {
    __m256i s0, s1, s2, s3;
    explicit Lanes(std::array<std::array<std::uint64_t, 4>, 4>& st) noexcept
        : s0(load(st[0])), s1(load(st[1])), s2(load(st[2])), s3(load(st[3])) {}
    void store(std::array<std::array<std::uint64_t, 4>, 4>& st) const noexcept {
      put(st[0], s0);
      put(st[1], s1);
      put(st[2], s2);
      put(st[3], s3);
    }
    __m256i next() noexcept {
      const __m256i times5 = _mm256_add_epi64(_mm256_slli_epi64(s1, 2), s1);
      const __m256i rotated = rotl(times5, 7);
      const __m256i result = _mm256_add_epi64(_mm256_slli_epi64(rotated, 3), rotated);
      const __m256i t = _mm256_slli_epi64(s1, 17);
      s2 = _mm256_xor_si256(s2, s0);
      s3 = _mm256_xor_si256(s3, s1);
      s1 = _mm256_xor_si256(s1, s2);
      s0 = _mm256_xor_si256(s0, s3);
      s2 = _mm256_xor_si256(s2, t);
      s3 = rotl(s3, 45);
      return result;
    }
    static __m256i rotl(__m256i v, int k) noexcept {
      return _mm256_or_si256(_mm256_slli_epi64(v, k), _mm256_srli_epi64(v, 64 - k));
    }
    static __m256i load(const std::array<std::uint64_t, 4>& w) noexcept {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.data()));  // NOLINT
    }
    static void put(std::array<std::uint64_t, 4>& w, __m256i v) noexcept {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.data()), v);  // NOLINT
    }
  };

  // 8 levels from 8 values and one step's 256 bits of one set, as 8 32-bit integers.
  static __m256i levels8(const float* x, __m256i bits, __m256 scale, __m256 most) noexcept {
    const __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256 one = _mm256_set1_ps(1.0F);
    const __m256 unit = _mm256_set1_ps(0x1.0p-24F);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i draw = _mm256_permutevar8x32_epi32(bits, halves);
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(draw, 8)), unit);
    const __m256 v = _mm256_loadu_ps(x);
    const __m256 r = _mm256_mul_ps(_mm256_and_ps(v, magnitude), scale);
    const __m256 floor = _mm256_floor_ps(r);
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(u, _mm256_sub_ps(r, floor), _CMP_LT_OQ), one);
    const __m256i level = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_add_ps(floor, up), most));
    const __m256i negative = _mm256_srai_epi32(_mm256_castps_si256(v), 31);
    return _mm256_sub_epi32(_mm256_xor_si256(level, negative), negative);
  }

  // The groups of 16 whole in [0, m) of the loop in encode(), with the same draws and the same
  // float operations, 16 at a time; returns where it stopped.
  static std::size_t quantize_avx2(const float* x, std::size_t m, float to_level, float top,
                                   detail::Streams4& first, detail::Streams4& second,
                                   std::int8_t* out) noexcept {
    Lanes a(first.state());
    Lanes b(second.state());
    const __m256 scale = _mm256_set1_ps(to_level);
    const __m256 most = _mm256_set1_ps(top);
    std::size_t j = 0;
    for (; j + 16 <= m; j += 16) {
      const __m256i qa = levels8(x + j, a.next(), scale, most);
      const __m256i qb = levels8(x + j + 8, b.next(), scale, most);
      const __m128i wa =
          _mm_packs_epi32(_mm256_castsi256_si128(qa), _mm256_extracti128_si256(qa, 1));
      const __m128i wb =
          _mm_packs_epi32(_mm256_castsi256_si128(qb), _mm256_extracti128_si256(qb, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_packs_epi16(wa, wb));  // NOLINT
    }
    a.store(first.state());
    b.store(second.state());
    return j;
  }
#endif

  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    validate();
    compress::detail::Reader r(in, "qsgd");
    r.header<Scalar>(Kind::qsgd, out.size());
    const auto norm = r.get<Scalar>();
    if (!(std::isfinite(norm) && norm >= Scalar{0})) {
      r.fail("its norm is " + std::to_string(static_cast<double>(norm)));
    }
    const auto level = r.bytes(out.size());
    r.finish();
    const Scalar unit = norm / static_cast<Scalar>(levels);
    const auto s = static_cast<int>(levels);
    std::array<std::int8_t, detail::block> buffer{};
    for (std::size_t begin = 0; begin < out.size(); begin += detail::block) {
      const std::size_t m = std::min(detail::block, out.size() - begin);
      std::memcpy(buffer.data(), level.data() + begin, m);
      int beyond = 0;  // checked for the block at once, so the loops vectorize
      std::size_t j = 0;
#if defined(__AVX2__)
      if constexpr (std::is_same_v<Scalar, float>) {
        const __m256i top = _mm256_set1_epi32(s);
        const __m256i bottom = _mm256_set1_epi32(-s);
        const __m256 scale = _mm256_set1_ps(unit);
        __m256i bad = _mm256_setzero_si256();
        for (; j + 8 <= m; j += 8) {
          const __m256i l = _mm256_cvtepi8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(buffer.data() + j)));  // NOLINT
          bad = _mm256_or_si256(
              bad, _mm256_or_si256(_mm256_cmpgt_epi32(l, top), _mm256_cmpgt_epi32(bottom, l)));
          _mm256_storeu_ps(out.data() + begin + j, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(l)));
        }
        beyond = _mm256_testz_si256(bad, bad) == 0 ? 1 : 0;
      }
#endif
      for (; j < m; ++j) {
        const int l = buffer[j];  // NOLINT(bugprone-signed-char-misuse): a signed level
        beyond |= static_cast<int>(l > s || l < -s);
        out[begin + j] = unit * static_cast<Scalar>(l);
      }
      if (beyond != 0) {
        for (std::size_t j = 0; j < m; ++j) {
          if (buffer[j] > s || buffer[j] < -s) {
            r.fail("level " + std::to_string(buffer[j]) + " at " + std::to_string(begin + j) +
                   " is beyond " + std::to_string(s));
          }
        }
      }
    }
  }
};

/// Scaled sign, one bit per value (Bernstein et al. 2018; Karimireddy et al. 2019): every value
/// decodes to +-||x||_1 / n with the sign bit of x_i (+0 positive, -0 negative). Biased: use
/// it with error feedback.
struct Sign {
  /// Biased: infinity.
  [[nodiscard]] static double omega(std::size_t /*n*/) noexcept {
    return std::numeric_limits<double>::infinity();
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "sign"; }
  /// Nothing to check: no options.
  static void validate() noexcept {}

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step /*step*/, Payload& out) const {
    const std::size_t n = x.size();
    const std::size_t nbytes = (n + 7) / 8;
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::sign, n);
    // The scale, then the bits, filled in one pass over x.
    std::byte* const at = w.reserve<std::byte>(sizeof(Scalar) + nbytes).base;
    std::byte* const bits = at + sizeof(Scalar);
    // |x| summed in double, in blocks of 256 values, each in 8 lanes (value i in lane i % 8)
    // added in a fixed tree: the same bits with and without vector instructions.
    double l1 = 0.0;
    for (std::size_t begin = 0; begin < n; begin += detail::block) {
      const std::size_t end = std::min(n, begin + detail::block);
      std::array<double, 8> lanes{};  // in double: no block of finite values overflows
      std::size_t i = begin;
#if defined(__AVX__)
      if constexpr (std::is_same_v<Scalar, float>) {
        const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        __m256d low = _mm256_setzero_pd();
        __m256d high = _mm256_setzero_pd();
        for (; i + 8 <= end; i += 8) {
          const __m256 v = _mm256_loadu_ps(x.data() + i);
          bits[i / 8] = static_cast<std::byte>(_mm256_movemask_ps(v));
          const __m256 a = _mm256_and_ps(v, magnitude);
          low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
          high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
        }
        _mm256_storeu_pd(lanes.data(), low);
        _mm256_storeu_pd(lanes.data() + 4, high);
      }
#endif
      for (; i < end; i += 8) {
        unsigned packed = 0;
        for (std::size_t j = i; j < std::min(end, i + 8); ++j) {
          packed |= (std::signbit(x[j]) ? 1U : 0U) << (j % 8);
          lanes[j % 8] += std::abs(static_cast<double>(x[j]));
        }
        bits[i / 8] = static_cast<std::byte>(packed);
      }
      l1 += ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
            ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    }
    const auto scale =
        static_cast<Scalar>(n == 0 ? 0.0 : l1 / static_cast<double>(n));  // <= max|x|
    std::memcpy(at, &scale, sizeof(Scalar));
  }

  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    compress::detail::Reader r(in, "sign");
    r.header<Scalar>(Kind::sign, out.size());
    const auto scale = r.get<Scalar>();
    if (!(std::isfinite(scale) && scale >= Scalar{0})) {
      r.fail("its scale is " + std::to_string(static_cast<double>(scale)));
    }
    const auto bits = r.bytes((out.size() + 7) / 8);
    r.finish();
    if (out.size() % 8 != 0 && (std::to_integer<unsigned>(bits.back()) >> (out.size() % 8)) != 0) {
      r.fail("bits are set past the last value");
    }
    std::size_t i = 0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<Scalar, float>) {
      const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
      const __m256 positive = _mm256_set1_ps(scale);
      const __m256 negative = _mm256_set1_ps(-scale);
      for (; i + 8 <= out.size(); i += 8) {
        const __m256i byte = _mm256_set1_epi32(std::to_integer<int>(bits[i / 8]));
        const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bit), lane_bit);
        _mm256_storeu_ps(out.data() + i,
                         _mm256_blendv_ps(positive, negative, _mm256_castsi256_ps(set)));
      }
    }
#endif
    for (; i < out.size(); ++i) {
      const bool negative = ((std::to_integer<unsigned>(bits[i / 8]) >> (i % 8)) & 1U) != 0;
      out[i] = negative ? -scale : scale;
    }
  }
};

/// PowerSGD (Vogels, Karimireddy and Jaggi 2019) of rank r: the n values as a matrix M of
/// `rows` rows (row-major, zero-padded; rows = 0 picks about sqrt(n)), one power iteration
/// P = M Q, P orthonormalised, Q = M^T P, sent as P and Q ((rows + cols) * r values) and
/// decoded as P Q^T. Q starts from a Gaussian draw of the seed and is warm-started from the
/// previous encode (the codec keeps it). Exact, to rounding, on a matrix of rank <= r.
/// Biased: use it with error feedback.
struct PowerSgd {
  /// r, the rank of the approximation: at least 1.
  std::size_t rank = 1;
  /// The rows of the matrix the values are laid out as; 0: about sqrt(n).
  std::size_t rows = 0;
  /// The seed of the first Q.
  std::uint64_t seed = 0;

  /// Biased: infinity.
  [[nodiscard]] static double omega(std::size_t /*n*/) noexcept {
    return std::numeric_limits<double>::infinity();
  }
  /// The codec's name, as messages give it.
  [[nodiscard]] static std::string name() { return "powersgd"; }
  /// Throws std::invalid_argument when rank is 0.
  void validate() const {
    if (rank == 0) {
      detail::bad_option("PowerSgd: rank must be at least 1");
    }
  }
  /// Throws std::invalid_argument as validate() does, or when `rows` exceeds n or the rank
  /// exceeds the smaller side of the matrix that n values are laid out as (shapes no
  /// factorization needs, whose message would outgrow the values).
  void validate(std::size_t n) const { (void)shape(n); }

  /// The matrix shape for n values: rows, then columns. Throws as validate(n) does.
  [[nodiscard]] std::pair<std::size_t, std::size_t> shape(std::size_t n) const {
    validate();
    if (rows > std::max<std::size_t>(n, 1)) {
      detail::bad_option("PowerSgd: rows " + std::to_string(rows) + " exceeds the " +
                         std::to_string(n) + " values");
    }
    std::size_t m =
        rows != 0 ? rows : static_cast<std::size_t>(std::ceil(std::sqrt(static_cast<double>(n))));
    m = std::max<std::size_t>(m, 1);
    const std::size_t c = std::max<std::size_t>((n + m - 1) / m, 1);
    if (rank > std::min(m, c)) {
      detail::bad_option("PowerSgd: rank " + std::to_string(rank) +
                         " exceeds the smaller side of " + std::to_string(m) + " x " +
                         std::to_string(c) + ", the matrix of " + std::to_string(n) + " values");
    }
    return {m, (n + m - 1) / m};
  }

  /// Encodes x into `out` (replacing what it held).
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step /*step*/, Payload& out) {
    const auto [m, c] = shape(x.size());
    const std::size_t r = rank;
    auto at = [&, c = c](std::size_t i, std::size_t j) {
      const std::size_t flat = i * c + j;
      return flat < x.size() ? static_cast<double>(x[flat]) : 0.0;
    };
    if (warm_q.size() != c * r) {  // a fresh start: Q from the seed (Box-Muller)
      warm_q.resize(c * r);
      Xoshiro256 rng(seed);
      for (double& v : warm_q) {
        const double u1 = 1.0 - rng.uniform();
        const double u2 = rng.uniform();
        v = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.141592653589793 * u2);
      }
    }
    // P = M Q (m x r, row-major), then modified Gram-Schmidt on its columns.
    std::vector<double> p(m * r, 0.0);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < c; ++j) {
        const double v = at(i, j);
        if (v != 0.0) {
          for (std::size_t l = 0; l < r; ++l) {
            p[i * r + l] += v * warm_q[j * r + l];
          }
        }
      }
    }
    for (std::size_t l = 0; l < r; ++l) {
      for (std::size_t prev = 0; prev < l; ++prev) {
        double dot = 0.0;
        for (std::size_t i = 0; i < m; ++i) {
          dot += p[i * r + l] * p[i * r + prev];
        }
        for (std::size_t i = 0; i < m; ++i) {
          p[i * r + l] -= dot * p[i * r + prev];
        }
      }
      double norm = 0.0;
      for (std::size_t i = 0; i < m; ++i) {
        norm += p[i * r + l] * p[i * r + l];
      }
      norm = std::sqrt(norm);
      for (std::size_t i = 0; i < m; ++i) {
        p[i * r + l] = norm > 0.0 ? p[i * r + l] / norm : 0.0;
      }
    }
    // Q = M^T P (c x r), kept for the next encode.
    std::fill(warm_q.begin(), warm_q.end(), 0.0);
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < c; ++j) {
        const double v = at(i, j);
        if (v != 0.0) {
          for (std::size_t l = 0; l < r; ++l) {
            warm_q[j * r + l] += v * p[i * r + l];
          }
        }
      }
    }
    compress::detail::Writer w(out);
    w.header<Scalar>(Kind::power_sgd, x.size());
    w.put(static_cast<std::uint64_t>(m));
    w.put(static_cast<std::uint64_t>(r));
    const auto values = w.reserve<Scalar>((m + c) * r);
    for (std::size_t e = 0; e < m * r; ++e) {
      values.set(e, static_cast<Scalar>(p[e]));
    }
    for (std::size_t e = 0; e < c * r; ++e) {
      values.set(m * r + e, static_cast<Scalar>(warm_q[e]));
    }
  }

  /// Decodes `in` into out (its n values); throws std::invalid_argument, leaving out
  /// unspecified, for a malformed payload.
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step /*step*/, std::span<Scalar> out) const {
    compress::detail::Reader r(in, "powersgd");
    r.header<Scalar>(Kind::power_sgd, out.size());
    const auto m = r.get<std::uint64_t>();
    const auto rk = r.get<std::uint64_t>();
    if (m != shape(out.size()).first || rk != rank) {
      r.fail("its shape (" + std::to_string(m) + " rows, rank " + std::to_string(rk) +
             ") is not this codec's for " + std::to_string(out.size()) + " values (" +
             std::to_string(shape(out.size()).first) + " rows, rank " + std::to_string(rank) + ")");
    }
    const std::size_t c = (out.size() + m - 1) / m;
    const auto raw = r.values<Scalar>((m + c) * rk);
    r.finish();
    std::vector<Scalar> values((m + c) * rk);
    std::memcpy(values.data(), raw.data(), raw.size());
    const Scalar* const p = values.data();
    const Scalar* const q = values.data() + m * rk;
    for (std::size_t flat = 0; flat < out.size(); ++flat) {
      const std::size_t i = flat / c;
      const std::size_t j = flat % c;
      double sum = 0.0;
      for (std::size_t l = 0; l < rk; ++l) {
        sum += static_cast<double>(p[i * rk + l]) * static_cast<double>(q[j * rk + l]);
      }
      out[flat] = static_cast<Scalar>(sum);
    }
  }

  /// The warm start, not an option: Q of the last encode (empty before the first).
  std::vector<double> warm_q{};
};

}  // namespace asyncopt::compress
