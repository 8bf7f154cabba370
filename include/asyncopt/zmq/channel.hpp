// Message helpers shared by the ZeroMQ server and transport: frames in and out of the wire
// format, bounded receives, and the errors a remote call raises.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <asyncopt/zmq/wire.hpp>

namespace asyncopt::zeromq {

/// A server did not answer within the timeout: it is gone, unreachable or overloaded.
class ServerUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A server refused a request for a reason the caller did not cause by its arguments (a
/// protocol or element-type mismatch, an unknown worker id, a failure inside the server).
class RemoteError : public std::runtime_error {
 public:
  /// `code` is the server's reason, `what` its explanation.
  RemoteError(wire::ErrorCode code, const std::string& what)
      : std::runtime_error(what), code_(code) {}
  /// The server's reason.
  [[nodiscard]] wire::ErrorCode code() const noexcept { return code_; }

 private:
  wire::ErrorCode code_;
};

/// A CURVE key pair in Z85 text (40 characters each), as ZeroMQ prints them.
struct CurveKeyPair {
  std::string public_key;  ///< share it: servers list it, clients name the server's
  std::string secret_key;  ///< keep it to the process it belongs to
};

/// A fresh CURVE key pair. Throws std::runtime_error when libzmq was built without CURVE.
[[nodiscard]] inline CurveKeyPair generate_curve_keypair() {
  char public_key[41] = {};
  char secret_key[41] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    throw std::runtime_error("asyncopt: this libzmq has no CURVE support (zmq_curve_keypair: " +
                             std::string(zmq_strerror(zmq_errno())) + ")");
  }
  return {public_key, secret_key};
}

namespace detail {

/// Throws std::invalid_argument unless `key` is a 40-character Z85 CURVE key.
inline void check_curve_key(const std::string& key, const char* what) {
  std::uint8_t binary[32];
  if (key.size() != 40 || zmq_z85_decode(binary, key.c_str()) == nullptr) {
    throw std::invalid_argument(std::string("asyncopt: ") + what +
                                " is not a 40-character Z85 CURVE key");
  }
}

/// The 32-byte binary form of a Z85 key (checked before).
inline std::string curve_binary(const std::string& key) {
  std::string binary(32, '\0');
  zmq_z85_decode(reinterpret_cast<std::uint8_t*>(binary.data()), key.c_str());
  return binary;
}

using Frames = std::vector<::zmq::message_t>;

/// A message frame holding an encoded header.
inline ::zmq::message_t header_frame(const wire::Header& header) {
  const auto bytes = wire::encode(header);
  return {bytes.data(), bytes.size()};
}

/// A message frame holding a copy of `bytes`.
inline ::zmq::message_t bytes_frame(std::span<const std::byte> bytes) {
  return {bytes.data(), bytes.size()};
}

/// libzmq's error numbers, with zmq_strerror's text: a std::system_error of this category
/// reads "asyncopt: cannot listen on 'tcp://999.1.1.1:5': No such device".
inline const std::error_category& error_category() noexcept {
  class Category final : public std::error_category {
   public:
    [[nodiscard]] const char* name() const noexcept override { return "zmq"; }
    [[nodiscard]] std::string message(int code) const override { return zmq_strerror(code); }
  };
  static const Category category;
  return category;
}

/// Linger 0: a closing socket drops what it could not send, so no exit ever waits for a
/// dead peer. `send_limit` and `receive_limit` bound the messages queued for and from a peer
/// (0: no bound; a worker's link holds at most its request and a few resends; a server's
/// are ServerConfig::queue_limit).
inline void configure(::zmq::socket_t& socket, int send_limit = 0, int receive_limit = 0) {
  socket.set(::zmq::sockopt::linger, 0);
  socket.set(::zmq::sockopt::sndhwm, send_limit);
  socket.set(::zmq::sockopt::rcvhwm, receive_limit);
}

/// zmq_poll that reports an interruption by a signal as "nothing arrived" (false) instead of
/// throwing, so that callers keep their own deadlines.
inline bool poll(::zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout) {
  try {
    return ::zmq::poll(items, count, timeout) > 0;
  } catch (const ::zmq::error_t& e) {
    if (e.num() == EINTR) {
      return false;
    }
    throw;
  }
}

/// Receives one whole message (all its frames) into `frames`, waiting at most `timeout`.
/// Returns false when none arrived in time (or a signal interrupted the wait).
inline bool receive(::zmq::socket_t& socket, Frames& frames, std::chrono::milliseconds timeout) {
  frames.clear();
  ::zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
  if (!poll(&item, 1, timeout)) {
    return false;
  }
  try {
    return ::zmq::recv_multipart(socket, std::back_inserter(frames), ::zmq::recv_flags::dontwait)
        .has_value();
  } catch (const ::zmq::error_t& e) {
    if (e.num() == EINTR) {
      frames.clear();
      return false;
    }
    throw;
  }
}

/// Decodes frames[first...] (a ROUTER's first frame is the sender's routing id).
inline wire::Message decode(const Frames& frames, std::size_t first) {
  std::vector<std::span<const std::byte>> views;
  views.reserve(frames.size());
  for (std::size_t k = first; k < frames.size(); ++k) {
    views.emplace_back(static_cast<const std::byte*>(frames[k].data()), frames[k].size());
  }
  return wire::decode(views);
}

}  // namespace detail
}  // namespace asyncopt::zeromq
