// Synchronous SGD: every round averages one gradient from each worker into one update.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/consistency/rounds.hpp>
#include <asyncopt/consistency/shared_parameters.hpp>
#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/update_info.hpp>
#include <asyncopt/kernels/access.hpp>
#include <asyncopt/kernels/dense.hpp>

namespace asyncopt::consistency {

/// Synchronous data-parallel SGD: a push waits until every live worker has pushed in the
/// same round; the mean of their gradients is then applied as one update, and every worker
/// pulls the result. Gradients are never stale, and with equal batches the update equals
/// sequential SGD on their union. The mean is summed in worker order, so a run does
/// not depend on thread timing. A worker that leaves (its shard is done, it threw, or it
/// was stopped) is not waited for; a rejected (non-finite) gradient is not a contribution,
/// so the worker's next push fills its place in the round.
///
/// The store's updates count rounds, and the time a push spends waiting for the others is
/// reported as wait_seconds. Every worker id starts live: a worker that takes no part must
/// leave() (destroying its handle does).
///
/// With `compression`, each worker's gradient of a round goes through the compression stage
/// (compress::Config: a codec, and error feedback or DIANA) before the round sums it: the
/// round sums what the receiver decodes, in worker order, and the store's statistics count
/// the bytes of the messages (StoreStats::compressed_bytes) against the same messages
/// uncompressed. The identity codec, or top-k with k = n, trains bit for bit as no
/// compression does. Across processes (the MPI transport) the compressed messages are what
/// travels: summed in an all-reduce of what they carry where every message of a round keeps
/// the same positions (the identity codec, random-k with shared indices, without DIANA),
/// otherwise gathered (the collective's all_gather), every process then decoding and summing
/// them in the order of the job's worker ids.
struct Synchronous {
  /// Workers move in rounds: a transport must support it (shared memory and MPI do).
  static constexpr bool coordinates_rounds = true;
  /// A round sends what the rule asks (RoundMessages): momenta for update::OneBitAdam.
  static constexpr bool sends_momenta = true;

  /// The compression stage of every worker's gradient; none by default.
  std::optional<compress::Config> compression{};

  /// Throws std::invalid_argument for a compression stage with bad options.
  void validate() const {
    if (compression) {
      compression->validate();
    }
  }

  /// The runtime side for n parameters and `workers` workers: a gradient slot per worker and
  /// the rounds. A push goes through combine(), which waits for the round and applies the
  /// mean gradient once, under an exclusive lock; pulls read the shared parameters under a
  /// shared lock, so never while a round is being applied. Across processes (the MPI
  /// transport), the worker that closes this process's round sums its workers' gradients and
  /// then takes part in the job's round through the collective `across`; every process then
  /// applies the same mean.
  template <class Scalar>
  class Guard : public SharedParameters<Scalar> {
    using SharedParameters<Scalar>::n_;

   public:
    /// The parameters change only when a round closes, and a round waits for the push of
    /// every live worker: between its pull and its push a live worker may read them where
    /// they are.
    static constexpr bool writes_between_pushes = false;

    // Pulls read the shared parameters while no round is being applied.
    /// Allocates one gradient slot of n elements per worker; every worker starts live. The
    /// rounds span the processes of `across` (by default, this process alone).
    /// Throws std::invalid_argument for a compression stage that cannot run (bad options,
    /// DIANA's alpha above 1 / (omega + 1), or rounds across processes whose collective
    /// cannot gather). With compression across processes, construction is collective.
    Guard(const Synchronous& policy, std::size_t n, std::size_t workers,
          collective::Ref across = {})
        : SharedParameters<Scalar>(n),
          gradients_((n + 1) * workers),
          contributions_(workers),
          spare_(n + 1),
          rounds_(workers),
          across_(across) {
      policy.validate();
      if (policy.compression) {
        if (across_.size() > 1 && !across_.gathers() &&
            !compress::RoundStage<Scalar>::summable(*policy.compression)) {
          throw std::invalid_argument(
              "asyncopt: Synchronous::compression across processes needs a collective with "
              "all_gather(), which sends the compressed gradients");
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

    /// Worker `id`'s contribution to the current round: `fill(slot)` writes its dense
    /// gradient into `slot` (n elements), unless `fill.values()` gives them where they are
    /// (and `fill.scratch()` the same buffer, when the round may sum into it, or null), which
    /// then must stay unchanged until the round is applied. Blocks until the round is
    /// applied; the worker that completes the round calls `commit(sum, count)` once with the
    /// sum of the job's `count` gradients, which applies their mean (sum / count, divided in
    /// the update's pass) through write_dense. Returns the seconds spent waiting.
    template <class Fill, class Commit>
    double combine(std::size_t id, Fill&& fill, Commit&& commit) {
      if constexpr (requires {
                      { fill.values() } -> std::convertible_to<std::span<const Scalar>>;
                      { fill.scratch() } -> std::convertible_to<Scalar*>;
                    }) {
        contributions_[id] = {.values = std::span<const Scalar>(fill.values()).data(),
                              .scratch = fill.scratch()};
      } else {
        Scalar* const row = gradients_.data() + id * (n_ + 1);
        fill(std::span<Scalar>(row, n_));
        contributions_[id] = {.values = row, .scratch = row};
      }
      return rounds_.arrive(id, [&](std::span<const unsigned char> contributed) {
        const auto [sum, count] = reduce(contributed, round_messages<Scalar>(commit));
        commit(std::span<const Scalar>(sum, n_), count);
        across_.round_closed();
      });
    }

    /// A round of the job in which no worker of this process takes part (they have all
    /// left): contributes nothing, and calls `commit(sum, count)` with the other processes'
    /// gradients when any contributed. Returns whether any did; the job's rounds are over
    /// when none did. Call it only while no worker of this process pushes.
    template <class Commit>
    bool idle_round(Commit&& commit) {
      const auto [sum, count] = reduce({}, round_messages<Scalar>(commit));
      if (count == 0) {
        return false;
      }
      commit(std::span<const Scalar>(sum, n_), count);
      across_.round_closed();
      return true;
    }

    /// Worker `id`'s row, lent for it to compute its gradients in: a push of it in place
    /// (fill.values() and fill.scratch() being its first element) needs no copy, and a round
    /// that sums into it carries the count in the slot after it, in the same all-reduce.
    [[nodiscard]] std::span<Scalar> lend(std::size_t id) noexcept {
      return {gradients_.data() + id * (n_ + 1), n_};
    }

    /// Whether worker `id` takes part in the rounds (it has not left, or has joined again);
    /// asked by the thread acting for worker `id`.
    [[nodiscard]] bool live(std::size_t id) const noexcept { return rounds_.live(id); }

    /// Worker `id` is no longer waited for; a round that only it held back closes, by one of
    /// the workers waiting in it.
    void leave(std::size_t id) { rounds_.leave(id); }
    /// Worker `id` takes part again and is waited for from the round in progress on.
    void join(std::size_t id, std::uint64_t /*clock*/) { rounds_.join(id); }

   private:
    // The round's sum over the job, and its count. A round that sends momenta first
    // replaces each contribution by its worker's momentum, in the worker's row. With
    // compression, each contribution is then replaced by what the receiver decodes of its
    // message, in the worker's row; a round whose messages go uncompressed (a rule's
    // warm-up) sums them as a round without compression does.
    std::pair<Scalar*, std::size_t> reduce(std::span<const unsigned char> contributed,
                                           const RoundMessages<Scalar>& messages) {
      if (messages.momentum != nullptr) {
        to_momenta(contributed, messages);
      }
      if (stage_ && !messages.compressed) {
        return uncompressed(contributed);
      }
      if (stage_ && across_.size() > 1) {
        // Across processes the messages travel compressed: summed as they travel where they
        // can be, else gathered, then decoded and summed on every process.
        const std::span<Scalar> sum(spare_.data(), n_);
        const std::size_t count = stage_->across_processes(
            contributed, [&](std::size_t k) { return contributions_[k].values; }, across_, sum);
        stage_->finish(count);
        return {spare_.data(), count};
      }
      if (stage_) {
        for (std::size_t k = 0; k < contributed.size(); ++k) {
          if (contributed[k] != 0) {
            Scalar* const row = gradients_.data() + k * (n_ + 1);
            stage_->message(k, std::span<const Scalar>(contributions_[k].values, n_),
                            std::span<Scalar>(row, n_));
            contributions_[k] = {.values = row, .scratch = row};
          }
        }
      }
      const auto result =
          detail::sum_round([&](std::size_t k) { return contributions_[k]; }, contributed,
                            gradients_.data(), n_ + 1, n_, spare_.data(), across_);
      if (stage_) {
        stage_->finish(result.second);
      }
      return result;
    }

    // Each contributed worker's u_k = beta * m + (1 - beta) * g_k, into its row.
    void to_momenta(std::span<const unsigned char> contributed,
                    const RoundMessages<Scalar>& messages) {
      for (std::size_t k = 0; k < contributed.size(); ++k) {
        if (contributed[k] == 0) {
          continue;
        }
        Scalar* const row = gradients_.data() + k * (n_ + 1);
        kernels::momentum_message(std::span<const Scalar>(contributions_[k].values, n_),
                                  messages.momentum, messages.beta, messages.one_minus_beta, row);
        contributions_[k] = {.values = row, .scratch = row};
      }
    }

    // A round of a policy with compression whose messages go uncompressed: summed (and
    // all-reduced) as without compression, and counted at their full size.
    std::pair<Scalar*, std::size_t> uncompressed(std::span<const unsigned char> contributed) {
      const auto result =
          detail::sum_round([&](std::size_t k) { return contributions_[k]; }, contributed,
                            gradients_.data(), n_ + 1, n_, spare_.data(), across_);
      stage_->uncompressed(
          static_cast<std::size_t>(std::count_if(contributed.begin(), contributed.end(),
                                                 [](unsigned char c) { return c != 0; })),
          n_);
      stage_->finish(result.second);
      return result;
    }

    // Row k, n + 1 apart: worker k's gradient of this round when its push was filled in; a
    // round's sum goes into the first contributor's row (or buffer), with the count after it.
    std::vector<Scalar> gradients_;
    // Per worker: where its contribution to the round in progress is.
    std::vector<detail::Contribution<Scalar>> contributions_;
    std::vector<Scalar> spare_;  // the round's sum where this process contributes nothing
    detail::Rounds rounds_;
    collective::Ref across_;
    std::optional<compress::RoundStage<Scalar>> stage_;  // with compression only
  };
};

}  // namespace asyncopt::consistency
