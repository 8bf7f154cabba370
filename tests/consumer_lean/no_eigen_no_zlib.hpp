// Included last by each source of the lean consumer: the build stops if any asyncopt header
// it included brought in Eigen or zlib.
#pragma once

#if defined(EIGEN_WORLD_VERSION)
#error "an asyncopt header of asyncopt::asyncopt included Eigen"
#endif
#if defined(ZLIB_VERSION)
#error "an asyncopt header of asyncopt::asyncopt included zlib"
#endif
