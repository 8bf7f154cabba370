// The objective the compile-fail cases train: 0.5 |w|^2 in two dimensions, over Scalar.
#pragma once

#include <cstddef>
#include <span>

template <class Scalar>
struct BasicQuadratic {
  [[nodiscard]] std::size_t dimension() const { return 2; }
  [[nodiscard]] std::size_t num_examples() const { return 4; }
  [[nodiscard]] double loss(std::span<const Scalar> w) const {
    return 0.5 * (w[0] * w[0] + w[1] * w[1]);
  }
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> /*batch*/,
                std::span<Scalar> grad) const {
    grad[0] = w[0];
    grad[1] = w[1];
  }
};

using Quadratic = BasicQuadratic<float>;
