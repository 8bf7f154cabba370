// Sparse gradients as index/value lists.
#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace asyncopt {

namespace detail {

/// True when every index is below `limit` and greater than the one before it: the shape of
/// every sparse index list. Callers that must say what is wrong look again only when it
/// returns false.
///
/// One pass without a branch, which the compiler vectorises: for indices below 2^63, the
/// difference index[k] - index[k-1] - 1 wraps around to a number with the top bit set exactly
/// when index[k] <= index[k-1], so OR-ing the indices and those differences leaves the top bit
/// clear exactly for a strictly increasing list of indices below 2^63, whose largest is then
/// the last.
[[nodiscard]] inline bool strictly_increasing_below(std::span<const std::size_t> index,
                                                    std::size_t limit) noexcept {
  if (index.empty()) {
    return true;
  }
  const std::size_t* const p = index.data();
  constexpr std::size_t top = std::size_t{1} << (std::numeric_limits<std::size_t>::digits - 1);
  if (limit > top) {  // no store is that large; answered the slow way for completeness
    for (std::size_t k = 1; k < index.size(); ++k) {
      if (p[k] <= p[k - 1]) {
        return false;
      }
    }
    return index.back() < limit;
  }
  std::size_t bits = p[0];
  for (std::size_t k = 1; k < index.size(); ++k) {
    bits |= p[k] | (p[k] - p[k - 1] - 1);
  }
  return (bits & top) == 0 && index.back() < limit;
}

/// What is wrong with an index list that strictly_increasing_below() refused, at its first
/// fault: "index 9 is out of range for 8 parameters" or "indices must be strictly increasing
/// (index 1 follows 4)". Empty when nothing is.
[[nodiscard]] inline std::string index_list_error(std::span<const std::size_t> index,
                                                  std::size_t limit) {
  for (std::size_t k = 0; k < index.size(); ++k) {
    if (index[k] >= limit) {
      return "index " + std::to_string(index[k]) + " is out of range for " + std::to_string(limit) +
             " parameters";
    }
    if (k > 0 && index[k] <= index[k - 1]) {
      return "indices must be strictly increasing (index " + std::to_string(index[k]) +
             " follows " + std::to_string(index[k - 1]) + ")";
    }
  }
  return {};
}

}  // namespace detail

/// A sparse gradient: `value[k]` is the partial derivative for parameter `index[k]`.
///
/// Producers (a `SparseObjective`) write strictly increasing indices, so every parameter
/// appears at most once; update rules with per-parameter state (momentum, Adam) depend on
/// it. The buffers are reused across steps: `clear()` keeps their capacity, so a worker
/// allocates nothing per step once the buffers have grown.
template <class Scalar>
struct SparseGradient {
  /// The parameter indices of the entries, strictly increasing and each below the
  /// store's dimension (pushes check both).
  std::vector<std::size_t> index;
  /// The partial derivatives: `value[k]` belongs to parameter `index[k]`. Always as long
  /// as `index`.
  std::vector<Scalar> value;

  /// Removes every entry, keeping the capacity of both buffers.
  void clear() noexcept {
    index.clear();
    value.clear();
  }
  /// The number of entries (index/value pairs).
  [[nodiscard]] std::size_t size() const noexcept { return index.size(); }
  /// True when there are no entries: a gradient that changes no parameter.
  [[nodiscard]] bool empty() const noexcept { return index.empty(); }
  /// Appends the entry for parameter `i` with partial derivative `v`. `i` must be greater
  /// than the last index appended; that is not checked here but at the push.
  void push_back(std::size_t i, Scalar v) {
    index.push_back(i);
    value.push_back(v);
  }
  /// A read-only view of `index`, valid until the gradient is next modified.
  [[nodiscard]] std::span<const std::size_t> indices() const noexcept { return index; }
  /// A read-only view of `value`, valid until the gradient is next modified.
  [[nodiscard]] std::span<const Scalar> values() const noexcept { return value; }
};

}  // namespace asyncopt
