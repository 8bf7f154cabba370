// Pairwise summation in a fixed tree: the order in which a round sums its contributions.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>

namespace asyncopt::detail {

/// Sums terms of n values, given one after another, in the pairwise tree of their order:
/// terms 0 and 1 first, then 2 and 3, then those two sums, and so on; a term without a
/// partner joins at the level where one is ready (a binary counter: at most one partial sum
/// per level). The tree depends only on the number of terms, so a sum depends only on its
/// terms and their order, wherever it is computed; 2^k equal terms sum exactly to 2^k times
/// the term, so their mean is the term bit for bit; and the rounding error grows with log2
/// of the count instead of the count. Each term comes with `out`, n values where its partial
/// sums may be written (the term's own buffer, or a free one), valid until finish(); the
/// sum of two partial sums goes into the earlier one's `out`.
template <class Scalar>
class PairwiseSum {
 public:
  /// For terms of n values.
  explicit PairwiseSum(std::size_t n) noexcept : n_(n) {}

  /// Adds the term whose values are at `values`; `out` (n values, which may be `values`
  /// itself) receives the partial sums it starts.
  void add(const Scalar* values, Scalar* out) noexcept {
    levels_[depth_] = {.values = values, .out = out, .terms = 1};
    ++depth_;
    ++count_;
    while (depth_ >= 2 && levels_[depth_ - 1].terms == levels_[depth_ - 2].terms) {
      merge();
    }
  }

  /// The number of partial sums held: a caller that decodes its terms into a pool of
  /// buffers gives the next term the buffer of this level, which no partial sum holds (at
  /// most log2(count) + 1 buffers in all).
  [[nodiscard]] std::size_t depth() const noexcept { return depth_; }

  /// The number of terms added.
  [[nodiscard]] std::size_t count() const noexcept { return count_; }

  /// Merges what is left and returns where the sum is: the first term's `out` (its values
  /// copied there when it is the only term and `out` is elsewhere), or null without terms.
  Scalar* finish() noexcept {
    if (depth_ == 0) {
      return nullptr;
    }
    while (depth_ >= 2) {
      merge();
    }
    Level& first = levels_[0];
    if (first.values != first.out) {
      std::copy(first.values, first.values + n_, first.out);
    }
    return first.out;
  }

 private:
  struct Level {
    const Scalar* values;
    Scalar* out;
    std::size_t terms;
  };

  // The two latest partial sums become one, in the earlier one's `out`.
  void merge() noexcept {
    Level& later = levels_[depth_ - 1];
    Level& earlier = levels_[depth_ - 2];
    const Scalar* const a = earlier.values;
    const Scalar* const b = later.values;
    Scalar* const out = earlier.out;
    for (std::size_t i = 0; i < n_; ++i) {
      out[i] = a[i] + b[i];
    }
    earlier.values = out;
    earlier.terms += later.terms;
    --depth_;
  }

  std::size_t n_;
  std::array<Level, 64> levels_{};  // a binary counter of fewer than 2^64 terms
  std::size_t depth_ = 0;
  std::size_t count_ = 0;
};

}  // namespace asyncopt::detail
