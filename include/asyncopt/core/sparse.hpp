// Sparse gradients as index/value lists.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace asyncopt {

namespace detail {

/// True when every index is below `limit` and greater than the one before it: the shape of
/// every sparse index list. One pass without an early exit, so the compiler vectorises it;
/// callers that must say what is wrong look again only when it returns false.
[[nodiscard]] inline bool strictly_increasing_below(std::span<const std::size_t> index,
                                                    std::size_t limit) noexcept {
  if (index.empty()) {
    return true;
  }
  bool increasing = true;
  for (std::size_t k = 1; k < index.size(); ++k) {
    increasing &= index[k - 1] < index[k];
  }
  // Increasing, the last index is the largest.
  return increasing && index.back() < limit;
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
  std::vector<std::size_t> index;
  std::vector<Scalar> value;

  void clear() noexcept {
    index.clear();
    value.clear();
  }
  [[nodiscard]] std::size_t size() const noexcept { return index.size(); }
  [[nodiscard]] bool empty() const noexcept { return index.empty(); }
  void push_back(std::size_t i, Scalar v) {
    index.push_back(i);
    value.push_back(v);
  }
  [[nodiscard]] std::span<const std::size_t> indices() const noexcept { return index; }
  [[nodiscard]] std::span<const Scalar> values() const noexcept { return value; }
};

}  // namespace asyncopt
