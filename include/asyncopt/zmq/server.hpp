// A parameter server: holds one contiguous key range of the parameters and the update
// rule's state, and applies the pushes of remote workers under a consistency policy.
// One cohesive thing, hence its length: the server's event loop and the handlers of every
// message of the wire protocol, which share the server's state (peers, held pulls, claims,
// checkpoints); its settings are in server_config.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/core/concepts.hpp>
#include <asyncopt/core/sparse.hpp>
#include <asyncopt/kernels/dense.hpp>
#include <asyncopt/transport/shared_memory.hpp>
#include <asyncopt/zmq/channel.hpp>
#include <asyncopt/zmq/checkpoint.hpp>
#include <asyncopt/zmq/server_config.hpp>
#include <asyncopt/zmq/wire.hpp>

namespace asyncopt::zeromq {

/// A parameter server for keys [config.begin, config.end) of a model of config.dimension
/// parameters, applying `Rule` under `Consistency`, exactly as a shared-memory store does:
/// internally it is one, with a handle per worker. Each worker's pulls leave that worker's
/// copy of the parameters it saw on the server, so rules that read them (delay
/// compensation) get the parameters of that worker's own last pull. Requests are served
/// one at a time in arrival order, so a worker's messages are applied in the order it sent
/// them. Under bounded staleness a pull that must wait is held back, without blocking the
/// others, until the slow workers' clocks (or their heartbeats' absence) let it through.
///
/// Run it in its own process, or on a thread for tests: the constructor binds the socket,
/// run(stop_token) serves until a stop is requested.
template <class Scalar, class Rule, class Consistency>
class Server {
  static_assert(!coordinates_rounds_v<Consistency>,
                "asyncopt: a ZeroMQ server runs asynchronous consistency policies (LockFree, "
                "Locked, BoundedStaleness); Synchronous and LocalSgd need "
                "asyncopt::transport::SharedMemory");

 public:
  /// Binds `config.endpoint`. `initial` holds the starting values of this server's keys
  /// (empty: zeros); a checkpoint that is resumed from replaces them. Throws
  /// std::invalid_argument on a bad configuration, rule or policy, or a key range too large
  /// for this machine's memory, and std::system_error naming the endpoint when it cannot be
  /// bound (in use, no such address).
  Server(const ServerConfig& config, const Rule& rule, const Consistency& consistency,
         std::span<const Scalar> initial = {}) try
      : config_(checked(config)),
        params_(checked_initial(config_, initial)),
        store_(transport::SharedMemory{}, rule, consistency, std::span<Scalar>(params_),
               config_.workers),
        socket_(context_, ::zmq::socket_type::router) {
    consistency.validate();
    detail::configure(socket_, static_cast<int>(config_.queue_limit),
                      static_cast<int>(config_.queue_limit));
    socket_.set(::zmq::sockopt::maxmsgsize, config_.max_message_size());
    if (!config_.curve_secret_key.empty()) {
      // The ZAP handler must be bound before the first handshake; run() answers it.
      zap_.emplace(context_, ::zmq::socket_type::rep);
      zap_->set(::zmq::sockopt::linger, 0);
      zap_->bind("inproc://zeromq.zap.01");
      for (const std::string& key : config_.allowed_workers) {
        allowed_.push_back(detail::curve_binary(key));
      }
      socket_.set(::zmq::sockopt::curve_server, true);
      socket_.set(::zmq::sockopt::curve_secretkey, config_.curve_secret_key);
      socket_.set(::zmq::sockopt::zap_domain, "asyncopt");
    }
    try {
      socket_.bind(config_.endpoint);
    } catch (const ::zmq::error_t& e) {
      throw std::system_error(e.num(), detail::error_category(),
                              "asyncopt: cannot listen on '" + config_.endpoint + "'");
    }
    endpoint_ = socket_.get(::zmq::sockopt::last_endpoint);
    const auto now = Clock::now();
    peers_.resize(config_.workers);
    for (std::size_t id = 0; id < config_.workers; ++id) {
      handles_.push_back(store_.proxy(id));
      peers_[id].last_heard = now;
      if constexpr (needs_w_seen_v<Rule>) {
        peers_[id].seen.assign(params_.size(), Scalar{0});
      }
    }
    scratch_.resize(params_.size());
    if (config_.compression) {
      receiver_.emplace(config_.compression->codec, config_.compression->memory, params_.size());
    }
    if (!config_.checkpoint.empty()) {
      if (config_.resume && std::filesystem::exists(config_.checkpoint)) {
        restore();
        resumed_ = true;
      }
      checkpoint();  // a path that cannot be written fails here, before any worker relies on it
    }
  } catch (const std::bad_alloc&) {
    throw std::invalid_argument(
        "asyncopt: out of memory setting up a server for keys [" + std::to_string(config.begin) +
        ", " + std::to_string(config.last()) + ") of " + element_name(wire::element_of<Scalar>()) +
        " values (about " + gigabytes(memory_needed(config)) +
        "): split the keys over more servers");
  }

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;
  ~Server() = default;

  /// The endpoint the server is bound to, with the port it got (for `tcp://host:*`).
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  /// The first key this server holds.
  [[nodiscard]] std::size_t begin() const noexcept { return config_.begin; }
  /// One past the last key this server holds.
  [[nodiscard]] std::size_t end() const noexcept { return config_.last(); }

  /// Serves requests until `stop` is requested, checking it at least every
  /// ServerConfig::poll_interval. A checkpoint that cannot be written throws
  /// std::system_error out of run(), which then stops serving (the constructor has written
  /// one already, so a bad path shows there first).
  void run(const std::stop_token& stop) {
    detail::Frames frames;
    auto next_checkpoint = Clock::now() + config_.checkpoint_interval;
    while (!stop.stop_requested()) {
      std::array<::zmq::pollitem_t, 2> items{
          ::zmq::pollitem_t{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0},
          ::zmq::pollitem_t{zap_ ? static_cast<void*>(*zap_) : nullptr, 0, ZMQ_POLLIN, 0}};
      if (!detail::poll(items.data(), zap_ ? 2 : 1, config_.poll_interval)) {
        continue;  // interrupted by a signal: check the stop token and poll again
      }
      if (zap_ && (items[1].revents & ZMQ_POLLIN) != 0) {
        authenticate();
      }
      if ((items[0].revents & ZMQ_POLLIN) != 0) {
        // Serve what is queued, up to a bound, before the housekeeping.
        for (int k = 0; k < 1024 && detail::receive(socket_, frames, std::chrono::milliseconds(0));
             ++k) {
          serve(frames);
          release_claims();
        }
      }
      check_heartbeats();
      release_claims();
      if (!config_.checkpoint.empty() && Clock::now() >= next_checkpoint) {
        checkpoint();
        next_checkpoint = Clock::now() + config_.checkpoint_interval;
      }
    }
    if (!config_.checkpoint.empty()) {
      checkpoint();
    }
  }

  /// Writes the checkpoint now (atomically: temporary file, fsync, rename). Call it from the
  /// thread that runs run(), or while run() is not running. Throws std::logic_error without
  /// ServerConfig::checkpoint and std::system_error when the file cannot be written.
  void checkpoint() {
    if (config_.checkpoint.empty()) {
      throw std::logic_error("asyncopt: this server has no ServerConfig::checkpoint path");
    }
    CheckpointWriter out;
    out.put<std::uint64_t>(static_cast<std::uint64_t>(wire::element_of<Scalar>()));
    out.put<std::uint64_t>(config_.dimension);
    out.put<std::uint64_t>(config_.begin);
    out.put<std::uint64_t>(config_.last());
    out.put<std::uint64_t>(config_.workers);
    out.put<std::uint64_t>(Rule::state_slots);
    out.put<std::uint64_t>(store_.version());
    out.put(std::span<const Scalar>(params_));
    out.put(std::span<const Scalar>(store_.rule_state()));
    for (std::size_t id = 0; id < peers_.size(); ++id) {
      const Peer& peer = peers_[id];
      out.put<std::uint64_t>(handles_[id].clock_count());
      out.put<std::uint64_t>(peer.last_sequence);
      out.put<std::uint64_t>(peer.last_staleness);
      out.put<std::uint64_t>(peer.last_applied ? 1 : 0);
      out.put<std::uint64_t>(peer.left ? 1 : 0);
      if constexpr (needs_w_seen_v<Rule>) {
        out.put(std::span<const Scalar>(peer.seen));
      }
    }
    write_checkpoint(config_.checkpoint, out.bytes());
    checkpoints_.fetch_add(1, std::memory_order_relaxed);
  }

  /// The server's counters; safe to call while run() is serving on another thread.
  [[nodiscard]] ServerStats stats() const noexcept {
    return {.version = store_.version(),
            .rejected = rejected_.load(std::memory_order_relaxed),
            .malformed = malformed_.load(std::memory_order_relaxed),
            .refused = refused_.load(std::memory_order_relaxed),
            .dropped = dropped_.load(std::memory_order_relaxed),
            .duplicates = duplicates_.load(std::memory_order_relaxed),
            .checkpoints = checkpoints_.load(std::memory_order_relaxed),
            .resumed = resumed_,
            .unauthorized = unauthorized_.load(std::memory_order_relaxed)};
  }

  /// The parameters this server holds. Call it while run() is not running.
  [[nodiscard]] std::span<const Scalar> parameters() const noexcept { return params_; }

 private:
  using Clock = std::chrono::steady_clock;
  using Store = transport::SharedMemory::Store<Scalar, Rule, Consistency>;

  struct Peer {
    Clock::time_point last_heard{};
    bool dropped = false;   // silent past the heartbeat timeout
    bool left = false;      // said it holds nobody back (leave), until it joins
    bool deferred = false;  // its last pull is held back (bounded staleness)
    // The last request seen (its sequence: link id in the high 32 bits, count in the low)
    // and the answer to the last push, to answer a resent push without applying it twice.
    std::uint64_t last_sequence = 0;
    std::uint64_t last_staleness = 0;
    bool last_applied = false;
    std::vector<Scalar> seen;  // the parameters of this worker's last pull (delay compensation)
    // The claim token of the process that joined as this worker (0: none known) and the link
    // it joined through; a join of another process while this one holds the id is held in
    // `claim` until the holder is gone (then the join goes through) or is heard from again
    // (then the join is refused).
    std::uint64_t owner = 0;
    std::uint64_t owner_link = 0;
    detail::Frames claim;
  };

  // A request the server cannot answer yet (a pull held back by bounded staleness).
  struct Deferred {
    detail::Frames frames;
    // For a push with then_pull, already applied: what its pull_reply reports.
    std::uint8_t flags = 0;
    std::uint64_t staleness = 0;
  };

  // A request refused: the error reply's code and text.
  struct Refusal {
    wire::ErrorCode code = wire::ErrorCode::internal;
    std::string text;
  };

  // The configuration, checked, and refused when its key range cannot fit in this machine's
  // memory (a vector that size would throw std::bad_alloc, or be killed while it is filled).
  static ServerConfig checked(const ServerConfig& config) {
    config.validate();
    const double needed = memory_needed(config);
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    const double available = static_cast<double>(pages) * static_cast<double>(page);
    if (pages > 0 && page > 0 && needed > available) {
      throw std::invalid_argument(
          "asyncopt: a server for keys [" + std::to_string(config.begin) + ", " +
          std::to_string(config.last()) + ") of " + element_name(wire::element_of<Scalar>()) +
          " values needs about " + gigabytes(needed) +
          " (parameters, rule state and buffers) but "
          "this machine has " +
          gigabytes(available) +
          " of memory: split the keys over more servers (ServerConfig::begin, end)");
    }
    return config;
  }

  // Bytes a server's arrays take: the parameters, the rule's state, two scratch buffers and,
  // for delay compensation, one copy per worker.
  static double memory_needed(const ServerConfig& config) {
    const auto keys = static_cast<double>(config.last() - config.begin);
    const double copies = 3.0 + static_cast<double>(Rule::state_slots) +
                          (needs_w_seen_v<Rule> ? static_cast<double>(config.workers) : 0.0);
    return keys * static_cast<double>(sizeof(Scalar)) * copies;
  }

  static std::string gigabytes(double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g GB", bytes / 1e9);
    return text;
  }

  static std::vector<Scalar> checked_initial(const ServerConfig& config,
                                             std::span<const Scalar> initial) {
    const std::size_t keys = config.last() - config.begin;
    if (initial.empty()) {
      return std::vector<Scalar>(keys, Scalar{0});
    }
    if (initial.size() != keys) {
      throw std::invalid_argument("asyncopt: the server holds " + std::to_string(keys) +
                                  " keys but its initial values have " +
                                  std::to_string(initial.size()));
    }
    return {initial.begin(), initial.end()};
  }

  // Loads the checkpoint: parameters, rule state, version, and per worker its clock, its
  // last request and (delay compensation) the parameters it last pulled.
  void restore() {
    CheckpointReader in = read_checkpoint(config_.checkpoint);
    constexpr const char* here = "this server";
    in.expect("element type", in.get<std::uint64_t>(),
              static_cast<std::uint64_t>(wire::element_of<Scalar>()), here);
    in.expect("dimension", in.get<std::uint64_t>(), config_.dimension, here);
    in.expect("first key", in.get<std::uint64_t>(), config_.begin, here);
    in.expect("end key", in.get<std::uint64_t>(), config_.last(), here);
    in.expect("workers", in.get<std::uint64_t>(), config_.workers, here);
    in.expect("rule state slots", in.get<std::uint64_t>(), Rule::state_slots, here);
    const auto version = in.get<std::uint64_t>();
    std::vector<Scalar> params(params_.size());
    std::vector<Scalar> state(store_.rule_state().size());
    in.get(std::span<Scalar>(params));
    in.get(std::span<Scalar>(state));
    std::vector<Peer> peers(peers_.size());
    std::vector<std::uint64_t> clocks(peers_.size());
    for (std::size_t id = 0; id < peers.size(); ++id) {
      clocks[id] = in.get<std::uint64_t>();
      peers[id].last_sequence = in.get<std::uint64_t>();
      peers[id].last_staleness = in.get<std::uint64_t>();
      peers[id].last_applied = in.get<std::uint64_t>() != 0;
      peers[id].left = in.get<std::uint64_t>() != 0;
      if constexpr (needs_w_seen_v<Rule>) {
        peers[id].seen.resize(params_.size());
        in.get(std::span<Scalar>(peers[id].seen));
      }
    }
    in.finish();
    // Everything read and checked: only now change the server.
    std::copy(params.begin(), params.end(), params_.begin());
    std::copy(state.begin(), state.end(), store_.rule_state().begin());
    store_.restore_version(version);
    const auto now = Clock::now();
    for (std::size_t id = 0; id < peers.size(); ++id) {
      // A pull sets the version each worker's next push is measured from; for delay
      // compensation it also points the store at the worker's copy, which then gets the
      // parameters the worker saw back.
      if constexpr (needs_w_seen_v<Rule>) {
        handles_[id].pull(std::span<Scalar>(peers_[id].seen));
        std::copy(peers[id].seen.begin(), peers[id].seen.end(), peers_[id].seen.begin());
      } else {
        handles_[id].pull(std::span<Scalar>(scratch_));
      }
      handles_[id].clock_to(clocks[id]);
      peers_[id].last_sequence = peers[id].last_sequence;
      peers_[id].last_staleness = peers[id].last_staleness;
      peers_[id].last_applied = peers[id].last_applied;
      peers_[id].last_heard = now;
      peers_[id].left = peers[id].left;
      if (peers[id].left) {
        handles_[id].leave();
      }
    }
  }

  // Answers one ZAP request (RFC 27): a CURVE client whose public key is on the allow-list
  // may connect, any other is refused.
  void authenticate() {
    detail::Frames request;
    if (!::zmq::recv_multipart(*zap_, std::back_inserter(request), ::zmq::recv_flags::dontwait)) {
      return;
    }
    auto text = [&](std::size_t k) {
      return k < request.size() ? request[k].to_string() : std::string();
    };
    bool allowed = request.size() >= 7 && text(0) == "1.0" && text(5) == "CURVE" &&
                   std::find(allowed_.begin(), allowed_.end(), text(6)) != allowed_.end();
    if (!allowed) {
      unauthorized_.fetch_add(1, std::memory_order_relaxed);
    }
    std::array<::zmq::message_t, 6> reply{
        ::zmq::message_t(std::string_view("1.0")),
        ::zmq::message_t(text(1)),
        ::zmq::message_t(std::string_view(allowed ? "200" : "400")),
        ::zmq::message_t(std::string_view(allowed ? "OK" : "key not allowed")),
        ::zmq::message_t(),
        ::zmq::message_t()};
    static_cast<void>(::zmq::send_multipart(*zap_, reply, ::zmq::send_flags::dontwait));
  }

  // Whether request `h` of a worker was seen before: the same link resending its last
  // request (a timeout on its side), or an older one arriving late. A resent push is
  // answered with the answer it got, a resent pull with the values its first answer had
  // (for delay compensation; the current ones otherwise) without recording a new pull, and
  // only once while the first is held back; resent notifications and late requests are
  // dropped.
  enum class Repeat { no, resent, late };
  [[nodiscard]] Repeat repeat(const wire::Header& h) const noexcept {
    const std::uint64_t last = peers_[h.worker].last_sequence;
    if ((h.sequence >> 32) != (last >> 32) || h.sequence > last) {
      return Repeat::no;
    }
    return h.sequence == last ? Repeat::resent : Repeat::late;
  }

  void serve(detail::Frames& frames) {
    if (frames.size() < 2) {
      malformed_.fetch_add(1, std::memory_order_relaxed);  // nothing to answer
      return;
    }
    // The sender's routing id, kept apart: a held-back pull moves the frames away.
    ::zmq::message_t to;
    to.copy(frames[0]);
    wire::Message message;
    try {
      message = detail::decode(frames, 1);
    } catch (const wire::MalformedMessage& e) {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      const std::span<const std::byte> head(static_cast<const std::byte*>(frames[1].data()),
                                            frames[1].size());
      reply_error(to, {.sequence = wire::sequence_of(head)}, e.code(), e.what());
      return;
    }
    const wire::Header& h = message.header;
    if (h.worker != observer && h.worker >= config_.workers) {
      refuse(to, h,
             {wire::ErrorCode::unknown_worker, "asyncopt: worker id " + std::to_string(h.worker) +
                                                   " but the job has " +
                                                   std::to_string(config_.workers) + " workers"});
      return;
    }
    if (h.type == wire::Type::heartbeat) {
      heard(h.worker, h.count, h.offset);
      return;
    }
    if (h.type == wire::Type::join && h.worker != observer && contested(h)) {
      hold_claim(to, frames, h);
      return;
    }
    bool replay = false;
    if (h.worker != observer) {
      Peer& peer = peers_[h.worker];
      if (!peer.claim.empty() && (h.sequence >> 32) == peer.owner_link &&
          !(h.type == wire::Type::leave && h.count == 1)) {
        refuse_claim(h.worker);  // the holder is alive: the other process may not have its id
      }
      heard(h.worker, 1);
      switch (repeat(h)) {
        case Repeat::late:
          duplicates_.fetch_add(1, std::memory_order_relaxed);
          return;
        case Repeat::resent:
          duplicates_.fetch_add(1, std::memory_order_relaxed);
          if (h.type == wire::Type::push && (h.flags & wire::Flag::then_pull) != 0) {
            if (peers_[h.worker].deferred || !typed(h)) {
              return;  // its pull is still held back (or it was refused)
            }
            const Peer& peer = peers_[h.worker];
            pull(to, message, Source::replay,
                 static_cast<std::uint8_t>(peer.last_applied ? wire::Flag::applied : 0),
                 peer.last_staleness);
            return;
          }
          if (h.type == wire::Type::push) {
            const Peer& peer = peers_[h.worker];
            send(to,
                 {.type = wire::Type::push_reply,
                  .flags = static_cast<std::uint8_t>(peer.last_applied ? wire::Flag::applied : 0),
                  .worker = h.worker,
                  .sequence = h.sequence,
                  .value = peer.last_staleness});
            return;
          }
          if (h.type == wire::Type::join) {
            send_joined(to, h);
            return;
          }
          if (h.type != wire::Type::pull || peers_[h.worker].deferred) {
            return;  // a notification already applied, or a pull still held back
          }
          replay = true;  // answered again, without counting as a new pull
          break;
        case Repeat::no:
          peers_[h.worker].last_sequence = h.sequence;
          if (h.type == wire::Type::push) {  // a refused push is resent as not applied
            peers_[h.worker].last_staleness = 0;
            peers_[h.worker].last_applied = false;
          }
          break;
      }
    }
    try {
      if (std::optional<Refusal> refusal = dispatch(to, frames, message, replay)) {
        refuse(to, h, *refusal);
      }
    } catch (const std::invalid_argument& e) {
      refuse(to, h, {wire::ErrorCode::bad_request, e.what()});
    } catch (const std::logic_error& e) {
      refuse(to, h, {wire::ErrorCode::rule, e.what()});
    } catch (const std::exception& e) {
      refuse(to, h, {wire::ErrorCode::internal, e.what()});
    }
  }

  // Handles one well-formed message; returns a refusal instead of a reply when the request
  // cannot be served.
  std::optional<Refusal> dispatch(const ::zmq::message_t& to, detail::Frames& frames,
                                  const wire::Message& m, bool replay) {
    const wire::Header& h = m.header;
    switch (h.type) {
      case wire::Type::hello:
        if (h.element != wire::element_of<Scalar>()) {
          return Refusal{wire::ErrorCode::element,
                         "asyncopt: the server holds " + element_name(wire::element_of<Scalar>()) +
                             " parameters but the worker speaks " + element_name(h.element)};
        }
        if (h.offset != compress::fingerprint(config_.compression)) {
          return Refusal{wire::ErrorCode::bad_request,
                         "asyncopt: the worker compresses its pushes otherwise than this server, "
                         "which expects " +
                             (config_.compression ? compress::describe(*config_.compression)
                                                  : std::string("none")) +
                             ": give transport::Zmq::compression the servers' "
                             "ServerConfig::compression"};
        }
        if (h.value > config_.workers) {
          return Refusal{wire::ErrorCode::unknown_worker,
                         "asyncopt: this process's workers would have ids up to " +
                             std::to_string(h.value - 1) + " but the job has " +
                             std::to_string(config_.workers) + " workers (ids 0 to " +
                             std::to_string(config_.workers - 1) +
                             "): check transport::Zmq::first_worker, the number of workers and "
                             "the servers' ServerConfig::workers"};
        }
        send(to, {.type = wire::Type::welcome,
                  .element = wire::element_of<Scalar>(),
                  .worker = h.worker,
                  .sequence = h.sequence,
                  .value = config_.dimension,
                  .count = params_.size(),
                  .offset = config_.begin});
        return std::nullopt;
      case wire::Type::pull:
        if (!typed(h)) {
          return wrong_element(h);
        }
        if (replay || h.worker == observer) {
          pull(to, m, h.worker == observer ? Source::observer : Source::replay);
          return std::nullopt;
        }
        if (!handles_[h.worker].may_pull()) {
          peers_[h.worker].deferred = true;
          deferred_.push_back({std::move(frames)});
          return std::nullopt;
        }
        pull(to, m, Source::worker);
        return std::nullopt;
      case wire::Type::push:
        if (!typed(h)) {
          return wrong_element(h);
        }
        if (h.worker == observer) {
          return Refusal{wire::ErrorCode::unknown_worker, "asyncopt: an observer cannot push"};
        }
        if ((h.flags & wire::Flag::then_pull) != 0) {
          return push_then_pull(to, frames, m);
        }
        push(to, m);
        return std::nullopt;
      case wire::Type::clock:
        if (h.worker != observer) {
          handles_[h.worker].clock_to(h.value);
          retry_deferred();
        }
        return std::nullopt;
      case wire::Type::leave:
        if (h.worker != observer) {
          Peer& peer = peers_[h.worker];
          handles_[h.worker].leave();
          peer.left = true;
          if (h.count == 1 && (h.sequence >> 32) == peer.owner_link) {
            peer.owner = 0;  // the holder's handle is gone: the id is free
            release_claim(h.worker);
          }
          retry_deferred();
        }
        return std::nullopt;
      case wire::Type::join:
        if (h.worker == observer) {
          return Refusal{wire::ErrorCode::unknown_worker, "asyncopt: an observer cannot join"};
        }
        peers_[h.worker].owner = h.offset;
        peers_[h.worker].owner_link = h.sequence >> 32;
        peers_[h.worker].left = false;
        peers_[h.worker].dropped = false;
        handles_[h.worker].join();
        handles_[h.worker].clock_to(h.value);
        if (h.count == 1 && receiver_) {
          receiver_->reset(h.worker);  // a new handle's DIANA shift starts at zero
        }
        send_joined(to, h);
        retry_deferred();
        return std::nullopt;
      case wire::Type::stats:
        send_stats(to, h);
        return std::nullopt;
      case wire::Type::welcome:
      case wire::Type::pull_reply:
      case wire::Type::push_reply:
      case wire::Type::error:
      case wire::Type::stats_reply:
      case wire::Type::joined:
      case wire::Type::heartbeat:
        break;
    }
    return Refusal{
        wire::ErrorCode::bad_request,
        "asyncopt: a server does not take " + std::string(wire::type_name(h.type)) + " messages"};
  }

  static std::string element_name(wire::Element e) {
    switch (e) {
      case wire::Element::float32:
        return "float";
      case wire::Element::float64:
        return "double";
      case wire::Element::none:
        break;
    }
    return "no";
  }

  [[nodiscard]] static bool typed(const wire::Header& h) noexcept {
    return h.element == wire::element_of<Scalar>();
  }

  [[nodiscard]] static Refusal wrong_element(const wire::Header& h) {
    return {wire::ErrorCode::element, "asyncopt: " + std::string(wire::type_name(h.type)) + " of " +
                                          element_name(h.element) + " values to a server of " +
                                          element_name(wire::element_of<Scalar>()) + " values"};
  }

  // Global keys of a sparse request, checked and turned into this server's local offsets.
  void local_index(const wire::Message& m) {
    const auto count = static_cast<std::size_t>(m.header.count);
    keys_.resize(count);
    m.copy_index(std::span<std::uint64_t>(keys_));
    index_.resize(count);
    const std::size_t begin = config_.begin;
    const std::size_t end = config_.last();
    for (std::size_t k = 0; k < count; ++k) {
      if (keys_[k] < begin || keys_[k] >= end) {
        throw std::invalid_argument("asyncopt: key " + std::to_string(keys_[k]) +
                                    " is outside this server's range [" + std::to_string(begin) +
                                    ", " + std::to_string(end) + ")");
      }
      index_[k] = static_cast<std::size_t>(keys_[k] - begin);
    }
    if (!asyncopt::detail::strictly_increasing_below(std::span<const std::size_t>(index_),
                                                     params_.size())) {
      throw std::invalid_argument(
          "asyncopt: sparse request " +
          asyncopt::detail::index_list_error(std::span<const std::size_t>(index_), params_.size()));
    }
  }

  // Where a pull's values come from: the worker's handle (a new pull: the version and, for
  // delay compensation, the values it saw are recorded), the parameters as they are (an
  // observer), or what the worker's last pull recorded (a resent pull: nothing changes).
  enum class Source { worker, observer, replay };

  void pull(const ::zmq::message_t& to, const wire::Message& m, Source source,
            std::uint8_t reply_flags = 0, std::uint64_t reply_offset = 0) {
    const wire::Header& h = m.header;
    const bool sparse = m.is_sparse();
    if (sparse) {
      local_index(m);
    }
    const std::span<const std::size_t> index(index_);
    const std::size_t count = sparse ? index.size() : params_.size();
    ::zmq::message_t values(count * sizeof(Scalar));
    // Pull straight into the reply where its buffer is aligned for Scalar (libzmq allocates
    // large messages with malloc); through the scratch buffer otherwise.
    auto* const reply = static_cast<Scalar*>(values.data());
    std::span<Scalar> out(aligned(reply) ? reply : scratch_.data(), count);
    if (source == Source::replay && needs_w_seen_v<Rule>) {
      const std::vector<Scalar>& seen = peers_[h.worker].seen;
      for (std::size_t k = 0; k < count; ++k) {
        out[k] = seen[sparse ? index[k] : k];
      }
    } else if (source != Source::worker) {
      // Single-threaded: nobody writes the parameters while this reads them.
      for (std::size_t k = 0; k < count; ++k) {
        out[k] = params_[sparse ? index[k] : k];
      }
    } else {
      auto& handle = handles_[h.worker];
      if constexpr (needs_w_seen_v<Rule>) {
        // The worker's copy of what it saw, refreshed where it pulled.
        std::vector<Scalar>& seen = peers_[h.worker].seen;
        if (sparse) {
          handle.pull(index, std::span<Scalar>(seen));
          for (std::size_t k = 0; k < count; ++k) {
            out[k] = seen[index[k]];
          }
        } else {
          handle.pull(std::span<Scalar>(seen));
          out = std::span<Scalar>(seen);
        }
      } else if (sparse) {
        handle.pull_values(index, out);
      } else {
        handle.pull(out);
      }
    }
    if (count > 0 && out.data() != reply) {
      std::memcpy(reply, out.data(), count * sizeof(Scalar));
    }
    send(to,
         {.type = wire::Type::pull_reply,
          .element = wire::element_of<Scalar>(),
          .flags = reply_flags,
          .worker = h.worker,
          .sequence = h.sequence,
          .value = store_.version(),
          .count = count,
          .offset = reply_offset},
         std::move(values));
  }

  void push(const ::zmq::message_t& to, const wire::Message& m) {
    const wire::Header& h = m.header;
    const auto count = static_cast<std::size_t>(h.count);
    auto& handle = handles_[h.worker];
    const bool sparse = m.is_sparse();
    if (sparse) {
      local_index(m);
    } else if (count != params_.size()) {
      throw std::invalid_argument("asyncopt: dense push of " + std::to_string(count) +
                                  " values to a server holding " + std::to_string(params_.size()) +
                                  " keys");
    }
    const std::span<const Scalar> values = gradient_of(m);
    // The answer goes out once the store has accepted the gradient (finite; a rule that
    // reads the parameters seen has them) and before the update runs: this thread serves
    // every request in order, so any later request, of any worker, sees the update.
    auto answer = [&](const PushResult& result) noexcept {
      peers_[h.worker].last_staleness = result.staleness;
      peers_[h.worker].last_applied = result.applied;
      try {
        send(to, {.type = wire::Type::push_reply,
                  .flags = static_cast<std::uint8_t>(result.applied ? wire::Flag::applied : 0),
                  .worker = h.worker,
                  .sequence = h.sequence,
                  .value = result.staleness});
      } catch (...) {  // a lost reply: the worker resends and gets it from peers_
      }
    };
    const PushResult result =
        sparse ? handle.push(std::span<const std::size_t>(index_), values, answer)
               : handle.push(values, answer);
    if (!result.applied) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      answer(result);
    }
  }

  // A dense push, then the worker's clock, then a pull, in one request: what push(),
  // clock() and pull() do in that order, answered with the pull's reply (held back like a
  // pull when bounded staleness says so), which also reports the push.
  std::optional<Refusal> push_then_pull(const ::zmq::message_t& to, detail::Frames& frames,
                                        const wire::Message& m) {
    const wire::Header& h = m.header;
    if (m.is_sparse()) {
      return Refusal{wire::ErrorCode::bad_request,
                     "asyncopt: then_pull needs a dense push (a sparse step pulls other keys)"};
    }
    const auto count = static_cast<std::size_t>(h.count);
    if (count != params_.size()) {
      throw std::invalid_argument("asyncopt: dense push of " + std::to_string(count) +
                                  " values to a server holding " + std::to_string(params_.size()) +
                                  " keys");
    }
    const std::span<const Scalar> values = gradient_of(m);
    auto& handle = handles_[h.worker];
    const PushResult result = handle.push(values);
    if (!result.applied) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
    }
    Peer& peer = peers_[h.worker];
    peer.last_staleness = result.staleness;
    peer.last_applied = result.applied;
    const auto flags = static_cast<std::uint8_t>(result.applied ? wire::Flag::applied : 0);
    if (h.value > 0) {
      handle.clock_to(h.value);
      retry_deferred();  // others may go now; this worker's own pull comes after them
    }
    if (!handle.may_pull()) {
      peer.deferred = true;
      deferred_.push_back({std::move(frames), flags, result.staleness});
      return std::nullopt;
    }
    pull(to, m, Source::worker, flags, result.staleness);
    return std::nullopt;
  }

  // The answer to a join: the worker's clock here, which a restarted worker process adopts.
  void send_joined(const ::zmq::message_t& to, const wire::Header& h) {
    send(to, {.type = wire::Type::joined,
              .worker = h.worker,
              .sequence = h.sequence,
              .value = handles_[h.worker].clock_count()});
  }

  void send_stats(const ::zmq::message_t& to, const wire::Header& h) {
    const ServerStats s = stats();
    std::array<std::uint64_t, static_cast<std::size_t>(wire::StatsField::count)> fields{};
    fields[static_cast<std::size_t>(wire::StatsField::version)] = s.version;
    fields[static_cast<std::size_t>(wire::StatsField::rejected)] = s.rejected;
    fields[static_cast<std::size_t>(wire::StatsField::malformed)] = s.malformed;
    fields[static_cast<std::size_t>(wire::StatsField::refused)] = s.refused;
    fields[static_cast<std::size_t>(wire::StatsField::dropped)] = s.dropped;
    fields[static_cast<std::size_t>(wire::StatsField::checkpoints)] = s.checkpoints;
    fields[static_cast<std::size_t>(wire::StatsField::duplicates)] = s.duplicates;
    fields[static_cast<std::size_t>(wire::StatsField::unauthorized)] = s.unauthorized;
    send(to,
         {.type = wire::Type::stats_reply,
          .worker = h.worker,
          .sequence = h.sequence,
          .count = fields.size()},
         ::zmq::message_t(fields.data(), sizeof(fields)));
  }

  // A push's values, read in place where the frame is aligned for Scalar, from a copy
  // otherwise; a compressed push's (dense, its count checked by the caller), decoded (with DIANA,
  // plus the server's mirror of the worker's shift, which moves with it, unless the message is not
  // finite). A malformed payload throws std::invalid_argument.
  [[nodiscard]] std::span<const Scalar> gradient_of(const wire::Message& m) {
    const auto count = static_cast<std::size_t>(m.header.count);
    if (m.is_compressed()) {
      if (!receiver_) {
        throw std::invalid_argument(
            "asyncopt: a compressed push to a server started without "
            "ServerConfig::compression");
      }
      values_.resize(count);
      receiver_->decode(m.values, {.round = m.header.offset, .worker = m.header.worker},
                        std::span<Scalar>(values_));
      // A message that is not finite is rejected as the push of one is, and moves no shift.
      if (kernels::all_finite(std::span<const Scalar>(values_))) {
        receiver_->add_shift(m.header.worker, std::span<Scalar>(values_));
      }
      return values_;
    }
    const auto* const frame = reinterpret_cast<const Scalar*>(m.values.data());
    if (aligned(frame)) {
      return {frame, count};
    }
    values_.resize(count);
    m.copy_values(std::span<Scalar>(values_));
    return values_;
  }

  [[nodiscard]] static bool aligned(const void* p) noexcept {
    return reinterpret_cast<std::uintptr_t>(p) % alignof(Scalar) == 0;
  }

  // Workers [first, first + count) are alive; a dropped one takes part again. `token`: the
  // claim token of the process that says so (a heartbeat's), 0 when unknown.
  void heard(std::uint32_t first, std::uint64_t count, std::uint64_t token = 0) {
    const auto now = Clock::now();
    const std::size_t last =
        static_cast<std::size_t>(std::min<std::uint64_t>(first + count, config_.workers));
    bool rejoined = false;
    for (std::size_t id = first; id < last; ++id) {
      Peer& peer = peers_[id];
      if (token != 0 && peer.owner == 0 && !peer.left) {
        peer.owner = token;  // after a restart from a checkpoint: the process that beats
      }
      if (token != 0 && token == peer.owner && !peer.claim.empty()) {
        refuse_claim(static_cast<std::uint32_t>(id));
      }
      peer.last_heard = now;
      if (peer.dropped && !peer.left) {
        peer.dropped = false;
        handles_[id].join();
        rejoined = true;
      }
    }
    if (rejoined) {
      retry_deferred();
    }
  }

  void check_heartbeats() {
    if (config_.heartbeat_timeout.count() == 0) {
      return;
    }
    const auto now = Clock::now();
    bool changed = false;
    for (std::size_t id = 0; id < peers_.size(); ++id) {
      Peer& peer = peers_[id];
      if (peer.left && !peer.claim.empty() && now - peer.last_heard > config_.heartbeat_timeout) {
        peer.owner = 0;  // left and silent since: the holder is gone
        release_claim(id);
      }
      if (!peer.dropped && !peer.left && now - peer.last_heard > config_.heartbeat_timeout) {
        peer.dropped = true;
        handles_[id].leave();
        dropped_.fetch_add(1, std::memory_order_relaxed);
        release_claim(id);
        changed = true;
      }
    }
    if (changed) {
      retry_deferred();
    }
  }

  // Whether join `h` claims a worker id that another process holds (joined, its handle not
  // destroyed, not dropped for silence; it may have left until its next epoch).
  [[nodiscard]] bool contested(const wire::Header& h) const noexcept {
    const Peer& peer = peers_[h.worker];
    return peer.owner != 0 && h.offset != peer.owner && !peer.dropped;
  }

  // A join of a worker id that another process holds: held until the holder's handle is
  // destroyed or the holder is silent past the heartbeat timeout (a restarted process
  // replacing a dead one), refused as soon as the holder is heard from again (two processes
  // with the same worker ids). Without heartbeat timeouts nothing would ever free the id:
  // refused at once. The holder's own state stays as it is.
  void hold_claim(const ::zmq::message_t& to, detail::Frames& frames, const wire::Header& h) {
    Peer& peer = peers_[h.worker];
    if (!peer.claim.empty()) {
      if (detail::decode(peer.claim, 1).header.sequence == h.sequence) {
        duplicates_.fetch_add(1, std::memory_order_relaxed);  // the held join, resent
        return;
      }
    } else if (config_.heartbeat_timeout.count() > 0) {
      peer.claim = std::move(frames);
      return;
    }
    refuse(to, h, taken(h.worker));
  }

  [[nodiscard]] Refusal taken(std::uint32_t worker) const {
    const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(
        Clock::now() - peers_[worker].last_heard);
    return {wire::ErrorCode::taken,
            "asyncopt: worker id " + std::to_string(worker) +
                " is taken by another process that is still running (heard from " +
                std::to_string(silent.count()) +
                " ms ago): give each worker process its own ids (transport::Zmq::first_worker); "
                "a process that replaces a dead one may join once the server has dropped it (" +
                std::to_string(config_.heartbeat_timeout.count()) + " ms without heartbeats)"};
  }

  void refuse_claim(std::uint32_t worker) {
    detail::Frames frames = std::move(peers_[worker].claim);
    peers_[worker].claim.clear();
    refuse(frames[0], detail::decode(frames, 1).header, taken(worker));
  }

  // The holder of worker id `id` is gone: its held claim is served next.
  void release_claim(std::size_t id) {
    if (!peers_[id].claim.empty()) {
      released_.push_back(std::move(peers_[id].claim));
      peers_[id].claim.clear();
    }
  }

  void release_claims() {
    while (!released_.empty()) {
      detail::Frames frames = std::move(released_.front());
      released_.pop_front();
      serve(frames);
    }
  }

  // Serves the held-back pulls that may go now, in the order they came.
  void retry_deferred() {
    for (auto it = deferred_.begin(); it != deferred_.end();) {
      const wire::Message m = detail::decode(it->frames, 1);
      if (!handles_[m.header.worker].may_pull()) {
        ++it;
        continue;
      }
      peers_[m.header.worker].deferred = false;
      try {
        pull(it->frames[0], m, Source::worker, it->flags, it->staleness);
      } catch (const std::invalid_argument& e) {
        refuse(it->frames[0], m.header, {wire::ErrorCode::bad_request, e.what()});
      } catch (const std::exception& e) {
        refuse(it->frames[0], m.header, {wire::ErrorCode::internal, e.what()});
      }
      it = deferred_.erase(it);
    }
  }

  void refuse(const ::zmq::message_t& to, const wire::Header& h, const Refusal& refusal) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    reply_error(to, h, refusal.code, refusal.text);
  }

  void reply_error(const ::zmq::message_t& to, const wire::Header& h, wire::ErrorCode code,
                   const std::string& text) {
    const std::string_view shown(text.data(), std::min(text.size(), wire::max_text));
    send(to,
         {.type = wire::Type::error,
          .worker = h.worker,
          .sequence = h.sequence,
          .offset = static_cast<std::uint64_t>(code)},
         ::zmq::message_t(shown.data(), shown.size()));
  }

  void send(const ::zmq::message_t& to, const wire::Header& header) {
    std::array<::zmq::message_t, 2> parts{::zmq::message_t(to.data(), to.size()),
                                          detail::header_frame(header)};
    ::zmq::send_multipart(socket_, parts, ::zmq::send_flags::dontwait);
  }

  void send(const ::zmq::message_t& to, const wire::Header& header, ::zmq::message_t body) {
    std::array<::zmq::message_t, 3> parts{::zmq::message_t(to.data(), to.size()),
                                          detail::header_frame(header), std::move(body)};
    ::zmq::send_multipart(socket_, parts, ::zmq::send_flags::dontwait);
  }

  ServerConfig config_;
  std::vector<Scalar> params_;
  Store store_;
  std::vector<typename Store::Proxy> handles_;
  std::vector<Peer> peers_;
  std::deque<Deferred> deferred_;
  std::deque<detail::Frames> released_;  // joins whose worker id became free
  std::vector<std::uint64_t> keys_;
  std::vector<std::size_t> index_;
  std::vector<Scalar> values_;
  std::vector<Scalar> scratch_;
  std::optional<compress::Receiver<Scalar, compress::AnyCodec>> receiver_;  // compression only
  ::zmq::context_t context_{1};
  ::zmq::socket_t socket_;
  std::optional<::zmq::socket_t> zap_;
  std::vector<std::string> allowed_;  // the allow-list's keys, binary
  std::string endpoint_;
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> duplicates_{0};
  std::atomic<std::uint64_t> checkpoints_{0};
  std::atomic<std::uint64_t> unauthorized_{0};
  bool resumed_ = false;
};

}  // namespace asyncopt::zeromq
