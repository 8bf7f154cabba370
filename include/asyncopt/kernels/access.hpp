// How a kernel touches shared memory: plainly (the caller holds a lock, or owns the data)
// or with relaxed atomics (Hogwild!: races are defined behaviour).
#pragma once

#include <atomic>

namespace asyncopt::kernels {

/// Plain loads and stores; the SIMD path is allowed.
struct PlainAccess {
  /// True: kernels may use SIMD batches on the memory.
  static constexpr bool vectorizable = true;
  /// Returns *p, an ordinary load.
  template <class T>
  static T load(const T* p) noexcept {
    return *p;
  }
  /// *p <- v, an ordinary store.
  template <class T>
  static void store(T* p, T v) noexcept {
    *p = v;
  }
};

/// Relaxed atomic loads and stores through std::atomic_ref. On x86-64 and AArch64 they
/// compile to plain moves, but they do not vectorize, so this path is scalar.
struct RelaxedAccess {
  /// False: kernels keep to one element at a time.
  static constexpr bool vectorizable = false;
  /// Returns *p, read with a relaxed atomic load; `T` must suit std::atomic_ref.
  template <class T>
  static T load(const T* p) noexcept {
    // atomic_ref<const T> is not available in C++20; the load does not write.
    return std::atomic_ref<T>(*const_cast<T*>(p)).load(std::memory_order_relaxed);
  }
  /// *p <- v, written with a relaxed atomic store.
  template <class T>
  static void store(T* p, T v) noexcept {
    std::atomic_ref<T>(*p).store(v, std::memory_order_relaxed);
  }
};

template <class A>
concept Access = requires(float* p, float v) {
  { A::vectorizable } -> std::convertible_to<bool>;
  { A::load(p) } -> std::same_as<float>;
  A::store(p, v);
};

}  // namespace asyncopt::kernels
