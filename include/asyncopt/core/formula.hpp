// A rule's formula with the gradient mapped before the formula sees it: what the rule
// decorators (update/) and a round's averaged update (core/store.hpp) are made of.
#pragma once

#include <array>
#include <cstddef>

#include <asyncopt/core/config.hpp>
#include <asyncopt/core/update_info.hpp>

namespace asyncopt::detail {

/// The wrapped formula with the gradient replaced by map(g, w).
template <class InnerFormula, class Map>
struct MappedFormula {
  /// As the wrapped formula's.
  static constexpr bool needs_w_seen = needs_w_seen_v<InnerFormula>;
  /// The wrapped formula.
  InnerFormula inner;
  /// What the wrapped formula sees instead of g: map(g, w).
  Map map;

  /// inner(w, map(g, w), state).
  template <class V, std::size_t Slots>
  ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, Slots>& state) const {
    inner(w, map(g, w), state);
  }
  /// inner(w, map(g, w), state, w_seen).
  template <class V, std::size_t Slots>
  ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, Slots>& state,
                              const V& w_seen) const {
    inner(w, map(g, w), state, w_seen);
  }
};

/// `inner` with the gradient replaced by map(g, w).
template <class InnerFormula, class Map>
MappedFormula<InnerFormula, Map> mapped(InnerFormula inner, Map map) {
  return {inner, map};
}

}  // namespace asyncopt::detail
