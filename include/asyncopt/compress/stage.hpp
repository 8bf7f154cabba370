// The compression stage as the round policies use it: a codec chosen at run time (AnyCodec),
// the stage's options (Config), and a round's side of it (RoundStage): every worker's
// message of a round encoded with its memory, decoded as the receiver sees it, and counted.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <asyncopt/compress/codecs.hpp>
#include <asyncopt/compress/memory.hpp>
#include <asyncopt/compress/payload.hpp>
#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/pairwise.hpp>

namespace asyncopt::compress {

/// Any of the library's codecs, chosen at run time (one std::visit per message): itself a
/// Codec, so a policy's options stay one type whatever the codec. Identity by default.
class AnyCodec {
 public:
  /// The codecs it can hold.
  using Variant = std::variant<Identity, Fp16, Bf16, TopK, RandomK, Qsgd, Sign, PowerSgd>;

  /// The identity codec.
  AnyCodec() = default;
  /// Holds `codec`.
  template <class C>
  requires std::is_constructible_v<Variant, C> AnyCodec(C codec)
      : codec_(std::move(codec)) {}  // NOLINT: implicit, as for a variant

  /// The held codec's encode().
  template <class Scalar>
  void encode(std::span<const Scalar> x, Step step, Payload& out) {
    std::visit([&](auto& c) { c.encode(x, step, out); }, codec_);
  }
  /// The held codec's decode().
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step step, std::span<Scalar> out) const {
    std::visit([&](const auto& c) { c.decode(in, step, out); }, codec_);
  }
  /// The held codec's validate().
  void validate() const {
    std::visit([](const auto& c) { c.validate(); }, codec_);
  }
  /// The held codec's checks that depend on the number of values n (PowerSgd's rank), where
  /// it has them.
  void validate(std::size_t n) const {
    std::visit(
        [n](const auto& c) {
          if constexpr (requires { c.validate(n); }) {
            c.validate(n);
          }
        },
        codec_);
  }
  /// The held codec's omega(n).
  [[nodiscard]] double omega(std::size_t n) const {
    return std::visit([n](const auto& c) { return c.omega(n); }, codec_);
  }
  /// The held codec's name().
  [[nodiscard]] std::string name() const {
    return std::visit([](const auto& c) { return std::string(c.name()); }, codec_);
  }
  /// The codec held.
  [[nodiscard]] const Variant& get() const noexcept { return codec_; }

 private:
  Variant codec_;
};

/// The options of a compression stage, with designated initializers:
/// `compress::Config{.codec = compress::TopK{.fraction = 0.01}, .memory = {.feedback =
/// compress::Feedback::error_feedback}}`.
struct Config {
  /// What each message becomes on the wire.
  AnyCodec codec{};
  /// What each worker keeps between its messages.
  Memory memory{};

  /// Throws std::invalid_argument for the codec's bad options; DIANA's alpha is checked
  /// against omega once the number of values is known (Memory::validate).
  void validate() const { codec.validate(); }
};

/// The codec, its options and the memory of `config`, as text: "topk(k=0, fraction=0.01),
/// error_feedback". Two stages describe alike exactly when they encode and decode alike.
[[nodiscard]] inline std::string describe(const Config& config) {
  auto number = [](double v) {  // the shortest text that reads back as v
    std::array<char, 32> text{};
    auto* const end = std::to_chars(text.data(), text.data() + text.size(), v).ptr;
    return std::string(text.data(), end);
  };
  std::string codec = config.codec.name();
  std::visit(
      [&](const auto& c) {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, TopK>) {
          codec += "(k=" + std::to_string(c.k) + ", fraction=" + number(c.fraction) + ")";
        } else if constexpr (std::is_same_v<C, RandomK>) {
          codec += "(k=" + std::to_string(c.k) + ", fraction=" + number(c.fraction) +
                   ", seed=" + std::to_string(c.seed) + ", shared=" + std::to_string(c.shared) +
                   ", scaled=" + std::to_string(c.scaled) + ")";
        } else if constexpr (std::is_same_v<C, Qsgd>) {
          codec += "(levels=" + std::to_string(c.levels) + ", seed=" + std::to_string(c.seed) + ")";
        } else if constexpr (std::is_same_v<C, PowerSgd>) {
          codec += "(rank=" + std::to_string(c.rank) + ", rows=" + std::to_string(c.rows) +
                   ", seed=" + std::to_string(c.seed) + ")";
        }
      },
      config.codec.get());
  switch (config.memory.feedback) {
    case Feedback::none:
      return codec + ", no memory";
    case Feedback::error_feedback:
      return codec + ", error_feedback";
    case Feedback::diana:
      return codec + ", diana(alpha=" + number(config.memory.alpha) + ")";
  }
  return codec;
}

/// A 64-bit digest (FNV-1a) of describe(config), never 0; 0 stands for no compression. Two
/// peers compare it to find out that they would not read each other's messages.
[[nodiscard]] inline std::uint64_t fingerprint(const std::optional<Config>& config) {
  if (!config) {
    return 0;
  }
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : describe(*config)) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h == 0 ? 1 : h;
}

/// A round's side of the stage for `workers` workers of n values each: worker k's message of
/// a round goes through its own Sender (its memory, its codec's state), then is decoded as
/// the receiver sees it (with DIANA's shift of that worker added back), and counted.
/// Messages draw their randomness from the job's worker id, first_worker + k, and the round's
/// number, which the stage counts.
template <class Scalar>
class RoundStage {
 public:
  /// Throws std::invalid_argument when `config` cannot run on n values (Memory::validate).
  RoundStage(const Config& config, std::size_t n, std::size_t workers, std::size_t first_worker = 0)
      : receiver_(config.codec, config.memory, n),
        codec_(config.codec),
        summable_(summable(config)),
        first_worker_(first_worker) {
    senders_.reserve(workers);
    for (std::size_t k = 0; k < workers; ++k) {
      senders_.emplace_back(config.codec, config.memory, n);
    }
  }

  /// Worker k's message of the current round for x (n values): encoded with k's memory,
  /// then decoded into `decoded` (n values; it may be x itself).
  void message(std::size_t k, std::span<const Scalar> x, std::span<Scalar> decoded) {
    const Step step = this->step(k, round_);
    encode(k, x, step, payload_, decoded);  // the sender's decode is the receiver's
    receiver_.add_shift(step.worker, decoded);
  }

  /// Whether a round's messages can be summed as they travel: then across_processes()
  /// all-reduces what they carry instead of gathering them.
  [[nodiscard]] bool summable() const noexcept { return summable_; }

  /// Whether the messages of a stage with `config` can be summed as they travel: every
  /// message of a round keeps the same positions (the identity codec, random-k with shared
  /// indices) and no receiver adds a sender's own shift (not DIANA).
  [[nodiscard]] static bool summable(const Config& config) noexcept {
    if (config.memory.feedback == Feedback::diana) {
      return false;
    }
    const auto& codec = config.codec.get();
    if (std::holds_alternative<Identity>(codec)) {
      return true;
    }
    const auto* random = std::get_if<RandomK>(&codec);
    return random != nullptr && random->shared;
  }

  /// Checks, with one all-reduce over the processes of `across` (collective: every process
  /// calls it), that they all run the stage `config`; throws std::invalid_argument on every
  /// process otherwise, before a round could have them call different collectives.
  static void agree(const collective::Ref& across, const Config& config) {
    if (across.size() <= 1) {
      return;
    }
    // Three 20-bit pieces of the fingerprint, each with its square: the sums equal the
    // processes' count times this process's exactly when every process has the same pieces
    // (a sum of squares equal to count times the square of the mean leaves no spread), and
    // every sum is exact in double.
    const std::uint64_t mine = fingerprint(config);
    std::array<double, 7> sums{};
    for (std::size_t k = 0; k < 3; ++k) {
      const auto piece = static_cast<double>((mine >> (20 * k)) & 0xfffffU);
      sums[2 * k] = piece;
      sums[2 * k + 1] = piece * piece;
    }
    sums[6] = 1.0;
    across.all_reduce_sum(std::span<double>(sums));
    const double processes = sums[6];
    for (std::size_t k = 0; k < 3; ++k) {
      const auto piece = static_cast<double>((mine >> (20 * k)) & 0xfffffU);
      if (sums[2 * k] != processes * piece || sums[2 * k + 1] != processes * piece * piece) {
        throw std::invalid_argument(
            "asyncopt: the processes of the job run different compression stages; this one "
            "runs " +
            describe(config) + ": give every process the same compress::Config");
      }
    }
  }

  /// A round across the processes of `across`: each contributed worker k of this process
  /// (contributed[k] != 0, its n values at values(k)) encodes its message, and every process
  /// ends with the sum of the job's decoded messages in `sum` (n values). Returns the job's
  /// number of messages. Summable messages (the identity codec, or random-k with shared
  /// indices, without DIANA: every message of a round keeps the same positions) are decoded
  /// by their sender, summed within the process and then all-reduced: only the kept values
  /// and the count travel. The others are gathered (Collective's all_gather), and every
  /// process decodes them all and sums them in the order of the job's worker ids, in the
  /// pairwise tree in which a round within one process sums its workers (PairwiseSum).
  template <class Values>
  std::size_t across_processes(std::span<const unsigned char> contributed, Values&& values,
                               const collective::Ref& across, std::span<Scalar> sum) {
    if (summable_) {
      return summed(contributed, values, across, sum);
    }
    return gathered(contributed, values, across, sum);
  }

 private:
  // The summed round (see across_processes): each message decoded by its sender; the kept
  // values summed over this process's workers in their order, in the pairwise tree a round
  // within one process sums in, with the count after them; one all-reduce; the sums
  // scattered back to their positions.
  template <class Values>
  std::size_t summed(std::span<const unsigned char> contributed, Values& values,
                     const collective::Ref& across, std::span<Scalar> sum) {
    const std::size_t n = sum.size();
    const std::uint64_t round = round_;
    const auto* random = std::get_if<RandomK>(&codec_.get());
    if (random != nullptr) {
      random->indices(n, step(0, round), kept_);  // shared: the same for every worker
    }
    const std::size_t keep = random != nullptr ? kept_.size() : n;
    auto position = [&](std::size_t e) { return random != nullptr ? kept_[e] : e; };
    carried_.assign(keep + 1, Scalar{0});
    decoded_.resize(n);
    asyncopt::detail::PairwiseSum<Scalar> pairwise(keep);
    for (std::size_t k = 0; k < contributed.size(); ++k) {
      if (contributed[k] == 0) {
        continue;
      }
      encode(k, std::span<const Scalar>(values(k), n), step(k, round), payload_,
             std::span<Scalar>(decoded_));
      Scalar* const kept = level(pairwise.depth(), keep);
      for (std::size_t e = 0; e < keep; ++e) {
        kept[e] = decoded_[position(e)];
      }
      pairwise.add(kept, kept);
    }
    pairwise.finish();  // into carried_, the first level
    carried_[keep] = static_cast<Scalar>(pairwise.count());
    across.all_reduce_sum(std::span<Scalar>(carried_));
    std::fill(sum.begin(), sum.end(), Scalar{0});
    for (std::size_t e = 0; e < keep; ++e) {
      sum[position(e)] = carried_[e];
    }
    return static_cast<std::size_t>(carried_[keep]);
  }

  // The gathered round (see across_processes).
  template <class Values>
  std::size_t gathered(std::span<const unsigned char> contributed, Values& values,
                       const collective::Ref& across, std::span<Scalar> sum) {
    const std::uint64_t round = round_;
    // Framed: the worker's id, the round, the payload's length, the payload.
    mine_.clear();
    for (std::size_t k = 0; k < contributed.size(); ++k) {
      if (contributed[k] == 0) {
        continue;
      }
      encode(k, std::span<const Scalar>(values(k), sum.size()), step(k, round), payload_);
      const std::uint64_t frame[3] = {first_worker_ + k, round, payload_.size()};
      const std::size_t at = mine_.size();
      mine_.resize(at + sizeof(frame) + payload_.size());
      std::memcpy(mine_.data() + at, frame, sizeof(frame));
      std::memcpy(mine_.data() + at + sizeof(frame), payload_.data(), payload_.size());
    }
    across.all_gather(std::span<const std::byte>(mine_), all_, sizes_);
    asyncopt::detail::PairwiseSum<Scalar> pairwise(sum.size());
    for (std::size_t at = 0; at < all_.size();) {
      std::uint64_t frame[3];
      if (all_.size() - at < sizeof(frame)) {
        throw std::runtime_error("asyncopt: a gathered round ends inside a message's frame");
      }
      std::memcpy(frame, all_.data() + at, sizeof(frame));
      at += sizeof(frame);
      if (frame[2] > all_.size() - at) {
        throw std::runtime_error("asyncopt: a gathered round's message runs past its end");
      }
      // Decoded with the step the sender framed it with (every process counts the job's
      // rounds alike, idle ones included; see finish()).
      const std::size_t depth = pairwise.depth();
      Scalar* const out = depth == 0 ? sum.data() : level(depth, sum.size());
      receiver_.estimate(std::span<const std::byte>(all_.data() + at, frame[2]),
                         Step{.round = frame[1], .worker = frame[0]},
                         std::span<Scalar>(out, sum.size()));
      pairwise.add(out, out);
      at += frame[2];
    }
    if (pairwise.finish() == nullptr) {
      std::fill(sum.begin(), sum.end(), Scalar{0});
    }
    return pairwise.count();
  }

  // The buffer of `size` values for partial sums at level j of a round's pairwise sum (see
  // PairwiseSum::depth); level 0 is carried_ (asked for by a summed round only).
  Scalar* level(std::size_t j, std::size_t size) {
    if (j == 0) {
      return carried_.data();
    }
    if (levels_.size() < j) {
      levels_.resize(j);
    }
    std::vector<Scalar>& buffer = levels_[j - 1];
    buffer.resize(size);
    return buffer.data();
  }

 public:
  /// Ends a round of `count` messages; a round with messages counts as one of the job's.
  /// Every process ends every round of the job, its workers' or an idle one, so the rounds'
  /// numbers agree across processes and with a run in one process.
  void finish(std::size_t count) noexcept {
    if (count > 0) {
      ++round_;
    }
  }

  /// Counts `messages` messages of n values each that went uncompressed (a rule's warm-up,
  /// update::OneBitAdam): their bytes as sent and as raw.
  void uncompressed(std::size_t messages, std::size_t n) noexcept {
    const std::uint64_t bytes = static_cast<std::uint64_t>(messages) * n * sizeof(Scalar);
    sent_bytes_ += bytes;
    raw_bytes_ += bytes;
  }

  /// Bytes of the messages this process encoded so far.
  [[nodiscard]] std::uint64_t sent_bytes() const noexcept { return sent_bytes_; }
  /// Bytes the same messages take uncompressed (n values each).
  [[nodiscard]] std::uint64_t raw_bytes() const noexcept { return raw_bytes_; }

 private:
  [[nodiscard]] Step step(std::size_t k, std::uint64_t round) const noexcept {
    return {.round = round, .worker = first_worker_ + k};
  }

  void encode(std::size_t k, std::span<const Scalar> x, Step step, Payload& out,
              std::span<Scalar> decoded = {}) {
    senders_[k].send(x, step, out, decoded);
    sent_bytes_ += out.size();
    raw_bytes_ += x.size_bytes();
  }

  std::vector<Sender<Scalar, AnyCodec>> senders_;
  Receiver<Scalar, AnyCodec> receiver_;
  AnyCodec codec_;  // the stage's codec, for the positions a summed round keeps
  bool summable_;
  std::vector<std::uint32_t> kept_;          // a summed round's positions (random-k)
  std::vector<Scalar> carried_;              // a summed round's kept values, then the count
  std::vector<Scalar> decoded_;              // a summed round's message, as its sender decodes it
  std::vector<std::vector<Scalar>> levels_;  // partial sums of levels 1, 2, ... of a round
  std::uint64_t first_worker_ = 0;
  std::uint64_t round_ = 0;  // rounds finished: the current round's number
  Payload payload_;
  std::vector<std::byte> mine_;
  std::vector<std::byte> all_;
  std::vector<std::uint64_t> sizes_;
  std::uint64_t sent_bytes_ = 0;
  std::uint64_t raw_bytes_ = 0;
};

}  // namespace asyncopt::compress
