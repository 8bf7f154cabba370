// libFuzzer target for the ZeroMQ wire decoder. The input is cut into frames: the first byte
// gives the number of frames (1 + byte % 4); each frame but the last takes a 2-byte
// little-endian length and that many bytes (fewer where the input ends); the last frame takes
// the rest. decode() must return views inside the frames or throw MalformedMessage.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

#include <asyncopt/zmq/wire.hpp>

namespace {

namespace wire = asyncopt::zeromq::wire;

// Whether `s` lies inside one of `frames` (an empty span always does).
bool inside(std::span<const std::byte> s, const std::vector<std::vector<std::byte>>& frames) {
  if (s.empty()) {
    return true;
  }
  const std::less<const std::byte*> before;
  for (const auto& f : frames) {
    if (!before(s.data(), f.data()) && !before(f.data() + f.size(), s.data() + s.size())) {
      return true;
    }
  }
  return false;
}

// Reads every byte of `s`, so that AddressSanitizer checks its bounds.
std::uint64_t sum(std::span<const std::byte> s) {
  std::uint64_t total = 0;
  for (const std::byte b : s) {
    total += static_cast<std::uint8_t>(b);
  }
  return total;
}

volatile std::uint64_t sink = 0;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::size_t count = 1 + data[0] % 4;
  std::size_t at = 1;
  // Each frame in its own allocation of exactly its size, so that a read past one is caught.
  std::vector<std::vector<std::byte>> frames;
  for (std::size_t k = 0; k < count; ++k) {
    std::size_t length = size - at;
    if (k + 1 < count) {
      std::size_t prefix = 0;
      for (std::size_t b = 0; b < 2 && at < size; ++b, ++at) {
        prefix |= static_cast<std::size_t>(data[at]) << (8 * b);
      }
      length = prefix < size - at ? prefix : size - at;
    }
    frames.emplace_back(length);
    if (length != 0) {
      std::memcpy(frames.back().data(), data + at, length);
    }
    at += length;
  }
  std::vector<std::span<const std::byte>> views;
  for (const auto& f : frames) {
    views.emplace_back(f.data(), f.size());
  }

  wire::Message m;
  try {
    m = wire::decode(views);
  } catch (const wire::MalformedMessage& e) {
    if (e.code() != wire::ErrorCode::malformed && e.code() != wire::ErrorCode::version) {
      std::abort();
    }
    return 0;
  }
  const std::span<const std::byte> text(reinterpret_cast<const std::byte*>(m.text.data()),
                                        m.text.size());
  if (!inside(m.index, frames) || !inside(m.values, frames) || !inside(text, frames)) {
    std::abort();
  }
  // The frames the type has hold exactly `count` keys and values; the others are empty.
  const wire::Type type = m.header.type;
  const bool has_index = m.is_sparse() && (type == wire::Type::pull || type == wire::Type::push);
  const bool has_values =
      type == wire::Type::pull_reply || type == wire::Type::push || type == wire::Type::stats_reply;
  const std::size_t value_size = type == wire::Type::stats_reply
                                     ? sizeof(std::uint64_t)
                                     : wire::element_size(m.header.element);
  // A compressed push's value frame is a payload of any size between the wire's bounds.
  const bool values_fit = m.is_compressed()
                              ? type == wire::Type::push && !m.is_sparse() &&
                                    m.values.size() >= wire::min_compressed &&
                                    m.values.size() <= wire::max_compressed(m.header.count)
                              : m.values.size() == (has_values ? m.header.count * value_size : 0);
  if (m.header.count > wire::max_count ||
      m.index.size() != (has_index ? m.header.count * sizeof(std::uint64_t) : 0) || !values_fit ||
      (type != wire::Type::error && !m.text.empty())) {
    std::abort();
  }
  // An accepted header encodes back to the bytes it came from.
  const auto again = wire::encode(m.header);
  if (std::memcmp(again.data(), frames.front().data(), again.size()) != 0) {
    std::abort();
  }
  sink = sink + sum(m.index) + sum(m.values) + sum(text);
  return 0;
}
