// The compression stage as the round policies use it: a codec chosen at run time (AnyCodec),
// the stage's options (Config), and a round's side of it (RoundStage): every worker's
// message of a round encoded with its memory, decoded as the receiver sees it, and counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <asyncopt/compress/codecs.hpp>
#include <asyncopt/compress/memory.hpp>
#include <asyncopt/compress/payload.hpp>

namespace asyncopt::compress {

/// Any of the library's codecs, chosen at run time (one std::visit per message): itself a
/// Codec, so a policy's options stay one type whatever the codec. Identity by default.
class AnyCodec {
 public:
  /// The codecs it can hold.
  using Variant = std::variant<Identity, Fp16, Bf16, TopK, RandomK, Qsgd, Sign, PowerSgd>;

  AnyCodec() = default;
  /// Holds `codec`.
  template <class C>
  requires std::is_constructible_v<Variant, C> AnyCodec(C codec)
      : codec_(std::move(codec)) {}  // NOLINT: implicit, as for a variant

  template <class Scalar>
  void encode(std::span<const Scalar> x, Step step, Payload& out) {
    std::visit([&](auto& c) { c.encode(x, step, out); }, codec_);
  }
  template <class Scalar>
  void decode(std::span<const std::byte> in, Step step, std::span<Scalar> out) const {
    std::visit([&](const auto& c) { c.decode(in, step, out); }, codec_);
  }
  void validate() const {
    std::visit([](const auto& c) { c.validate(); }, codec_);
  }
  [[nodiscard]] double omega(std::size_t n) const {
    return std::visit([n](const auto& c) { return c.omega(n); }, codec_);
  }
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

/// A round's side of the stage for `workers` workers of n values each: worker k's message of
/// a round goes through its own Sender (its memory, its codec's state), then is decoded as
/// the receiver sees it, and counted; finish() adds DIANA's mean shift to the round's sum.
template <class Scalar>
class RoundStage {
 public:
  /// Throws std::invalid_argument when `config` cannot run on n values (Memory::validate).
  RoundStage(const Config& config, std::size_t n, std::size_t workers)
      : receiver_(config.codec, config.memory, n) {
    senders_.reserve(workers);
    for (std::size_t k = 0; k < workers; ++k) {
      senders_.emplace_back(config.codec, config.memory, n);
    }
  }

  /// Worker k's message of round `round` for x (n values): encoded with k's memory, then
  /// decoded into `decoded` (n values; it may be x itself).
  void message(std::size_t k, std::span<const Scalar> x, std::uint64_t round,
               std::span<Scalar> decoded) {
    const Step step{.round = round, .worker = k};
    senders_[k].send(x, step, payload_);
    receiver_.decode(std::span<const std::byte>(payload_), step, decoded);
    sent_bytes_ += payload_.size();
    raw_bytes_ += x.size_bytes();
  }

  /// Ends a round whose decoded messages sum to `sum`, `count` of them (Receiver::finish).
  void finish(std::span<Scalar> sum, std::size_t count) { receiver_.finish(sum, count); }

  /// Bytes of the messages encoded so far.
  [[nodiscard]] std::uint64_t sent_bytes() const noexcept { return sent_bytes_; }
  /// Bytes the same messages take uncompressed (n values each).
  [[nodiscard]] std::uint64_t raw_bytes() const noexcept { return raw_bytes_; }

 private:
  std::vector<Sender<Scalar, AnyCodec>> senders_;
  Receiver<Scalar, AnyCodec> receiver_;
  Payload payload_;
  std::uint64_t sent_bytes_ = 0;
  std::uint64_t raw_bytes_ = 0;
};

}  // namespace asyncopt::compress
