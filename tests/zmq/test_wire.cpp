// The ZeroMQ wire format: every field survives encode and decode, every way of breaking a
// message is refused with a MalformedMessage naming the problem, decode never does anything
// else on arbitrary bytes, and a live server answers broken requests and keeps serving.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/zmq/zmq.hpp>

namespace {

using namespace std::chrono_literals;
namespace wire = asyncopt::zeromq::wire;
using wire::Element;
using wire::ErrorCode;
using wire::Header;
using wire::MalformedMessage;
using wire::Type;

using Bytes = std::vector<std::byte>;
using Frames = std::vector<Bytes>;

// Each frame in its own allocation of exactly its size, so that a sanitizer build sees any
// read past one.
wire::Message decode_frames(const Frames& frames) {
  std::vector<std::span<const std::byte>> views;
  views.reserve(frames.size());
  for (const Bytes& f : frames) {
    views.emplace_back(f.data(), f.size());
  }
  return wire::decode(views);
}

// The code of the MalformedMessage decode throws; nullopt when it returns. Any other
// exception escapes and fails the test.
std::optional<ErrorCode> failure_code(const Frames& frames) {
  try {
    static_cast<void>(decode_frames(frames));
  } catch (const MalformedMessage& e) {
    return e.code();
  }
  return std::nullopt;
}

// decode(frames) throws a MalformedMessage whose message contains `text` and whose code is
// `code`.
#define CHECK_MALFORMED(frames, text, code)                          \
  do {                                                               \
    CHECK_THROWS_AS(decode_frames(frames), MalformedMessage);        \
    CHECK_THROWS_WITH(decode_frames(frames), Catch::Contains(text)); \
    CHECK(failure_code(frames) == std::optional<ErrorCode>(code));   \
  } while (false)

Bytes header_bytes(const Header& h) {
  const auto raw = wire::encode(h);
  return {raw.begin(), raw.end()};
}

template <class T>
void poke(Bytes& bytes, std::size_t at, T v) {
  REQUIRE(at + sizeof(T) <= bytes.size());
  std::memcpy(bytes.data() + at, &v, sizeof(T));
}

template <class T>
Bytes bytes_of(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

Bytes bytes_of(std::string_view text) {
  Bytes out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

void check_same_header(const Header& got, const Header& want) {
  CHECK(got.type == want.type);
  CHECK(got.element == want.element);
  CHECK(got.flags == want.flags);
  CHECK(got.worker == want.worker);
  CHECK(got.sequence == want.sequence);
  CHECK(got.value == want.value);
  CHECK(got.count == want.count);
  CHECK(got.offset == want.offset);
}

// Whether `s` lies inside one of `frames` (an empty span always does).
bool inside(std::span<const std::byte> s, const Frames& frames) {
  if (s.empty()) {
    return true;
  }
  const std::less<const std::byte*> before;
  return std::any_of(frames.begin(), frames.end(), [&](const Bytes& f) {
    const std::byte* begin = f.data();
    const std::byte* end = f.data() + f.size();
    return !before(s.data(), begin) && !before(end, s.data() + s.size());
  });
}

// Whether `s` is exactly frame `k` (same bytes in place, not a copy).
bool is_frame(std::span<const std::byte> s, const Frames& frames, std::size_t k) {
  return k < frames.size() && s.data() == frames[k].data() && s.size() == frames[k].size();
}

// A header with a distinct value in every field, so that a field written at the wrong
// offset or read back from another shows.
Header sample_header(Type type, Element element, std::uint8_t flags, std::uint64_t count) {
  return {.type = type,
          .element = element,
          .flags = flags,
          .worker = 0x0a0b0c0dU,
          .sequence = 0x1122334455667788ULL,
          .value = 0x99aabbccddeeff01ULL,
          .count = count,
          .offset = 0x0123456789abcdefULL};
}

// The top-k (k = 2) payload of `values`: what a compressed push's value frame holds.
Bytes compressed_payload(const std::vector<float>& values) {
  asyncopt::compress::Payload payload;
  asyncopt::compress::TopK{.k = 2}.encode(std::span<const float>(values), {}, payload);
  return payload;
}

// A valid message of every shape, for corruption.
std::vector<Frames> valid_messages() {
  const std::vector<std::uint64_t> keys{1, 5, 9};
  const std::vector<float> floats{1.5F, -2.0F, 3.25F};
  const std::vector<double> doubles{0.5, -8.0, 1e300};
  const std::vector<std::uint64_t> counters{1, 2, 3, 4, 5, 6};
  std::vector<Frames> out;
  out.push_back({header_bytes(sample_header(Type::hello, Element::float32, 0, 0))});
  out.push_back({header_bytes(sample_header(Type::welcome, Element::float64, 0, 8))});
  out.push_back({header_bytes(sample_header(Type::pull, Element::float32, 0, 0))});
  out.push_back({header_bytes(sample_header(Type::pull, Element::float32, wire::Flag::sparse, 3)),
                 bytes_of(keys)});
  out.push_back(
      {header_bytes(sample_header(Type::pull_reply, Element::float32, 0, 3)), bytes_of(floats)});
  out.push_back(
      {header_bytes(sample_header(Type::push, Element::float64, 0, 3)), bytes_of(doubles)});
  out.push_back({header_bytes(sample_header(Type::push, Element::float32, wire::Flag::sparse, 3)),
                 bytes_of(keys), bytes_of(floats)});
  out.push_back({header_bytes(sample_header(Type::push, Element::float32,
                                            wire::Flag::compressed | wire::Flag::then_pull, 3)),
                 compressed_payload(floats)});
  out.push_back(
      {header_bytes(sample_header(Type::push_reply, Element::none, wire::Flag::applied, 0))});
  out.push_back({header_bytes(sample_header(Type::clock, Element::none, 0, 0))});
  out.push_back({header_bytes(sample_header(Type::heartbeat, Element::none, 0, 4))});
  out.push_back({header_bytes(sample_header(Type::error, Element::none, 0, 0)),
                 bytes_of(std::string_view("asyncopt: something went wrong"))});
  out.push_back({header_bytes(sample_header(Type::stats, Element::none, 0, 0))});
  out.push_back(
      {header_bytes(sample_header(Type::stats_reply, Element::none, 0, 6)), bytes_of(counters)});
  return out;
}

// decode(frames) returns or throws MalformedMessage; when it returns, its views lie in the
// frames, their sizes agree with the header, and the header encodes back to frame 0.
// Returns whether it returned, and counts a broken property in `violations`.
bool decodes_within(const Frames& frames, std::size_t& violations) {
  wire::Message m;
  try {
    m = decode_frames(frames);
  } catch (const MalformedMessage& e) {
    if (e.code() != ErrorCode::malformed && e.code() != ErrorCode::version) {
      ++violations;
    }
    return false;
  }
  const std::span<const std::byte> text(reinterpret_cast<const std::byte*>(m.text.data()),
                                        m.text.size());
  bool ok = inside(m.index, frames) && inside(m.values, frames) && inside(text, frames);
  ok = ok && header_bytes(m.header) == frames.front();
  // The frames the type has hold exactly `count` keys and values; the others are empty.
  const Type type = m.header.type;
  const bool has_index = m.is_sparse() && (type == Type::pull || type == Type::push);
  const bool has_values =
      type == Type::pull_reply || type == Type::push || type == Type::stats_reply;
  const std::size_t value_size =
      type == Type::stats_reply ? sizeof(std::uint64_t) : wire::element_size(m.header.element);
  ok = ok && m.header.count <= wire::max_count;
  ok = ok && m.index.size() == (has_index ? m.header.count * sizeof(std::uint64_t) : 0);
  ok =
      ok && (m.is_compressed() ? type == Type::push && !m.is_sparse() &&
                                     m.values.size() >= wire::min_compressed &&
                                     m.values.size() <= wire::max_compressed(m.header.count)
                               : m.values.size() == (has_values ? m.header.count * value_size : 0));
  ok = ok && (type == Type::error || m.text.empty());
  if (!ok) {
    ++violations;
  }
  return true;
}

// Cuts `bytes` into `parts` frames at random points (empty frames included).
Frames split(const Bytes& bytes, std::size_t parts, std::mt19937& rng) {
  std::vector<std::size_t> cuts{0, bytes.size()};
  std::uniform_int_distribution<std::size_t> at(0, bytes.size());
  for (std::size_t k = 1; k < parts; ++k) {
    cuts.push_back(at(rng));
  }
  std::sort(cuts.begin(), cuts.end());
  Frames out;
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
    out.emplace_back(bytes.begin() + static_cast<std::ptrdiff_t>(cuts[k]),
                     bytes.begin() + static_cast<std::ptrdiff_t>(cuts[k + 1]));
  }
  return out;
}

}  // namespace

TEST_CASE("the header is 48 little-endian bytes starting with AOPT and version 2") {
  const Bytes h = header_bytes(sample_header(Type::push, Element::float64, 1, 0x42));
  REQUIRE(h.size() == wire::header_size);
  CHECK(h[0] == std::byte{'A'});
  CHECK(h[1] == std::byte{'O'});
  CHECK(h[2] == std::byte{'P'});
  CHECK(h[3] == std::byte{'T'});
  CHECK(h[4] == std::byte{2});
  CHECK(h[5] == std::byte{0});
  CHECK(h[6] == std::byte{5});  // push
  CHECK(h[7] == std::byte{0});
  CHECK(h[8] == std::byte{2});  // float64
  CHECK(h[9] == std::byte{1});  // sparse
  CHECK(h[10] == std::byte{0});
  CHECK(h[11] == std::byte{0});
  CHECK(h[12] == std::byte{0x0d});  // worker, low byte first
  CHECK(h[15] == std::byte{0x0a});
  CHECK(h[16] == std::byte{0x88});  // sequence
  CHECK(h[23] == std::byte{0x11});
  CHECK(h[32] == std::byte{0x42});  // count
  CHECK(h[40] == std::byte{0xef});  // offset
  CHECK(h[47] == std::byte{0x01});
  CHECK(wire::sequence_of(std::span<const std::byte>(h)) == 0x1122334455667788ULL);
  CHECK(wire::sequence_of(std::span<const std::byte>(h).first(47)) == 0);
}

TEST_CASE("every message type survives encode and decode with its frames") {
  const std::vector<std::uint64_t> keys{0, 3, 7, 1ULL << 40};
  const std::vector<float> floats{1.0F, -0.5F, 3.0e38F, 0.0F};
  const std::vector<double> doubles{-1.0, 2.5, 1e-300, 7.0};

  SECTION("header-only messages") {
    for (const Type t : {Type::hello, Type::welcome, Type::clock, Type::leave, Type::join,
                         Type::heartbeat, Type::stats, Type::push_reply}) {
      CAPTURE(wire::type_name(t));
      const bool typed = t == Type::hello || t == Type::welcome;
      const Header h = sample_header(t, typed ? Element::float64 : Element::none,
                                     t == Type::push_reply ? wire::Flag::applied : 0, 17);
      const Frames frames{header_bytes(h)};
      const wire::Message m = decode_frames(frames);
      check_same_header(m.header, h);
      CHECK(m.index.empty());
      CHECK(m.values.empty());
      CHECK(m.text.empty());
      CHECK_FALSE(m.is_sparse());
    }
  }

  SECTION("a dense pull has no frame and any element type it asks for") {
    for (const Element e : {Element::none, Element::float32, Element::float64}) {
      const Header h = sample_header(Type::pull, e, 0, 0);
      const wire::Message m = decode_frames({header_bytes(h)});
      check_same_header(m.header, h);
      CHECK_FALSE(m.is_sparse());
      CHECK(m.index.empty());
    }
  }

  SECTION("a sparse pull carries its keys") {
    const Header h = sample_header(Type::pull, Element::float32, wire::Flag::sparse, keys.size());
    const Frames frames{header_bytes(h), bytes_of(keys)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(m.is_sparse());
    CHECK(is_frame(m.index, frames, 1));
    CHECK(m.values.empty());
    std::vector<std::uint64_t> got(keys.size());
    m.copy_index(std::span<std::uint64_t>(got));
    CHECK(got == keys);
  }

  SECTION("a pull reply carries its values") {
    const Header h = sample_header(Type::pull_reply, Element::float32, 0, floats.size());
    const Frames frames{header_bytes(h), bytes_of(floats)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(is_frame(m.values, frames, 1));
    std::vector<float> got(floats.size());
    m.copy_values(std::span<float>(got));
    CHECK(got == floats);
  }

  SECTION("a dense push carries its values") {
    const Header h = sample_header(Type::push, Element::float64, 0, doubles.size());
    const Frames frames{header_bytes(h), bytes_of(doubles)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK_FALSE(m.is_sparse());
    CHECK(m.index.empty());
    CHECK(is_frame(m.values, frames, 1));
    std::vector<double> got(doubles.size());
    m.copy_values(std::span<double>(got));
    CHECK(got == doubles);
  }

  SECTION("a compressed push carries its payload, of any size a payload may have") {
    const Header h = sample_header(Type::push, Element::float32,
                                   wire::Flag::compressed | wire::Flag::then_pull, floats.size());
    const Bytes payload = compressed_payload(floats);
    const Frames frames{header_bytes(h), payload};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(m.is_compressed());
    CHECK_FALSE(m.is_sparse());
    CHECK(is_frame(m.values, frames, 1));
    std::vector<float> got(floats.size());
    asyncopt::compress::TopK{.k = 2}.decode(m.values, {}, std::span<float>(got));
    CHECK(got == std::vector<float>{1.0F, 0.0F, 3.0e38F, 0.0F});  // the largest two kept
  }

  SECTION("a sparse push carries its keys, then its values") {
    const Header h = sample_header(Type::push, Element::float32, wire::Flag::sparse, keys.size());
    const Frames frames{header_bytes(h), bytes_of(keys), bytes_of(floats)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(m.is_sparse());
    CHECK(is_frame(m.index, frames, 1));
    CHECK(is_frame(m.values, frames, 2));
    std::vector<std::uint64_t> got_keys(keys.size());
    m.copy_index(std::span<std::uint64_t>(got_keys));
    CHECK(got_keys == keys);
    std::vector<float> got(floats.size());
    m.copy_values(std::span<float>(got));
    CHECK(got == floats);
  }

  SECTION("an empty push is well-formed") {
    const Header h = sample_header(Type::push, Element::float32, 0, 0);
    const Frames frames{header_bytes(h), Bytes{}};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(m.values.empty());
  }

  SECTION("an error carries its code and its text") {
    const std::string text = "asyncopt: key 12 is outside this server's range [0, 8)";
    Header h = sample_header(Type::error, Element::none, 0, 0);
    h.offset = static_cast<std::uint64_t>(ErrorCode::bad_request);
    const Frames frames{header_bytes(h), bytes_of(text)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(static_cast<ErrorCode>(m.header.offset) == ErrorCode::bad_request);
    CHECK(m.text == text);
    CHECK(static_cast<const void*>(m.text.data()) == static_cast<const void*>(frames[1].data()));
  }

  SECTION("an error text of exactly max_text bytes, or none, is accepted") {
    const Header h = sample_header(Type::error, Element::none, 0, 0);
    const wire::Message full =
        decode_frames({header_bytes(h), bytes_of(std::string(wire::max_text, 'x'))});
    CHECK(full.text.size() == wire::max_text);
    const wire::Message empty = decode_frames({header_bytes(h), Bytes{}});
    CHECK(empty.text.empty());
  }

  SECTION("a stats reply carries its counters as u64") {
    std::vector<std::uint64_t> counters(static_cast<std::size_t>(wire::StatsField::count));
    for (std::size_t k = 0; k < counters.size(); ++k) {
      counters[k] = 1000 + k;
    }
    const Header h = sample_header(Type::stats_reply, Element::none, 0, counters.size());
    const Frames frames{header_bytes(h), bytes_of(counters)};
    const wire::Message m = decode_frames(frames);
    check_same_header(m.header, h);
    CHECK(is_frame(m.values, frames, 1));
    std::vector<std::uint64_t> got(counters.size());
    std::memcpy(got.data(), m.values.data(), m.values.size());
    CHECK(got == counters);
  }

  SECTION("a count of exactly max_count is accepted where no frame must hold it") {
    const Header h = sample_header(Type::pull, Element::float32, 0, wire::max_count);
    CHECK(decode_frames({header_bytes(h)}).header.count == wire::max_count);
  }
}

TEST_CASE("each way of breaking a message is refused with a message naming it") {
  const Header push = sample_header(Type::push, Element::float32, 0, 2);
  const Bytes two_floats(2 * sizeof(float));
  const Bytes two_keys(2 * sizeof(std::uint64_t));

  SECTION("no frames") {
    CHECK_MALFORMED(Frames{}, "no frames", ErrorCode::malformed);
  }

  SECTION("a header frame of the wrong size") {
    Bytes h = header_bytes(push);
    Bytes short_header(h.begin(), h.end() - 1);
    CHECK_MALFORMED((Frames{short_header, two_floats}), "header frame of 47 bytes, expected 48",
                    ErrorCode::malformed);
    Bytes long_header = h;
    long_header.push_back(std::byte{0});
    CHECK_MALFORMED((Frames{long_header, two_floats}), "header frame of 49 bytes, expected 48",
                    ErrorCode::malformed);
    CHECK_MALFORMED((Frames{Bytes{}}), "header frame of 0 bytes", ErrorCode::malformed);
  }

  SECTION("bad magic") {
    for (std::size_t at = 0; at < 4; ++at) {
      Bytes h = header_bytes(push);
      h[at] ^= std::byte{0x20};
      CHECK_MALFORMED((Frames{h, two_floats}), "bad magic", ErrorCode::malformed);
    }
  }

  SECTION("another protocol version") {
    for (const std::uint16_t version : {0, 1, 3, 0x100, 0xffff}) {
      Bytes h = header_bytes(push);
      poke<std::uint16_t>(h, 4, version);
      CHECK_MALFORMED((Frames{h, two_floats}), "protocol version " + std::to_string(version),
                      ErrorCode::version);
      CHECK_THROWS_WITH(decode_frames({h, two_floats}), Catch::Contains("this build speaks 2"));
    }
  }

  SECTION("an unknown message type") {
    for (const std::uint16_t type : {0, 15, 0x100, 0xffff}) {
      Bytes h = header_bytes(sample_header(Type::hello, Element::none, 0, 0));
      poke<std::uint16_t>(h, 6, type);
      CHECK_MALFORMED((Frames{h}), "unknown message type " + std::to_string(type),
                      ErrorCode::malformed);
    }
  }

  SECTION("an unknown element type") {
    for (const std::uint8_t element : {3, 4, 0x80, 0xff}) {
      Bytes h = header_bytes(push);
      poke<std::uint8_t>(h, 8, element);
      CHECK_MALFORMED((Frames{h, two_floats}), "unknown element type " + std::to_string(element),
                      ErrorCode::malformed);
    }
  }

  SECTION("reserved bytes that are not zero") {
    for (const std::size_t at : {10, 11}) {
      Bytes h = header_bytes(push);
      h[at] = std::byte{1};
      CHECK_MALFORMED((Frames{h, two_floats}), "reserved bytes are not zero", ErrorCode::malformed);
    }
  }

  SECTION("unknown flags") {
    for (const std::uint8_t flags : {0x10, 0x80, 0xff}) {
      Bytes h = header_bytes(push);
      poke<std::uint8_t>(h, 9, flags);
      CHECK_MALFORMED((Frames{h, two_floats}), "unknown flags " + std::to_string(flags),
                      ErrorCode::malformed);
    }
  }

  SECTION("a compressed message that is not a dense push, or a frame no payload has") {
    using wire::Flag;
    const Bytes payload(wire::min_compressed);
    Bytes sparse = header_bytes(
        sample_header(Type::push, Element::float32, Flag::compressed | Flag::sparse, 2));
    CHECK_MALFORMED((Frames{sparse, two_keys, payload}), "push, sparse, cannot be compressed",
                    ErrorCode::malformed);
    Bytes reply =
        header_bytes(sample_header(Type::pull_reply, Element::float32, Flag::compressed, 2));
    CHECK_MALFORMED((Frames{reply, two_floats}), "pull_reply cannot be compressed",
                    ErrorCode::malformed);
    const Bytes h = header_bytes(sample_header(Type::push, Element::float32, Flag::compressed, 2));
    CHECK_MALFORMED((Frames{h, Bytes(wire::min_compressed - 1)}),
                    "compressed value frame of 15 bytes for 2 elements (from 16 to 4160)",
                    ErrorCode::malformed);
    CHECK_MALFORMED((Frames{h, Bytes(wire::max_compressed(2) + 1)}),
                    "compressed value frame of 4161 bytes", ErrorCode::malformed);
    CHECK_MALFORMED((Frames{h}), "push with 1 frames, expected 2", ErrorCode::malformed);
  }

  SECTION("the sparse flag on a type that has no index frame") {
    for (const Type t :
         {Type::hello, Type::welcome, Type::pull_reply, Type::push_reply, Type::clock, Type::leave,
          Type::join, Type::heartbeat, Type::error, Type::stats, Type::stats_reply}) {
      CAPTURE(wire::type_name(t));
      const Bytes h = header_bytes(sample_header(t, Element::none, wire::Flag::sparse, 0));
      CHECK_MALFORMED((Frames{h}), std::string(wire::type_name(t)) + " cannot be sparse",
                      ErrorCode::malformed);
    }
  }

  SECTION("a count above max_count") {
    // Each count with the frame sizes a wrapping multiplication would ask for: 0 bytes for
    // 2^61 u64 keys or doubles and for 2^62 floats.
    for (const std::uint64_t count :
         {wire::max_count + 1, std::uint64_t{1} << 61, std::uint64_t{1} << 62, ~std::uint64_t{0}}) {
      CAPTURE(count);
      const std::string text = "count " + std::to_string(count) + " exceeds the limit " +
                               std::to_string(wire::max_count);
      for (const Element e : {Element::float32, Element::float64}) {
        const Bytes dense = header_bytes(sample_header(Type::push, e, 0, count));
        CHECK_MALFORMED((Frames{dense, Bytes{}}), text, ErrorCode::malformed);
        const Bytes sparse = header_bytes(sample_header(Type::push, e, wire::Flag::sparse, count));
        CHECK_MALFORMED((Frames{sparse, Bytes{}, Bytes{}}), text, ErrorCode::malformed);
      }
      const Bytes pull =
          header_bytes(sample_header(Type::pull, Element::float32, wire::Flag::sparse, count));
      CHECK_MALFORMED((Frames{pull, Bytes{}}), text, ErrorCode::malformed);
      const Bytes stats = header_bytes(sample_header(Type::stats_reply, Element::none, 0, count));
      CHECK_MALFORMED((Frames{stats, Bytes{}}), text, ErrorCode::malformed);
    }
  }

  SECTION("too few frames for the type") {
    CHECK_MALFORMED((Frames{header_bytes(push)}), "push with 1 frames, expected 2",
                    ErrorCode::malformed);
    const Header sparse_push = sample_header(Type::push, Element::float32, wire::Flag::sparse, 2);
    CHECK_MALFORMED((Frames{header_bytes(sparse_push), two_keys}), "push with 2 frames, expected 3",
                    ErrorCode::malformed);
    const Header sparse_pull = sample_header(Type::pull, Element::float32, wire::Flag::sparse, 2);
    CHECK_MALFORMED((Frames{header_bytes(sparse_pull)}), "pull with 1 frames, expected 2",
                    ErrorCode::malformed);
    CHECK_MALFORMED((Frames{header_bytes(sample_header(Type::error, Element::none, 0, 0))}),
                    "error with 1 frames, expected 2", ErrorCode::malformed);
    CHECK_MALFORMED((Frames{header_bytes(sample_header(Type::stats_reply, Element::none, 0, 0))}),
                    "stats_reply with 1 frames, expected 2", ErrorCode::malformed);
  }

  SECTION("too many frames for the type") {
    CHECK_MALFORMED((Frames{header_bytes(push), two_floats, two_floats}),
                    "push with 3 frames, expected 2", ErrorCode::malformed);
    CHECK_MALFORMED(
        (Frames{header_bytes(sample_header(Type::hello, Element::float32, 0, 0)), Bytes{}}),
        "hello with 2 frames, expected 1", ErrorCode::malformed);
    CHECK_MALFORMED(
        (Frames{header_bytes(sample_header(Type::pull, Element::float32, 0, 2)), two_keys}),
        "pull with 2 frames, expected 1", ErrorCode::malformed);
    const Header sparse_push = sample_header(Type::push, Element::float32, wire::Flag::sparse, 2);
    CHECK_MALFORMED((Frames{header_bytes(sparse_push), two_keys, two_floats, Bytes{}}),
                    "push with 4 frames, expected 3", ErrorCode::malformed);
  }

  SECTION("an index frame whose size is not count * 8") {
    const Header sparse_pull = sample_header(Type::pull, Element::float32, wire::Flag::sparse, 2);
    for (const std::size_t size : {0, 8, 15, 17, 24}) {
      CHECK_MALFORMED((Frames{header_bytes(sparse_pull), Bytes(size)}),
                      "index frame of " + std::to_string(size) + " bytes for 2 keys",
                      ErrorCode::malformed);
    }
    const Header sparse_push = sample_header(Type::push, Element::float64, wire::Flag::sparse, 2);
    CHECK_MALFORMED((Frames{header_bytes(sparse_push), Bytes(16 * 2), Bytes(16)}),
                    "index frame of 32 bytes for 2 keys", ErrorCode::malformed);
  }

  SECTION("a value frame whose size is not count * the element size") {
    for (const std::size_t size : {0, 4, 7, 9, 16}) {
      CHECK_MALFORMED((Frames{header_bytes(push), Bytes(size)}),
                      "value frame of " + std::to_string(size) + " bytes for 2 elements",
                      ErrorCode::malformed);
    }
    const Header doubles = sample_header(Type::pull_reply, Element::float64, 0, 2);
    CHECK_MALFORMED((Frames{header_bytes(doubles), two_floats}),
                    "value frame of 8 bytes for 2 elements", ErrorCode::malformed);
    const Header sparse_push = sample_header(Type::push, Element::float32, wire::Flag::sparse, 2);
    CHECK_MALFORMED((Frames{header_bytes(sparse_push), two_keys, Bytes(7)}),
                    "value frame of 7 bytes for 2 elements", ErrorCode::malformed);
    // Stats counters are u64 whatever the element says.
    const Header stats = sample_header(Type::stats_reply, Element::none, 0, 6);
    CHECK_MALFORMED((Frames{header_bytes(stats), Bytes(6 * 4)}),
                    "value frame of 24 bytes for 6 elements", ErrorCode::malformed);
  }

  SECTION("values without an element type") {
    CHECK_MALFORMED((Frames{header_bytes(sample_header(Type::push, Element::none, 0, 0)), Bytes{}}),
                    "push without an element type", ErrorCode::malformed);
    CHECK_MALFORMED(
        (Frames{header_bytes(sample_header(Type::pull_reply, Element::none, 0, 2)), two_floats}),
        "pull_reply without an element type", ErrorCode::malformed);
    CHECK_MALFORMED(
        (Frames{header_bytes(sample_header(Type::push, Element::none, wire::Flag::sparse, 2)),
                two_keys, two_floats}),
        "push without an element type", ErrorCode::malformed);
  }

  SECTION("an element type on a type that carries no values") {
    for (const Type t :
         {Type::push_reply, Type::clock, Type::leave, Type::join, Type::heartbeat, Type::stats}) {
      CAPTURE(wire::type_name(t));
      CHECK_MALFORMED((Frames{header_bytes(sample_header(t, Element::float32, 0, 0))}),
                      std::string(wire::type_name(t)) + " carries no values", ErrorCode::malformed);
    }
    CHECK_MALFORMED(
        (Frames{header_bytes(sample_header(Type::error, Element::float64, 0, 0)), Bytes{}}),
        "error carries no values", ErrorCode::malformed);
  }

  SECTION("an error text longer than max_text") {
    const Bytes h = header_bytes(sample_header(Type::error, Element::none, 0, 0));
    CHECK_MALFORMED((Frames{h, Bytes(wire::max_text + 1)}),
                    "error text of " + std::to_string(wire::max_text + 1) + " bytes",
                    ErrorCode::malformed);
    CHECK_MALFORMED((Frames{h, Bytes(1 << 20)}), "error text of 1048576 bytes",
                    ErrorCode::malformed);
  }

  SECTION("the message prefix names the format") {
    CHECK_THROWS_WITH(decode_frames({}), Catch::StartsWith("asyncopt: malformed message: "));
  }
}

TEST_CASE("decode only returns views inside its frames or throws MalformedMessage") {
  std::mt19937 rng(20240611);
  std::size_t violations = 0;
  std::size_t accepted = 0;

  SECTION("random bytes in one to four frames") {
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<std::size_t> parts(1, 4);
    std::uniform_int_distribution<std::size_t> length(0, 160);
    std::bernoulli_distribution framed(0.5);
    for (int iteration = 0; iteration < 20000; ++iteration) {
      Bytes bytes(length(rng));
      for (auto& b : bytes) {
        b = static_cast<std::byte>(byte(rng));
      }
      // Half the buffers start with a header prefix that passes the magic and version
      // checks, so that the rest of the decoder sees random bytes too.
      if (framed(rng) && bytes.size() >= 8) {
        poke<std::uint32_t>(bytes, 0, wire::magic);
        poke<std::uint16_t>(bytes, 4, wire::protocol_version);
      }
      const Frames frames = split(bytes, parts(rng), rng);
      if (decodes_within(frames, violations)) {
        ++accepted;
      }
    }
    CHECK(violations == 0);
  }

  SECTION("random headers of small counts with frames of random sizes") {
    std::uniform_int_distribution<int> type(0, 14);
    std::uniform_int_distribution<int> element(0, 3);
    // Mostly no flag, so that many messages pass; sometimes each flag and an unknown one.
    std::discrete_distribution<int> flags({6, 2, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1});
    std::uniform_int_distribution<std::uint64_t> count(0, 4);
    std::uniform_int_distribution<std::size_t> parts(0, 3);
    std::uniform_int_distribution<std::size_t> size(0, 40);
    std::bernoulli_distribution exact(0.7);
    for (int iteration = 0; iteration < 20000; ++iteration) {
      Header h = sample_header(Type::hello, Element::none, 0, count(rng));
      Bytes head = header_bytes(h);
      poke<std::uint16_t>(head, 6, static_cast<std::uint16_t>(type(rng)));
      poke<std::uint8_t>(head, 8, static_cast<std::uint8_t>(element(rng)));
      poke<std::uint8_t>(head, 9, static_cast<std::uint8_t>(flags(rng)));
      Frames frames{head};
      const std::size_t extra = parts(rng);
      for (std::size_t k = 0; k < extra; ++k) {
        // Mostly a size some frame of this count has, so that many messages pass.
        const std::size_t unit = std::array<std::size_t, 3>{4, 8, 1}[k % 3];
        frames.emplace_back(exact(rng) ? unit * static_cast<std::size_t>(h.count) : size(rng));
      }
      if (decodes_within(frames, violations)) {
        ++accepted;
      }
    }
    CHECK(violations == 0);
    CHECK(accepted > 200);  // the successful paths are exercised too
  }

  SECTION("single-byte corruptions of valid messages") {
    const std::vector<Frames> messages = valid_messages();
    for (const Frames& frames : messages) {
      REQUIRE(decodes_within(frames, violations));
    }
    std::uniform_int_distribution<std::size_t> which(0, messages.size() - 1);
    std::uniform_int_distribution<int> byte(1, 255);
    for (int iteration = 0; iteration < 20000; ++iteration) {
      Frames frames = messages[which(rng)];
      std::size_t total = 0;
      for (const Bytes& f : frames) {
        total += f.size();
      }
      std::size_t at = std::uniform_int_distribution<std::size_t>(0, total - 1)(rng);
      for (Bytes& f : frames) {
        if (at < f.size()) {
          f[at] ^= static_cast<std::byte>(byte(rng));  // a non-zero mask: the byte changes
          break;
        }
        at -= f.size();
      }
      if (decodes_within(frames, violations)) {
        ++accepted;
      }
    }
    CHECK(violations == 0);
    CHECK(accepted > 0);  // corrupting a value, a key or a sequence keeps a message valid
  }
}

namespace {

using Router =
    asyncopt::zeromq::Server<float, asyncopt::update::Sgd, asyncopt::consistency::LockFree>;

// A raw DEALER talking bytes to a server, every receive bounded.
class RawPeer {
 public:
  explicit RawPeer(const std::string& endpoint) : socket_(context_, ::zmq::socket_type::dealer) {
    socket_.set(::zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  void send(const Frames& frames) {
    std::vector<::zmq::message_t> parts;
    for (const Bytes& f : frames) {
      parts.emplace_back(f.data(), f.size());
    }
    REQUIRE(::zmq::send_multipart(socket_, parts).has_value());
  }

  // The next reply, decoded; fails the test after 5 s without one.
  wire::Message receive() {
    const bool arrived = asyncopt::zeromq::detail::receive(socket_, frames_, 5000ms);
    REQUIRE(arrived);
    return asyncopt::zeromq::detail::decode(frames_, 0);
  }

  // Sends `frames` and expects an error reply with `code` and `sequence`.
  wire::Message expect_error(const Frames& frames, ErrorCode code, std::uint64_t sequence) {
    send(frames);
    const wire::Message reply = receive();
    CHECK(reply.header.type == Type::error);
    CHECK(static_cast<ErrorCode>(reply.header.offset) == code);
    CHECK(reply.header.sequence == sequence);
    CHECK_FALSE(reply.text.empty());
    return reply;
  }

 private:
  ::zmq::context_t context_{1};
  ::zmq::socket_t socket_;
  asyncopt::zeromq::detail::Frames frames_;
};

}  // namespace

TEST_CASE("a live server answers each broken request with an error and keeps serving") {
  Router server(
      asyncopt::zeromq::ServerConfig{
          .endpoint = "tcp://127.0.0.1:*", .dimension = 8, .poll_interval = 10ms},
      asyncopt::update::Sgd{}, asyncopt::consistency::LockFree{});
  std::jthread t([&](std::stop_token s) { server.run(s); });
  RawPeer peer(server.endpoint());

  // (a) five bytes of garbage: no header to take a sequence from, so the reply has 0.
  const wire::Message garbage =
      peer.expect_error({Bytes(5, std::byte{0x5a})}, ErrorCode::malformed, 0);
  CHECK_THAT(std::string(garbage.text), Catch::Contains("header frame of 5 bytes"));

  // (b) a well-formed header of another protocol version.
  Bytes old_header =
      header_bytes({.type = Type::pull, .element = Element::float32, .sequence = 101});
  poke<std::uint16_t>(old_header, 4, 1);
  const wire::Message version = peer.expect_error({old_header}, ErrorCode::version, 101);
  CHECK_THAT(std::string(version.text), Catch::Contains("protocol version 1"));

  // (c) a push whose value frame is one byte short.
  const Bytes push8 = header_bytes(
      {.type = Type::push, .element = Element::float32, .worker = 0, .sequence = 102, .count = 8});
  const wire::Message short_push =
      peer.expect_error({push8, Bytes(8 * sizeof(float) - 1)}, ErrorCode::malformed, 102);
  CHECK_THAT(std::string(short_push.text), Catch::Contains("value frame of 31 bytes"));

  // (d) a well-formed dense push of 7 values to a server of 8 keys.
  const Bytes push7 = header_bytes(
      {.type = Type::push, .element = Element::float32, .worker = 0, .sequence = 103, .count = 7});
  const wire::Message wrong_length =
      peer.expect_error({push7, Bytes(7 * sizeof(float))}, ErrorCode::bad_request, 103);
  CHECK_THAT(std::string(wrong_length.text), Catch::Contains("dense push of 7 values"));

  // (e) a worker id beyond the job's one worker.
  const Bytes stranger = header_bytes(
      {.type = Type::pull, .element = Element::float32, .worker = 99, .sequence = 104});
  const wire::Message unknown = peer.expect_error({stranger}, ErrorCode::unknown_worker, 104);
  CHECK_THAT(std::string(unknown.text), Catch::Contains("worker id 99"));

  // Every counter is bumped before its reply is sent.
  const asyncopt::zeromq::ServerStats stats = server.stats();
  CHECK(stats.malformed == 3);
  CHECK(stats.refused == 2);
  CHECK(stats.version == 0);
  CHECK(stats.rejected == 0);

  // The same counters over the wire.
  peer.send(
      {header_bytes({.type = Type::stats, .worker = asyncopt::zeromq::observer, .sequence = 105})});
  const wire::Message counters = peer.receive();
  REQUIRE(counters.header.type == Type::stats_reply);
  CHECK(counters.header.sequence == 105);
  REQUIRE(counters.header.count == static_cast<std::uint64_t>(wire::StatsField::count));
  std::vector<std::uint64_t> fields(static_cast<std::size_t>(wire::StatsField::count));
  std::memcpy(fields.data(), counters.values.data(), counters.values.size());
  CHECK(fields[static_cast<std::size_t>(wire::StatsField::malformed)] == 3);
  CHECK(fields[static_cast<std::size_t>(wire::StatsField::refused)] == 2);

  // The server still serves: the observer reads the 8 initial zeros.
  peer.send({header_bytes({.type = Type::pull,
                           .element = Element::float32,
                           .worker = asyncopt::zeromq::observer,
                           .sequence = 106})});
  const wire::Message pulled = peer.receive();
  REQUIRE(pulled.header.type == Type::pull_reply);
  CHECK(pulled.header.sequence == 106);
  CHECK(pulled.header.element == Element::float32);
  CHECK(pulled.header.worker == asyncopt::zeromq::observer);
  REQUIRE(pulled.header.count == 8);
  std::vector<float> values(8, -1.0F);
  pulled.copy_values(std::span<float>(values));
  CHECK(values == std::vector<float>(8, 0.0F));
  CHECK(server.stats().malformed == 3);
  CHECK(server.stats().refused == 2);
}
