// Local SGD: workers step on private replicas and average the models every `period` steps.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <tuple>
#include <vector>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/consistency/rounds.hpp>
#include <asyncopt/consistency/shared_parameters.hpp>
#include <asyncopt/core/collective.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::consistency {

/// Local SGD, or periodic model averaging (Zinkevich et al., NIPS 2010; Stich, "Local SGD
/// converges fast and communicates little", ICLR 2019; Lin et al., "Don't use large
/// mini-batches, use local SGD", ICLR 2020). Each worker pulls from and pushes to a private
/// replica of the parameters, with its own copy of the rule's state (momentum stays
/// local); after every `period` steps (clocks) it waits for the other live workers, the
/// shared parameters become the mean of their replicas, and every replica restarts from
/// it. period = 1 is synchronous SGD written as model averaging.
///
/// A worker that leaves with steps not yet averaged contributes its replica to the round in
/// progress, so no work is lost when shards end at different step counts. The mean is
/// summed in worker order: a run does not depend on thread timing. Updates count local
/// steps, and never stale ones; the time spent waiting at averaging rounds is reported as
/// wait_seconds. Every worker id starts live: a worker that takes no part must leave()
/// (destroying its handle does).
///
/// With `compression`, what a worker sends at an averaging round is its model delta (its
/// replica minus the shared parameters), through the compression stage (compress::Config);
/// the shared parameters move by the mean of the decoded deltas, and the store's statistics
/// count the bytes (StoreStats::compressed_bytes). With the identity codec this agrees with
/// no compression to rounding (x + mean(x_k - x) against mean(x_k)). Across processes (the
/// MPI transport) the compressed deltas are what travels, as under Synchronous.
struct LocalSgd {
  /// Local steps between two averaging rounds (H in the papers).
  std::uint64_t period = 8;
  /// The compression stage of every worker's model delta; none by default.
  std::optional<compress::Config> compression{};

  /// Workers move in rounds and keep replicas: a transport must support it (shared memory
  /// and MPI do).
  static constexpr bool coordinates_rounds = true;

  /// Throws std::invalid_argument when `period` is 0 or the compression stage has bad
  /// options.
  void validate() const {
    if (period == 0) {
      throw std::invalid_argument("asyncopt: LocalSgd::period must be at least 1");
    }
    if (compression) {
      compression->validate();
    }
  }

  /// The runtime side for n parameters and `workers` workers: a private replica per worker
  /// and the averaging rounds. A worker's pulls read its replica, and its pushes update it,
  /// with no lock; every `period` clocks, clock() waits for the other live workers, writes the
  /// mean of their replicas into the shared parameters under an exclusive lock and restarts
  /// each replica from it. read() and the writes on the shared parameters take the
  /// reader-writer lock.
  template <class Scalar>
  class Guard : public SharedParameters<Scalar> {
    using SharedParameters<Scalar>::n_;
    using SharedParameters<Scalar>::params_mutex_;

   public:
    /// Allocates a replica of n parameters per worker, which join() fills from the shared
    /// parameters; every worker starts live. The rounds span the processes of `across` (by
    /// default, this process alone). Throws std::invalid_argument when `period` is 0.
    Guard(const LocalSgd& policy, std::size_t n, std::size_t workers, collective::Ref across = {})
        : SharedParameters<Scalar>(n),
          replicas_(n, n + 1, workers, policy.period),
          spare_(n + 1),
          across_(across) {
      policy.validate();
      if (policy.compression) {
        if (across_.size() > 1 && !across_.gathers() &&
            !compress::RoundStage<Scalar>::summable(*policy.compression)) {
          throw std::invalid_argument(
              "asyncopt: LocalSgd::compression across processes needs a collective with "
              "all_gather(), which sends the compressed model deltas");
        }
        stage_.emplace(*policy.compression, n, workers, collective::offset(across_, workers));
        compress::RoundStage<Scalar>::agree(across_, *policy.compression);
      }
    }

    /// Bytes of the compressed messages so far and of the same messages uncompressed (both
    /// 0 without compression). Call it while no round closes.
    [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> compression_bytes() const noexcept {
      return stage_ ? std::pair{stage_->sent_bytes(), stage_->raw_bytes()}
                    : std::pair<std::uint64_t, std::uint64_t>{0, 0};
    }

    /// Worker `id`'s private parameters, for its pushes to update with no lock (one thread
    /// uses a worker id at a time); they then hold steps not yet averaged.
    [[nodiscard]] std::span<Scalar> replica(std::size_t id) noexcept {
      return replicas_.replica(id);
    }

    /// The same, for its pulls to read.
    [[nodiscard]] std::span<const Scalar> replica(std::size_t id) const noexcept {
      return replicas_.replica(id);
    }

    /// Worker `id` finished step `clock`: every period-th one, averages with the other live
    /// workers into `shared` and restarts from the mean. Returns the seconds spent waiting.
    double clock(std::size_t id, std::uint64_t clock, std::span<Scalar> shared) {
      return replicas_.clock(
          id, clock, shared, params_mutex_,
          [&](std::span<const unsigned char> contributed) { average_into(shared, contributed); });
    }

    /// Worker `id` stops: its steps not yet averaged go into the round in progress.
    void leave(std::size_t id, std::span<Scalar> shared) {
      replicas_.leave(id, [&](std::span<const unsigned char> contributed) {
        average_into(shared, contributed);
      });
    }

    /// Worker `id` takes part again, from the shared parameters. If it left steps in a round
    /// that is still open, waits until the other live workers close it.
    void join(std::size_t id, std::uint64_t /*clock*/, std::span<const Scalar> shared) {
      replicas_.join(id, shared, params_mutex_);
    }

    /// A round of the job in which no worker of this process takes part (they have all
    /// left): contributes nothing, and makes `shared` the mean of the other processes'
    /// replicas when any contributed. Returns whether any did; the job's rounds are over when
    /// none did. Call it only while no worker of this process steps.
    bool idle_round(std::span<Scalar> shared) { return average_into(shared, {}); }

   private:
    // shared <- the mean over the job of the contributed replicas, when there is one. With
    // compression, shared moves by the mean of the decoded deltas instead.
    bool average_into(std::span<Scalar> shared, std::span<const unsigned char> contributed) {
      if (stage_) {
        return average_deltas(shared, contributed);
      }
      const auto [sum, count] = detail::sum_round(
          [&](std::size_t k) {
            Scalar* const replica = replicas_.row(k);
            return detail::Contribution<Scalar>{.values = replica, .scratch = replica};
          },
          contributed, replicas_.row(0), n_ + 1, n_, spare_.data(), across_);
      if (count == 0) {
        return false;
      }
      {
        const std::unique_lock lock(params_mutex_);
        if (count == 1) {
          std::copy(sum, sum + n_, shared.begin());
        } else {
          const auto divisor = static_cast<Scalar>(count);
          for (std::size_t i = 0; i < n_; ++i) {
            shared[i] = sum[i] / divisor;
          }
        }
      }
      across_.round_closed();
      return true;
    }

    // Each contributed replica becomes what the receiver decodes of its delta, in its row;
    // their sum (plus DIANA's shift) divided by the count moves the shared parameters. Only
    // the closer writes `shared`, so it reads them here with no lock.
    bool average_deltas(std::span<Scalar> shared, std::span<const unsigned char> contributed) {
      for (std::size_t k = 0; k < contributed.size(); ++k) {
        if (contributed[k] != 0) {
          Scalar* const row = replicas_.row(k);
          for (std::size_t i = 0; i < n_; ++i) {
            row[i] -= shared[i];
          }
          if (across_.size() <= 1) {  // across processes, across_processes() encodes it
            stage_->message(k, std::span<const Scalar>(row, n_), std::span<Scalar>(row, n_));
          }
        }
      }
      Scalar* sum = spare_.data();
      std::size_t count = 0;
      if (across_.size() > 1) {  // the messages travel compressed
        count = stage_->across_processes(
            contributed, [&](std::size_t k) { return replicas_.row(k); }, across_,
            std::span<Scalar>(sum, n_));
      } else {
        std::tie(sum, count) = detail::sum_round(
            [&](std::size_t k) {
              Scalar* const row = replicas_.row(k);
              return detail::Contribution<Scalar>{.values = row, .scratch = row};
            },
            contributed, replicas_.row(0), n_ + 1, n_, spare_.data(), across_);
      }
      stage_->finish(count);
      if (count == 0) {
        return false;
      }
      {
        const std::unique_lock lock(params_mutex_);
        const auto divisor = static_cast<Scalar>(count);
        for (std::size_t i = 0; i < n_; ++i) {
          shared[i] += count == 1 ? sum[i] : sum[i] / divisor;
        }
      }
      across_.round_closed();
      return true;
    }

    // Row k, n + 1 apart: worker k's parameters; a round's sum goes into the first
    // contributor's row, with the count after it, and every replica restarts from the mean.
    detail::Replicas<Scalar> replicas_;
    std::vector<Scalar> spare_;  // the round's sum where this process contributes nothing
    collective::Ref across_;
    std::optional<compress::RoundStage<Scalar>> stage_;  // with compression only
  };
};

}  // namespace asyncopt::consistency
