// SCAFFOLD: local SGD whose workers correct their gradients with control variates.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <asyncopt/consistency/rounds.hpp>
#include <asyncopt/consistency/shared_parameters.hpp>
#include <asyncopt/core/collective.hpp>

namespace asyncopt::consistency {

/// SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled
/// Averaging for Federated Learning", ICML 2020): local SGD whose workers step with corrected
/// gradients, g_i(y_i) - c_i + c, so that heterogeneous data no longer pull the replicas
/// apart. Each worker steps on a private replica y_i with its own copy of the rule's state,
/// as under LocalSgd, and the rule (any rule: Sgd, Momentum, Adam, ...) is the local solver,
/// applied to the corrected gradient. Every `period` steps (K) the live workers meet; each
/// sends its model delta y_i - x and the change of its control variate, and
///
///     c_i+ = (1 / K_i) sum of its gradients g_i over the round's K_i steps,
///     x    <- x + global_learning_rate * mean_i (y_i - x),
///     c    <- c + (1 / N) sum_i (c_i+ - c_i),
///
/// over the workers i that stepped, N being the job's number of workers, so that c stays the
/// mean of every c_i. c_i+ is the paper's option II: for Sgd at a constant learning rate
/// lr_l it equals c_i - c + (x - y_i) / (K lr_l), and written as the mean of the gradients
/// it needs no learning rate and stays defined for any rule. Control variates start at zero.
///
/// A worker that leaves with steps not yet averaged contributes them to the round in
/// progress (its c_i+ from the steps it made), as under LocalSgd. Sums run in worker order,
/// so a run does not depend on thread timing; across processes (the MPI transport) a round
/// all-reduces 2n + 1 values (both deltas, and the count). Every push is corrected densely: a
/// sparse gradient becomes a dense step, since the correction c - c_i touches every
/// parameter. Updates count local steps; the time spent waiting at rounds is wait_seconds.
/// With period = 1, SCAFFOLD is synchronous SGD (to rounding: the mean is of the replicas'
/// steps) while every worker takes part in each round; in a round of fewer workers (shards
/// that end unevenly) x moves by -lr (mean g_i - mean c_i + c) over those that did. A worker
/// must not push after leave() (its handle's join() first): its control variate may still be
/// in a round.
struct Scaffold {
  /// Local steps between two rounds (K in the paper).
  std::uint64_t period = 8;
  /// The step of the shared parameters along the mean model delta (eta_g in the paper).
  double global_learning_rate = 1.0;

  /// Workers move in rounds and keep replicas: a transport must support it (shared memory
  /// and MPI do).
  static constexpr bool coordinates_rounds = true;

  /// Throws std::invalid_argument when `period` is 0 or `global_learning_rate` is not finite
  /// and positive.
  void validate() const {
    if (period == 0) {
      throw std::invalid_argument("asyncopt: Scaffold::period must be at least 1");
    }
    if (!std::isfinite(global_learning_rate) || global_learning_rate <= 0.0) {
      throw std::invalid_argument(
          "asyncopt: Scaffold::global_learning_rate must be finite and positive, got " +
          std::to_string(global_learning_rate));
    }
  }

  /// The runtime side for n parameters and `workers` workers: per worker a replica, its
  /// control variate c_i and the sum of its gradients since the last round; the shared
  /// control variate c; the rounds. A worker's pushes go through correct(), which returns
  /// the corrected gradient the store then applies to the worker's replica; every `period`
  /// clocks, clock() waits for the other live workers, and the round's closer moves the
  /// shared parameters and c under an exclusive lock.
  template <class Scalar>
  class Guard : public SharedParameters<Scalar> {
    using SharedParameters<Scalar>::n_;
    using SharedParameters<Scalar>::params_mutex_;

   public:
    /// Allocates the per-worker buffers (4n + 1 values per worker) and c; every worker starts
    /// live. The rounds span the processes of `across` (by default, this process alone), and
    /// construction is then collective. Throws std::invalid_argument for bad options.
    Guard(const Scaffold& policy, std::size_t n, std::size_t workers, collective::Ref across = {})
        : SharedParameters<Scalar>(n),
          replicas_(n, 2 * n + 1, workers, (policy.validate(), policy.period)),
          global_learning_rate_(static_cast<Scalar>(policy.global_learning_rate)),
          variates_(2 * n * workers, Scalar{0}),
          steps_(workers, 0),
          control_(n, Scalar{0}),
          spare_(2 * n + 1),
          across_(across),
          job_workers_(collective::total(across, workers)) {}

    /// Worker `id`'s private parameters, for its pushes to update with no lock (one thread
    /// uses a worker id at a time); they then hold steps not yet averaged.
    [[nodiscard]] std::span<Scalar> replica(std::size_t id) noexcept {
      return replicas_.replica(id);
    }

    /// The same, for its pulls to read.
    [[nodiscard]] std::span<const Scalar> replica(std::size_t id) const noexcept {
      return replicas_.replica(id);
    }

    /// Worker `id`'s dense gradient `g` (finite, n values), corrected: g - c_id + c, in a
    /// buffer of the guard's that stays valid until the worker's next correct() or round.
    /// Adds g to the worker's sum for its next control variate.
    [[nodiscard]] std::span<const Scalar> correct(std::size_t id, std::span<const Scalar> g) {
      Scalar* const out = replicas_.row(id) + n_;
      Scalar* const mine = variate(id);
      Scalar* const sum = mine + n_;
      const Scalar* const c = control_.data();
      for (std::size_t i = 0; i < n_; ++i) {
        out[i] = (g[i] - mine[i]) + c[i];
        sum[i] += g[i];
      }
      ++steps_[id];
      return {out, n_};
    }

    /// The same for a sparse gradient (`index` strictly increasing and in range, one finite
    /// value each): the dense g - c_id + c of the gradient that is zero elsewhere, bit for
    /// bit what correct(id, dense) gives.
    [[nodiscard]] std::span<const Scalar> correct(std::size_t id,
                                                  std::span<const std::size_t> index,
                                                  std::span<const Scalar> value) {
      Scalar* const out = replicas_.row(id) + n_;
      Scalar* const mine = variate(id);
      Scalar* const sum = mine + n_;
      const Scalar* const c = control_.data();
      for (std::size_t i = 0; i < n_; ++i) {
        out[i] = (Scalar{0} - mine[i]) + c[i];
      }
      for (std::size_t k = 0; k < index.size(); ++k) {
        const std::size_t i = index[k];
        out[i] = (value[k] - mine[i]) + c[i];
        sum[i] += value[k];
      }
      ++steps_[id];
      return {out, n_};
    }

    /// Worker `id` finished step `clock`: every period-th one, meets the other live workers,
    /// and restarts from the new shared parameters. Returns the seconds spent waiting.
    double clock(std::size_t id, std::uint64_t clock, std::span<Scalar> shared) {
      return replicas_.clock(
          id, clock, shared, params_mutex_,
          [&](std::span<const unsigned char> contributed) { close(shared, contributed); });
    }

    /// Worker `id` stops: its steps not yet averaged go into the round in progress.
    void leave(std::size_t id, std::span<Scalar> shared) {
      replicas_.leave(
          id, [&](std::span<const unsigned char> contributed) { close(shared, contributed); });
    }

    /// Worker `id` takes part again, from the shared parameters, keeping its control
    /// variate. If it left steps in a round that is still open, waits until the other live
    /// workers close it.
    void join(std::size_t id, std::uint64_t /*clock*/, std::span<const Scalar> shared) {
      replicas_.join(id, shared, params_mutex_);
    }

    /// A round of the job in which no worker of this process takes part (they have all
    /// left): contributes nothing, and moves `shared` and c by the other processes' deltas
    /// when any contributed. Returns whether any did; the job's rounds are over when none
    /// did. Call it only while no worker of this process steps.
    bool idle_round(std::span<Scalar> shared) { return close(shared, {}); }

    /// The shared control variate c (n values). Read it while no round closes.
    [[nodiscard]] std::span<const Scalar> control() const noexcept { return control_; }

    /// Worker `id`'s control variate c_id (n values). Read it while no round closes and the
    /// worker does not step.
    [[nodiscard]] std::span<const Scalar> control(std::size_t id) const noexcept {
      return {variates_.data() + id * 2 * n_, n_};
    }

   private:
    // Worker k's c_k, followed by the sum of its gradients since its last round.
    Scalar* variate(std::size_t k) noexcept { return variates_.data() + k * 2 * n_; }

    // Each contributed worker's row becomes its model delta y_k - x followed by the change of
    // its control variate; their sums over the job move x and c. Only the closer writes
    // `shared`, so it reads them here with no lock.
    bool close(std::span<Scalar> shared, std::span<const unsigned char> contributed) {
      for (std::size_t k = 0; k < contributed.size(); ++k) {
        if (contributed[k] != 0) {
          deltas(k, shared);
        }
      }
      const auto [sum, count] = detail::sum_round(
          [&](std::size_t k) {
            Scalar* const row = replicas_.row(k);
            return detail::Contribution<Scalar>{.values = row, .scratch = row};
          },
          contributed, replicas_.row(0), 2 * n_ + 1, 2 * n_, spare_.data(), across_);
      if (count == 0) {
        return false;
      }
      {
        const std::unique_lock lock(params_mutex_);
        const auto divisor = static_cast<Scalar>(count);
        for (std::size_t i = 0; i < n_; ++i) {
          shared[i] += global_learning_rate_ * (sum[i] / divisor);
        }
      }
      const auto workers = static_cast<Scalar>(job_workers_);
      for (std::size_t i = 0; i < n_; ++i) {
        control_[i] += sum[n_ + i] / workers;
      }
      across_.round_closed();
      return true;
    }

    // Worker k's row <- (y_k - x, c_k+ - c_k), and c_k <- c_k+ with its gradient sum reset.
    void deltas(std::size_t k, std::span<const Scalar> shared) {
      Scalar* const row = replicas_.row(k);
      Scalar* const mine = variate(k);
      Scalar* const sum = mine + n_;
      for (std::size_t i = 0; i < n_; ++i) {
        row[i] -= shared[i];
      }
      if (steps_[k] == 0) {
        std::fill(row + n_, row + 2 * n_, Scalar{0});
        return;
      }
      const auto steps = static_cast<Scalar>(steps_[k]);
      for (std::size_t i = 0; i < n_; ++i) {
        const Scalar next = sum[i] / steps;
        row[n_ + i] = next - mine[i];
        mine[i] = next;
        sum[i] = Scalar{0};
      }
      steps_[k] = 0;
    }

    // Row k, 2n + 1 apart: worker k's replica, then the corrected gradient of its step (its
    // control variate's change at a round), then a round's count.
    detail::Replicas<Scalar> replicas_;
    Scalar global_learning_rate_;
    std::vector<Scalar> variates_;      // per worker: c_k, then its gradient sum; 2n apart
    std::vector<std::uint64_t> steps_;  // per worker: corrected steps since its last round
    std::vector<Scalar> control_;       // c
    std::vector<Scalar> spare_;         // the round's sums where this process contributes nothing
    collective::Ref across_;
    std::size_t job_workers_;
  };
};

}  // namespace asyncopt::consistency
