#include "reference.hpp"

#include <span>
#include <vector>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/transport/shared_memory.hpp>

namespace reference {

template <class Rule>
Result run_cpu(const Rule& rule, std::span<const float> initial,
               const std::vector<Formula>& steps) {
  using Store =
      asyncopt::transport::SharedMemory::Store<float, Rule, asyncopt::consistency::Locked>;
  Result result{.params = {initial.begin(), initial.end()}, .state = {}};
  std::vector<float> pulled(initial.size());
  {
    Store store(asyncopt::transport::SharedMemory{}, rule, asyncopt::consistency::Locked{},
                std::span<float>(result.params), 1);
    auto worker = store.worker(0);
    for (const Formula& step : steps) {
      if (step.pull) {
        worker.pull(std::span<float>(pulled));
      }
      if (step.index.empty()) {
        worker.push(std::span<const float>(step.value));
      } else {
        worker.push(std::span<const std::size_t>(step.index), std::span<const float>(step.value));
      }
    }
    const std::span<float> state = store.rule_state();
    result.state.assign(state.begin(), state.end());
  }
  return result;
}

#define ASYNCOPT_REFERENCE_DEFINE(R)                                        \
  template Result run_cpu<R>(const R& rule, std::span<const float> initial, \
                             const std::vector<Formula>& steps);
ASYNCOPT_REFERENCE_RULES(ASYNCOPT_REFERENCE_DEFINE)
#undef ASYNCOPT_REFERENCE_DEFINE

}  // namespace reference
