// Latency and throughput of the ZeroMQ parameter server on loopback TCP, against a raw
// cppzmq DEALER/ROUTER echo of the same sizes.
//
// Every benchmark runs a server (or the echo's ROUTER) on a thread of this process and one
// or two workers against it, each worker on its own Google Benchmark thread with its own
// connection; n is the number of float parameters (the message size is 4n bytes):
//
//   push/<k>/<n>       a dense push of n floats through a worker handle of
//                      AsyncOptimizer<float, update::Sgd, consistency::Locked,
//                      transport::Zmq>::attach(), waiting for the server's reply; the server
//                      (zeromq::Server<float, update::Sgd, consistency::Locked>, dimension n,
//                      k workers, the default ServerConfig otherwise: heartbeats on) applies
//                      w -= lr * g before it answers
//   pull/<k>/<n>       a dense pull of n floats into the worker's buffer
//   pull_push/<k>/<n>  a pull, then a push: one training step as two exchanges
//   push_pull/<k>/<n>  Worker::push_clock_pull: a push, the clock and the next pull in one
//                      exchange, as optimize() runs a dense step over ZeroMQ
//   echo/<k>/<n>       the baseline: a DEALER sends 4n bytes to a ROUTER on a thread that
//                      sends every message back unchanged, receives the echo and copies it
//                      into a buffer, as a pull copies its reply out
//   raw_push/<k>/<n>   the same DEALER and ROUTER, the ROUTER answering with 8 bytes instead
//                      of the echo: the raw counterpart of push (one way of 4n bytes)
//
// k is 1 (1 server + 1 worker) or 2 (1 server + 2 workers: ->Threads(2), both threads
// running the operation concurrently against one server). The server side is set up once
// per run, before the threads start (Setup), and stopped after they end (Teardown), each in
// its own ZeroMQ context, as are the workers' store and the raw DEALERs.
//
// Each operation is timed with std::chrono::steady_clock. Counters (from the timed
// operations of every thread of a run together):
//
//   p50_us, p99_us  the median and the 99th percentile of one operation's latency
//   mean_us         the mean latency
//   GBps            10^9 payload bytes per second moved by all the run's threads together:
//                   4n per push, pull or raw push, 2 x 4n per pull_push, push_pull and echo round
//                   trip,
//                   over the wall time from the first operation's start to the last one's end
//
// Times reported by Google Benchmark itself are wall time (UseRealTime). After each run the
// program checks what it can: no push rejected or refused, every pulled value and every
// parameter finite and where the pushes put it, every echo equal to what was sent. A failed
// check, or an operation that throws, makes the program exit 1.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <memory>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <benchmark/benchmark.h>

#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/core/optimizer.hpp>
#include <asyncopt/update/sgd.hpp>
#include <asyncopt/zmq/zmq.hpp>

namespace {

using Clock = std::chrono::steady_clock;
using Rule = asyncopt::update::Sgd;
using Policy = asyncopt::consistency::Locked;
using PsServer = asyncopt::zeromq::Server<float, Rule, Policy>;
using Optimizer = asyncopt::AsyncOptimizer<float, Rule, Policy, asyncopt::transport::Zmq>;
using Store = Optimizer::store_type;
using Handle = Store::Worker;

constexpr std::array<std::int64_t, 5> sizes{1, 1'000, 10'000, 100'000, 1'000'000};
constexpr int max_workers = 2;
constexpr double learning_rate = 1e-3;
constexpr float gradient_value = 1e-3f;
// Operations each connection runs before a run is timed (connections, buffers, allocator).
constexpr int warm_up = 3;
// How long a raw DEALER waits for its answer before the benchmark fails.
constexpr int reply_timeout_ms = 30'000;

// Set when an operation fails or a run ends with a wrong result; main then exits 1.
std::atomic<bool> failed{false};

void fail(const std::string& what) {
  std::fprintf(stderr, "bench_zmq: %s\n", what.c_str());
  failed.store(true, std::memory_order_relaxed);
}

enum class Op { push, pull, pull_push, push_pull, echo, raw_push };

const char* op_name(Op op) {
  switch (op) {
    case Op::push:
      return "push";
    case Op::pull:
      return "pull";
    case Op::pull_push:
      return "pull_push";
    case Op::push_pull:
      return "push_pull";
    case Op::echo:
      return "echo";
    case Op::raw_push:
      break;
  }
  return "raw_push";
}

// Payload bytes one operation moves.
std::size_t bytes_per_op(Op op, std::size_t n) {
  return (op == Op::pull_push || op == Op::push_pull || op == Op::echo ? 2 : 1) * n * sizeof(float);
}

// What one benchmark thread timed: each operation's latency and the span they covered.
struct Timings {
  std::vector<std::int64_t> ns;
  Clock::time_point first{};
  Clock::time_point last{};
};

// ---------------------------------------------------------------------------------------------
// The parameter server and its workers
// ---------------------------------------------------------------------------------------------

struct ServerFixture {
  ServerFixture(std::size_t n, std::size_t workers)
      : server(std::make_unique<PsServer>(
            asyncopt::zeromq::ServerConfig{.endpoint = "tcp://127.0.0.1:*",
                                           .dimension = n,
                                           .begin = 0,
                                           .end = 0,
                                           .workers = workers},
            Rule{.learning_rate = learning_rate}, Policy{})),
        thread([s = server.get()](const std::stop_token& stop) { s->run(stop); }),
        params(n, 1.0f),
        pulled(workers, std::vector<float>(n, 0.0f)),
        gradients(workers, std::vector<float>(n, gradient_value)) {
    const Optimizer optimizer(Rule{.learning_rate = learning_rate}, Policy{},
                              asyncopt::transport::Zmq{.servers = {server->endpoint()}});
    store = optimizer.attach(std::span<float>(params), workers);
    handles.reserve(workers);
    for (std::size_t id = 0; id < workers; ++id) {
      handles.push_back(store->worker(id));
    }
  }

  // Stops the workers and the server; returns the server's parameters.
  std::vector<float> stop() {
    handles.clear();
    store.reset();
    thread = std::jthread();  // requests the stop and joins
    const auto w = server->parameters();
    return {w.begin(), w.end()};
  }

  std::unique_ptr<PsServer> server;
  std::jthread thread;  // after the server: stops before it goes
  std::vector<float> params;
  std::unique_ptr<Store> store;
  std::vector<Handle> handles;  // after the store: go before it
  std::vector<std::vector<float>> pulled;
  std::vector<std::vector<float>> gradients;
  std::array<Timings, max_workers> timings;
  std::atomic<std::uint64_t> pushes{0};
};

std::unique_ptr<ServerFixture> server_fixture;

void run_op(ServerFixture& f, std::size_t t, Op op) {
  Handle& h = f.handles[t];
  if (op == Op::push_pull) {
    const asyncopt::PushResult result =
        h.push_clock_pull(std::span<const float>(f.gradients[t]), std::span<float>(f.pulled[t]));
    if (!result.applied) {
      throw std::runtime_error("a push was not applied");
    }
    return;
  }
  if (op == Op::pull || op == Op::pull_push) {
    h.pull(std::span<float>(f.pulled[t]));
  }
  if (op == Op::push || op == Op::pull_push) {
    const asyncopt::PushResult result = h.push(std::span<const float>(f.gradients[t]));
    if (!result.applied) {
      throw std::runtime_error("a push was not applied");
    }
  }
}

void setup_server(const benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto workers = static_cast<std::size_t>(state.threads());
  try {
    server_fixture = std::make_unique<ServerFixture>(n, workers);
    for (std::size_t t = 0; t < workers; ++t) {
      for (int k = 0; k < warm_up; ++k) {
        run_op(*server_fixture, t, Op::pull_push);
        server_fixture->pushes.fetch_add(1, std::memory_order_relaxed);
      }
    }
  } catch (const std::exception& e) {
    fail(std::string("setting up a server of ") + std::to_string(n) + " floats: " + e.what());
    server_fixture.reset();
  }
}

void teardown_server(const benchmark::State& state) {
  if (!server_fixture) {
    return;
  }
  ServerFixture& f = *server_fixture;
  const std::string name = "server of " + std::to_string(state.range(0)) + " floats, " +
                           std::to_string(state.threads()) + " worker(s): ";
  const std::uint64_t pushes = f.pushes.load(std::memory_order_relaxed);
  const std::vector<float> w = f.stop();
  const asyncopt::zeromq::ServerStats stats = f.server->stats();
  if (stats.version != pushes || stats.rejected != 0 || stats.refused != 0 ||
      stats.malformed != 0 || stats.dropped != 0 || stats.duplicates != 0) {
    fail(name + "the server applied " + std::to_string(stats.version) + " of " +
         std::to_string(pushes) + " pushes (rejected " + std::to_string(stats.rejected) +
         ", refused " + std::to_string(stats.refused) + ", malformed " +
         std::to_string(stats.malformed) + ", dropped " + std::to_string(stats.dropped) +
         ", duplicates " + std::to_string(stats.duplicates) + ")");
  }
  // Every push subtracts lr * g from every parameter (accumulated in float: a loose bound).
  const double expected =
      -learning_rate * static_cast<double>(gradient_value) * static_cast<double>(pushes);
  const double tolerance = 1e-2 * std::abs(expected) + 1e-9;
  for (const float v : w) {
    if (!std::isfinite(v) || std::abs(static_cast<double>(v) - expected) > tolerance) {
      fail(name + "a parameter is " + std::to_string(v) + ", expected " + std::to_string(expected));
      break;
    }
  }
  for (const auto& pulled : f.pulled) {
    if (!std::all_of(pulled.begin(), pulled.end(), [](float v) { return std::isfinite(v); })) {
      fail(name + "a pulled value is not finite");
    }
  }
  server_fixture.reset();
}

// ---------------------------------------------------------------------------------------------
// The baselines: a raw DEALER/ROUTER echo, and a raw push answered with a short ack
// ---------------------------------------------------------------------------------------------

// Linger 0 and no queue limits, as the plug-in sets its sockets.
void configure(::zmq::socket_t& socket) {
  socket.set(::zmq::sockopt::linger, 0);
  socket.set(::zmq::sockopt::sndhwm, 0);
  socket.set(::zmq::sockopt::rcvhwm, 0);
}

// Bytes of the ack that answers a raw push.
constexpr std::size_t ack_bytes = 8;

// Sends every message back to its sender (the routing id kept) until a stop is requested:
// unchanged (echo), or with its body replaced by an ack of ack_bytes (raw push). Polls as
// the server's loop does, then serves what is queued.
void router_loop(::zmq::socket_t& router, bool ack, const std::stop_token& stop) {
  std::vector<::zmq::message_t> frames;
  while (!stop.stop_requested()) {
    ::zmq::pollitem_t item{static_cast<void*>(router), 0, ZMQ_POLLIN, 0};
    ::zmq::poll(&item, 1, std::chrono::milliseconds(50));
    if ((item.revents & ZMQ_POLLIN) == 0) {
      continue;
    }
    for (int k = 0; k < 1024; ++k) {
      frames.clear();
      if (!::zmq::recv_multipart(router, std::back_inserter(frames), ::zmq::recv_flags::dontwait)) {
        break;
      }
      if (ack) {
        frames.resize(1);
        frames.emplace_back(ack_bytes);
      }
      static_cast<void>(::zmq::send_multipart(router, frames, ::zmq::send_flags::dontwait));
    }
  }
}

struct RawFixture {
  RawFixture(std::size_t n, std::size_t workers, bool ack)
      : ack(ack), sent(workers, std::vector<float>(n)), received(workers, std::vector<float>(n)) {
    configure(router);
    router.bind("tcp://127.0.0.1:*");
    const std::string endpoint = router.get(::zmq::sockopt::last_endpoint);
    thread =
        std::jthread([this](const std::stop_token& stop) { router_loop(router, this->ack, stop); });
    for (std::size_t t = 0; t < workers; ++t) {
      dealers.emplace_back(client_context, ::zmq::socket_type::dealer);
      configure(dealers.back());
      dealers.back().set(::zmq::sockopt::rcvtimeo, reply_timeout_ms);
      dealers.back().connect(endpoint);
      for (std::size_t i = 0; i < n; ++i) {
        sent[t][i] = static_cast<float>(t * n + i);
      }
    }
  }

  bool ack;
  ::zmq::context_t server_context{1};
  ::zmq::socket_t router{server_context, ::zmq::socket_type::router};
  std::jthread thread;  // after the router: stops before it goes
  ::zmq::context_t client_context{1};
  std::vector<::zmq::socket_t> dealers;  // after their context: go before it
  std::vector<std::vector<float>> sent;
  std::vector<std::vector<float>> received;
  std::array<Timings, max_workers> timings;
};

std::unique_ptr<RawFixture> raw_fixture;

// Sends worker t's 4n bytes (copied into a message, as a push copies the gradient) and
// waits for the answer; an echo is copied out, as a pull copies its reply.
void run_raw(RawFixture& f, std::size_t t) {
  ::zmq::socket_t& dealer = f.dealers[t];
  const std::size_t bytes = f.sent[t].size() * sizeof(float);
  ::zmq::message_t request(f.sent[t].data(), bytes);
  static_cast<void>(dealer.send(request, ::zmq::send_flags::none));
  ::zmq::message_t reply;
  if (!dealer.recv(reply, ::zmq::recv_flags::none)) {
    throw std::runtime_error("no answer within " + std::to_string(reply_timeout_ms) + " ms");
  }
  const std::size_t expected = f.ack ? ack_bytes : bytes;
  if (reply.size() != expected) {
    throw std::runtime_error("an answer of " + std::to_string(reply.size()) + " bytes, expected " +
                             std::to_string(expected));
  }
  if (!f.ack) {
    std::memcpy(f.received[t].data(), reply.data(), bytes);
  }
}

template <Op op>
void setup_raw(const benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto workers = static_cast<std::size_t>(state.threads());
  try {
    raw_fixture = std::make_unique<RawFixture>(n, workers, op == Op::raw_push);
    for (std::size_t t = 0; t < workers; ++t) {
      for (int k = 0; k < warm_up; ++k) {
        run_raw(*raw_fixture, t);
      }
    }
  } catch (const std::exception& e) {
    fail(std::string("setting up ") + op_name(op) + " of " + std::to_string(n) +
         " floats: " + e.what());
    raw_fixture.reset();
  }
}

void teardown_raw(const benchmark::State& state) {
  if (!raw_fixture) {
    return;
  }
  if (!raw_fixture->ack) {
    for (std::size_t t = 0; t < raw_fixture->sent.size(); ++t) {
      if (raw_fixture->received[t] != raw_fixture->sent[t]) {
        fail("echo of " + std::to_string(state.range(0)) + " floats: the echo differs");
      }
    }
  }
  raw_fixture.reset();
}

// ---------------------------------------------------------------------------------------------
// The timed loop and the counters
// ---------------------------------------------------------------------------------------------

// Runs `op` once per iteration, timing each call; thread 0 then reports every thread's
// timings as counters. The threads meet at the loop's end (Google Benchmark's barrier), so
// thread 0 reads the others' timings only once they are complete.
template <class Fixture, class Call>
void timed_loop(benchmark::State& state, const char* what, Fixture* f, std::size_t bytes,
                Call&& call) {
  if (f == nullptr) {
    state.SkipWithError("the set-up failed");
    return;
  }
  const auto t = static_cast<std::size_t>(state.thread_index());
  Timings& timing = f->timings[t];
  timing.ns.clear();
  timing.ns.reserve(static_cast<std::size_t>(state.max_iterations));
  for (auto _ : state) {
    const auto start = Clock::now();
    try {
      call(t);
    } catch (const std::exception& e) {
      fail(std::string(what) + " of " + std::to_string(state.range(0)) + " floats: " + e.what());
      state.SkipWithError(e.what());
      break;
    }
    const auto end = Clock::now();
    if (timing.ns.empty()) {
      timing.first = start;
    }
    timing.last = end;
    timing.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
  }
  if (t != 0 || state.error_occurred()) {
    return;
  }
  std::vector<std::int64_t> all;
  Clock::time_point first = timing.first;
  Clock::time_point last = timing.last;
  for (int k = 0; k < state.threads(); ++k) {
    const Timings& other = f->timings[static_cast<std::size_t>(k)];
    all.insert(all.end(), other.ns.begin(), other.ns.end());
    if (!other.ns.empty()) {
      first = std::min(first, other.first);
      last = std::max(last, other.last);
    }
  }
  if (all.empty()) {
    return;
  }
  auto percentile = [&](double q) {
    const auto k = static_cast<std::size_t>(std::llround(q * static_cast<double>(all.size() - 1)));
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end());
    return static_cast<double>(all[k]) * 1e-3;
  };
  double total = 0.0;
  for (const std::int64_t ns : all) {
    total += static_cast<double>(ns);
  }
  const double wall = std::chrono::duration<double>(last - first).count();
  state.counters["p50_us"] = percentile(0.50);
  state.counters["p99_us"] = percentile(0.99);
  state.counters["mean_us"] = total / static_cast<double>(all.size()) * 1e-3;
  state.counters["GBps"] = wall > 0.0 ? static_cast<double>(all.size() * bytes) / wall * 1e-9 : 0.0;
  state.counters["n"] = static_cast<double>(state.range(0));
  state.counters["workers"] = static_cast<double>(state.threads());
}

void bm_server(benchmark::State& state, Op op) {
  ServerFixture* f = server_fixture.get();
  const std::size_t bytes = bytes_per_op(op, static_cast<std::size_t>(state.range(0)));
  timed_loop(state, op_name(op), f, bytes, [&](std::size_t t) { run_op(*f, t, op); });
  if (f != nullptr && op != Op::pull) {
    const auto t = static_cast<std::size_t>(state.thread_index());
    f->pushes.fetch_add(f->timings[t].ns.size(), std::memory_order_relaxed);
  }
}

template <Op op>
void bm_raw(benchmark::State& state) {
  RawFixture* f = raw_fixture.get();
  const std::size_t bytes = bytes_per_op(op, static_cast<std::size_t>(state.range(0)));
  timed_loop(state, op_name(op), f, bytes, [&](std::size_t t) { run_raw(*f, t); });
}

// "<op>/<workers>"; Google Benchmark appends n.
std::string run_name(Op op, int workers) {
  std::string name(op_name(op));
  name += '/';
  name += std::to_string(workers);
  return name;
}

void register_all() {
  for (int workers = 1; workers <= max_workers; ++workers) {
    auto configure_run = [&](benchmark::internal::Benchmark* b) {
      for (const std::int64_t n : sizes) {
        b->Arg(n);
      }
      b->UseRealTime();
      if (workers > 1) {
        b->Threads(workers);
      }
    };
    for (const Op op : {Op::push, Op::pull, Op::pull_push, Op::push_pull}) {
      auto* b = benchmark::RegisterBenchmark(run_name(op, workers).c_str(), bm_server, op);
      configure_run(b);
      b->Setup(setup_server)->Teardown(teardown_server);
    }
    auto* echo =
        benchmark::RegisterBenchmark(run_name(Op::echo, workers).c_str(), bm_raw<Op::echo>);
    configure_run(echo);
    echo->Setup(setup_raw<Op::echo>)->Teardown(teardown_raw);
    auto* raw_push =
        benchmark::RegisterBenchmark(run_name(Op::raw_push, workers).c_str(), bm_raw<Op::raw_push>);
    configure_run(raw_push);
    raw_push->Setup(setup_raw<Op::raw_push>)->Teardown(teardown_raw);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 2;
  }
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return failed.load() ? 1 : 0;
}
