// The bytes a compressed message travels as: a small header (which codec, which scalar, how
// many values) and the codec's body, written and read field by field with every read checked.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace asyncopt::compress {

/// A compressed message: what a worker sends.
using Payload = std::vector<std::byte>;

/// Where an encoding happens. Codecs draw their randomness from it: random-k's indices from
/// the round alone when they are shared by every worker (so the values of one round can be
/// summed in one all-reduce), QSGD's rounding from the round and the worker.
struct Step {
  /// The round (or push) number: the same on every worker for one round.
  std::uint64_t round = 0;
  /// The worker's id in the job.
  std::uint64_t worker = 0;
};

/// Which codec wrote a payload: the first byte of every payload.
enum class Kind : std::uint8_t {
  identity = 1,   ///< Identity
  fp16 = 2,       ///< Fp16
  bf16 = 3,       ///< Bf16
  top_k = 4,      ///< TopK
  random_k = 5,   ///< RandomK
  qsgd = 6,       ///< Qsgd
  sign = 7,       ///< Sign
  power_sgd = 8,  ///< PowerSgd
};

/// The version of the payload format, in every header.
inline constexpr std::uint8_t format_version = 1;

/// The bytes of the header that starts every payload: kind (1), scalar size (1), format
/// version (1), five zero bytes, n (8). Sixteen, so that a body that starts right after it
/// keeps the 16-byte alignment of the payload's storage.
inline constexpr std::size_t header_bytes = 16;

namespace detail {

/// Outputs of at least this many bytes are written with streaming (non-temporal) stores:
/// far beyond the caches, a plain store first reads the line it writes, which costs as much
/// again as the write. Smaller outputs stay in the cache, where the next pass reads them.
inline constexpr std::size_t stream_threshold = std::size_t{8} << 20;

/// Whether an output of `bytes` is written with streaming stores (stream_threshold).
[[nodiscard]] constexpr bool streams(std::size_t bytes) noexcept {
  return bytes >= stream_threshold;
}

/// Writes n values of T to dst (any alignment), produced `Block` at a time by
/// fill(begin, m, into), which puts values [begin, begin + m) into `into` (m <= Block). A
/// large output (streams()) goes out through whole 64-byte lines with streaming stores, when
/// AVX is at hand and dst's misalignment is a whole number of values; its first partial line
/// and its last values are written as usual. Every value is written once either way.
template <class T, std::size_t Block, class Fill>
void write_blocks(std::byte* dst, std::size_t n, Fill&& fill) {
  static_assert(std::is_trivially_copyable_v<T> && (Block * sizeof(T)) % 64 == 0);
  alignas(64) std::array<T, Block> buffer{};
  std::size_t begin = 0;
  auto plain = [&](std::size_t end) {  // values [begin, end), through the cache
    while (begin < end) {
      const std::size_t m = std::min(Block, end - begin);
      fill(begin, m, buffer.data());
      std::memcpy(dst + begin * sizeof(T), buffer.data(), m * sizeof(T));
      begin += m;
    }
  };
#if defined(__AVX__)
  const std::size_t misaligned = reinterpret_cast<std::uintptr_t>(dst) % 64;
  const std::size_t to_line = misaligned == 0 ? 0 : 64 - misaligned;
  if (streams(n * sizeof(T)) && to_line % sizeof(T) == 0) {
    plain(std::min(n, to_line / sizeof(T)));
    for (; begin + Block <= n; begin += Block) {
      fill(begin, Block, buffer.data());
      std::byte* const line = dst + begin * sizeof(T);
      const auto* from = reinterpret_cast<const std::byte*>(buffer.data());  // NOLINT
      for (std::size_t i = 0; i < Block * sizeof(T); i += 32) {
        _mm256_stream_si256(
            reinterpret_cast<__m256i*>(line + i),  // NOLINT: intrinsic's type
            _mm256_load_si256(reinterpret_cast<const __m256i*>(from + i)));  // NOLINT
      }
    }
    plain(n);
    _mm_sfence();  // the streamed lines are in place before anything reads them
    return;
  }
#endif
  plain(n);
}

/// Copies `bytes` from src to dst as memcpy does, with streaming stores for a large output
/// (write_blocks), so that the destination is written without being read first.
inline void copy_out(std::byte* dst, const void* src, std::size_t bytes) noexcept {
  if (!streams(bytes)) {
    if (bytes != 0) {
      std::memcpy(dst, src, bytes);
    }
    return;
  }
  const auto* from = static_cast<const std::byte*>(src);
  write_blocks<std::byte, 4096>(dst, bytes,
                                [from](std::size_t begin, std::size_t m, std::byte* into) {
                                  std::memcpy(into, from + begin, m);
                                });
}

[[noreturn]] inline void malformed(std::string_view codec, const std::string& what) {
  throw std::invalid_argument("asyncopt: malformed " + std::string(codec) + " payload: " + what);
}

/// Packed values of type T in a payload, set and read by memcpy (any alignment).
template <class T>
struct Slots {
  std::byte* base;
  void set(std::size_t e, const T& value) const noexcept {
    std::memcpy(base + e * sizeof(T), &value, sizeof(T));
  }
};

/// Value e of type T in packed bytes.
template <class T>
[[nodiscard]] T load(std::span<const std::byte> bytes, std::size_t e) noexcept {
  T value;
  std::memcpy(&value, bytes.data() + e * sizeof(T), sizeof(T));
  return value;
}

/// Writes fields into a payload from its start, reusing its storage: bytes are zero-filled
/// only where the payload grows beyond any earlier message, and the payload is cut to what
/// was written when the writer ends.
class Writer {
 public:
  explicit Writer(Payload& out) noexcept : out_(out) {}
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() { out_.resize(at_); }  // shrinking: no allocation, nothing thrown

  /// The header: kind, the size of Scalar, the format's version, padding, and n.
  template <class Scalar>
  void header(Kind kind, std::size_t n) {
    put(static_cast<std::uint8_t>(kind));
    put(static_cast<std::uint8_t>(sizeof(Scalar)));
    put(format_version);
    put(std::array<std::uint8_t, 5>{});
    put(static_cast<std::uint64_t>(n));
  }

  /// One trivially copyable value, in the machine's byte order.
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(grow(sizeof(T)), &value, sizeof(T));
  }

  /// Room for `count` values at once, which the codec then sets one by one (a payload's
  /// fields are packed, so its values may sit at any alignment). Valid until the next call.
  template <class T>
  Slots<T> reserve(std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Slots<T>{grow(count * sizeof(T))};
  }

  /// Copies `values` in.
  template <class T>
  void put_all(std::span<const T> values) {
    if (!values.empty()) {
      copy_out(reserve<T>(values.size()).base, values.data(), values.size_bytes());
    }
  }

 private:
  std::byte* grow(std::size_t bytes) {
    if (out_.size() < at_ + bytes) {
      out_.resize(at_ + bytes);
    }
    std::byte* const p = out_.data() + at_;
    at_ += bytes;
    return p;
  }

  Payload& out_;
  std::size_t at_ = 0;
};

/// Reads fields from a payload, refusing one that ends early, has bytes left over, or whose
/// header names another codec, scalar or length.
class Reader {
 public:
  Reader(std::span<const std::byte> in, std::string codec) : in_(in), codec_(std::move(codec)) {}

  /// Checks the header against what the decoder expects.
  template <class Scalar>
  void header(Kind kind, std::size_t n) {
    const auto got_kind = get<std::uint8_t>();
    if (got_kind != static_cast<std::uint8_t>(kind)) {
      malformed(codec_, "it was written by codec kind " + std::to_string(got_kind) + ", expected " +
                            std::to_string(static_cast<int>(kind)));
    }
    const auto scalar = get<std::uint8_t>();
    if (scalar != sizeof(Scalar)) {
      malformed(codec_, "it holds " + std::to_string(scalar) + "-byte scalars, expected " +
                            std::to_string(sizeof(Scalar)));
    }
    const auto version = get<std::uint8_t>();
    if (version != format_version) {
      malformed(codec_, "its format version is " + std::to_string(version) +
                            ", this library reads " + std::to_string(format_version));
    }
    const auto padding = get<std::array<std::uint8_t, 5>>();
    if (padding != std::array<std::uint8_t, 5>{}) {
      malformed(codec_, "its header's padding is not zero");
    }
    const auto count = get<std::uint64_t>();
    if (count != n) {
      malformed(codec_,
                "it encodes " + std::to_string(count) + " values, expected " + std::to_string(n));
    }
  }

  /// The next value.
  template <class T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof(T), 1), sizeof(T));
    return value;
  }

  /// The next `count` values, copied into `out`.
  template <class T>
  void get_all(std::span<T> out) {
    if (!out.empty()) {
      copy_out(reinterpret_cast<std::byte*>(out.data()),  // NOLINT: bytes of T, as memcpy
               take(sizeof(T), out.size()), out.size_bytes());
    }
  }

  /// The next `count` raw bytes, where they are.
  std::span<const std::byte> bytes(std::size_t count) {
    return {static_cast<const std::byte*>(take(1, count)), count};
  }

  /// The bytes of the next `count` values of type T, where they are (checked without
  /// overflow, however large `count` is).
  template <class T>
  std::span<const std::byte> values(std::size_t count) {
    return {static_cast<const std::byte*>(take(sizeof(T), count)), sizeof(T) * count};
  }

  /// Refuses bytes left over.
  void finish() const {
    if (at_ != in_.size()) {
      malformed(codec_,
                std::to_string(in_.size() - at_) + " bytes left over after " + std::to_string(at_));
    }
  }

  [[noreturn]] void fail(const std::string& what) const { malformed(codec_, what); }

 private:
  const void* take(std::size_t size, std::size_t count) {
    const std::size_t left = in_.size() - at_;
    if (count > left / size) {
      malformed(codec_, "it ends after " + std::to_string(in_.size()) + " bytes, short of " +
                            std::to_string(size * count) + " more at byte " + std::to_string(at_));
    }
    const void* p = in_.data() + at_;
    at_ += size * count;
    return p;
  }

  std::span<const std::byte> in_;
  std::string codec_;  // owned: a codec's name() may be a temporary
  std::size_t at_ = 0;
};

}  // namespace detail
}  // namespace asyncopt::compress
