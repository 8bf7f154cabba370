// What the rule decorators share: the stand-in after a failed check, and a step that maps
// the gradient before the wrapped rule's formula sees it.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/sgd.hpp>

namespace asyncopt::update::detail {

/// The wrapped rule, or Sgd after the decorator's static_assert has failed, so that the
/// failed assertion stays the only error.
template <class Inner>
using InnerRule = std::conditional_t<UpdateRule<Inner>, Inner, Sgd>;

/// The wrapped rule's formula with the gradient replaced by map(g, w).
template <class InnerFormula, class Map>
struct MappedFormula {
  static constexpr bool needs_w_seen = needs_w_seen_v<InnerFormula>;
  InnerFormula inner;
  Map map;

  template <class V, std::size_t Slots>
  ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, Slots>& state) const {
    inner(w, map(g, w), state);
  }
  template <class V, std::size_t Slots>
  ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, Slots>& state,
                              const V& w_seen) const {
    inner(w, map(g, w), state, w_seen);
  }
};

template <class InnerFormula, class Map>
MappedFormula<InnerFormula, Map> mapped(InnerFormula inner, Map map) {
  return {inner, map};
}

}  // namespace asyncopt::update::detail
