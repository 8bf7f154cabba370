// A parameter server process: holds keys [begin, end) of a model and applies the pushes of
// remote workers (examples/ps_worker) until SIGINT or SIGTERM.
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <pthread.h>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/zmq/zmq.hpp>

#include "cli.hpp"
#include "dispatch.hpp"

namespace {

struct Settings {
  asyncopt::zeromq::ServerConfig server;
  std::string rule = "sgd";
  examples::dispatch::RuleSettings rules;  // learning rate 0.01, momentum 0.9, lambda 0.04
  std::string consistency = "locked";
  examples::dispatch::PolicySettings policies;  // staleness 2
  long heartbeat_ms = 5000;
  long checkpoint_ms = 10000;
  std::string checkpoint;
  std::string compress = "none";
};

// Serves until SIGINT or SIGTERM.
template <class Rule, class Consistency>
int serve(const Settings& s, const Rule& rule, const Consistency& consistency) {
  // One descriptor per connection: at the soft limit libzmq spins and accepts nobody.
  const std::uint64_t descriptors = asyncopt::zeromq::raise_descriptor_limit();
  asyncopt::zeromq::Server<float, Rule, Consistency> server(s.server, rule, consistency);
  std::printf(
      "ps_server: keys [%zu, %zu) of %zu, %zu workers, listening on %s%s (up to %llu open "
      "descriptors)\n",
      server.begin(), server.end(), s.server.dimension, s.server.workers, server.endpoint().c_str(),
      server.stats().resumed ? ", resumed from checkpoint" : "",
      static_cast<unsigned long long>(descriptors));
  std::fflush(stdout);
  // A thread of its own waits for SIGINT or SIGTERM (blocked in every thread) and requests
  // the stop outside any signal handler. It checks its own stop token between waits, so
  // that it ends with the server even when run() throws.
  std::stop_source stop;
  std::jthread signals([&stop](const std::stop_token& own) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    const timespec wait{.tv_sec = 0, .tv_nsec = 200'000'000};
    while (!own.stop_requested()) {
      if (sigtimedwait(&set, nullptr, &wait) > 0) {
        stop.request_stop();
        return;
      }
    }
  });
  server.run(stop.get_token());
  const auto st = server.stats();
  std::printf(
      "ps_server: stopped after %llu updates (%llu rejected, %llu malformed, %llu refused, %llu "
      "workers dropped, %llu checkpoints)\n",
      static_cast<unsigned long long>(st.version), static_cast<unsigned long long>(st.rejected),
      static_cast<unsigned long long>(st.malformed), static_cast<unsigned long long>(st.refused),
      static_cast<unsigned long long>(st.dropped), static_cast<unsigned long long>(st.checkpoints));
  return 0;
}

namespace dispatch = examples::dispatch;

// A server applies sgd, momentum, dc or adam, under one lock, lock-free, or bounded staleness
// over one lock.
constexpr dispatch::Table<dispatch::RuleSettings, dispatch::rule::Sgd, dispatch::rule::Momentum,
                          dispatch::rule::DelayCompensated, dispatch::rule::Adam>
    rules{"rule"};
constexpr dispatch::Table<dispatch::PolicySettings, dispatch::policy::OneLock,
                          dispatch::policy::LockFree,
                          dispatch::policy::Ssp<dispatch::policy::OneLock>>
    policies{"consistency policy"};

}  // namespace

namespace {

int run(int argc, char** argv) {
  // Block the stop signals in every thread; the server's signal thread takes them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  Settings s;
  CLI::App app{"asyncopt parameter server: holds a key range, applies the workers' pushes"};
  app.failure_message(examples::cli::failure_message);
  app.add_option("--endpoint", s.server.endpoint, "where to listen, e.g. tcp://127.0.0.1:5570")
      ->capture_default_str();
  app.add_option("--dimension", s.server.dimension, "parameters of the whole model")
      ->required()
      ->check(examples::cli::positive_integer<std::size_t>());
  app.add_option("--begin", s.server.begin, "first key this server holds")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--end", s.server.end, "one past the last key (0 = the dimension)")
      ->check(examples::cli::non_negative_integer<std::size_t>())
      ->capture_default_str();
  app.add_option("--workers", s.server.workers, "workers of the whole job")
      ->check(examples::cli::positive_integer<std::size_t>())
      ->capture_default_str();
  dispatch::add_choice(app, "--rule", s.rule, "update rule: ", rules);
  app.add_option("--lr", s.rules.learning_rate, "learning rate")
      ->check(examples::cli::positive_number())
      ->capture_default_str();
  app.add_option("--momentum", s.rules.momentum, "beta of the momentum rule, in [0, 1)")
      ->check(examples::cli::number_in(0.0, 1.0, false, true))
      ->capture_default_str();
  app.add_option("--lambda", s.rules.lambda, "lambda of the delay-compensated rule")
      ->check(examples::cli::non_negative_number())
      ->capture_default_str();
  dispatch::add_choice(app, "--consistency", s.consistency, "", policies);
  app.add_option("--staleness", s.policies.staleness, "clocks a worker may run ahead, for ssp")
      ->check(examples::cli::non_negative_integer<std::uint64_t>())
      ->capture_default_str();
  app.add_option("--heartbeat-ms", s.heartbeat_ms,
                 "drop a worker silent this long from the staleness bound (0 = never)")
      ->check(examples::cli::non_negative_integer<long>())
      ->capture_default_str();
  app.add_option("--queue-limit", s.server.queue_limit,
                 "messages queued per connection, each way; bounds the memory a client that "
                 "never reads its replies takes")
      ->check(examples::cli::positive_integer<int>())
      ->capture_default_str();
  app.add_option("--compress", s.compress,
                 "the workers' compression of dense pushes (ps_worker --compress, the same); " +
                     std::string(examples::dispatch::compression_syntax))
      ->check(examples::dispatch::compression_check())
      ->capture_default_str();
  app.add_option("--checkpoint", s.checkpoint, "checkpoint file; an existing one is resumed from")
      ->capture_default_str();
  app.add_option("--checkpoint-ms", s.checkpoint_ms, "milliseconds between checkpoints")
      ->check(examples::cli::positive_integer<long>())
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  s.server.heartbeat_timeout = std::chrono::milliseconds(s.heartbeat_ms);
  s.server.checkpoint = s.checkpoint;
  s.server.checkpoint_interval = std::chrono::milliseconds(s.checkpoint_ms);

  try {
    s.server.compression = examples::dispatch::parse_compression(s.compress);
    return policies.with(s.consistency, s.policies, [&](const auto& consistency) {
      return rules.with(s.rule, s.rules,
                        [&](const auto& rule) { return serve(s, rule, consistency); });
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ps_server: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // setting up the command line itself failed
    std::fprintf(stderr, "ps_server: error: %s\n", e.what());
    return 1;
  }
}
