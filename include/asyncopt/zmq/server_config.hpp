// The settings of a parameter server, what it reports, and the process-wide limits it needs.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <vector>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/zmq/channel.hpp>
#include <asyncopt/zmq/wire.hpp>

namespace asyncopt::zeromq {

/// How a server is set up. Everything a server needs comes from here: no environment
/// variables, no global state.
struct ServerConfig {
  /// Where the server listens (ZeroMQ endpoint). `tcp://127.0.0.1:*` picks a free port;
  /// Server::endpoint() tells which.
  std::string endpoint = "tcp://127.0.0.1:5570";
  /// Number of parameters of the whole model, over all servers.
  std::size_t dimension = 0;
  /// First key this server holds.
  std::size_t begin = 0;
  /// One past the last key this server holds; 0 means `dimension`.
  std::size_t end = 0;
  /// Number of workers of the whole job; worker ids are 0 .. workers - 1.
  std::size_t workers = 1;
  /// A worker silent for this long (no request, no heartbeat) is dropped: it no longer holds
  /// other workers back under bounded staleness, until it is heard from again. Zero turns
  /// the check off. Workers send heartbeats every Zmq::heartbeat_interval.
  std::chrono::milliseconds heartbeat_timeout{5000};
  /// The longest a server's loop waits for a message before it checks its heartbeats and
  /// stop token; bounds how long run() takes to notice a stop request.
  std::chrono::milliseconds poll_interval{50};
  /// Where the server keeps its checkpoint (parameters, rule state, version, the workers'
  /// clocks and their last requests); empty: no checkpoints. A checkpoint is written every
  /// `checkpoint_interval` while serving and once more when run() returns.
  std::filesystem::path checkpoint{};
  /// How often run() writes the checkpoint.
  std::chrono::milliseconds checkpoint_interval{10000};
  /// Whether a server whose checkpoint file exists starts from it (true) or from the initial
  /// values, overwriting it at the next checkpoint (false).
  bool resume = true;
  /// CURVE encryption and authentication: the server's secret key in Z85 (see
  /// generate_curve_keypair()); empty: plain, unauthenticated TCP. Workers need the matching
  /// public key (transport::Zmq::curve_server_key).
  std::string curve_secret_key{};
  /// With CURVE: the public keys (Z85) of the worker processes allowed to connect. A
  /// connection with any other key is refused during the handshake and counted
  /// (ServerStats::unauthorized).
  std::vector<std::string> allowed_workers{};
  /// The most messages queued for one connection in each direction (ZMQ_SNDHWM and
  /// ZMQ_RCVHWM). It bounds what a client that never reads its replies can make the server
  /// hold: about queue_limit times the largest reply (a dense pull of this server's keys).
  /// A reply to a connection at the limit is dropped; a worker that reads its replies has
  /// one request and a few resends in flight at most, and gets a dropped reply again when
  /// it resends. Incoming messages beyond the limit wait in the sender's queue and TCP.
  std::size_t queue_limit = 16;
  /// The compression of the workers' dense pushes (compress::Config: a codec and a memory);
  /// none by default. The workers' transport::Zmq::compression must be the same: a worker
  /// whose hello announces another is refused. The server decodes each push (with DIANA,
  /// adding back its mirror of that worker's shift) and applies it as an uncompressed one.
  std::optional<compress::Config> compression{};

  /// One past the last key: `end`, or `dimension` when `end` is 0.
  [[nodiscard]] std::size_t last() const noexcept { return end == 0 ? dimension : end; }

  /// The largest message a client may send this server (ZMQ_MAXMSGSIZE): a sparse push's
  /// index frame for every key it holds, plus a header; never below 64 KiB, which the
  /// handshakes and error texts fit in. libzmq drops the connection of a peer that announces
  /// a larger frame, before it allocates it.
  /// With compression, a compressed push's longest value frame (wire::max_compressed) if
  /// larger.
  [[nodiscard]] std::int64_t max_message_size() const noexcept {
    const std::size_t keys = last() - begin;
    std::size_t most = keys * sizeof(std::uint64_t) + wire::header_size;
    if (compression) {
      most = std::max<std::size_t>(most, wire::max_compressed(keys) + wire::header_size);
    }
    return static_cast<std::int64_t>(std::max<std::size_t>(most, std::size_t{64} * 1024));
  }

  /// Throws std::invalid_argument naming the field when the configuration cannot work.
  void validate() const {
    if (endpoint.empty()) {
      throw std::invalid_argument("asyncopt: ServerConfig::endpoint is empty");
    }
    if (endpoint.find("://") == std::string::npos) {
      throw std::invalid_argument("asyncopt: ServerConfig::endpoint '" + endpoint +
                                  "' is not a ZeroMQ endpoint such as tcp://*:5570 or "
                                  "tcp://127.0.0.1:5570");
    }
    if (dimension == 0) {
      throw std::invalid_argument("asyncopt: ServerConfig::dimension is 0");
    }
    if (begin >= last() || last() > dimension) {
      throw std::invalid_argument("asyncopt: ServerConfig key range [" + std::to_string(begin) +
                                  ", " + std::to_string(last()) +
                                  ") is empty or exceeds the dimension " +
                                  std::to_string(dimension));
    }
    if (last() - begin > wire::max_count) {
      throw std::invalid_argument(
          "asyncopt: ServerConfig key range [" + std::to_string(begin) + ", " +
          std::to_string(last()) + ") holds " + std::to_string(last() - begin) +
          " keys; one server holds at most 2^36 (" + std::to_string(wire::max_count) +
          "): split the keys over more servers");
    }
    if (queue_limit == 0 ||
        queue_limit > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      throw std::invalid_argument("asyncopt: ServerConfig::queue_limit is " +
                                  std::to_string(queue_limit) + "; it must be at least 1");
    }
    std::error_code ignored;
    if (!checkpoint.empty() && std::filesystem::is_directory(checkpoint, ignored)) {
      throw std::invalid_argument("asyncopt: ServerConfig::checkpoint '" + checkpoint.string() +
                                  "' is a directory; give a file in it, such as '" +
                                  (checkpoint / "server.ckpt").string() + "'");
    }
    if (workers == 0 || workers >= std::numeric_limits<std::uint32_t>::max()) {
      throw std::invalid_argument("asyncopt: ServerConfig::workers is " + std::to_string(workers) +
                                  "; it must be at least 1 and below 2^32 - 1");
    }
    if (!curve_secret_key.empty()) {
      detail::check_curve_key(curve_secret_key, "ServerConfig::curve_secret_key");
      if (allowed_workers.empty()) {
        throw std::invalid_argument(
            "asyncopt: ServerConfig::allowed_workers is empty: with CURVE, list the public "
            "keys of the workers that may connect");
      }
      for (const std::string& key : allowed_workers) {
        detail::check_curve_key(key, "a key of ServerConfig::allowed_workers");
      }
    } else if (!allowed_workers.empty()) {
      throw std::invalid_argument(
          "asyncopt: ServerConfig::allowed_workers needs CURVE (ServerConfig::curve_secret_key)");
    }
    if (compression) {
      compression->validate();
      if (compression->memory.feedback == compress::Feedback::diana && !checkpoint.empty()) {
        throw std::invalid_argument(
            "asyncopt: ServerConfig::checkpoint with DIANA compression: checkpoints do not hold "
            "the server's mirrors of the workers' shifts; use error feedback or no checkpoints");
      }
    }
    if (heartbeat_timeout.count() < 0 || poll_interval.count() <= 0 ||
        checkpoint_interval.count() <= 0) {
      throw std::invalid_argument(
          "asyncopt: ServerConfig::heartbeat_timeout must be >= 0, poll_interval and "
          "checkpoint_interval > 0");
    }
  }
};

/// What a server has done so far (Server::stats()).
struct ServerStats {
  std::uint64_t version = 0;       ///< updates applied
  std::uint64_t rejected = 0;      ///< non-finite gradients rejected
  std::uint64_t malformed = 0;     ///< messages that broke the wire format (answered with an error)
  std::uint64_t refused = 0;       ///< well-formed requests refused (bad sizes, unknown worker...)
  std::uint64_t dropped = 0;       ///< times a worker was dropped for missing heartbeats
  std::uint64_t duplicates = 0;    ///< requests received again (resent after a timeout)
  std::uint64_t checkpoints = 0;   ///< checkpoints written
  bool resumed = false;            ///< whether the server started from its checkpoint
  std::uint64_t unauthorized = 0;  ///< CURVE handshakes refused (a key not on the allow-list;
                                   ///< a refused client retries, each attempt counts)
};

/// Raises this process's soft limit on open file descriptors (RLIMIT_NOFILE) to its hard
/// limit, where the system allows, and returns the soft limit now in force. A server takes
/// one descriptor per connection (a worker process opens one per worker thread, one to copy
/// the parameters and one for heartbeats, to each server); at the limit libzmq 4.3 cannot
/// accept, and retries at once: the server then spins a core and new workers get no answer
/// until some connection closes. Call it at the start of a server process; the programs in
/// examples/ do.
inline std::uint64_t raise_descriptor_limit() noexcept {
  ::rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 0;
  }
  if (limit.rlim_cur != limit.rlim_max) {
    ::rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    }
  }
  return limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<std::uint64_t>::max()
                                         : static_cast<std::uint64_t>(limit.rlim_cur);
}

/// The worker id a pull uses to read the parameters without being a worker: it changes no
/// worker's state (Zmq stores use it to copy the parameters back to the caller).
inline constexpr std::uint32_t observer = std::numeric_limits<std::uint32_t>::max();

}  // namespace asyncopt::zeromq
