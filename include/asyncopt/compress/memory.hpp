// The compression stage around a codec: what a worker keeps between its messages (nothing,
// the compression error, or DIANA's shift) and what the round keeps (a mirror of each shift).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <asyncopt/compress/codecs.hpp>
#include <asyncopt/compress/payload.hpp>

namespace asyncopt::compress {

/// What a worker adds to what it compresses.
enum class Feedback {
  /// Nothing: each message compresses the worker's values as they are.
  none,
  /// Error feedback (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019): the
  /// worker sends C(x + e) and keeps e <- x + e - decode(C(x + e)), so no part of a gradient
  /// is lost, only delayed.
  error_feedback,
  /// DIANA (Mishchenko, Gorbunov, Takac and Richtarik 2019): worker i sends C(x - h_i) and
  /// moves h_i <- h_i + alpha * decode(...); the receiver mirrors each h_i and adds it back,
  /// so the compression error vanishes where the x_i stop changing. Needs an unbiased codec
  /// and 0 <= alpha <= 1 / (omega + 1).
  diana,
};

/// The memory of the compression stage, with designated initializers:
/// `compress::Memory{.feedback = compress::Feedback::diana, .alpha = 0.2}`.
struct Memory {
  /// What each worker keeps: nothing, its compression error, or its DIANA shift.
  Feedback feedback = Feedback::none;
  /// DIANA's shift step, in [0, 1 / (omega + 1)]; 0 keeps the shifts at zero.
  double alpha = 0.0;

  /// Throws std::invalid_argument, with a sentence, for a memory that `codec` cannot run
  /// with on n values: DIANA with a biased codec or an alpha above 1 / (omega + 1).
  template <class C>
  void validate(const C& codec, std::size_t n) const {
    codec.validate();
    if constexpr (requires { codec.validate(n); }) {
      codec.validate(n);  // the options that depend on n (PowerSgd's rank)
    }
    if (feedback != Feedback::diana) {
      return;
    }
    const double omega = codec.omega(n);
    if (!std::isfinite(omega)) {
      throw std::invalid_argument(
          "asyncopt: DIANA needs an unbiased codec (identity, scaled "
          "random-k, QSGD), not " +
          codec.name());
    }
    const double most = 1.0 / (omega + 1.0);
    if (!(alpha >= 0.0 && alpha <= most)) {
      throw std::invalid_argument("asyncopt: DIANA's alpha must be in [0, 1 / (omega + 1)] = [0, " +
                                  std::to_string(most) + "] for " + codec.name() + " on " +
                                  std::to_string(n) + " values, got " + std::to_string(alpha));
    }
  }
};

/// A worker's side of the stage: encodes what it sends, keeping its memory.
template <class Scalar, class C>
requires Codec<C, Scalar>
class Sender {
 public:
  /// For messages of n values; throws std::invalid_argument if `memory` cannot run with
  /// `codec` (Memory::validate).
  Sender(C codec, Memory memory, std::size_t n) : codec_(std::move(codec)), memory_(memory), n_(n) {
    memory_.validate(codec_, n);
    if (memory_.feedback != Feedback::none) {
      state_.assign(n, Scalar{0});
      work_.resize(n);
      decoded_.resize(n);
    }
  }

  /// Encodes this worker's message for x (n values) into `out`: C(x), C(x + e) with error
  /// feedback, C(x - h_i) under DIANA, and updates the memory from what the receiver will
  /// decode. A non-empty `decoded` (n values; it may be x itself) receives that decoded
  /// message, decoded once for the memory and the caller alike.
  void send(std::span<const Scalar> x, Step step, Payload& out, std::span<Scalar> decoded = {}) {
    check(x.size(), "values");
    if (!decoded.empty()) {
      check(decoded.size(), "decoded values");
    }
    if (memory_.feedback == Feedback::none) {
      codec_.encode(x, step, out);
      if (!decoded.empty()) {
        codec_.decode(std::span<const std::byte>(out), step, decoded);
      }
      return;
    }
    // x is read whole before `decoded`, which may be x, is written.
    const bool diana = memory_.feedback == Feedback::diana;
    for (std::size_t i = 0; i < n_; ++i) {
      work_[i] = diana ? x[i] - state_[i] : x[i] + state_[i];
    }
    const std::span<Scalar> d = decoded.empty() ? std::span<Scalar>(decoded_) : decoded;
    codec_.encode(std::span<const Scalar>(work_), step, out);
    codec_.decode(std::span<const std::byte>(out), step, d);
    if (diana) {
      const auto alpha = static_cast<Scalar>(memory_.alpha);
      for (std::size_t i = 0; i < n_; ++i) {
        state_[i] += alpha * d[i];
      }
    } else {
      for (std::size_t i = 0; i < n_; ++i) {
        state_[i] = work_[i] - d[i];
      }
    }
  }

  /// The compression error e (error feedback), the shift h_i (DIANA), or nothing.
  [[nodiscard]] std::span<const Scalar> state() const noexcept { return state_; }
  /// The codec, with any state it keeps.
  [[nodiscard]] const C& codec() const noexcept { return codec_; }
  /// The memory.
  [[nodiscard]] const Memory& memory() const noexcept { return memory_; }

 private:
  void check(std::size_t n, const char* what) const {
    if (n != n_) {
      throw std::invalid_argument("asyncopt: compress::Sender::send of " + std::to_string(n) + " " +
                                  what + ", made for " + std::to_string(n_));
    }
  }

  C codec_;
  Memory memory_;
  std::size_t n_;
  std::vector<Scalar> state_;
  std::vector<Scalar> work_;     // x + e or x - h_i (with a memory only)
  std::vector<Scalar> decoded_;  // the decoded message, when the caller wants none
};

/// The round's side of the stage: decodes the workers' messages; under DIANA it mirrors each
/// worker's shift h_k (by the job's worker id) from the messages it decodes, and adds it back
/// to that worker's message, so that a round's estimate is the mean of h_k + C(g_k - h_k) over
/// the workers that sent in it, whichever they are.
template <class Scalar, class C>
requires Codec<C, Scalar>
class Receiver {
 public:
  /// For messages of n values; throws as Sender's constructor does.
  Receiver(C codec, Memory memory, std::size_t n)
      : codec_(std::move(codec)), memory_(memory), decoded_(n) {
    memory_.validate(codec_, n);
  }

  /// out <- decode(payload) (n values). Throws std::invalid_argument for a malformed payload.
  void decode(std::span<const std::byte> payload, Step step, std::span<Scalar> out) const {
    check(out.size(), "decode");
    codec_.decode(payload, step, out);
  }

  /// out <- what worker step.worker's message stands for: decode(payload), plus under DIANA
  /// that worker's shift h_k, which then moves by alpha times the decoded message, as the
  /// sender's own shift does. Throws std::invalid_argument for a malformed payload, changing
  /// no shift.
  void estimate(std::span<const std::byte> payload, Step step, std::span<Scalar> out) {
    check(out.size(), "estimate");
    codec_.decode(payload, step, out);
    add_shift(step.worker, out);
  }

  /// The same for a message already decoded into `decoded` (by its Sender): under DIANA
  /// `decoded` becomes h_k + decoded and h_k moves by alpha times it; otherwise nothing.
  void add_shift(std::uint64_t worker, std::span<Scalar> decoded) {
    if (memory_.feedback != Feedback::diana) {
      return;
    }
    check(decoded.size(), "add_shift");
    std::vector<Scalar>& h = shift_of(worker);
    const auto alpha = static_cast<Scalar>(memory_.alpha);
    for (std::size_t i = 0; i < decoded.size(); ++i) {
      const Scalar delta = decoded[i];
      decoded[i] = h[i] + delta;
      h[i] += alpha * delta;
    }
  }

  /// sum += estimate(payload). Throws std::invalid_argument for a malformed payload, leaving
  /// `sum` and the shifts unchanged.
  void add(std::span<const std::byte> payload, Step step, std::span<Scalar> sum) {
    check(sum.size(), "add");
    estimate(payload, step, std::span<Scalar>(decoded_));
    for (std::size_t i = 0; i < sum.size(); ++i) {
      sum[i] += decoded_[i];
    }
  }

  /// Forgets worker k's shift h_k: its next message is mirrored from zero, as a new sender's
  /// (a worker whose memory starts again).
  void reset(std::uint64_t worker) noexcept {
    if (worker < shifts_.size()) {
      shifts_[static_cast<std::size_t>(worker)].clear();
    }
  }

  /// DIANA's mirror of worker k's shift h_k (empty before its first message, and without
  /// DIANA).
  [[nodiscard]] std::span<const Scalar> shift(std::size_t worker) const noexcept {
    return worker < shifts_.size() ? std::span<const Scalar>(shifts_[worker])
                                   : std::span<const Scalar>();
  }

 private:
  void check(std::size_t n, const char* call) const {
    if (n != decoded_.size()) {
      throw std::invalid_argument("asyncopt: compress::Receiver::" + std::string(call) + " of " +
                                  std::to_string(n) + " values, made for " +
                                  std::to_string(decoded_.size()));
    }
  }

  std::vector<Scalar>& shift_of(std::uint64_t worker) {
    if (worker >= shifts_.size()) {
      shifts_.resize(static_cast<std::size_t>(worker) + 1);
    }
    std::vector<Scalar>& h = shifts_[static_cast<std::size_t>(worker)];
    if (h.empty()) {
      h.assign(decoded_.size(), Scalar{0});
    }
    return h;
  }

  C codec_;
  Memory memory_;
  std::vector<Scalar> decoded_;
  std::vector<std::vector<Scalar>> shifts_;  // DIANA: h_k by the job's worker id
};

}  // namespace asyncopt::compress
