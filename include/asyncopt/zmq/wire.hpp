// The wire format between ZeroMQ workers and servers: a fixed header frame, then an index
// frame and a value frame where the message type has them. Free of ZeroMQ itself, so that
// the decoder can be tested and fuzzed on plain bytes.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace asyncopt::zeromq::wire {

static_assert(std::endian::native == std::endian::little,
              "asyncopt: the ZeroMQ wire format is little-endian and is implemented for "
              "little-endian hosts only");

/// The first four bytes of every header: "AOPT".
inline constexpr std::uint32_t magic = 0x54504f41U;
/// The protocol version this build speaks; a peer with another version is refused. Version 2
/// added compressed pushes (Flag::compressed) and the hello's compression fingerprint.
inline constexpr std::uint16_t protocol_version = 2;
/// Size of the header frame in bytes.
inline constexpr std::size_t header_size = 48;
/// The largest element count a message may announce (2^36 elements, 256 GiB of floats):
/// bounds every size computation far below overflow.
inline constexpr std::uint64_t max_count = std::uint64_t{1} << 36;
/// The longest text an error message may carry, in bytes.
inline constexpr std::size_t max_text = 4096;
/// The shortest value frame of a compressed push: a payload's header (compress::Payload).
inline constexpr std::size_t min_compressed = 16;

/// The longest value frame of a compressed push of `count` values: 32 bytes a value (top-k
/// of doubles with k = count takes 12; PowerSGD's factors of the largest rank it allows, in
/// double, take at most 16 per entry of its matrix, which pads the values by less than one
/// row) and 4 KiB for the payload's header and sizes. A bound for the wire check; the codec
/// checks the exact size.
[[nodiscard]] constexpr std::uint64_t max_compressed(std::uint64_t count) noexcept {
  return 32 * count + 4096;
}

/// What a message is. Requests go from a worker to a server; each has one reply type.
enum class Type : std::uint16_t {
  hello = 1,         ///< worker -> server: announce worker `worker` and its element type;
                     ///< `value` = one past the largest worker id the process will use,
                     ///< `offset` = its pushes' compression (compress::fingerprint; 0: none)
  welcome = 2,       ///< server -> worker: `value` = dimension, `offset` = first key,
                     ///< `count` = keys, element = the server's element type
  pull = 3,          ///< worker -> server: dense (no frames) or sparse (index frame);
                     ///< element = the element type wanted
  pull_reply = 4,    ///< server -> worker: value frame; `value` = server version seen
  push = 5,          ///< worker -> server: value frame, sparse with an index frame before it;
                     ///< compressed (dense only): the value frame is a compress::Payload of
                     ///< `count` values, encoded at the worker's step `offset`
  push_reply = 6,    ///< server -> worker: `value` = staleness, flag `applied`
  clock = 7,         ///< worker -> server: worker `worker` finished step `value`; no reply
  leave = 8,         ///< worker -> server: worker `worker` holds nobody back; `count` 1: for
                     ///< good (its handle is gone), 0: until it joins again; no reply
  join = 9,          ///< worker -> server: worker `worker` takes part again at clock `value`;
                     ///< `offset` = the worker process's claim token; `count` 1: a new
                     ///< handle, whose compression memory starts empty; answered with joined
  heartbeat = 10,    ///< worker -> server: workers [`worker`, `worker` + `count`) are alive;
                     ///< `offset` = the worker process's claim token
  error = 11,        ///< server -> worker: `offset` = ErrorCode, text frame
  stats = 12,        ///< worker -> server: request the server's counters
  stats_reply = 13,  ///< server -> worker: value frame of StatsField::count u64 counters
  joined = 14        ///< server -> worker: `value` = the worker's clock on the server after a join
};

/// The element type of a value frame.
enum class Element : std::uint8_t {
  none = 0,     ///< the message has no values
  float32 = 1,  ///< IEEE-754 binary32
  float64 = 2   ///< IEEE-754 binary64
};

/// Bits of Header::flags.
enum Flag : std::uint8_t {
  sparse = 1,     ///< the message has an index frame (pull, push)
  applied = 2,    ///< push_reply, or pull_reply to then_pull: the gradient was applied
  then_pull = 4,  ///< push (dense): then clock to `value` (if later) and pull; the answer
                  ///< is a pull_reply with the push's staleness in `offset`
  compressed = 8  ///< push (dense): the value frame is a compressed payload (see Type::push)
};

/// Why a server refused a request (Header::offset of an error reply).
enum class ErrorCode : std::uint64_t {
  malformed = 1,       ///< the message broke the wire format
  version = 2,         ///< another protocol version
  element = 3,         ///< another element type than the server's
  unknown_worker = 4,  ///< a worker id out of range, or a push from the observer id
  bad_request = 5,     ///< sizes or indices that do not fit the server's key range
  rule = 6,            ///< the update rule refused the push (logic_error)
  internal = 7,        ///< anything else the server could not do
  taken = 8            ///< join: another live worker process holds this worker id
};

/// The counters in a stats reply, in this order.
enum class StatsField : std::size_t {
  version = 0,   ///< updates applied by the server
  rejected,      ///< non-finite gradients rejected
  malformed,     ///< malformed messages received
  refused,       ///< well-formed requests refused with an error reply
  dropped,       ///< workers dropped after missing heartbeats
  checkpoints,   ///< checkpoints written
  duplicates,    ///< requests received again (resent after a timeout)
  unauthorized,  ///< CURVE handshakes refused
  count          ///< number of fields
};

/// The fixed-size first frame of every message.
struct Header {
  Type type = Type::hello;          ///< what the message is
  Element element = Element::none;  ///< element type of the value frame
  std::uint8_t flags = 0;           ///< Flag bits
  std::uint32_t worker = 0;         ///< the worker the message is from or for
  std::uint64_t sequence = 0;       ///< request number, echoed in the reply
  std::uint64_t value = 0;          ///< clock, version, staleness or dimension (see Type)
  std::uint64_t count = 0;          ///< elements in the index and value frames
  std::uint64_t offset = 0;         ///< first key (welcome) or ErrorCode (error)
};

/// A message that breaks the format: thrown by decode(), answered by the server with an
/// error reply.
class MalformedMessage : public std::runtime_error {
 public:
  /// `code` says whether the format or only the protocol version is wrong.
  MalformedMessage(ErrorCode code, const std::string& what)
      : std::runtime_error("asyncopt: malformed message: " + what), code_(code) {}
  /// ErrorCode::malformed or ErrorCode::version.
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

/// Bytes per element of `e` (0 for Element::none).
[[nodiscard]] constexpr std::size_t element_size(Element e) noexcept {
  switch (e) {
    case Element::float32:
      return 4;
    case Element::float64:
      return 8;
    case Element::none:
      break;
  }
  return 0;
}

/// The Element of a C++ scalar type.
template <class Scalar>
[[nodiscard]] constexpr Element element_of() noexcept {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "asyncopt: the wire format carries float or double values");
  return std::is_same_v<Scalar, float> ? Element::float32 : Element::float64;
}

/// Name of a message type, for messages and logs.
[[nodiscard]] constexpr std::string_view type_name(Type t) noexcept {
  switch (t) {
    case Type::hello:
      return "hello";
    case Type::welcome:
      return "welcome";
    case Type::pull:
      return "pull";
    case Type::pull_reply:
      return "pull_reply";
    case Type::push:
      return "push";
    case Type::push_reply:
      return "push_reply";
    case Type::clock:
      return "clock";
    case Type::leave:
      return "leave";
    case Type::join:
      return "join";
    case Type::heartbeat:
      return "heartbeat";
    case Type::error:
      return "error";
    case Type::stats:
      return "stats";
    case Type::stats_reply:
      return "stats_reply";
    case Type::joined:
      return "joined";
  }
  return "unknown";
}

namespace detail {

template <class T>
void put(std::byte* out, std::size_t at, T v) noexcept {
  std::memcpy(out + at, &v, sizeof(T));
}

template <class T>
[[nodiscard]] T get(const std::byte* in, std::size_t at) noexcept {
  T v;
  std::memcpy(&v, in + at, sizeof(T));
  return v;
}

[[noreturn]] inline void malformed(const std::string& what) {
  throw MalformedMessage(ErrorCode::malformed, what);
}

// Which frames a message of type t carries after its header.
struct Shape {
  bool known = false;
  bool index = false;   // an index frame of `count` u64
  bool values = false;  // a value frame of `count` elements
  bool text = false;    // an error text frame
};

[[nodiscard]] constexpr Shape shape(Type t, bool sparse) noexcept {
  switch (t) {
    case Type::hello:
    case Type::welcome:
    case Type::clock:
    case Type::leave:
    case Type::join:
    case Type::heartbeat:
    case Type::stats:
    case Type::joined:
      return {.known = true};
    case Type::pull:
      return {.known = true, .index = sparse};
    case Type::pull_reply:
    case Type::stats_reply:
      return {.known = true, .values = true};
    case Type::push:
      return {.known = true, .index = sparse, .values = true};
    case Type::push_reply:
      return {.known = true};
    case Type::error:
      return {.known = true, .text = true};
  }
  return {};
}

}  // namespace detail

/// Writes `h` into the 48 bytes at `out` (little-endian).
inline void encode(const Header& h, std::span<std::byte, header_size> out) noexcept {
  std::byte* p = out.data();
  detail::put<std::uint32_t>(p, 0, magic);
  detail::put<std::uint16_t>(p, 4, protocol_version);
  detail::put<std::uint16_t>(p, 6, static_cast<std::uint16_t>(h.type));
  detail::put<std::uint8_t>(p, 8, static_cast<std::uint8_t>(h.element));
  detail::put<std::uint8_t>(p, 9, h.flags);
  detail::put<std::uint16_t>(p, 10, 0);
  detail::put<std::uint32_t>(p, 12, h.worker);
  detail::put<std::uint64_t>(p, 16, h.sequence);
  detail::put<std::uint64_t>(p, 24, h.value);
  detail::put<std::uint64_t>(p, 32, h.count);
  detail::put<std::uint64_t>(p, 40, h.offset);
}

/// The header as a 48-byte array.
[[nodiscard]] inline std::array<std::byte, header_size> encode(const Header& h) noexcept {
  std::array<std::byte, header_size> out{};
  encode(h, std::span<std::byte, header_size>(out));
  return out;
}

/// A decoded message: the header and views of its frames (into the caller's buffers).
struct Message {
  Header header;                      ///< the checked header
  std::span<const std::byte> index;   ///< `count` little-endian u64 keys, or empty
  std::span<const std::byte> values;  ///< `count` elements of `header.element`, or empty
  std::string_view text;              ///< an error reply's text, or empty

  /// Whether the message carries an index frame.
  [[nodiscard]] bool is_sparse() const noexcept { return (header.flags & Flag::sparse) != 0; }
  /// Whether the value frame is a compressed payload (a push).
  [[nodiscard]] bool is_compressed() const noexcept {
    return (header.flags & Flag::compressed) != 0;
  }

  /// Copies the index frame into `out` (`header.count` entries).
  void copy_index(std::span<std::uint64_t> out) const noexcept {
    if (!index.empty()) {  // an empty frame or span may have no storage
      std::memcpy(out.data(), index.data(), index.size());
    }
  }

  /// Copies the value frame into `out` (`header.count` entries); the caller has checked
  /// that `header.element` is element_of<Scalar>() and that the message is not compressed
  /// (a compressed push's frame is a payload, decoded by its codec).
  template <class Scalar>
  void copy_values(std::span<Scalar> out) const noexcept {
    if (!values.empty()) {
      std::memcpy(out.data(), values.data(), values.size());
    }
  }
};

/// The sequence number of a header frame that has the header's size, for answering a
/// message that fails decode() with an error its sender can match; 0 otherwise.
[[nodiscard]] inline std::uint64_t sequence_of(std::span<const std::byte> header) noexcept {
  return header.size() == header_size ? detail::get<std::uint64_t>(header.data(), 16) : 0;
}

/// Checks the frames of one message and returns views of them. Every field is checked
/// against the frame sizes before use: magic, protocol version, type, element type,
/// reserved bits, flags, the number of frames the type has, and each frame's exact size for
/// `count` elements. Throws MalformedMessage (code ErrorCode::version for another protocol
/// version, ErrorCode::malformed otherwise); never reads outside the frames.
[[nodiscard]] inline Message decode(std::span<const std::span<const std::byte>> frames) {
  if (frames.empty()) {
    detail::malformed("no frames");
  }
  const std::span<const std::byte> head = frames[0];
  if (head.size() != header_size) {
    detail::malformed("header frame of " + std::to_string(head.size()) + " bytes, expected " +
                      std::to_string(header_size));
  }
  const std::byte* p = head.data();
  if (detail::get<std::uint32_t>(p, 0) != magic) {
    detail::malformed("bad magic (not an asyncopt message)");
  }
  const auto version = detail::get<std::uint16_t>(p, 4);
  if (version != protocol_version) {
    throw MalformedMessage(ErrorCode::version, "protocol version " + std::to_string(version) +
                                                   ", this build speaks " +
                                                   std::to_string(protocol_version));
  }
  Message m;
  const auto type = detail::get<std::uint16_t>(p, 6);
  const auto element = detail::get<std::uint8_t>(p, 8);
  m.header.flags = detail::get<std::uint8_t>(p, 9);
  if (detail::get<std::uint16_t>(p, 10) != 0) {
    detail::malformed("reserved bytes are not zero");
  }
  m.header.worker = detail::get<std::uint32_t>(p, 12);
  m.header.sequence = detail::get<std::uint64_t>(p, 16);
  m.header.value = detail::get<std::uint64_t>(p, 24);
  m.header.count = detail::get<std::uint64_t>(p, 32);
  m.header.offset = detail::get<std::uint64_t>(p, 40);

  if (element > static_cast<std::uint8_t>(Element::float64)) {
    detail::malformed("unknown element type " + std::to_string(element));
  }
  m.header.element = static_cast<Element>(element);
  if ((m.header.flags & ~(Flag::sparse | Flag::applied | Flag::then_pull | Flag::compressed)) !=
      0) {
    detail::malformed("unknown flags " + std::to_string(m.header.flags));
  }
  m.header.type = static_cast<Type>(type);
  const detail::Shape s = detail::shape(m.header.type, m.is_sparse());
  if (!s.known) {
    detail::malformed("unknown message type " + std::to_string(type));
  }
  if ((m.header.flags & Flag::then_pull) != 0 && m.header.type != Type::push) {
    detail::malformed(std::string(type_name(m.header.type)) + " cannot carry then_pull");
  }
  const bool compressed = (m.header.flags & Flag::compressed) != 0;
  if (compressed && (m.header.type != Type::push || m.is_sparse())) {
    detail::malformed(std::string(type_name(m.header.type)) + (m.is_sparse() ? ", sparse," : "") +
                      " cannot be compressed");
  }
  if (m.is_sparse() && !s.index) {
    detail::malformed(std::string(type_name(m.header.type)) + " cannot be sparse");
  }
  if (m.header.count > max_count) {
    detail::malformed("count " + std::to_string(m.header.count) + " exceeds the limit " +
                      std::to_string(max_count));
  }
  const std::size_t frames_expected = 1 + (s.index ? 1 : 0) + (s.values ? 1 : 0) + (s.text ? 1 : 0);
  if (frames.size() != frames_expected) {
    detail::malformed(std::string(type_name(m.header.type)) + " with " +
                      std::to_string(frames.size()) + " frames, expected " +
                      std::to_string(frames_expected));
  }
  const auto count = static_cast<std::size_t>(m.header.count);
  std::size_t next = 1;
  if (s.index) {
    const std::span<const std::byte> f = frames[next++];
    if (f.size() != count * sizeof(std::uint64_t)) {
      detail::malformed("index frame of " + std::to_string(f.size()) + " bytes for " +
                        std::to_string(count) + " keys");
    }
    m.index = f;
  }
  if (s.values) {
    const std::size_t size = element_size(m.header.element);
    if (size == 0 && m.header.type != Type::stats_reply) {
      detail::malformed(std::string(type_name(m.header.type)) + " without an element type");
    }
    const std::size_t bytes =
        m.header.type == Type::stats_reply ? count * sizeof(std::uint64_t) : count * size;
    const std::span<const std::byte> f = frames[next++];
    if (compressed) {
      if (f.size() < min_compressed || f.size() > max_compressed(count)) {
        detail::malformed("compressed value frame of " + std::to_string(f.size()) + " bytes for " +
                          std::to_string(count) + " elements (from " +
                          std::to_string(min_compressed) + " to " +
                          std::to_string(max_compressed(count)) + ")");
      }
    } else if (f.size() != bytes) {
      detail::malformed("value frame of " + std::to_string(f.size()) + " bytes for " +
                        std::to_string(count) + " elements");
    }
    m.values = f;
  } else if (m.header.element != Element::none && m.header.type != Type::hello &&
             m.header.type != Type::welcome && m.header.type != Type::pull) {
    detail::malformed(std::string(type_name(m.header.type)) + " carries no values");
  }
  if (s.text) {
    const std::span<const std::byte> f = frames[next++];
    if (f.size() > max_text) {
      detail::malformed("error text of " + std::to_string(f.size()) + " bytes");
    }
    m.text = std::string_view(reinterpret_cast<const char*>(f.data()), f.size());
  }
  return m;
}

}  // namespace asyncopt::zeromq::wire
