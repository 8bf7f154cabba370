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

namespace asyncopt {

/// Cache-line size used to keep per-worker and per-stripe data apart (no false sharing).
inline constexpr std::size_t cache_line = 64;

}  // namespace asyncopt
