// Archetypes of the three slots: the smallest types that model UpdateRule,
// ConsistencyPolicy and Transport. AsyncOptimizer puts one in a slot whose check failed, so
// that its body stays well-formed and the check's sentence is the only error.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>

namespace asyncopt::detail {

/// An update rule that changes nothing: stateless, with a formula written once for scalars
/// and batches.
struct RuleArchetype {
  static constexpr std::size_t state_slots = 0;

  template <class Scalar>
  struct Formula {
    template <class V>
    ASYNCOPT_HD void operator()(V& /*w*/, const V& /*g*/, std::array<V, 0>& /*state*/) const {}
  };

  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const UpdateInfo& /*info*/) const noexcept {
    return {};
  }

  void validate() const noexcept {}
};

/// A consistency policy whose guard lets every access through as it is asked for.
struct ConsistencyArchetype {
  void validate() const noexcept {}

  template <class Scalar>
  struct Guard {
    Guard(const ConsistencyArchetype& /*policy*/, std::size_t /*n*/, std::size_t /*workers*/) {}
    void read(const Scalar* /*src*/, Scalar* /*dst*/) const noexcept {}
    template <class Apply>
    void write_dense(Apply&& /*apply*/) const noexcept {}
    template <class Apply>
    void write_sparse(std::span<const std::size_t> /*index*/, Apply&& /*apply*/) const noexcept {}
  };
};

/// A transport whose store holds nothing (nothing creates one) and which runs no worker.
struct TransportArchetype {
  template <class Scalar, class Rule, class Consistency>
  class Store {};

  template <class Body>
  void run(std::size_t /*workers*/, Body&& /*body*/) const noexcept {}
};

static_assert(UpdateRule<RuleArchetype>);
static_assert(ConsistencyPolicy<ConsistencyArchetype>);
static_assert(Transport<TransportArchetype>);

}  // namespace asyncopt::detail
