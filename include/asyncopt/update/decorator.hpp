// What the rule decorators share: the stand-in after a failed check, and a step that maps
// the gradient before the wrapped rule's formula sees it.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/config.hpp>
#include <asyncopt/core/formula.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/update/sgd.hpp>

namespace asyncopt::update::detail {

/// The wrapped rule, or Sgd after the decorator's static_assert has failed, so that the
/// failed assertion stays the only error.
template <class Inner>
using InnerRule = std::conditional_t<UpdateRule<Inner>, Inner, Sgd>;

using asyncopt::detail::mapped;
using asyncopt::detail::MappedFormula;

}  // namespace asyncopt::update::detail
