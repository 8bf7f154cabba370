// CPU reference runs for the CUDA tests: the shared-memory store and its SIMD kernels,
// compiled by the host compiler in reference.cpp (nvcc does not compile the SIMD kernels).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include <asyncopt/update/update.hpp>

namespace reference {

/// The rules the CUDA tests compare, with the hyper-parameters they use.
namespace rules {
using asyncopt::update::Adam;
using asyncopt::update::AdaptiveDelayCompensated;
using asyncopt::update::DelayCompensated;
using asyncopt::update::HeavyBall;
using asyncopt::update::MomentumCorrection;
using asyncopt::update::Sgd;
using ClipNormAdam = asyncopt::update::ClipByNorm<Adam>;
using ClipValueSgd = asyncopt::update::ClipByValue<Sgd>;
using DecayMomentum = asyncopt::update::WeightDecay<MomentumCorrection>;
using ScheduledHeavyBall = asyncopt::update::Scheduled<HeavyBall, asyncopt::schedule::Exponential>;
using StaleSgd = asyncopt::update::StalenessAware<Sgd>;
}  // namespace rules

/// One step of a sequence: an optional dense pull, then a push, dense when `index` is empty.
struct Formula {
  bool pull = false;
  std::vector<std::size_t> index;
  std::vector<float> value;
};

/// The parameters and the rule's state after a sequence.
struct Result {
  std::vector<float> params;
  std::vector<float> state;
};

/// Runs `steps` on a one-worker SharedMemory store under Locked, from `initial`.
template <class Rule>
Result run_cpu(const Rule& rule, std::span<const float> initial, const std::vector<Formula>& steps);

#define ASYNCOPT_REFERENCE_RULES(X)  \
  X(rules::Sgd)                      \
  X(rules::MomentumCorrection)       \
  X(rules::HeavyBall)                \
  X(rules::DelayCompensated)         \
  X(rules::AdaptiveDelayCompensated) \
  X(rules::Adam)                     \
  X(rules::StaleSgd)                 \
  X(rules::DecayMomentum)            \
  X(rules::ClipValueSgd)             \
  X(rules::ClipNormAdam)             \
  X(rules::ScheduledHeavyBall)

#define ASYNCOPT_REFERENCE_DECLARE(R)                                              \
  extern template Result run_cpu<R>(const R& rule, std::span<const float> initial, \
                                    const std::vector<Formula>& steps);
ASYNCOPT_REFERENCE_RULES(ASYNCOPT_REFERENCE_DECLARE)
#undef ASYNCOPT_REFERENCE_DECLARE

}  // namespace reference
