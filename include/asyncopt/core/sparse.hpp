// Sparse gradients as index/value lists.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace asyncopt {

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
