// Where an optimize() call stands, for the stores that checkpoint it.
#pragma once

#include <cstdint>
#include <vector>

namespace asyncopt {

/// Where optimize() stands: the epoch in progress and, for each worker of this process, how
/// many examples of its shard it has taken so far in that epoch. A store that checkpoints
/// (the MPI transport) records it with each checkpoint, and optimize() continues from the
/// one it resumes from.
struct Progress {
  /// The epoch in progress, from 1; 0 before the first.
  std::uint64_t epoch = 0;
  /// Per worker of this process: the examples of its shard it has taken in this epoch.
  std::vector<std::uint64_t> taken;
};

}  // namespace asyncopt
