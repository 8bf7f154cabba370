// The update rules and consistency policies the example programs offer, by the names their
// command lines take. Each rule or policy is a kind: a type with its name, a note for --help
// and make(settings), which builds the library's rule or policy. A program's choices are a
// Table of kinds, and everything a program says about them comes from that table: the names
// CLI11's IsMember accepts, the list --help shows, and the dispatch from a name to a value of
// the right type, so that the three cannot disagree.
//
//   examples::dispatch::with_rule("dc", rule_settings, [&](const auto& rule) { ... });
//
// calls the lambda with asyncopt::update::DelayCompensated{...}; every kind of the table
// instantiates the lambda once.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include <asyncopt/compress/stage.hpp>
#include <asyncopt/consistency/bounded_staleness.hpp>
#include <asyncopt/consistency/local_sgd.hpp>
#include <asyncopt/consistency/lock_free.hpp>
#include <asyncopt/consistency/locked.hpp>
#include <asyncopt/consistency/scaffold.hpp>
#include <asyncopt/consistency/synchronous.hpp>
#include <asyncopt/update/update.hpp>

namespace examples::dispatch {

/// The settings of every rule; each rule takes the ones it has. The defaults are the
/// library's.
struct RuleSettings {
  double learning_rate = 0.01;
  double momentum = 0.9;  ///< beta of momentum; mu of heavy-ball and nesterov.
  double lambda = 0.04;   ///< dc.
  double lambda0 = 2.0;   ///< dc-adaptive.
  double mean_square_decay = 0.95;
  double beta1 = 0.9;  ///< adam.
  double beta2 = 0.999;
  double epsilon = 1e-8;
};

/// The settings of every consistency policy; each policy takes the ones it has.
struct PolicySettings {
  std::size_t stripes = 64;           ///< locked.
  std::uint64_t staleness = 2;        ///< ssp.
  std::uint64_t period = 8;           ///< local and scaffold.
  double global_learning_rate = 1.0;  ///< scaffold.
  /// synchronous and local: what each worker's message goes through (--compress).
  std::optional<asyncopt::compress::Config> compression{};
};

/// What --compress takes, for --help.
inline constexpr std::string_view compression_syntax =
    "none, or CODEC[,MEMORY]: CODEC is identity, fp16, bf16, topk:FRACTION, randomk:FRACTION, "
    "qsgd:LEVELS, sign or powersgd:RANK; MEMORY is ef (error feedback) or diana:ALPHA";

/// The compression stage `text` names (compression_syntax): "topk:0.01,ef",
/// "qsgd:8,diana:0.1", "none". Throws std::invalid_argument with what is wrong.
inline std::optional<asyncopt::compress::Config> parse_compression(std::string_view text) {
  namespace compress = asyncopt::compress;
  if (text == "none") {
    return std::nullopt;
  }
  auto fail = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("'" + std::string(text) + "': " + why);
  };
  // A number after "name:", all of it.
  auto number = [&](std::string_view part, std::string_view name) {
    const std::string_view digits = part.substr(name.size() + 1);
    double value = 0.0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error != std::errc{} || end != digits.data() + digits.size() || digits.empty() ||
        !std::isfinite(value)) {
      throw fail(std::string(name) + " needs a number after ':', got '" + std::string(digits) +
                 "'");
    }
    return value;
  };
  auto whole = [&](double value, std::string_view name) {
    if (value < 1.0 || value != std::floor(value) || value > 1e9) {
      throw fail(std::string(name) + " needs a positive whole number");
    }
    return static_cast<std::size_t>(value);
  };
  const std::size_t comma = text.find(',');
  const std::string_view codec = text.substr(0, comma);
  const std::string_view memory =
      comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
  if (codec == "none") {
    throw fail("no compression keeps no memory: give none alone");
  }
  if (comma != std::string_view::npos && memory.empty()) {
    throw fail("nothing after ','; give ef or diana:ALPHA, or no comma");
  }
  // Whether `part` is "name:..."; a name that needs its argument and has none is refused.
  auto is = [&](std::string_view part, std::string_view name) {
    if (part == name) {
      throw fail(std::string(name) + " needs " +
                 (name == "qsgd"       ? "its levels: qsgd:LEVELS"
                  : name == "powersgd" ? "its rank: powersgd:RANK"
                  : name == "diana"    ? "its alpha: diana:ALPHA"
                                    : "the fraction it keeps: " + std::string(name) + ":FRACTION"));
    }
    return part.starts_with(name) && part.size() > name.size() && part[name.size()] == ':';
  };
  compress::Config config;
  if (codec == "identity") {
    config.codec = compress::Identity{};
  } else if (codec == "fp16") {
    config.codec = compress::Fp16{};
  } else if (codec == "bf16") {
    config.codec = compress::Bf16{};
  } else if (codec == "sign") {
    config.codec = compress::Sign{};
  } else if (is(codec, "topk")) {
    config.codec = compress::TopK{.fraction = number(codec, "topk")};
  } else if (is(codec, "randomk")) {
    config.codec = compress::RandomK{.fraction = number(codec, "randomk")};
  } else if (is(codec, "qsgd")) {
    config.codec = compress::Qsgd{
        .levels = static_cast<unsigned>(std::min<std::size_t>(
            whole(number(codec, "qsgd"), "qsgd"), std::numeric_limits<unsigned>::max()))};
  } else if (is(codec, "powersgd")) {
    config.codec = compress::PowerSgd{.rank = whole(number(codec, "powersgd"), "powersgd")};
  } else {
    throw fail("unknown codec '" + std::string(codec) + "'; " + std::string(compression_syntax));
  }
  if (memory == "ef") {
    config.memory.feedback = compress::Feedback::error_feedback;
  } else if (is(memory, "diana")) {
    config.memory = {.feedback = compress::Feedback::diana, .alpha = number(memory, "diana")};
  } else if (!memory.empty()) {
    throw fail("unknown memory '" + std::string(memory) + "'; " + std::string(compression_syntax));
  }
  try {
    config.validate();
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }
  // What does not depend on the number of values: a biased codec under DIANA, a negative
  // alpha (alpha's upper bound, which does, is checked when the run starts).
  if (config.memory.feedback == compress::Feedback::diana) {
    if (!std::isfinite(config.codec.omega(1))) {
      throw fail("DIANA needs an unbiased codec (identity, randomk or qsgd), not " +
                 std::string(codec));
    }
    if (!(config.memory.alpha >= 0.0)) {
      throw fail("diana's alpha must be at least 0");
    }
  }
  return config;
}

/// A CLI11 check of --compress: the reason parse_compression() refuses the text.
inline CLI::Validator compression_check() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          (void)parse_compression(text);
        } catch (const std::invalid_argument& e) {
          return e.what();
        }
        return std::string();
      },
      "CODEC[,MEMORY]");
}

/// The update rules.
namespace rule {

namespace update = asyncopt::update;

struct Sgd {
  static constexpr std::string_view name = "sgd";
  static constexpr std::string_view note{};
  static auto make(const RuleSettings& s) { return update::Sgd{.learning_rate = s.learning_rate}; }
};

struct Momentum {
  static constexpr std::string_view name = "momentum";
  static constexpr std::string_view note = "EMA";
  static auto make(const RuleSettings& s) {
    return update::MomentumCorrection{.learning_rate = s.learning_rate, .beta = s.momentum};
  }
};

/// heavy-ball, or nesterov with `nesterov`.
template <bool nesterov>
struct HeavyBall {
  static constexpr std::string_view name = nesterov ? "nesterov" : "heavy-ball";
  static constexpr std::string_view note{};
  static auto make(const RuleSettings& s) {
    return update::HeavyBall{
        .learning_rate = s.learning_rate, .momentum = s.momentum, .nesterov = nesterov};
  }
};

struct DelayCompensated {
  static constexpr std::string_view name = "dc";
  static constexpr std::string_view note = "delay-compensated";
  static auto make(const RuleSettings& s) {
    return update::DelayCompensated{.learning_rate = s.learning_rate, .lambda = s.lambda};
  }
};

struct AdaptiveDelayCompensated {
  static constexpr std::string_view name = "dc-adaptive";
  static constexpr std::string_view note{};
  static auto make(const RuleSettings& s) {
    return update::AdaptiveDelayCompensated{.learning_rate = s.learning_rate,
                                            .lambda0 = s.lambda0,
                                            .mean_square_decay = s.mean_square_decay};
  }
};

struct StalenessAware {
  static constexpr std::string_view name = "staleness-aware";
  static constexpr std::string_view note = "sgd with lr / staleness";
  static auto make(const RuleSettings& s) {
    return update::StalenessAware<update::Sgd>{.inner = Sgd::make(s)};
  }
};

struct Adam {
  static constexpr std::string_view name = "adam";
  static constexpr std::string_view note{};
  static auto make(const RuleSettings& s) {
    return update::Adam{
        .learning_rate = s.learning_rate, .beta1 = s.beta1, .beta2 = s.beta2, .epsilon = s.epsilon};
  }
};

}  // namespace rule

/// The consistency policies.
namespace policy {

namespace consistency = asyncopt::consistency;

struct Locked {
  static constexpr std::string_view name = "locked";
  static constexpr std::string_view note = "striped mutexes";
  static auto make(const PolicySettings& s) { return consistency::Locked{.stripes = s.stripes}; }
};

/// locked with a single mutex, whatever the settings say.
struct OneLock {
  static constexpr std::string_view name = "locked";
  static constexpr std::string_view note = "one mutex";
  static auto make(const PolicySettings& /*s*/) { return consistency::Locked{.stripes = 1}; }
};

struct LockFree {
  static constexpr std::string_view name = "lockfree";
  static constexpr std::string_view note = "Hogwild!";
  static auto make(const PolicySettings& /*s*/) { return consistency::LockFree{}; }
};

/// Bounded staleness over the policy of the kind `Inner`.
template <class Inner>
struct Ssp {
  static constexpr std::string_view name = "ssp";
  static inline const std::string note = "bounded staleness over " + std::string(Inner::name);
  static auto make(const PolicySettings& s) {
    using InnerPolicy = decltype(Inner::make(s));
    return consistency::BoundedStaleness<InnerPolicy>{.staleness = s.staleness,
                                                      .inner = Inner::make(s)};
  }
};

struct Synchronous {
  static constexpr std::string_view name = "synchronous";
  static constexpr std::string_view note = "mean gradient per round";
  static auto make(const PolicySettings& s) {
    return consistency::Synchronous{.compression = s.compression};
  }
};

struct LocalSgd {
  static constexpr std::string_view name = "local";
  static constexpr std::string_view note = "local SGD: replicas averaged every --period steps";
  static auto make(const PolicySettings& s) {
    return consistency::LocalSgd{.period = s.period, .compression = s.compression};
  }
};

struct Scaffold {
  static constexpr std::string_view name = "scaffold";
  static constexpr std::string_view note =
      "SCAFFOLD: local SGD with control variates, rounds every --period steps";
  static auto make(const PolicySettings& s) {
    return consistency::Scaffold{.period = s.period,
                                 .global_learning_rate = s.global_learning_rate};
  }
};

}  // namespace policy

/// The kinds a program offers, in the order --help lists them. `what` names the family in
/// the error on an unknown name ("rule", "consistency policy").
template <class Settings, class... Kinds>
struct Table {
  std::string_view what;

  /// The names, for CLI::IsMember.
  [[nodiscard]] static std::vector<std::string> names() { return {std::string(Kinds::name)...}; }

  /// Whether the table has a kind called `name`.
  [[nodiscard]] static bool offers(std::string_view name) { return ((Kinds::name == name) || ...); }

  /// "a, b (note), c": the names with their notes, for --help.
  [[nodiscard]] static std::string describe() {
    std::string out;
    auto add = [&out](std::string_view name, std::string_view note) {
      out += out.empty() ? "" : ", ";
      out += name;
      if (!note.empty()) {
        out.append(" (").append(note).append(")");
      }
    };
    (add(Kinds::name, Kinds::note), ...);
    return out;
  }

  /// f(kind.make(settings)) for the kind called `name`; throws std::invalid_argument for a
  /// name the table lacks.
  template <class F>
  auto with(std::string_view name, const Settings& settings, F&& f) const {
    return pick<F, Kinds...>(name, settings, f);
  }

 private:
  template <class F, class Kind, class... Rest>
  auto pick(std::string_view name, const Settings& settings, F& f) const {
    if (name == Kind::name) {
      return f(Kind::make(settings));
    }
    if constexpr (sizeof...(Rest) == 0) {
      throw std::invalid_argument("unknown " + std::string(what) + " '" + std::string(name) + "'");
    } else {
      return pick<F, Rest...>(name, settings, f);
    }
  }
};

/// Adds the option `flag` that picks a kind of `table` by name into `choice`: --help says
/// `prefix` and the table's list, and CLI11 refuses a name the table lacks.
template <class Settings, class... Kinds>
CLI::Option* add_choice(CLI::App& app, const std::string& flag, std::string& choice,
                        const std::string& prefix, const Table<Settings, Kinds...>& table) {
  return app.add_option(flag, choice, prefix + table.describe())
      ->check(CLI::IsMember(table.names()))
      ->capture_default_str();
}

/// Every rule.
inline constexpr Table<RuleSettings, rule::Sgd, rule::Momentum, rule::HeavyBall<false>,
                       rule::HeavyBall<true>, rule::DelayCompensated,
                       rule::AdaptiveDelayCompensated, rule::StalenessAware, rule::Adam>
    rules{"rule"};

/// Every consistency policy; ssp is bounded staleness over lockfree.
inline constexpr Table<PolicySettings, policy::Locked, policy::LockFree,
                       policy::Ssp<policy::LockFree>, policy::Synchronous, policy::LocalSgd,
                       policy::Scaffold>
    policies{"consistency policy"};

/// The policies that move workers in rounds, the only ones that run across the processes of
/// an MPI job (transport::Mpi).
inline constexpr Table<PolicySettings, policy::Synchronous, policy::LocalSgd, policy::Scaffold>
    round_policies{"consistency policy"};

/// f(rule) for the rule called `name`, with `settings`.
template <class F>
auto with_rule(std::string_view name, const RuleSettings& settings, F&& f) {
  return rules.with(name, settings, std::forward<F>(f));
}

/// f(policy) for the consistency policy called `name`, with `settings`.
template <class F>
auto with_policy(std::string_view name, const PolicySettings& settings, F&& f) {
  return policies.with(name, settings, std::forward<F>(f));
}

}  // namespace examples::dispatch
