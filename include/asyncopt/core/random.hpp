// Portable seeded randomness: the same seed shuffles the same way on every platform,
// unlike std::shuffle and std::uniform_int_distribution, whose algorithms are unspecified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>

namespace asyncopt {

namespace detail {
__extension__ using Uint128 = unsigned __int128;
}  // namespace detail

/// SplitMix64 (Steele, Lea and Flood 2014): turns any 64-bit seed into well-mixed state.
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31U);
}

/// xoshiro256** (Blackman and Vigna 2018): a small, fast generator with 256 bits of state.
class Xoshiro256 {
 public:
  /// The type of each output: 64 uniformly random bits.
  using result_type = std::uint64_t;

  /// Fills the 256-bit state with four successive splitmix64() outputs from `seed`, so
  /// every seed, 0 included, gives a valid (not all-zero) state.
  explicit constexpr Xoshiro256(std::uint64_t seed) noexcept {
    for (auto& word : s_) {
      word = splitmix64(seed);
    }
  }

  /// The smallest value operator()() returns: 0.
  static constexpr result_type min() noexcept { return 0; }
  /// The largest value operator()() returns: 2^64 - 1.
  static constexpr result_type max() noexcept { return ~result_type{0}; }

  /// Advances the state by one step and returns the next 64 random bits. With min() and
  /// max(), this makes the class a std::uniform_random_bit_generator.
  constexpr result_type operator()() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17U;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// A uniform integer in [0, bound) without modulo bias (Lemire 2019).
  constexpr std::uint64_t below(std::uint64_t bound) noexcept {
    detail::Uint128 m = static_cast<detail::Uint128>((*this)()) * bound;
    auto low = static_cast<std::uint64_t>(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<detail::Uint128>((*this)()) * bound;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64U);
  }

  /// A uniform double in [0, 1).
  constexpr double uniform() noexcept { return static_cast<double>((*this)() >> 11U) * 0x1.0p-53; }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::uint64_t s_[4]{};
};

/// The seed for one epoch's shuffle, derived from the run's seed.
[[nodiscard]] constexpr std::uint64_t epoch_seed(std::uint64_t seed, std::uint64_t epoch) noexcept {
  std::uint64_t state = seed ^ (epoch * 0xd1b54a32d192ed03ULL);
  return splitmix64(state);
}

/// Fisher-Yates shuffle of `ids` with a generator seeded by `seed`.
inline void shuffle(std::span<std::size_t> ids, std::uint64_t seed) noexcept {
  Xoshiro256 rng(seed);
  for (std::size_t i = ids.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(rng.below(i));
    std::swap(ids[i - 1], ids[j]);
  }
}

/// A random permutation of 0..n-1 written into `ids` (resized by the caller).
inline void random_permutation(std::span<std::size_t> ids, std::uint64_t seed) noexcept {
  std::iota(ids.begin(), ids.end(), std::size_t{0});
  shuffle(ids, seed);
}

}  // namespace asyncopt
