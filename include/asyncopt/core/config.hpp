// Library-wide macros and version.
#pragma once

#include <cstddef>

#define ASYNCOPT_VERSION_MAJOR 0
#define ASYNCOPT_VERSION_MINOR 1
#define ASYNCOPT_VERSION_PATCH 0

// Per-element update formulas are written once and compiled for the host (scalar and SIMD
// batches) and, by nvcc, for the device.
#if defined(__CUDACC__)
#define ASYNCOPT_HD __host__ __device__
#else
#define ASYNCOPT_HD
#endif

// A cache prefetch for reading, and forced inlining for the functions that issue it: GCC
// treats a function whose only effect is a prefetch as having none and deletes calls to it.
// Elsewhere than GCC and Clang the prefetch is a no-op.
#if defined(__GNUC__) || defined(__clang__)
#define ASYNCOPT_PREFETCH(address) __builtin_prefetch(address)
#define ASYNCOPT_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define ASYNCOPT_PREFETCH(address) static_cast<void>(address)
#define ASYNCOPT_ALWAYS_INLINE inline
#endif

namespace asyncopt {

/// Cache-line size used to keep per-worker and per-stripe data apart (no false sharing).
inline constexpr std::size_t cache_line = 64;

}  // namespace asyncopt
