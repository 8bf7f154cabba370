// Test helpers shared by the test programs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

namespace asyncopt::test {

/// Requires that f's gradient over `batch` at `w`, and its loss, have the same bits with the
/// parameters and the gradient buffer at every float offset of a 64-byte line: a sum whose
/// order followed the buffers' alignment (a SIMD body with a scalar head and tail) would
/// differ in its last bits.
template <class F>
void require_same_bits_at_every_offset(const F& f, const std::vector<float>& w,
                                       std::span<const std::size_t> batch) {
  std::vector<float> first;
  double first_loss = 0.0;
  for (std::size_t offset = 0; offset < 16; ++offset) {
    std::vector<float> wbuffer(w.size() + 16);
    std::vector<float> gbuffer(w.size() + 16, std::numeric_limits<float>::quiet_NaN());
    std::copy(w.begin(), w.end(), wbuffer.begin() + static_cast<std::ptrdiff_t>(offset));
    const std::span<const float> wv(wbuffer.data() + offset, w.size());
    const std::span<float> g(gbuffer.data() + (15 - offset), w.size());
    f.gradient(wv, batch, g);
    const double loss = f.loss(wv);
    if (offset == 0) {
      first.assign(g.begin(), g.end());
      first_loss = loss;
    } else {
      INFO("offset " << offset);
      REQUIRE(std::equal(g.begin(), g.end(), first.begin()));
      REQUIRE(loss == first_loss);
    }
  }
}

}  // namespace asyncopt::test
