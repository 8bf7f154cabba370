// The ZeroMQ plug-in on loopback: servers on threads of this process, workers through
// transport::Zmq. Every wait is bounded by a timeout.
#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/objective/least_squares.hpp>
#include <asyncopt/zmq/zmq.hpp>

#include "../support/temp_dir.hpp"

// Under a sanitizer the resident set also holds the sanitizer's own memory: ASan's
// quarantine of freed blocks (256 MiB by default) and TSan's shadow of memory already freed.
// A bound on many freed replies then measures the sanitizer, not the server, so the test of
// unread replies checks it only in builds without one (the dev stage); under the sanitizers
// it still runs every request for races and undefined behaviour.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool resident_memory_is_the_programs = false;
#else
constexpr bool resident_memory_is_the_programs = true;
#endif

namespace {

using namespace std::chrono_literals;
using asyncopt::consistency::BoundedStaleness;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;
using asyncopt::transport::Zmq;
using asyncopt::zeromq::Server;
using asyncopt::zeromq::ServerConfig;

// Servers for keys split at `cuts` (ascending, inside (0, dimension)), each serving on a
// thread until the fixture goes.
template <class Scalar, class Rule, class Consistency>
class Cluster {
 public:
  Cluster(std::size_t dimension, std::size_t workers, const Rule& rule,
          const Consistency& consistency, std::vector<std::size_t> cuts = {},
          std::span<const Scalar> initial = {}, std::chrono::milliseconds heartbeat = 5000ms,
          std::optional<asyncopt::compress::Config> compression = {})
      : compression_(compression) {
    cuts.insert(cuts.begin(), 0);
    cuts.push_back(dimension);
    for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
      const ServerConfig config{.endpoint = "tcp://127.0.0.1:*",
                                .dimension = dimension,
                                .begin = cuts[k],
                                .end = cuts[k + 1],
                                .workers = workers,
                                .heartbeat_timeout = heartbeat,
                                .poll_interval = 10ms,
                                .compression = compression};
      servers_.push_back(std::make_unique<Server<Scalar, Rule, Consistency>>(
          config, rule, consistency,
          initial.empty() ? initial : initial.subspan(cuts[k], cuts[k + 1] - cuts[k])));
    }
    for (auto& server : servers_) {
      threads_.emplace_back([s = server.get()](const std::stop_token& stop) { s->run(stop); });
    }
  }

  [[nodiscard]] Zmq transport(std::uint32_t first_worker = 0) const {
    Zmq t{.servers = {},
          .first_worker = first_worker,
          .timeout = 5000ms,
          .heartbeat_interval = 100ms,
          .compression = compression_};
    for (const auto& server : servers_) {
      t.servers.push_back(server->endpoint());
    }
    return t;
  }

  [[nodiscard]] Server<Scalar, Rule, Consistency>& server(std::size_t k) { return *servers_[k]; }

  // Stops the servers; their parameters may be read afterwards.
  void stop() { threads_.clear(); }

 private:
  std::optional<asyncopt::compress::Config> compression_;
  std::vector<std::unique_ptr<Server<Scalar, Rule, Consistency>>> servers_;
  std::vector<std::jthread> threads_;
};

// A raw DEALER connected to one server, for messages the transport would never send.
class RawLink {
 public:
  explicit RawLink(const std::string& endpoint) : dealer_(context_, ::zmq::socket_type::dealer) {
    dealer_.set(::zmq::sockopt::linger, 0);
    dealer_.connect(endpoint);
  }
  // Sends the header, and the payload as a second frame when it is not empty.
  void send(const asyncopt::zeromq::wire::Header& header, std::span<const float> payload = {}) {
    std::vector<::zmq::message_t> parts;
    parts.push_back(asyncopt::zeromq::detail::header_frame(header));
    if (!payload.empty()) {
      parts.emplace_back(payload.data(), payload.size_bytes());
    }
    REQUIRE(::zmq::send_multipart(dealer_, parts));
  }
  // Sends the frames as they are.
  void send_parts(std::vector<::zmq::message_t>& parts) {
    REQUIRE(::zmq::send_multipart(dealer_, parts));
  }
  // The next reply, decoded; it must come within 5 s. Its views live until the next reply.
  asyncopt::zeromq::wire::Message reply() {
    REQUIRE(receive(reply_, 5000ms));
    return asyncopt::zeromq::detail::decode(reply_, 0);
  }
  // Whether a reply arrived within `timeout`; it is left in `reply`.
  bool receive(asyncopt::zeromq::detail::Frames& reply, std::chrono::milliseconds timeout) {
    return asyncopt::zeromq::detail::receive(dealer_, reply, timeout);
  }
  // Sends and returns the decoded reply, which must come within 5 s.
  asyncopt::zeromq::wire::Message request(const asyncopt::zeromq::wire::Header& header,
                                          std::span<const float> payload = {}) {
    send(header, payload);
    REQUIRE(receive(reply_, 5000ms));
    return asyncopt::zeromq::detail::decode(reply_, 0);
  }

 private:
  ::zmq::context_t context_;
  ::zmq::socket_t dealer_;
  asyncopt::zeromq::detail::Frames reply_;
};

}  // namespace

TEST_CASE("a push through two servers applies w -= lr * g on every key") {
  const asyncopt::update::Sgd rule{.learning_rate = 0.5};
  std::vector<double> w0(10);
  for (std::size_t i = 0; i < w0.size(); ++i) {
    w0[i] = static_cast<double>(i);
  }
  Cluster<double, asyncopt::update::Sgd, Locked> cluster(10, 1, rule, Locked{}, {4}, w0);
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, Locked, Zmq> opt(rule, Locked{},
                                                                           cluster.transport());
  std::vector<double> params(10, -1.0);
  auto store = opt.attach(params, 1);
  CHECK(params == w0);  // the store copies the servers' parameters in
  auto h = store->worker(0);
  std::vector<double> w(10);
  h.pull(w);
  CHECK(w == w0);
  std::vector<double> g(10);
  for (std::size_t i = 0; i < g.size(); ++i) {
    g[i] = 1.0 + static_cast<double>(i);
  }
  const auto result = h.push(std::span<const double>(g));
  CHECK(result.applied);
  CHECK(result.staleness == 0);
  h.pull(w);
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(w[i] == w0[i] - 0.5 * g[i]);
  }
  // A sparse push touches only its keys, on whichever server holds them.
  const std::vector<std::size_t> index{1, 4, 9};
  const std::vector<double> value{2.0, 4.0, 8.0};
  h.push(std::span<const std::size_t>(index), std::span<const double>(value));
  std::vector<double> packed(3);
  h.pull_values(std::span<const std::size_t>(index), std::span<double>(packed));
  for (std::size_t k = 0; k < index.size(); ++k) {
    CHECK(packed[k] == w0[index[k]] - 0.5 * g[index[k]] - 0.5 * value[k]);
  }
  store->sync();
  CHECK(params[0] == w0[0] - 0.5 * g[0]);
  CHECK(params[9] == w0[9] - 0.5 * g[9] - 0.5 * 8.0);
  CHECK(store->version() == 2);
}

TEST_CASE("servers whose key ranges do not tile the parameters are refused with the reason") {
  const asyncopt::update::Sgd rule{};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(8, 1, rule, LockFree{}, {4});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule);
  std::vector<float> params(8);

  Zmq only_first = cluster.transport();
  only_first.servers.resize(1);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> half(rule, {}, only_first);
  CHECK_THROWS_WITH(half.attach(params, 1),
                    Catch::Contains("the servers' key ranges end at 4 but the model has 8"));

  std::vector<float> wrong(9);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> full(rule, {},
                                                                             cluster.transport());
  CHECK_THROWS_WITH(full.attach(wrong, 1), Catch::Contains("holds a model of 8 parameters"));

  std::vector<double> doubles(8);
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, LockFree, Zmq> other(rule, {},
                                                                               cluster.transport());
  CHECK_THROWS_WITH(other.attach(doubles, 1), Catch::Contains("float parameters"));
}

TEST_CASE("a worker's pushes are applied in the order it sent them, as in one process") {
  // Momentum makes the result depend on the order of the gradients; the remote run must
  // equal the same pushes applied in order by a shared-memory store, bit for bit.
  const asyncopt::update::MomentumCorrection rule{.learning_rate = 0.1, .beta = 0.9};
  using Rule = asyncopt::update::MomentumCorrection;
  const std::size_t n = 50;
  Cluster<float, Rule, Locked> cluster(n, 1, rule, Locked{}, {17, 31});
  asyncopt::AsyncOptimizer<float, Rule, Locked, Zmq> remote(rule, Locked{}, cluster.transport());
  asyncopt::AsyncOptimizer<float, Rule, Locked> local(rule);
  std::vector<float> remote_params(n);
  std::vector<float> local_params(n);
  auto remote_store = remote.attach(remote_params, 1);
  auto local_store = local.attach(local_params, 1);
  auto r = remote_store->worker(0);
  auto l = local_store->worker(0);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> w(n);
  for (int step = 0; step < 40; ++step) {
    std::vector<float> g(n);
    for (auto& v : g) {
      v = normal(rng);
    }
    if (step % 2 == 0) {
      r.push(std::span<const float>(g));
      l.push(std::span<const float>(g));
    } else {
      std::vector<std::size_t> index;
      std::vector<float> value;
      for (std::size_t i = static_cast<std::size_t>(step) % 3; i < n; i += 3) {
        index.push_back(i);
        value.push_back(g[i]);
      }
      r.push(std::span<const std::size_t>(index), std::span<const float>(value));
      l.push(std::span<const std::size_t>(index), std::span<const float>(value));
    }
  }
  remote_store->sync();
  CHECK(remote_params == local_params);
}

TEST_CASE("delay compensation reads each worker's own pulled parameters on the server") {
  // Two workers interleave pulls and pushes; the servers keep a copy per worker, so the
  // result equals a shared-memory store where each worker keeps its pulled buffer.
  using Rule = asyncopt::update::DelayCompensated;
  const Rule rule{.learning_rate = 0.2, .lambda = 0.5};
  const std::size_t n = 12;
  std::vector<double> w0(n);
  for (std::size_t i = 0; i < n; ++i) {
    w0[i] = std::sin(static_cast<double>(i));
  }
  Cluster<double, Rule, Locked> cluster(n, 2, rule, Locked{}, {5}, w0);
  asyncopt::AsyncOptimizer<double, Rule, Locked, Zmq> remote(rule, Locked{}, cluster.transport());
  asyncopt::AsyncOptimizer<double, Rule, Locked> local(rule);
  std::vector<double> remote_params(n);
  std::vector<double> local_params = w0;
  auto rs = remote.attach(remote_params, 2);
  auto ls = local.attach(local_params, 2);
  auto r0 = rs->worker(0);
  auto r1 = rs->worker(1);
  auto l0 = ls->worker(0);
  auto l1 = ls->worker(1);
  std::vector<double> rw0(n);
  std::vector<double> rw1(n);
  std::vector<double> lw0(n);
  std::vector<double> lw1(n);
  std::vector<double> g(n);
  for (int round = 0; round < 5; ++round) {
    r0.pull(rw0);
    l0.pull(lw0);
    r1.pull(rw1);
    l1.pull(lw1);
    CHECK(rw0 == lw0);
    CHECK(rw1 == lw1);
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = rw0[i] - 0.1 * static_cast<double>(round);
    }
    CHECK(r0.push(std::span<const double>(g)).staleness ==
          l0.push(std::span<const double>(g)).staleness);
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = 2.0 * rw1[i] + 0.3;
    }
    const auto rr = r1.push(std::span<const double>(g));
    const auto lr = l1.push(std::span<const double>(g));
    CHECK(rr.staleness == 1);
    CHECK(rr.staleness == lr.staleness);
  }
  rs->sync();
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(remote_params[i] == local_params[i]);
  }
}

TEST_CASE("optimize() over two ZeroMQ servers fits least squares like shared memory does") {
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 rng(11);
  std::normal_distribution<double> normal;
  const Eigen::Index d = 6;
  Matrix x = Matrix::NullaryExpr(2000, d, [&] { return normal(rng); });
  const Eigen::VectorXd truth = Eigen::VectorXd::LinSpaced(d, -2.0, 3.0);
  Eigen::VectorXd y = x * truth;
  asyncopt::objective::LeastSquares<Matrix> f(std::move(x), std::move(y), {.intercept = false});
  const asyncopt::update::Sgd rule{.learning_rate = 0.02};
  Cluster<double, asyncopt::update::Sgd, LockFree> cluster(static_cast<std::size_t>(d), 2, rule,
                                                           LockFree{}, {3});
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                             cluster.transport());
  std::vector<double> w(static_cast<std::size_t>(d), 0.0);
  const asyncopt::Report report = opt.optimize(f, w, {.workers = 2, .batch_size = 4, .epochs = 10});
  CHECK(report.epochs == 10);
  CHECK(report.updates == 10 * 2000 / 4);
  // The noise-free optimum is `truth`; SGD from zero gets within 1e-3 of it.
  for (Eigen::Index i = 0; i < d; ++i) {
    CHECK(w[static_cast<std::size_t>(i)] == Approx(truth(i)).margin(1e-3));
  }
  CHECK(report.loss.back() < 1e-6);
}

TEST_CASE("bounded staleness holds a pull back until the slow worker clocks, across processes") {
  using Policy = BoundedStaleness<Locked>;
  const asyncopt::update::Sgd rule{.learning_rate = 0.1};
  Cluster<float, asyncopt::update::Sgd, Policy> cluster(4, 2, rule, Policy{.staleness = 1}, {2});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy, Zmq> opt(
      rule, Policy{.staleness = 1}, cluster.transport());
  std::vector<float> params(4);
  auto store = opt.attach(params, 2);
  auto fast = store->worker(0);
  auto slow = store->worker(1);
  std::vector<float> w(4);
  fast.pull(w);
  fast.clock();
  fast.pull(w);  // clock 1, slow at 0: within the bound
  fast.clock();  // clock 2: the next pull must wait for the slow worker
  // The pull may only return after the slow worker's clock: the flag is set before it.
  std::atomic<bool> released{false};
  std::atomic<bool> returned_after_release{false};
  std::jthread waiter([&] {
    fast.pull(w);
    returned_after_release = released.load();
  });
  std::this_thread::sleep_for(200ms);
  std::vector<float> slow_w(4);
  slow.pull(slow_w);
  released = true;
  slow.clock();
  waiter.join();
  CHECK(returned_after_release.load());
}

TEST_CASE("a worker that falls silent is dropped from the staleness bound after the timeout") {
  using Policy = BoundedStaleness<LockFree>;
  const asyncopt::update::Sgd rule{};
  // Worker 1 never connects; the servers drop it after 1.5 s without a heartbeat (worker 0
  // beats every 100 ms).
  Cluster<float, asyncopt::update::Sgd, Policy> cluster(4, 2, rule, Policy{.staleness = 0}, {}, {},
                                                        1500ms);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy, Zmq> opt(
      rule, Policy{.staleness = 0}, cluster.transport());
  std::vector<float> params(4);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  std::vector<float> w(4);
  h.pull(w);
  h.clock();
  const auto start = std::chrono::steady_clock::now();
  h.pull(w);  // waits for worker 1 until the server drops it
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited < 10000ms);
  CHECK(cluster.server(0).stats().dropped == 1);
}

TEST_CASE("a worker whose server is gone gets ServerUnavailable within the timeout") {
  const asyncopt::update::Sgd rule{};
  auto cluster =
      std::make_unique<Cluster<float, asyncopt::update::Sgd, LockFree>>(4, 1, rule, LockFree{});
  Zmq transport = cluster->transport();
  transport.timeout = 300ms;
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            transport);
  std::vector<float> params(4);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  std::vector<float> w(4);
  h.pull(w);
  cluster.reset();
  CHECK_THROWS_AS(h.pull(w), asyncopt::zeromq::ServerUnavailable);
  CHECK_THROWS_WITH(h.push(std::span<const float>(w)), Catch::Contains("did not answer a push"));
}

TEST_CASE("bad requests come back as the errors a local store raises, and change nothing") {
  const asyncopt::update::Sgd rule{};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(6, 1, rule, LockFree{}, {3});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            cluster.transport());
  std::vector<float> params(6, 0.0F);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  const std::vector<float> short_gradient(5, 1.0F);
  CHECK_THROWS_AS(h.push(std::span<const float>(short_gradient)), std::invalid_argument);
  const std::vector<std::size_t> unsorted{3, 1};
  const std::vector<float> two(2, 1.0F);
  CHECK_THROWS_AS(h.push(std::span<const std::size_t>(unsorted), std::span<const float>(two)),
                  std::invalid_argument);
  std::vector<float> nan(6, std::nanf(""));
  CHECK_FALSE(h.push(std::span<const float>(nan)).applied);
  store->sync();
  CHECK(params == std::vector<float>(6, 0.0F));
  CHECK(store->stats().rejected == 1);
}

using asyncopt::test::TempDir;

TEST_CASE("a server restarted from its checkpoint resumes exactly where it stopped") {
  // Momentum's state and the version must survive the restart: pushes after it give the
  // same parameters, bit for bit, as an uninterrupted run.
  using Rule = asyncopt::update::MomentumCorrection;
  const Rule rule{.learning_rate = 0.05, .beta = 0.8};
  const std::size_t n = 9;
  TempDir dir;
  const ServerConfig config{.endpoint = "tcp://127.0.0.1:*",
                            .dimension = n,
                            .workers = 1,
                            .poll_interval = 10ms,
                            .checkpoint = dir.path() / "server.ckpt",
                            .checkpoint_interval = 60000ms};
  std::vector<std::vector<float>> gradients;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (int k = 0; k < 10; ++k) {
    gradients.emplace_back(n);
    for (auto& v : gradients.back()) {
      v = normal(rng);
    }
  }
  auto push_range = [&](Server<float, Rule, Locked>& server, int from, int to) {
    std::jthread serving([&](const std::stop_token& stop) { server.run(stop); });
    asyncopt::AsyncOptimizer<float, Rule, Locked, Zmq> opt(
        rule, Locked{}, Zmq{.servers = {server.endpoint()}, .timeout = 5000ms});
    std::vector<float> params(n);
    auto store = opt.attach(params, 1);
    auto h = store->worker(0);
    for (int k = from; k < to; ++k) {
      h.push(std::span<const float>(gradients[static_cast<std::size_t>(k)]));
    }
  };
  std::vector<float> before;
  {
    Server<float, Rule, Locked> first(config, rule, Locked{});
    CHECK_FALSE(first.stats().resumed);
    push_range(first, 0, 6);  // one checkpoint at construction, the last when run() returns
    CHECK(first.stats().checkpoints == 2);
    before.assign(first.parameters().begin(), first.parameters().end());
  }
  Server<float, Rule, Locked> second(config, rule, Locked{});
  CHECK(second.stats().resumed);
  CHECK(second.stats().version == 6);
  CHECK(std::vector<float>(second.parameters().begin(), second.parameters().end()) == before);
  push_range(second, 6, 10);

  asyncopt::AsyncOptimizer<float, Rule, Locked> local(rule);
  std::vector<float> reference(n);
  auto store = local.attach(reference, 1);
  auto h = store->worker(0);
  for (const auto& g : gradients) {
    h.push(std::span<const float>(g));
  }
  CHECK(std::vector<float>(second.parameters().begin(), second.parameters().end()) == reference);
}

TEST_CASE("a corrupt or mismatched checkpoint is refused with the reason and left as it is") {
  const asyncopt::update::Sgd rule{};
  TempDir dir;
  ServerConfig config{.endpoint = "tcp://127.0.0.1:*",
                      .dimension = 4,
                      .workers = 1,
                      .checkpoint = dir.path() / "s.ckpt"};
  {
    Server<float, asyncopt::update::Sgd, LockFree> server(config, rule, LockFree{});
    server.checkpoint();
  }
  std::vector<char> bytes;
  {
    std::ifstream in(config.checkpoint, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  SECTION("another shape") {
    ServerConfig wider = config;
    wider.dimension = 5;
    CHECK_THROWS_WITH((Server<float, asyncopt::update::Sgd, LockFree>(wider, rule, LockFree{})),
                      Catch::Contains("has dimension 4 but this server has 5"));
    CHECK_THROWS_AS((Server<double, asyncopt::update::Sgd, LockFree>(config, rule, LockFree{})),
                    asyncopt::zeromq::CheckpointError);
  }
  SECTION("a flipped byte") {
    bytes.back() = static_cast<char>(bytes.back() ^ 0x40);
    {
      std::ofstream out(config.checkpoint, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    CHECK_THROWS_WITH((Server<float, asyncopt::update::Sgd, LockFree>(config, rule, LockFree{})),
                      Catch::Contains("fails its checksum"));
  }
  SECTION("a truncated file") {
    std::filesystem::resize_file(config.checkpoint, bytes.size() - 3);
    CHECK_THROWS_WITH((Server<float, asyncopt::update::Sgd, LockFree>(config, rule, LockFree{})),
                      Catch::Contains("truncated"));
  }
  // Nothing was written over the file the server refused.
  std::ifstream in(config.checkpoint, std::ios::binary);
  const std::vector<char> after((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  CHECK(after.size() <= bytes.size());
  CHECK(std::equal(after.begin(), after.end(), bytes.begin()));
}

TEST_CASE("a resent push is answered again but applied once") {
  namespace wire = asyncopt::zeromq::wire;
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(2, 1, rule, LockFree{});
  RawLink link(cluster.server(0).endpoint());
  const std::array<float, 2> g{1.0F, 2.0F};
  const wire::Header push{.type = wire::Type::push,
                          .element = wire::Element::float32,
                          .worker = 0,
                          .sequence = (std::uint64_t{7} << 32) + 1,
                          .count = 2};
  for (int k = 0; k < 3; ++k) {
    const wire::Message m = link.request(push, g);
    CHECK(m.header.type == wire::Type::push_reply);
    CHECK(m.header.sequence == push.sequence);
    CHECK((m.header.flags & wire::Flag::applied) != 0);
  }
  CHECK(cluster.server(0).stats().version == 1);
  CHECK(cluster.server(0).stats().duplicates == 2);
  cluster.stop();
  CHECK(cluster.server(0).parameters()[0] == -1.0F);
  CHECK(cluster.server(0).parameters()[1] == -2.0F);
}

TEST_CASE("a server answers a non-finite push as rejected and applies nothing") {
  // The transport rejects such a gradient before sending it; a client that does not is
  // answered by the server's own check.
  namespace wire = asyncopt::zeromq::wire;
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(2, 1, rule, LockFree{});
  RawLink link(cluster.server(0).endpoint());
  const std::array<float, 2> g{1.0F, std::numeric_limits<float>::infinity()};
  const wire::Header push{.type = wire::Type::push,
                          .element = wire::Element::float32,
                          .worker = 0,
                          .sequence = (std::uint64_t{3} << 32) + 1,
                          .count = 2};
  const wire::Message m = link.request(push, g);
  CHECK(m.header.type == wire::Type::push_reply);
  CHECK(m.header.sequence == push.sequence);
  CHECK((m.header.flags & wire::Flag::applied) == 0);
  CHECK(cluster.server(0).stats().rejected == 1);
  CHECK(cluster.server(0).stats().version == 0);
  cluster.stop();
  CHECK(cluster.server(0).parameters()[0] == 0.0F);
  CHECK(cluster.server(0).parameters()[1] == 0.0F);
}

TEST_CASE("a worker process killed with SIGKILL mid-run is dropped and the others finish") {
  // The child process is a worker that takes 3 steps and kills itself while it takes part
  // (it never leaves). Under staleness 1 the parent's worker cannot pass clock 4 until the
  // server drops the dead one, 1 s after its last heartbeat (both beat every 100 ms), so
  // finishing shows the drop. Forked before any thread of this test starts; the server's
  // endpoint reaches the child through a pipe.
  using Policy = BoundedStaleness<Locked>;
  const asyncopt::update::Sgd rule{.learning_rate = 0.1};
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[1]);
    char buffer[256] = {};
    std::size_t got = 0;
    while (got < sizeof(buffer) - 1) {
      const ::ssize_t n = ::read(pipe_fds[0], buffer + got, sizeof(buffer) - 1 - got);
      if (n <= 0) {
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    try {
      asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy, Zmq> opt(
          rule, Policy{.staleness = 1},
          Zmq{.servers = {std::string(buffer, got)},
              .first_worker = 1,
              .timeout = 5000ms,
              .heartbeat_interval = 100ms});
      std::vector<float> params(4);
      auto store = opt.attach(params, 1);
      auto h = store->worker(0);
      std::vector<float> w(4);
      const std::vector<float> g(4, 1.0F);
      for (int step = 0; step < 3; ++step) {
        h.pull(w);
        h.push(std::span<const float>(g));
        h.clock();
      }
      ::kill(::getpid(), SIGKILL);
    } catch (...) {
    }
    ::_exit(3);  // reached only if something failed
  }
  ::close(pipe_fds[0]);
  Cluster<float, asyncopt::update::Sgd, Policy> cluster(4, 2, rule, Policy{.staleness = 1}, {}, {},
                                                        1000ms);
  const std::string endpoint = cluster.server(0).endpoint();
  REQUIRE(::write(pipe_fds[1], endpoint.data(), endpoint.size()) ==
          static_cast<::ssize_t>(endpoint.size()));
  ::close(pipe_fds[1]);

  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy, Zmq> opt(
      rule, Policy{.staleness = 1}, cluster.transport());
  std::vector<float> params(4);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  std::vector<float> w(4);
  const std::vector<float> g(4, 1.0F);
  for (int step = 0; step < 20; ++step) {
    h.pull(w);  // waits for the child while it lives, then for the server to drop it
    h.push(std::span<const float>(g));
    h.clock();
  }
  int status = 0;
  pid_t waited = 0;
  for (int k = 0; k < 300 && waited == 0; ++k) {  // at most 30 s
    waited = ::waitpid(child, &status, WNOHANG);
    if (waited == 0) {
      std::this_thread::sleep_for(100ms);
    }
  }
  if (waited == 0) {
    ::kill(child, SIGKILL);  // never leave it behind
  }
  REQUIRE(waited == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(cluster.server(0).stats().dropped >= 1);
  CHECK(cluster.server(0).stats().version == 23);
  store->sync();
  CHECK(params[0] == Approx(-0.1F * 23));
}

TEST_CASE("with CURVE a server serves the workers on its allow-list and refuses any other key") {
  const auto server_keys = asyncopt::zeromq::generate_curve_keypair();
  const auto allowed = asyncopt::zeromq::generate_curve_keypair();
  const auto stranger = asyncopt::zeromq::generate_curve_keypair();
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  Server<float, asyncopt::update::Sgd, LockFree> server({.endpoint = "tcp://127.0.0.1:*",
                                                         .dimension = 3,
                                                         .workers = 1,
                                                         .poll_interval = 10ms,
                                                         .curve_secret_key = server_keys.secret_key,
                                                         .allowed_workers = {allowed.public_key}},
                                                        rule, LockFree{});
  std::jthread serving([&](const std::stop_token& stop) { server.run(stop); });
  auto transport = [&](const asyncopt::zeromq::CurveKeyPair& keys, std::string server_key) {
    return Zmq{.servers = {server.endpoint()},
               .timeout = 1500ms,
               .curve_server_key = std::move(server_key),
               .curve_keys = keys};
  };
  using Opt = asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq>;
  std::vector<float> params(3);

  Opt good(rule, LockFree{}, transport(allowed, server_keys.public_key));
  auto store = good.attach(params, 1);
  auto h = store->worker(0);
  const std::vector<float> g{1.0F, 2.0F, 3.0F};
  CHECK(h.push(std::span<const float>(g)).applied);
  store->sync();
  CHECK(params == std::vector<float>{-1.0F, -2.0F, -3.0F});

  Opt bad(rule, LockFree{}, transport(stranger, server_keys.public_key));
  CHECK_THROWS_WITH(bad.attach(params, 1),
                    Catch::Contains("did not answer") && Catch::Contains("allow-list"));
  CHECK(server.stats().unauthorized >= 1);

  // Without CURVE the handshake fails before any message: no reply either.
  Opt plain(rule, LockFree{}, Zmq{.servers = {server.endpoint()}, .timeout = 500ms});
  CHECK_THROWS_AS(plain.attach(params, 1), asyncopt::zeromq::ServerUnavailable);

  // Keys that are not Z85 are refused before anything is sent.
  CHECK_THROWS_WITH(transport(allowed, "not a key").validate(),
                    Catch::Contains("curve_server_key is not a 40-character Z85 CURVE key"));
  CHECK(server.stats().version == 1);
}

TEST_CASE("a dense push that is not finite on one server's part is rejected whole") {
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  Cluster<float, asyncopt::update::Sgd, Locked> cluster(4, 1, rule, Locked{}, {2});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Locked, Zmq> opt(rule, Locked{},
                                                                          cluster.transport());
  std::vector<float> params(4);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  const std::vector<float> g{1.0F, 1.0F, 1.0F, std::numeric_limits<float>::infinity()};
  CHECK_FALSE(h.push(std::span<const float>(g)).applied);
  store->sync();
  CHECK(params == std::vector<float>(4, 0.0F));
  CHECK(cluster.server(0).stats().version == 0);
  CHECK(cluster.server(1).stats().version == 0);
  CHECK(store->stats().rejected == 1);
}

TEST_CASE("a new handle of a worker id takes the clock the servers have for it") {
  const asyncopt::update::Sgd rule{};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(4, 1, rule, LockFree{}, {1});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            cluster.transport());
  std::vector<float> params(4);
  {
    auto store = opt.attach(params, 1);
    auto h = store->worker(0);
    for (int k = 0; k < 5; ++k) {
      h.clock();
    }
  }
  auto store = opt.attach(params, 1);  // as a restarted worker process would
  auto h = store->worker(0);
  CHECK(h.clock_count() == 5);
}

TEST_CASE("after a restart from a checkpoint a worker that had left still holds nobody back") {
  using Policy = BoundedStaleness<Locked>;
  const asyncopt::update::Sgd rule{};
  TempDir dir;
  const ServerConfig config{.endpoint = "tcp://127.0.0.1:*",
                            .dimension = 2,
                            .workers = 2,
                            .heartbeat_timeout = 0ms,  // only leave() may release worker 1
                            .poll_interval = 10ms,
                            .checkpoint = dir.path() / "s.ckpt"};
  auto run_for = [&](auto&& body) {
    Server<float, asyncopt::update::Sgd, Policy> server(config, rule, Policy{.staleness = 0});
    std::jthread serving([&](const std::stop_token& stop) { server.run(stop); });
    asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, Policy, Zmq> opt(
        rule, Policy{.staleness = 0},
        Zmq{.servers = {server.endpoint()}, .timeout = 3000ms, .heartbeat_interval = 0ms});
    std::vector<float> params(2);
    auto store = opt.attach(params, 2);
    body(*store);
  };
  run_for([](auto& store) {
    auto idle = store.worker(1);
    idle.leave();
  });
  run_for([](auto& store) {
    auto h = store.worker(0);  // worker 1 gets no handle: it stays away
    std::vector<float> w(2);
    for (int k = 0; k < 3; ++k) {
      h.pull(w);  // held back for good (ServerUnavailable) if worker 1 counted again
      h.clock();
    }
    CHECK(h.clock_count() == 3);
  });
}

TEST_CASE("a pull resent while it is held back is answered once") {
  namespace wire = asyncopt::zeromq::wire;
  using Policy = BoundedStaleness<Locked>;
  const asyncopt::update::Sgd rule{};
  Cluster<float, asyncopt::update::Sgd, Policy> cluster(2, 2, rule, Policy{.staleness = 0}, {}, {},
                                                        0ms);
  RawLink raw(cluster.server(0).endpoint());
  const std::uint64_t link = std::uint64_t{9} << 32;
  // Worker 0 reaches clock 1 while worker 1 is at 0: its pull is held back.
  raw.send({.type = wire::Type::clock, .worker = 0, .sequence = link + 1, .value = 1});
  const wire::Header pull{.type = wire::Type::pull,
                          .element = wire::Element::float32,
                          .worker = 0,
                          .sequence = link + 2};
  for (int k = 0; k < 3; ++k) {
    raw.send(pull);
  }
  asyncopt::zeromq::detail::Frames reply;
  CHECK_FALSE(raw.receive(reply, 300ms));
  // Worker 1 clocks: the pull goes, once.
  raw.send({.type = wire::Type::clock,
            .worker = 1,
            .sequence = (std::uint64_t{10} << 32) + 1,
            .value = 1});
  REQUIRE(raw.receive(reply, 5000ms));
  CHECK(asyncopt::zeromq::detail::decode(reply, 0).header.type == wire::Type::pull_reply);
  CHECK_FALSE(raw.receive(reply, 300ms));
  CHECK(cluster.server(0).stats().duplicates == 2);
}

TEST_CASE("push_clock_pull equals push, clock and pull in that order, bit for bit") {
  using Rule = asyncopt::update::MomentumCorrection;
  using Policy = BoundedStaleness<Locked>;
  const Rule rule{.learning_rate = 0.1, .beta = 0.7};
  const std::size_t n = 11;
  Cluster<float, Rule, Policy> fused_cluster(n, 1, rule, Policy{.staleness = 0}, {4});
  Cluster<float, Rule, Policy> plain_cluster(n, 1, rule, Policy{.staleness = 0}, {4});
  using Opt = asyncopt::AsyncOptimizer<float, Rule, Policy, Zmq>;
  Opt fused_opt(rule, Policy{.staleness = 0}, fused_cluster.transport());
  Opt plain_opt(rule, Policy{.staleness = 0}, plain_cluster.transport());
  std::vector<float> fused_params(n);
  std::vector<float> plain_params(n);
  auto fused_store = fused_opt.attach(fused_params, 1);
  auto plain_store = plain_opt.attach(plain_params, 1);
  auto f = fused_store->worker(0);
  auto p = plain_store->worker(0);
  std::vector<float> fw(n);
  std::vector<float> pw(n);
  f.pull(fw);
  p.pull(pw);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  std::vector<float> g(n);
  for (int step = 0; step < 12; ++step) {
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = normal(rng) + fw[i];
    }
    if (step == 5) {
      g[3] = std::numeric_limits<float>::quiet_NaN();  // rejected whole; clock and pull go on
    }
    const auto fr = f.push_clock_pull(std::span<const float>(g), std::span<float>(fw));
    const auto pr = p.push(std::span<const float>(g));
    p.clock();
    p.pull(pw);
    CHECK(fr.applied == pr.applied);
    CHECK(fr.staleness == pr.staleness);
    CHECK(fw == pw);
    CHECK(f.clock_count() == p.clock_count());
  }
  CHECK(fused_store->stats().rejected == 1);
  fused_store->sync();
  plain_store->sync();
  CHECK(fused_params == plain_params);
}

namespace {

// This process's resident memory in bytes (/proc/self/statm).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// A bare TCP connection that speaks just enough ZMTP 3.0 (NULL mechanism, as a DEALER) to
// send frames of any announced size and never reads a byte: what an attacker's client does.
// Every send gives up after 2 s.
class RawZmtp {
 public:
  explicit RawZmtp(const std::string& endpoint) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    const timeval limit{.tv_sec = 2, .tv_usec = 0};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) == 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port =
        htons(static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    std::string greeting(64, '\0');
    greeting[0] = '\xff';
    greeting[9] = '\x7f';
    greeting[10] = '\x03';
    greeting.replace(12, 4, "NULL");
    std::string ready = "\x05READY";
    ready += static_cast<char>(11);
    ready += "Socket-Type";
    ready += std::string("\0\0\0\x06", 4);
    ready += "DEALER";
    std::string command{'\x04', static_cast<char>(ready.size())};
    REQUIRE(write(greeting + command + ready));
  }
  RawZmtp(const RawZmtp&) = delete;
  RawZmtp& operator=(const RawZmtp&) = delete;
  ~RawZmtp() { ::close(fd_); }

  // Announces the single (last) frame of a message, of `size` bytes.
  bool announce(std::uint64_t size) {
    std::string head(1, '\x02');
    for (int shift = 56; shift >= 0; shift -= 8) {
      head += static_cast<char>((size >> shift) & 0xFF);
    }
    return write(head);
  }

  // A one-frame message holding `bytes`.
  bool frame(std::span<const std::byte> bytes) {
    return announce(bytes.size()) &&
           write(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }

  // Sends up to `total` zero bytes; returns how many went before the peer closed the
  // connection or a send timed out.
  std::size_t stream(std::size_t total) {
    const std::string chunk(1 << 20, '\0');
    std::size_t sent = 0;
    while (sent < total && write(chunk)) {
      sent += chunk.size();
    }
    return sent;
  }

  // Whether a send failed because the peer closed the connection.
  [[nodiscard]] bool closed_by_peer() const noexcept { return closed_; }

 private:
  bool write(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ::ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        closed_ = closed_ || errno == EPIPE || errno == ECONNRESET;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  int fd_;
  bool closed_ = false;
};

}  // namespace

TEST_CASE("a frame larger than any request is refused before the server allocates it") {
  // A server of 1000 keys takes messages of at most 64 KiB. A client announces one frame of
  // 1 GiB and sends up to 256 MiB of it: libzmq must drop the connection on reading the size,
  // not allocate the frame and fill it with what arrives.
  const asyncopt::update::Sgd rule{};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(1000, 1, rule, LockFree{});
  const std::size_t before = resident_bytes();
  std::size_t sent = 0;
  bool closed = false;
  {
    RawZmtp attacker(cluster.server(0).endpoint());
    REQUIRE(attacker.announce(std::uint64_t{1} << 30));
    sent = attacker.stream(std::size_t{256} << 20);
    closed = attacker.closed_by_peer();
    const std::size_t after = resident_bytes();
    CHECK(after < before + (std::size_t{32} << 20));
  }
  CHECK(closed);
  CHECK(sent < (std::size_t{64} << 20));
  // The server goes on serving the others.
  RawLink link(cluster.server(0).endpoint());
  namespace wire = asyncopt::zeromq::wire;
  CHECK(
      link.request({.type = wire::Type::stats, .worker = asyncopt::zeromq::observer, .sequence = 1})
          .header.type == wire::Type::stats_reply);
}

TEST_CASE("a client that never reads its replies holds at most queue_limit of them on the server") {
  // 100 pulls of a million floats (4 MB each) that are never read: with a queue of 4 the
  // server holds about 4 replies for that client and drops the rest, instead of 400 MB.
  namespace wire = asyncopt::zeromq::wire;
  const asyncopt::update::Sgd rule{};
  const std::size_t n = 1'000'000;
  Server<float, asyncopt::update::Sgd, LockFree> server({.endpoint = "tcp://127.0.0.1:*",
                                                         .dimension = n,
                                                         .workers = 1,
                                                         .poll_interval = 10ms,
                                                         .queue_limit = 4},
                                                        rule, LockFree{});
  std::jthread serving([&](const std::stop_token& stop) { server.run(stop); });
  const std::size_t reply = n * sizeof(float);
  const std::size_t before = resident_bytes();
  RawZmtp attacker(server.endpoint());
  // Under load libzmq sometimes resets the connection of a client that floods it without
  // reading (seen after 50 to 70 pulls); that ends the attack as well, so the sending stops
  // there, and the check below is on memory.
  std::uint64_t pulls = 0;
  for (std::uint64_t k = 1; k <= 100; ++k) {
    const auto header = wire::encode({.type = wire::Type::pull,
                                      .element = wire::Element::float32,
                                      .worker = asyncopt::zeromq::observer,
                                      .sequence = k});
    if (!attacker.frame(header)) {
      REQUIRE(attacker.closed_by_peer());
      break;
    }
    pulls = k;
  }
  REQUIRE(pulls >= 4 * 4);  // several times the queue limit went out unread
  // The server answers the 100 pulls in well under a second; watch the peak meanwhile.
  std::size_t peak = before;
  for (int k = 0; k < 75; ++k) {
    peak = std::max(peak, resident_bytes());
    std::this_thread::sleep_for(20ms);
  }
  if (resident_memory_is_the_programs) {
    CHECK(peak < before + 12 * reply);
  }
  // A worker that reads its replies is served as usual meanwhile.
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(
      rule, LockFree{}, Zmq{.servers = {server.endpoint()}, .timeout = 5000ms});
  std::vector<float> params(n, 1.0F);
  auto store = opt.attach(params, 1);
  auto h = store->worker(0);
  std::vector<float> w(n, 1.0F);
  for (int k = 0; k < 8; ++k) {
    h.pull(w);
  }
  CHECK(params[0] == 0.0F);
  CHECK(w[n - 1] == 0.0F);
}

TEST_CASE("an endpoint, path or size a server cannot use is named in the error with the reason") {
  using S = Server<float, asyncopt::update::Sgd, LockFree>;
  const asyncopt::update::Sgd rule{};
  auto make = [&](const ServerConfig& config) { S server(config, rule, LockFree{}); };
  CHECK_THROWS_WITH(make({.endpoint = "garbage", .dimension = 4}),
                    "asyncopt: ServerConfig::endpoint 'garbage' is not a ZeroMQ endpoint such as "
                    "tcp://*:5570 or tcp://127.0.0.1:5570");
  CHECK_THROWS_WITH(make({.endpoint = "tcp://999.1.1.1:5", .dimension = 4}),
                    "asyncopt: cannot listen on 'tcp://999.1.1.1:5': No such device");
  const S first({.endpoint = "tcp://127.0.0.1:*", .dimension = 4}, rule, LockFree{});
  CHECK_THROWS_WITH(
      make({.endpoint = first.endpoint(), .dimension = 4}),
      "asyncopt: cannot listen on '" + first.endpoint() + "': Address already in use");
  CHECK_THROWS_AS(make({.endpoint = first.endpoint(), .dimension = 4}), std::system_error);

  const TempDir dir;
  CHECK_THROWS_WITH(
      make({.endpoint = "tcp://127.0.0.1:*", .dimension = 4, .checkpoint = dir.path()}),
      Catch::Contains("ServerConfig::checkpoint '" + dir.path().string() + "' is a directory"));
  CHECK_THROWS_WITH(asyncopt::zeromq::read_checkpoint(dir.path()),
                    "asyncopt: cannot read checkpoint " + dir.path().string() + ": Is a directory");

  CHECK_THROWS_WITH(make({.endpoint = "tcp://127.0.0.1:*", .dimension = 1'000'000'000'000}),
                    Catch::Contains("[0, 1000000000000) holds 1000000000000 keys; one server "
                                    "holds at most 2^36"));
  // 2^36 - 1 floats: within the wire format's bound, beyond any test machine's memory.
  const std::size_t huge = (std::size_t{1} << 36) - 1;
  CHECK_THROWS_WITH(make({.endpoint = "tcp://127.0.0.1:*", .dimension = huge}),
                    Catch::Contains("a server for keys [0, " + std::to_string(huge) +
                                    ") of float values needs about 825 GB") &&
                        Catch::Contains("of memory: split the keys over more servers"));

  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(
      rule, LockFree{}, Zmq{.servers = {"tcp://nope"}, .timeout = 500ms});
  std::vector<float> params(4);
  CHECK_THROWS_WITH(opt.attach(params, 1),
                    "asyncopt: transport::Zmq cannot connect to 'tcp://nope': Invalid argument (an "
                    "endpoint is tcp://<host>:<port>)");
}

TEST_CASE(
    "workers the servers' job does not have are refused before the caller's parameters change") {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Matrix x = Matrix::Ones(8, 4);
  Eigen::VectorXf y = Eigen::VectorXf::Ones(8);
  const asyncopt::objective::LeastSquares<Matrix> f(std::move(x), std::move(y),
                                                    {.intercept = false});
  const asyncopt::update::Sgd rule{.learning_rate = 0.01};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(4, 1, rule, LockFree{}, {2});
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            cluster.transport());
  std::vector<float> w(4, 7.0F);
  CHECK_THROWS_WITH(opt.optimize(f, std::span<float>(w), {.workers = 2}),
                    Catch::Contains("workers would have ids up to 1 but the job has 1 workers"));
  CHECK(w == std::vector<float>(4, 7.0F));
  Zmq later = cluster.transport(1);  // worker 1 of a job of 1
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> second(rule, LockFree{},
                                                                               later);
  CHECK_THROWS_AS(second.attach(std::span<float>(w), 1), asyncopt::zeromq::RemoteError);
  CHECK(w == std::vector<float>(4, 7.0F));
}

TEST_CASE(
    "a second live process claiming a worker id is refused and one replacing a dead one gets it") {
  namespace wire = asyncopt::zeromq::wire;
  const asyncopt::update::Sgd rule{};
  using Opt = asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq>;
  std::vector<float> params(2);
  SECTION("two live processes with the same worker id") {
    Cluster<float, asyncopt::update::Sgd, LockFree> cluster(2, 1, rule, LockFree{});
    Opt opt(rule, LockFree{}, cluster.transport());
    auto first = opt.attach(params, 1);
    auto h = first->worker(0);
    h.leave();  // as optimize() does between epochs: the id stays the first process's
    auto second = opt.attach(params, 1);
    const auto start = std::chrono::steady_clock::now();
    // Refused once the first is heard from again (it beats every 100 ms).
    CHECK_THROWS_WITH(second->worker(0), Catch::Contains("worker id 0 is taken by another process "
                                                         "that is still running"));
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    // The first goes on as before.
    h.join();
    const std::vector<float> g{1.0F, 1.0F};
    CHECK(h.push(std::span<const float>(g)).applied);
  }
  SECTION("a process that replaces one that died without leaving") {
    // A raw link joins as worker 0 and falls silent, as a killed process does; the server
    // drops it after 300 ms, and the new process's join, held until then, goes through.
    Cluster<float, asyncopt::update::Sgd, LockFree> cluster(2, 1, rule, LockFree{}, {}, {}, 300ms);
    RawLink dead(cluster.server(0).endpoint());
    const wire::Message joined = dead.request({.type = wire::Type::join,
                                               .worker = 0,
                                               .sequence = (std::uint64_t{5} << 32) + 1,
                                               .offset = 12345});
    REQUIRE(joined.header.type == wire::Type::joined);
    Opt opt(rule, LockFree{}, cluster.transport());
    auto store = opt.attach(params, 1);
    auto h = store->worker(0);
    CHECK(cluster.server(0).stats().dropped == 1);
    const std::vector<float> g{1.0F, 1.0F};
    CHECK(h.push(std::span<const float>(g)).applied);
  }
  SECTION("a process that left is replaced at once, by a process or by a new handle") {
    Cluster<float, asyncopt::update::Sgd, LockFree> cluster(2, 1, rule, LockFree{});
    Opt opt(rule, LockFree{}, cluster.transport());
    for (int k = 0; k < 3; ++k) {
      auto store = opt.attach(params, 1);
      auto h = store->worker(0);
      h.clock();
    }
    CHECK(cluster.server(0).stats().refused == 0);
    CHECK(cluster.server(0).stats().dropped == 0);
  }
}

TEST_CASE("raise_descriptor_limit lifts the soft descriptor limit to the hard one") {
  rlimit original{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
  rlimit lowered = original;
  lowered.rlim_cur = std::min<rlim_t>(original.rlim_max, 256);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  const std::uint64_t raised = asyncopt::zeromq::raise_descriptor_limit();
  rlimit now{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
  CHECK(now.rlim_cur == original.rlim_max);
  CHECK((original.rlim_max == RLIM_INFINITY || raised == original.rlim_max));
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &original) == 0);
}

namespace {

namespace compress = asyncopt::compress;

// Pushes `gradients` in order through the workers of a cluster split at 4 of 10 keys (push
// t by worker t % workers; with `then_pull`, as push_clock_pull), with `compression` on the
// wire, and returns the parameters and the workers' counters.
std::pair<std::vector<double>, asyncopt::StoreStats> push_through(
    const std::vector<std::vector<double>>& gradients, std::size_t workers,
    std::optional<compress::Config> compression, bool then_pull = false) {
  const asyncopt::update::Sgd rule{.learning_rate = 0.25};
  const std::vector<double> w0(10, 1.0);
  Cluster<double, asyncopt::update::Sgd, Locked> cluster(
      10, workers, rule, Locked{}, {4}, std::span<const double>(w0), 5000ms, compression);
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, Locked, Zmq> opt(rule, Locked{},
                                                                           cluster.transport());
  std::vector<double> params(10, 0.0);
  auto store = opt.attach(params, workers);
  {
    std::vector<decltype(store->worker(0))> handles;
    for (std::size_t id = 0; id < workers; ++id) {
      handles.push_back(store->worker(id));
    }
    std::vector<double> pulled(10);
    for (std::size_t t = 0; t < gradients.size(); ++t) {
      const std::span<const double> g(gradients[t]);
      REQUIRE((then_pull ? handles[t % workers].push_clock_pull(g, std::span<double>(pulled))
                         : handles[t % workers].push(g))
                  .applied);
    }
  }
  store->sync();
  return {params, store->stats()};
}

std::vector<std::vector<double>> some_gradients(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<std::vector<double>> out(count, std::vector<double>(10));
  for (auto& g : out) {
    for (double& v : g) {
      v = normal(rng);
    }
  }
  return out;
}

// What the servers hold after the same pushes, computed here: each server's part of each
// push encoded by that worker's sender for the part, decoded (with DIANA's shift added) by a
// receiver for the part, and applied as w -= lr * decoded.
std::vector<double> reference(const std::vector<std::vector<double>>& gradients,
                              std::size_t workers, const compress::Config& config,
                              std::vector<double> w = std::vector<double>(10, 1.0)) {
  const std::array<std::size_t, 3> cut{0, 4, 10};
  std::vector<std::vector<compress::Sender<double, compress::AnyCodec>>> senders(workers);
  std::vector<compress::Receiver<double, compress::AnyCodec>> receivers;
  for (std::size_t part = 0; part < 2; ++part) {
    receivers.emplace_back(config.codec, config.memory, cut[part + 1] - cut[part]);
    for (auto& mine : senders) {
      mine.emplace_back(config.codec, config.memory, cut[part + 1] - cut[part]);
    }
  }
  compress::Payload payload;
  for (std::size_t t = 0; t < gradients.size(); ++t) {
    const std::size_t worker = t % workers;
    const compress::Step step{.round = t / workers, .worker = worker};
    for (std::size_t part = 0; part < 2; ++part) {
      const std::size_t n = cut[part + 1] - cut[part];
      senders[worker][part].send(std::span<const double>(gradients[t]).subspan(cut[part], n), step,
                                 payload);
      std::vector<double> decoded(n);
      receivers[part].estimate(payload, step, std::span<double>(decoded));
      for (std::size_t i = 0; i < n; ++i) {
        w[cut[part] + i] -= 0.25 * decoded[i];
      }
    }
  }
  return w;
}

}  // namespace

TEST_CASE("compressed pushes: the identity codec changes no bit, and the bytes are counted") {
  const auto gradients = some_gradients(6, 31);
  const auto [plain, plain_stats] = push_through(gradients, 1, std::nullopt);
  const auto [identity, stats] =
      push_through(gradients, 1, compress::Config{.codec = compress::Identity{}});
  CHECK(identity == plain);
  CHECK(push_through(gradients, 1, compress::Config{.codec = compress::Identity{}}, true).first ==
        plain);
  CHECK(plain_stats.compressed_bytes == 0);
  // Each push: two messages (4 and 6 values), each with its header.
  CHECK(stats.uncompressed_bytes == std::uint64_t{6} * 10 * sizeof(double));
  CHECK(stats.compressed_bytes == 6 * (2 * compress::header_bytes + 10 * sizeof(double)));
}

TEST_CASE("compressed pushes with error feedback and DIANA equal a reference of the parts") {
  SECTION("top-k with error feedback, one worker") {
    const compress::Config config{.codec = compress::TopK{.k = 1},
                                  .memory = {.feedback = compress::Feedback::error_feedback}};
    const auto gradients = some_gradients(8, 32);
    const auto [w, stats] = push_through(gradients, 1, config);
    CHECK(w == reference(gradients, 1, config));
    // Each message: its header, the count, one index and one value.
    CHECK(stats.compressed_bytes == std::uint64_t{8} * 2 * (compress::header_bytes + 8 + 4 + 8));
  }
  SECTION("random-k with DIANA, three workers: the servers mirror each worker's shift") {
    const compress::Config config{.codec = compress::RandomK{.k = 2, .seed = 4},
                                  .memory = {.feedback = compress::Feedback::diana, .alpha = 0.2}};
    const auto gradients = some_gradients(12, 33);
    const auto [w, stats] = push_through(gradients, 3, config);
    const std::vector<double> expected = reference(gradients, 3, config);
    CHECK(w == expected);
    // Without the servers' mirrors (alpha 0, no shift) the result differs.
    const compress::Config no_shift{.codec = config.codec,
                                    .memory = {.feedback = compress::Feedback::diana}};
    CHECK(reference(gradients, 3, no_shift) != expected);
  }
}

TEST_CASE("a new handle's DIANA shift starts at zero on the servers too") {
  // Two stores one after the other, as a restarted worker process: the second one's
  // senders start empty, and the servers' mirrors of worker 0's shifts with them.
  const compress::Config config{.codec = compress::RandomK{.k = 2, .seed = 7},
                                .memory = {.feedback = compress::Feedback::diana, .alpha = 0.3}};
  const auto gradients = some_gradients(6, 35);
  const asyncopt::update::Sgd rule{.learning_rate = 0.25};
  const std::vector<double> w0(10, 1.0);
  Cluster<double, asyncopt::update::Sgd, Locked> cluster(
      10, 1, rule, Locked{}, {4}, std::span<const double>(w0), 5000ms, config);
  asyncopt::AsyncOptimizer<double, asyncopt::update::Sgd, Locked, Zmq> opt(rule, Locked{},
                                                                           cluster.transport());
  std::vector<double> params(10, 0.0);
  for (const std::size_t session : {0, 1}) {
    auto store = opt.attach(params, 1);
    auto handle = store->worker(0);
    for (std::size_t t = 3 * session; t < 3 * session + 3; ++t) {
      REQUIRE(handle.push(std::span<const double>(gradients[t])).applied);
    }
  }
  auto store = opt.attach(params, 1);  // copies the servers' parameters in
  const std::vector<std::vector<double>> first(gradients.begin(), gradients.begin() + 3);
  const std::vector<std::vector<double>> second(gradients.begin() + 3, gradients.end());
  CHECK(params == reference(second, 1, config, reference(first, 1, config)));
}

TEST_CASE("a compressed push that is not finite is rejected and moves no DIANA shift") {
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  const compress::Config config{.codec = compress::Identity{},
                                .memory = {.feedback = compress::Feedback::diana, .alpha = 0.5}};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(4, 2, rule, LockFree{}, {}, {}, 5000ms,
                                                          config);
  using asyncopt::zeromq::wire::Element;
  using asyncopt::zeromq::wire::Flag;
  using asyncopt::zeromq::wire::Type;
  RawLink raw(cluster.server(0).endpoint());
  std::uint64_t sequence = 1;
  auto push = [&](const std::vector<float>& values) {
    compress::Payload payload;
    compress::Identity{}.encode(std::span<const float>(values), {}, payload);
    std::vector<::zmq::message_t> parts;
    parts.push_back(asyncopt::zeromq::detail::header_frame({.type = Type::push,
                                                            .element = Element::float32,
                                                            .flags = Flag::compressed,
                                                            .worker = 1,
                                                            .sequence = sequence++,
                                                            .count = 4}));
    parts.emplace_back(payload.data(), payload.size());
    raw.send_parts(parts);
    const auto reply = raw.reply();
    REQUIRE(reply.header.type == Type::push_reply);
    return (reply.header.flags & Flag::applied) != 0;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(push({1.0F, nan, 2.0F, 3.0F}));
  // The shift is still zero: the next message is applied as it is.
  CHECK(push({1.0F, 2.0F, -3.0F, 0.5F}));
  std::vector<float> w(4);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            cluster.transport());
  auto store = opt.attach(std::span<float>(w), 1);
  CHECK(w == std::vector<float>{-1.0F, -2.0F, 3.0F, -0.5F});
  CHECK(cluster.server(0).stats().rejected == 1);
}

TEST_CASE("a worker whose compression differs from the servers' is refused at its hello") {
  const asyncopt::update::Sgd rule{};
  const compress::Config top{.codec = compress::TopK{.k = 1}};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(6, 1, rule, LockFree{}, {3}, {}, 5000ms,
                                                          top);
  Zmq plain = cluster.transport();
  plain.compression.reset();
  Zmq other = cluster.transport();
  other.compression = compress::Config{.codec = compress::TopK{.k = 2}};
  std::vector<float> params(6, 0.0F);
  for (const Zmq& transport : {plain, other}) {
    const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(
        rule, LockFree{}, transport);
    CHECK_THROWS_WITH(opt.attach(std::span<float>(params), 1),
                      Catch::Contains("compresses its pushes otherwise than this server, which "
                                      "expects top-k(k=1, fraction=0), no memory"));
  }
  // The same settings are let in.
  const asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(
      rule, LockFree{}, cluster.transport());
  CHECK_NOTHROW(opt.attach(std::span<float>(params), 1));
  // A server refuses DIANA with checkpoints, which would not hold its mirrors.
  const ServerConfig diana{.dimension = 6,
                           .checkpoint = "server.ckpt",
                           .compression = compress::Config{
                               .codec = compress::RandomK{.k = 2},
                               .memory = {.feedback = compress::Feedback::diana, .alpha = 0.1}}};
  CHECK_THROWS_WITH(diana.validate(), Catch::Contains("checkpoints do not hold the server's "
                                                      "mirrors of the workers' shifts"));
}

TEST_CASE("a server refuses a malformed compressed push, changes nothing and keeps serving") {
  const asyncopt::update::Sgd rule{.learning_rate = 1.0};
  const compress::Config config{.codec = compress::Fp16{}};
  Cluster<float, asyncopt::update::Sgd, LockFree> cluster(4, 2, rule, LockFree{}, {}, {}, 5000ms,
                                                          config);
  using asyncopt::zeromq::wire::Element;
  using asyncopt::zeromq::wire::ErrorCode;
  using asyncopt::zeromq::wire::Flag;
  using asyncopt::zeromq::wire::Type;
  RawLink raw(cluster.server(0).endpoint());
  const std::vector<float> values{1.0F, 2.0F, -3.0F, 0.5F};
  compress::Payload good;
  compress::Fp16{}.encode(std::span<const float>(values), {}, good);
  std::mt19937 rng(34);
  std::uint64_t sequence = 1;
  auto push = [&](const compress::Payload& payload) {
    std::vector<::zmq::message_t> parts;
    parts.push_back(
        asyncopt::zeromq::detail::header_frame({.type = Type::push,
                                                .element = Element::float32,
                                                .flags = Flag::compressed,
                                                .worker = 1,  // the store below is worker 0
                                                .sequence = sequence++,
                                                .count = 4}));
    parts.emplace_back(payload.data(), payload.size());
    raw.send_parts(parts);
    return raw.reply();
  };
  // Every corruption of the payload's header is refused with a reason; the parameters stay.
  std::size_t refused = 0;
  for (std::size_t at = 0; at < compress::header_bytes; ++at) {
    compress::Payload bad = good;
    bad[at] ^= static_cast<std::byte>(std::uniform_int_distribution<int>(1, 255)(rng));
    const auto reply = push(bad);
    if (reply.header.type == Type::error) {
      CHECK(reply.header.offset == static_cast<std::uint64_t>(ErrorCode::bad_request));
      CHECK_THAT(std::string(reply.text), Catch::Contains("asyncopt:"));
      ++refused;
    }
  }
  CHECK(refused == compress::header_bytes);
  // A payload cut short, and one with a byte too many.
  for (const std::size_t size : {good.size() - 1, good.size() + 1}) {
    compress::Payload bad = good;
    bad.resize(size);
    CHECK(push(bad).header.type == Type::error);
  }
  std::vector<float> w(4);
  asyncopt::AsyncOptimizer<float, asyncopt::update::Sgd, LockFree, Zmq> opt(rule, LockFree{},
                                                                            cluster.transport());
  auto store = opt.attach(std::span<float>(w), 1);
  CHECK(w == std::vector<float>(4, 0.0F));
  // The good payload is applied.
  CHECK(push(good).header.type == Type::push_reply);
  store->sync();
  CHECK(w == std::vector<float>{-1.0F, -2.0F, 3.0F, -0.5F});
}
