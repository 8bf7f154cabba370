// The ZeroMQ transport: the store is one or more parameter servers (asyncopt::zeromq::Server)
// in other processes or on other machines; workers are threads of this process that reach
// them through DEALER sockets. One cohesive thing, hence its length: the store and its worker
// handle, which share the connections, the shards and the exchange of every request.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/report.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/core/store.hpp>
#include <asyncopt/core/threads.hpp>
#include <asyncopt/core/versions.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/zmq/channel.hpp>
#include <asyncopt/zmq/server.hpp>
#include <asyncopt/zmq/wire.hpp>

namespace asyncopt::zeromq {

/// One server as a worker process sees it: where it is and which keys it holds.
struct Shard {
  std::string endpoint;   ///< where the server listens
  std::size_t begin = 0;  ///< the first key it holds
  std::size_t end = 0;    ///< one past the last
};

}  // namespace asyncopt::zeromq

namespace asyncopt::transport {

/// Parameter servers over ZeroMQ. The parameters live on the servers listed in `servers`
/// (each holding a contiguous key range; together they must cover every key exactly once),
/// which apply the update rule and consistency policy they were started with. This
/// process's workers are threads with the global worker ids first_worker, first_worker + 1,
/// ...; a dense push is split across the servers, a sparse one routed by key.
///
/// Every request waits for its reply at most `timeout`; a server that does not answer in
/// time raises asyncopt::zeromq::ServerUnavailable instead of hanging. A thread sends a
/// heartbeat for this process's workers that have a handle every `heartbeat_interval`, so
/// that a server drops them from the staleness bound when the process is gone or cut off; a
/// stuck worker thread of a live process is not detected. A worker id belongs to one process
/// at a time: a handle whose id another running process holds is refused (RemoteError with
/// ErrorCode::taken) once the servers hear from that process; it gets the id when the
/// holder's handle is destroyed or the servers drop the holder for missing heartbeats. A new
/// handle adopts the clock the servers have for its worker id, so a restarted worker process
/// goes on from where its predecessor stopped.
///
/// The parameters are the servers': creating a store (and so optimize()) copies the
/// servers' values over the caller's array; to start from values of your own, give them to
/// the servers (the `initial` argument of asyncopt::zeromq::Server).
struct Zmq {
  /// The servers' endpoints, such as "tcp://10.0.0.2:5570", in any order.
  std::vector<std::string> servers;
  /// Global id of this process's worker 0; its workers are first_worker .. first_worker +
  /// workers - 1, and the servers' ServerConfig::workers counts the workers of every process.
  std::uint32_t first_worker = 0;
  /// How long a request waits for its reply before it fails with
  /// asyncopt::zeromq::ServerUnavailable. Under bounded staleness a pull may wait this long for
  /// slow workers: keep it above the longest legitimate wait.
  std::chrono::milliseconds timeout{30000};
  /// A request unanswered for this long is sent again (the server recognises it: a push is
  /// never applied twice), so that a server restarted from its checkpoint picks it up; 0
  /// never resends.
  std::chrono::milliseconds resend_interval{1000};
  /// How often this process tells the servers its workers are alive; 0 sends none.
  std::chrono::milliseconds heartbeat_interval{1000};
  /// CURVE: the servers' public key in Z85 (every server of the job uses the same key pair);
  /// empty: plain TCP.
  std::string curve_server_key{};
  /// CURVE: this process's key pair (Z85); the servers must list its public key in
  /// ServerConfig::allowed_workers, or they refuse the connection.
  zeromq::CurveKeyPair curve_keys{};
  /// The compression of each worker's dense pushes (compress::Config: a codec and a memory);
  /// none by default. Each server's part of a push is a message of its own, encoded with the
  /// worker's memory for that part (its error, or its DIANA shift) and the worker's count of
  /// compressed pushes as the step. The servers must have the same
  /// ServerConfig::compression, or they refuse this process. Sparse pushes go uncompressed.
  std::optional<compress::Config> compression{};

  /// The servers keep a copy of the parameters each worker pulled (delay compensation).
  static constexpr bool provides_w_seen = true;

  template <class Scalar, class Rule, class Consistency>
  class Store;

  /// Runs body(worker) repeatedly on one thread per worker, as SharedMemory does.
  template <class Body>
  void run(std::size_t workers, Body&& body) const {
    store::run_threads(workers, body);
  }

  /// Throws std::invalid_argument when the settings cannot work.
  void validate() const {
    if (servers.empty()) {
      throw std::invalid_argument("asyncopt: transport::Zmq needs at least one server endpoint");
    }
    if (!curve_server_key.empty()) {
      zeromq::detail::check_curve_key(curve_server_key, "transport::Zmq::curve_server_key");
      zeromq::detail::check_curve_key(curve_keys.public_key,
                                      "transport::Zmq::curve_keys.public_key");
      zeromq::detail::check_curve_key(curve_keys.secret_key,
                                      "transport::Zmq::curve_keys.secret_key");
    }
    if (compression) {
      compression->validate();
    }
    if (timeout.count() <= 0 || heartbeat_interval.count() < 0 || resend_interval.count() < 0) {
      throw std::invalid_argument(
          "asyncopt: transport::Zmq::timeout must be > 0, heartbeat_interval and "
          "resend_interval >= 0");
    }
  }
};

namespace detail {

/// A DEALER connection to one server with request/reply matching by sequence number.
class Link {
 public:
  Link(::zmq::context_t& context, const std::string& endpoint, const Zmq& settings)
      : socket_(context, ::zmq::socket_type::dealer),
        endpoint_(endpoint),
        timeout_(settings.timeout),
        resend_(settings.resend_interval),
        curve_(!settings.curve_server_key.empty()),
        sequence_(session()) {
    connect(socket_, endpoint, settings);
  }

  /// Sets up a DEALER socket as every connection to a server is (linger 0, CURVE when
  /// configured) and connects it.
  static void connect(::zmq::socket_t& socket, const std::string& endpoint, const Zmq& settings) {
    zeromq::detail::configure(socket, 16);  // a request and a few resends at the most
    if (!settings.curve_server_key.empty()) {
      socket.set(::zmq::sockopt::curve_serverkey, settings.curve_server_key);
      socket.set(::zmq::sockopt::curve_publickey, settings.curve_keys.public_key);
      socket.set(::zmq::sockopt::curve_secretkey, settings.curve_keys.secret_key);
    }
    try {
      socket.connect(endpoint);
    } catch (const ::zmq::error_t& e) {
      throw std::invalid_argument("asyncopt: transport::Zmq cannot connect to '" + endpoint +
                                  "': " + e.what() + " (an endpoint is tcp://<host>:<port>)");
    }
  }

  /// Sends a request (header plus frames); returns its sequence number. A request that
  /// expects a reply is kept, to be sent again by receive().
  template <class... Body>
  std::uint64_t send(zeromq::wire::Header header, Body&&... body) {
    header.sequence = ++sequence_;
    kept_.clear();
    kept_.push_back(zeromq::detail::header_frame(header));
    (kept_.push_back(static_cast<Body&&>(body)), ...);
    transmit();
    return header.sequence;
  }

  /// Sends a message that has no reply.
  void notify(zeromq::wire::Header header) {
    header.sequence = ++sequence_;
    std::array<::zmq::message_t, 1> parts{zeromq::detail::header_frame(header)};
    static_cast<void>(::zmq::send_multipart(socket_, parts, ::zmq::send_flags::dontwait));
  }

  /// Waits for the reply to request `sequence` and decodes it into `frames` / the result.
  /// Replies to earlier requests (that timed out) are dropped. Throws ServerUnavailable when
  /// none comes within the timeout, and the server's error as an exception: bad sizes or
  /// keys as std::invalid_argument, a rule's refusal as std::logic_error, others as
  /// asyncopt::zeromq::RemoteError.
  zeromq::wire::Message receive(std::uint64_t sequence, zeromq::wire::Type expected,
                                const char* what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      if (left.count() <= 0) {
        throw zeromq::ServerUnavailable(
            "asyncopt: server " + endpoint_ + " did not answer a " + what + " within " +
            std::to_string(timeout_.count()) + " ms" +
            (curve_ ? " (with CURVE, also check that the server's key is right and this "
                      "process's public key is on its allow-list)"
                    : ""));
      }
      if (resend_.count() > 0) {
        left = std::min(left, resend_);
      }
      if (!zeromq::detail::receive(socket_, frames_, left)) {
        if (resend_.count() > 0) {
          transmit();  // the server may have restarted, or the request been lost
        }
        continue;
      }
      const zeromq::wire::Message reply = zeromq::detail::decode(frames_, 0);
      if (reply.header.sequence != sequence) {
        continue;  // the late reply to a request that timed out
      }
      if (reply.header.type == zeromq::wire::Type::error) {
        raise(reply);
      }
      if (reply.header.type != expected) {
        throw zeromq::RemoteError(zeromq::wire::ErrorCode::malformed,
                                  "asyncopt: server " + endpoint_ + " answered a " + what +
                                      " with a " +
                                      std::string(zeromq::wire::type_name(reply.header.type)));
      }
      return reply;
    }
  }

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }

 private:
  [[noreturn]] void raise(const zeromq::wire::Message& reply) const {
    const auto code = static_cast<zeromq::wire::ErrorCode>(reply.header.offset);
    std::string text(reply.text);
    text += " (server " + endpoint_ + ")";
    switch (code) {
      case zeromq::wire::ErrorCode::bad_request:
        throw std::invalid_argument(text);
      case zeromq::wire::ErrorCode::rule:
        throw std::logic_error(text);
      default:
        throw zeromq::RemoteError(code, text);
    }
  }

  // A random link id in the high 32 bits of every sequence number, so that a server tells a
  // new link of the same worker from a resent request of the old one.
  static std::uint64_t session() {
    std::random_device entropy;
    return static_cast<std::uint64_t>(entropy()) << 32;
  }

  // Sends copies of the kept request (large frames are shared, not copied). A send that
  // cannot go now (no connection to the server: it is down, or refused the handshake) is
  // not an error yet: receive() resends, and fails when the timeout runs out.
  void transmit() {
    std::vector<::zmq::message_t> parts;
    parts.reserve(kept_.size());
    for (auto& part : kept_) {
      parts.emplace_back();
      parts.back().copy(part);
    }
    static_cast<void>(::zmq::send_multipart(socket_, parts, ::zmq::send_flags::dontwait));
  }

  ::zmq::socket_t socket_;
  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds resend_;
  bool curve_;
  std::uint64_t sequence_;
  std::vector<::zmq::message_t> kept_;
  zeromq::detail::Frames frames_;
};

}  // namespace detail

/// The worker side of a ZeroMQ job: connects to the servers, checks that their key ranges
/// tile the parameters, copies the servers' parameters into the caller's array, and hands out
/// worker handles. sync() copies the servers' parameters into the caller's array again
/// (optimize() does so after every epoch).
template <class Scalar, class Rule, class Consistency>
class Zmq::Store : store::Immovable {
 public:
  using scalar_type = Scalar;   ///< element type of the parameters
  using Shard = zeromq::Shard;  ///< a server and its key range
  class Worker;

  /// Connects to `transport.servers` for `workers` worker threads and fills `params` (the
  /// whole model, params.size() = the servers' dimension) with the servers' parameters.
  /// Throws std::invalid_argument on bad settings or when the servers' ranges do not tile
  /// [0, params.size()), and asyncopt::zeromq::ServerUnavailable when a server does not answer.
  Store(const Zmq& transport, const Rule& /*rule*/, const Consistency& /*consistency*/,
        std::span<Scalar> params, std::size_t workers)
      : transport_((transport.validate(), transport)),
        params_(params),
        counters_(workers),
        live_(std::make_unique<std::atomic<bool>[]>(workers)) {
    store::check_workers(workers);
    if (workers >= zeromq::observer || transport_.first_worker >= zeromq::observer - workers) {
      throw std::invalid_argument(
          "asyncopt: transport::Zmq::first_worker + workers must stay below " +
          std::to_string(zeromq::observer));
    }
    discover();
    sync();
    if (transport_.heartbeat_interval.count() > 0) {
      heartbeat_ = std::jthread([this](const std::stop_token& stop) { beat(stop); });
    }
  }

  /// The handle of this process's worker `id` (global id first_worker + id).
  [[nodiscard]] Worker worker(std::size_t id) {
    store::check_worker_id(id, counters_.size());
    return Worker(*this, id);
  }

  /// Copies the servers' parameters into the caller's array, without changing any worker's
  /// state. Throws asyncopt::zeromq::ServerUnavailable when a server does not answer.
  void sync() {
    const std::lock_guard lock(observer_mutex_);
    std::vector<std::uint64_t> sent(observers_.size());
    for (std::size_t k = 0; k < observers_.size(); ++k) {
      sent[k] = observers_[k].send({.type = zeromq::wire::Type::pull,
                                    .element = zeromq::wire::element_of<Scalar>(),
                                    .worker = zeromq::observer});
    }
    for (std::size_t k = 0; k < observers_.size(); ++k) {
      const zeromq::wire::Message reply =
          observers_[k].receive(sent[k], zeromq::wire::Type::pull_reply, "pull");
      const Shard& shard = shards_[k];
      check_reply_size(reply, shard.end - shard.begin, k);
      reply.copy_values(params_.subspan(shard.begin, shard.end - shard.begin));
    }
  }

  /// Number of parameters.
  [[nodiscard]] std::size_t dimension() const noexcept { return params_.size(); }
  /// Number of this process's workers.
  [[nodiscard]] std::size_t workers() const noexcept { return counters_.size(); }
  /// Pushes this process's workers have had applied (a push counts once, however many
  /// servers it was split across).
  [[nodiscard]] std::uint64_t version() const { return stats().updates; }
  /// The servers this store talks to, in key order, with their key ranges.
  [[nodiscard]] std::span<const Shard> shards() const noexcept { return shards_; }

  /// The counters of this process's workers, merged. Call it while no worker is pushing.
  [[nodiscard]] StoreStats stats() const { return store::merged_stats(counters_); }

 private:
  // Asks every server for its key range and element type, and checks that the ranges tile
  // [0, n) exactly.
  void discover() {
    std::vector<Shard> found;
    for (const std::string& endpoint : transport_.servers) {
      detail::Link link(context_, endpoint, transport_);
      // The hello names the workers this process will be, so that a server of a job with
      // fewer refuses before anything is copied into the caller's parameters.
      const std::uint64_t seq =
          link.send({.type = zeromq::wire::Type::hello,
                     .element = zeromq::wire::element_of<Scalar>(),
                     .worker = zeromq::observer,
                     .value = std::uint64_t{transport_.first_worker} + counters_.size(),
                     .offset = compress::fingerprint(transport_.compression)});
      const zeromq::wire::Message welcome = link.receive(seq, zeromq::wire::Type::welcome, "hello");
      const zeromq::wire::Header& h = welcome.header;
      if (h.value != params_.size()) {
        throw std::invalid_argument("asyncopt: server " + endpoint + " holds a model of " +
                                    std::to_string(h.value) + " parameters, this store has " +
                                    std::to_string(params_.size()));
      }
      found.push_back({.endpoint = endpoint,
                       .begin = static_cast<std::size_t>(h.offset),
                       .end = static_cast<std::size_t>(h.offset + h.count)});
    }
    std::sort(found.begin(), found.end(),
              [](const Shard& a, const Shard& b) { return a.begin < b.begin; });
    std::size_t next = 0;
    for (const Shard& s : found) {
      if (s.begin != next) {
        throw std::invalid_argument(
            "asyncopt: the servers' key ranges do not tile the parameters: " +
            (s.begin < next
                 ? "server " + s.endpoint + " overlaps keys below " + std::to_string(next)
                 : "keys [" + std::to_string(next) + ", " + std::to_string(s.begin) +
                       ") are on no server"));
      }
      next = s.end;
    }
    if (next != params_.size()) {
      throw std::invalid_argument("asyncopt: the servers' key ranges end at " +
                                  std::to_string(next) + " but the model has " +
                                  std::to_string(params_.size()) + " parameters");
    }
    shards_ = std::move(found);
    for (const Shard& s : shards_) {
      observers_.emplace_back(context_, s.endpoint, transport_);
    }
  }

  void check_reply_size(const zeromq::wire::Message& reply, std::size_t expected,
                        std::size_t shard) const {
    if (reply.header.count != expected ||
        reply.header.element != zeromq::wire::element_of<Scalar>()) {
      throw zeromq::RemoteError(zeromq::wire::ErrorCode::malformed,
                                "asyncopt: server " + shards_[shard].endpoint + " answered with " +
                                    std::to_string(reply.header.count) + " values, expected " +
                                    std::to_string(expected));
    }
  }

  // Heartbeats for this process's workers that have a handle taking part, on sockets of
  // their own, until the store goes. A failure to set the sockets up ends the heartbeats
  // (the servers then drop the workers after their timeout) rather than the process.
  void beat(const std::stop_token& stop) noexcept {
    try {
      std::vector<std::unique_ptr<::zmq::socket_t>> sockets;
      for (const Shard& s : shards_) {
        auto socket = std::make_unique<::zmq::socket_t>(context_, ::zmq::socket_type::dealer);
        detail::Link::connect(*socket, s.endpoint, transport_);
        sockets.push_back(std::move(socket));
      }
      std::mutex mutex;
      std::condition_variable_any wake;
      while (!stop.stop_requested()) {
        for (std::size_t id = 0; id < counters_.size(); ++id) {
          if (!live_[id].load(std::memory_order_acquire)) {
            continue;
          }
          for (auto& socket : sockets) {
            std::array<::zmq::message_t, 1> parts{zeromq::detail::header_frame(
                {.type = zeromq::wire::Type::heartbeat,
                 .worker = transport_.first_worker + static_cast<std::uint32_t>(id),
                 .count = 1,
                 .offset = token_})};
            static_cast<void>(::zmq::send_multipart(*socket, parts, ::zmq::send_flags::dontwait));
          }
        }
        std::unique_lock lock(mutex);
        wake.wait_for(lock, stop, transport_.heartbeat_interval, [] { return false; });
      }
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
  }

  // A random non-zero token that this store's joins and heartbeats carry: a server tells by
  // it whether a join of a worker id comes from the process that holds it.
  static std::uint64_t claim_token() {
    std::random_device entropy;
    const std::uint64_t token =
        (static_cast<std::uint64_t>(entropy()) << 32) | static_cast<std::uint64_t>(entropy());
    return token == 0 ? 1 : token;
  }

  Zmq transport_;
  std::uint64_t token_ = claim_token();
  std::span<Scalar> params_;
  std::vector<store::Counters> counters_;
  std::unique_ptr<std::atomic<bool>[]> live_;  // whether worker k has a handle (it beats)
  ::zmq::context_t context_{1};
  std::vector<Shard> shards_;
  std::vector<detail::Link> observers_;
  std::mutex observer_mutex_;
  std::jthread heartbeat_;  // last: stops before the sockets and context go
};

/// A worker's handle on a ZeroMQ store: pull, push and clock against the servers, with one
/// connection per server of its own. Use it from one thread at a time.
template <class Scalar, class Rule, class Consistency>
class Zmq::Store<Scalar, Rule, Consistency>::Worker {
 public:
  /// Copies every parameter from the servers into `out` (all n elements); the servers
  /// remember, for this worker, the version (and, for delay compensation, the values) it saw.
  void pull(std::span<Scalar> out) {
    store::check_dense_size(out.size(), store_->params_.size(), "pull");
    const auto& shards = store_->shards_;
    for (std::size_t k = 0; k < shards.size(); ++k) {
      sent_[k] = links_[k].send(request(zeromq::wire::Type::pull));
    }
    for (std::size_t k = 0; k < shards.size(); ++k) {
      const zeromq::wire::Message reply =
          links_[k].receive(sent_[k], zeromq::wire::Type::pull_reply, "pull");
      store_->check_reply_size(reply, shards[k].end - shards[k].begin, k);
      reply.copy_values(out.subspan(shards[k].begin, shards[k].end - shards[k].begin));
    }
  }

  /// Copies the parameters at `index` (strictly increasing) into the same positions of `out`
  /// (all n elements; the others are left as they are), asking only the servers that hold
  /// them.
  void pull(std::span<const std::size_t> index, std::span<Scalar> out) {
    store::check_dense_size(out.size(), store_->params_.size(), "pull");
    store::check_sparse_pull(index, store_->params_.size());
    sparse_pull(index, [&](std::size_t k, Scalar v) { out[index[k]] = v; });
  }

  /// Copies the parameters at `index` (strictly increasing) into `values`, packed:
  /// values[k] = w[index[k]].
  void pull_values(std::span<const std::size_t> index, std::span<Scalar> values) {
    store::check_packed_size(index.size(), values.size());
    store::check_sparse_pull(index, store_->params_.size());
    sparse_pull(index, [&](std::size_t k, Scalar v) { values[k] = v; });
  }

  /// Applies a dense gradient, split across the servers by key range. Returns whether every
  /// server applied it and the largest staleness any of them saw.
  PushResult push(std::span<const Scalar> gradient) {
    store::check_dense_size(gradient.size(), store_->params_.size(), "push");
    if (!dense_frames(gradient)) {
      return reject();
    }
    const auto& shards = store_->shards_;
    for (std::size_t k = 0; k < shards.size(); ++k) {
      zeromq::wire::Header h = dense_push();
      h.count = shards[k].end - shards[k].begin;
      sent_[k] = links_[k].send(h, std::move(frames_[k]));
    }
    return collect_pushes(shards.size(), [](std::size_t k) { return k; });
  }

  /// push(gradient), clock() and pull(out), in that order, in one round trip per server
  /// instead of three messages and two round trips: the end of one training step and the
  /// start of the next. `out` gets the parameters after this push (and whatever the servers
  /// applied before the pull), as pull(out) would; under bounded staleness the answer waits
  /// at the gate as a pull does. A gradient with a NaN or Inf is rejected whole, and the
  /// clock and the pull still happen.
  PushResult push_clock_pull(std::span<const Scalar> gradient, std::span<Scalar> out) {
    store::check_dense_size(gradient.size(), store_->params_.size(), "push");
    store::check_dense_size(out.size(), store_->params_.size(), "pull");
    if (!dense_frames(gradient)) {
      const PushResult rejected = reject();
      clock();
      pull(out);
      return rejected;
    }
    const auto& shards = store_->shards_;
    ++clock_;
    for (std::size_t k = 0; k < shards.size(); ++k) {
      zeromq::wire::Header h = dense_push();
      h.flags |= zeromq::wire::Flag::then_pull;
      h.value = clock_;
      h.count = shards[k].end - shards[k].begin;
      sent_[k] = links_[k].send(h, std::move(frames_[k]));
    }
    PushResult result{.applied = true, .staleness = 0};
    for (std::size_t k = 0; k < shards.size(); ++k) {
      const zeromq::wire::Message reply =
          links_[k].receive(sent_[k], zeromq::wire::Type::pull_reply, "push and pull");
      store_->check_reply_size(reply, shards[k].end - shards[k].begin, k);
      reply.copy_values(out.subspan(shards[k].begin, shards[k].end - shards[k].begin));
      result.applied = result.applied && (reply.header.flags & zeromq::wire::Flag::applied) != 0;
      result.staleness = std::max(result.staleness, reply.header.offset);
    }
    record(result);
    return result;
  }

  /// Applies a sparse gradient (strictly increasing indices with their values), each entry
  /// sent to the server holding its key.
  PushResult push(std::span<const std::size_t> index, std::span<const Scalar> value) {
    store::check_sparse_push(index, value, store_->params_.size());
    if (!kernels::all_finite(value)) {
      return reject();
    }
    std::size_t asked = 0;
    for_each_shard(index, [&](std::size_t k, std::size_t first, std::size_t last) {
      zeromq::wire::Header h = request(zeromq::wire::Type::push);
      h.flags = zeromq::wire::Flag::sparse;
      h.count = last - first;
      sent_[k] =
          links_[k].send(h, keys_frame(index.subspan(first, last - first)),
                         ::zmq::message_t(value.data() + first, (last - first) * sizeof(Scalar)));
      targets_[asked++] = k;
    });
    return collect_pushes(asked, [&](std::size_t j) { return targets_[j]; });
  }

  /// The same for a SparseGradient.
  PushResult push(const SparseGradient<Scalar>& gradient) {
    return push(gradient.indices(), gradient.values());
  }

  /// Marks the end of this worker's step (the servers learn the new clock).
  void clock() {
    ++clock_;
    notify(zeromq::wire::Type::clock, clock_);
  }

  /// Stops holding other workers back (bounded staleness) until join(). The worker id stays
  /// this process's: the heartbeats go on, and another process's join of it is refused.
  void leave() {
    if (store_ != nullptr) {
      notify(zeromq::wire::Type::leave, clock_);
    }
  }

  /// Takes part again after leave(), at this worker's clock or, where a server has a later
  /// clock for this worker id (a restarted worker process), at that one.
  void join() { join(false); }

  /// This worker's id within the process.
  [[nodiscard]] std::size_t id() const noexcept { return id_; }
  /// Steps this worker has finished.
  [[nodiscard]] std::uint64_t clock_count() const noexcept { return clock_; }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  /// Moves the handle; the moved-from one no longer takes part.
  Worker(Worker&& other) noexcept
      : store_(std::exchange(other.store_, nullptr)),
        id_(other.id_),
        global_(other.global_),
        links_(std::move(other.links_)),
        sent_(std::move(other.sent_)),
        targets_(std::move(other.targets_)),
        starts_(std::move(other.starts_)),
        values_(std::move(other.values_)),
        frames_(std::move(other.frames_)),
        clock_(other.clock_),
        senders_(std::move(other.senders_)),
        payload_(std::move(other.payload_)),
        compressed_pushes_(other.compressed_pushes_),
        push_step_(other.push_step_) {}
  Worker& operator=(Worker&&) = delete;
  /// Leaves for good: the servers no longer wait for this worker, and another process may
  /// take its worker id.
  ~Worker() {
    if (store_ != nullptr) {
      store_->live_[id_].store(false, std::memory_order_release);
      try {
        notify(zeromq::wire::Type::leave, clock_, 1);
      } catch (...) {  // a failed send cannot be reported from a destructor
      }
    }
  }

 private:
  friend class Store;
  Worker(Store& store, std::size_t id)
      : store_(&store),
        id_(id),
        global_(store.transport_.first_worker + static_cast<std::uint32_t>(id)),
        sent_(store.shards_.size()),
        targets_(store.shards_.size()) {
    for (const Shard& s : store.shards_) {
      links_.emplace_back(store.context_, s.endpoint, store.transport_);
      if (const auto& config = store.transport_.compression) {
        senders_.emplace_back(config->codec, config->memory, s.end - s.begin);
      }
    }
    join(true);
  }

  // Takes part again; `fresh`: as a new handle, whose compression memory starts empty, which
  // the servers' mirrors of its DIANA shifts then do too.
  void join(bool fresh) {
    if (store_ == nullptr) {
      return;
    }
    for (std::size_t k = 0; k < links_.size(); ++k) {
      sent_[k] = links_[k].send({.type = zeromq::wire::Type::join,
                                 .worker = global_,
                                 .value = clock_,
                                 .count = fresh ? 1U : 0U,
                                 .offset = store_->token_});
    }
    for (std::size_t k = 0; k < links_.size(); ++k) {
      clock_ = std::max(
          clock_, links_[k].receive(sent_[k], zeromq::wire::Type::joined, "join").header.value);
    }
    store_->live_[id_].store(true, std::memory_order_release);
  }

  // Copies each server's part of a dense gradient into its message (frames_) and checks it
  // for NaN and Inf in the same pass; false when the gradient is not finite. With
  // compression, checks the gradient, then encodes each part with its sender (counting the
  // bytes) as the payload of its message.
  bool dense_frames(std::span<const Scalar> gradient) {
    frames_.clear();
    if (!senders_.empty()) {
      if (!kernels::all_finite(gradient)) {
        return false;
      }
      StoreStats& stats = store_->counters_[id_].stats;
      push_step_ = compressed_pushes_++;
      const compress::Step step{.round = push_step_, .worker = global_};
      for (std::size_t k = 0; k < store_->shards_.size(); ++k) {
        const Shard& shard = store_->shards_[k];
        const std::size_t count = shard.end - shard.begin;
        senders_[k].send(gradient.subspan(shard.begin, count), step, payload_);
        frames_.emplace_back(payload_.data(), payload_.size());
        stats.compressed_bytes += payload_.size();
        stats.uncompressed_bytes += count * sizeof(Scalar);
      }
      return true;
    }
    return std::ranges::all_of(store_->shards_, [&](const Shard& shard) {
      const std::size_t count = shard.end - shard.begin;
      frames_.emplace_back(count * sizeof(Scalar));
      return kernels::copy_all_finite(gradient.subspan(shard.begin, count),
                                      static_cast<Scalar*>(frames_.back().data()));
    });
  }

  // The header of a dense push: with compression, compressed at the step its frames were
  // encoded at.
  [[nodiscard]] zeromq::wire::Header dense_push() noexcept {
    zeromq::wire::Header h = request(zeromq::wire::Type::push);
    if (!senders_.empty()) {
      h.flags = zeromq::wire::Flag::compressed;
      h.offset = push_step_;
    }
    return h;
  }

  void record(const PushResult& result) {
    StoreStats& stats = store_->counters_[id_].stats;
    if (result.applied) {
      stats.record(result.staleness);
    } else {
      ++stats.rejected;
    }
  }

  PushResult reject() noexcept {
    ++store_->counters_[id_].stats.rejected;
    return {.applied = false, .staleness = 0};
  }

  [[nodiscard]] zeromq::wire::Header request(zeromq::wire::Type type) const noexcept {
    return {.type = type, .element = zeromq::wire::element_of<Scalar>(), .worker = global_};
  }

  void notify(zeromq::wire::Type type, std::uint64_t value, std::uint64_t count = 0) {
    for (auto& link : links_) {
      link.notify({.type = type, .worker = global_, .value = value, .count = count});
    }
  }

  static ::zmq::message_t keys_frame(std::span<const std::size_t> keys) {
    ::zmq::message_t frame(keys.size() * sizeof(std::uint64_t));
    auto* out = static_cast<std::byte*>(frame.data());
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const auto key = static_cast<std::uint64_t>(keys[k]);
      std::memcpy(out + k * sizeof(std::uint64_t), &key, sizeof(key));
    }
    return frame;
  }

  // Calls f(shard, first, last) for each server holding entries [first, last) of `index`.
  template <class F>
  void for_each_shard(std::span<const std::size_t> index, F&& f) const {
    const auto& shards = store_->shards_;
    std::size_t first = 0;
    for (std::size_t k = 0; k < shards.size() && first < index.size(); ++k) {
      const auto end = std::lower_bound(index.begin() + static_cast<std::ptrdiff_t>(first),
                                        index.end(), shards[k].end);
      const auto last = static_cast<std::size_t>(end - index.begin());
      if (last > first) {
        f(k, first, last);
      }
      first = last;
    }
  }

  template <class Put>
  void sparse_pull(std::span<const std::size_t> index, Put&& put) {
    std::size_t asked = 0;
    for_each_shard(index, [&](std::size_t k, std::size_t first, std::size_t last) {
      zeromq::wire::Header h = request(zeromq::wire::Type::pull);
      h.flags = zeromq::wire::Flag::sparse;
      h.count = last - first;
      sent_[k] = links_[k].send(h, keys_frame(index.subspan(first, last - first)));
      targets_[asked] = k;
      starts_[asked++] = first;
    });
    for (std::size_t j = 0; j < asked; ++j) {
      const std::size_t k = targets_[j];
      const zeromq::wire::Message reply =
          links_[k].receive(sent_[k], zeromq::wire::Type::pull_reply, "pull");
      const std::size_t first = starts_[j];
      // The servers' ranges tile the keys, so an asked server's entries end where the next
      // asked server's begin, and the last one's at the end of the list.
      const std::size_t count = (j + 1 < asked ? starts_[j + 1] : index.size()) - first;
      store_->check_reply_size(reply, count, k);
      values_.resize(count);
      reply.copy_values(std::span<Scalar>(values_));
      for (std::size_t e = 0; e < count; ++e) {
        put(first + e, values_[e]);
      }
    }
  }

  template <class Target>
  PushResult collect_pushes(std::size_t asked, Target&& target) {
    PushResult result{.applied = true, .staleness = 0};
    for (std::size_t j = 0; j < asked; ++j) {
      const std::size_t k = target(j);
      const zeromq::wire::Message reply =
          links_[k].receive(sent_[k], zeromq::wire::Type::push_reply, "push");
      result.applied = result.applied && (reply.header.flags & zeromq::wire::Flag::applied) != 0;
      result.staleness = std::max(result.staleness, reply.header.value);
    }
    record(result);
    return result;
  }

  Store* store_;
  std::size_t id_;
  std::uint32_t global_;
  std::vector<detail::Link> links_;
  std::vector<std::uint64_t> sent_;
  std::vector<std::size_t> targets_;
  std::vector<std::size_t> starts_ = std::vector<std::size_t>(targets_.size());
  std::vector<Scalar> values_;
  std::vector<::zmq::message_t> frames_;  // a dense push's parts
  std::uint64_t clock_ = 0;
  // With compression: a sender per server (its part's memory), the payload being written,
  // and the dense pushes sent so far (each one's step).
  std::vector<compress::Sender<Scalar, compress::AnyCodec>> senders_;
  compress::Payload payload_;
  std::uint64_t compressed_pushes_ = 0;
  std::uint64_t push_step_ = 0;  // the step of the dense push being sent
};

}  // namespace asyncopt::transport
