// The update rules, decorators and schedules against independent double-precision references
// written here from the papers' formulas: through the store (Locked and LockFree, dense and
// sparse pushes) and through the kernels directly, for float and double, on lengths that leave
// a scalar tail after the SIMD body.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <asyncopt/asyncopt.hpp>

namespace {

namespace update = asyncopt::update;
namespace schedule = asyncopt::schedule;
namespace kernels = asyncopt::kernels;
using asyncopt::consistency::Locked;
using asyncopt::consistency::LockFree;

// Lengths around the SIMD widths (up to 16 floats or 8 doubles per batch): every one leaves a
// scalar tail, and 1 has no SIMD body at all.
const std::vector<std::size_t> lengths = {1, 7, 17, 33, 1001};

// Errors are measured as |got - ref| / max(1, |ref|), against a reference in double.
//
// One update: the library evaluates a formula in Scalar with at most about ten roundings of
// quantities of the size of the result, unit roundoff u = 2^-24 (float) or 2^-53 (double),
// FMA-contracted or not: 10u is 6e-7 for float and 1.1e-15 for double. Observed: 2.2e-7 for
// float, 0 for double.
template <class T>
constexpr double step_bound = std::is_same_v<T, float> ? 1e-6 : 1e-14;

// 200 updates: the gradients are random, not functions of w, and each rule maps an error
// already in w or in its state to one no larger (states decay by beta < 1; DC's factor
// 1 - lr * lambda * g^2 lies in [0, 1] for the settings below), so the per-update errors add
// up. They are independent roundings of either sign and grow like a random walk: sqrt(200) *
// 10u = 8.5e-6 for float, while 200 * 10u = 1.2e-4 would need all of them to share a sign.
// Observed maxima over all rules, lengths and policies: 2.1e-6 (float) and 2.2e-16 (double).
// 2e-5 leaves float a 10x margin; 1e-12 for double is far below what a wrong formula gives.
template <class T>
constexpr double drift_bound = std::is_same_v<T, float> ? 2e-5 : 1e-12;

double relative_error(double got, double ref) {
  return std::abs(got - ref) / std::max(1.0, std::abs(ref));
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
std::vector<T> random_vector(std::mt19937_64& rng, std::size_t n, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) {
    x = static_cast<T>(normal(rng));
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// The references: one element, in double, straight from the papers' formulas.
// ---------------------------------------------------------------------------------------------

struct RefInfo {
  std::uint64_t t = 0;    // the update's index in the store, from 0
  std::uint64_t tau = 0;  // its staleness
  double lr_scale = 1.0;
  double lr_ratio = 1.0;  // eta_t / eta_{t-1}
  double gradient_norm = 0.0;
};

using RefState = std::array<double, 2>;

// w -= eta g (Robbins and Monro 1951).
struct RefSgd {
  double lr;
  void operator()(double& w, double g, double /*w_seen*/, RefState& /*s*/,
                  const RefInfo& in) const {
    w -= lr * in.lr_scale * g;
  }
};

// m = beta m + (1 - beta) g; w -= eta m.
struct RefEma {
  double lr;
  double beta;
  void operator()(double& w, double g, double /*w_seen*/, RefState& s, const RefInfo& in) const {
    s[0] = beta * s[0] + (1.0 - beta) * g;
    w -= lr * in.lr_scale * s[0];
  }
};

// Polyak: v = mu v + g; w -= eta v. Nesterov (Sutskever et al. 2013): w -= eta (g + mu v).
// With the learning rate in the velocity (Goyal et al. 2017): v = mu (eta_t / eta_{t-1}) v +
// eta_t g (the ratio only with momentum correction); w -= v, or w -= eta_t g + mu v (Nesterov).
struct RefHeavyBall {
  double lr;
  double mu;
  bool nesterov = false;
  bool lr_in_velocity = false;
  bool correction = true;
  void operator()(double& w, double g, double /*w_seen*/, RefState& s, const RefInfo& in) const {
    const double eta = lr * in.lr_scale;
    double& v = s[0];
    if (lr_in_velocity) {
      v = (correction ? mu * in.lr_ratio : mu) * v + eta * g;
      w -= nesterov ? eta * g + mu * v : v;
    } else {
      v = mu * v + g;
      w -= eta * (nesterov ? g + mu * v : v);
    }
  }
};

// Zheng et al. 2017: w -= eta (g + lambda g^2 (w - w_seen)).
struct RefDc {
  double lr;
  double lambda;
  void operator()(double& w, double g, double w_seen, RefState& /*s*/, const RefInfo& in) const {
    w -= lr * in.lr_scale * (g + lambda * g * g * (w - w_seen));
  }
};

// DC-ASGD-a: MS = m MS + (1 - m) g^2; lambda = lambda0 / sqrt(MS + eps); same update.
struct RefAdaptiveDc {
  double lr;
  double lambda0;
  double m;
  double eps;
  void operator()(double& w, double g, double w_seen, RefState& s, const RefInfo& in) const {
    s[0] = m * s[0] + (1.0 - m) * g * g;
    const double lambda = lambda0 / std::sqrt(s[0] + eps);
    w -= lr * in.lr_scale * (g + lambda * g * g * (w - w_seen));
  }
};

// Kingma and Ba 2015, with t the 1-based update count of the store.
struct RefAdam {
  double lr;
  double beta1;
  double beta2;
  double eps;
  void operator()(double& w, double g, double /*w_seen*/, RefState& s, const RefInfo& in) const {
    const double t = static_cast<double>(in.t + 1);
    s[0] = beta1 * s[0] + (1.0 - beta1) * g;
    s[1] = beta2 * s[1] + (1.0 - beta2) * g * g;
    const double eta =
        lr * in.lr_scale * std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t));
    w -= eta * s[0] / (std::sqrt(s[1]) + eps);
  }
};

// Zhang et al. 2016: the learning rate divided by max(1, tau).
template <class Inner>
struct RefStalenessAware {
  Inner inner;
  void operator()(double& w, double g, double w_seen, RefState& s, RefInfo in) const {
    in.lr_scale /= std::max(1.0, static_cast<double>(in.tau));
    inner(w, g, w_seen, s, in);
  }
};

template <class Inner>
struct RefWeightDecay {
  Inner inner;
  double decay;
  void operator()(double& w, double g, double w_seen, RefState& s, const RefInfo& in) const {
    inner(w, g + decay * w, w_seen, s, in);
  }
};

template <class Inner>
struct RefClipByValue {
  Inner inner;
  double limit;
  void operator()(double& w, double g, double w_seen, RefState& s, const RefInfo& in) const {
    inner(w, std::clamp(g, -limit, limit), w_seen, s, in);
  }
};

template <class Inner>
struct RefClipByNorm {
  Inner inner;
  double max_norm;
  void operator()(double& w, double g, double w_seen, RefState& s, const RefInfo& in) const {
    const double factor = in.gradient_norm > 0.0 ? std::min(1.0, max_norm / in.gradient_norm) : 1.0;
    inner(w, g * factor, w_seen, s, in);
  }
};

struct RefConstant {
  double operator()(std::uint64_t /*t*/) const { return 1.0; }
};

struct RefStep {
  std::uint64_t every;
  double gamma;
  double operator()(std::uint64_t t) const {
    return std::pow(gamma, std::floor(static_cast<double>(t) / static_cast<double>(every)));
  }
};

struct RefExponential {
  double gamma;
  double operator()(std::uint64_t t) const { return std::pow(gamma, static_cast<double>(t)); }
};

struct RefInverseSqrt {
  double scale;
  double operator()(std::uint64_t t) const {
    return 1.0 / std::sqrt(1.0 + static_cast<double>(t) / scale);
  }
};

template <class Then>
struct RefLinearWarmup {
  std::uint64_t steps;
  Then then;
  double operator()(std::uint64_t t) const {
    return std::min(1.0, static_cast<double>(t + 1) / static_cast<double>(steps)) * then(t);
  }
};

template <class Inner, class Schedule>
struct RefScheduled {
  Inner inner;
  Schedule schedule;
  void operator()(double& w, double g, double w_seen, RefState& s, RefInfo in) const {
    in.lr_scale *= schedule(in.t);
    in.lr_ratio *= in.t > 0 ? schedule(in.t) / schedule(in.t - 1) : 1.0;
    inner(w, g, w_seen, s, in);
  }
};

// ---------------------------------------------------------------------------------------------
// Every rule and decorator, with its reference. Hyper-parameters are dyadic (exact in float),
// so that float and double runs apply the same rule and only rounding separates them from the
// reference. DC's lambda and lr keep lr * lambda * g^2 below 1 for the unit-normal gradients.
// ---------------------------------------------------------------------------------------------

const update::Sgd sgd{.learning_rate = 0.0625};
const RefSgd ref_sgd{0.0625};
const update::MomentumCorrection ema{.learning_rate = 0.0625, .beta = 0.875};
const RefEma ref_ema{0.0625, 0.875};
const update::HeavyBall heavy_ball{.learning_rate = 0.03125, .momentum = 0.875};
const RefHeavyBall ref_heavy_ball{0.03125, 0.875};
const update::HeavyBall nesterov{.learning_rate = 0.03125, .momentum = 0.875, .nesterov = true};
const RefHeavyBall ref_nesterov{0.03125, 0.875, true};
const update::HeavyBall velocity{
    .learning_rate = 0.03125, .momentum = 0.875, .lr_in_velocity = true};
const RefHeavyBall ref_velocity{0.03125, 0.875, false, true, true};
const update::HeavyBall uncorrected{.learning_rate = 0.03125,
                                    .momentum = 0.875,
                                    .lr_in_velocity = true,
                                    .momentum_correction = false};
const RefHeavyBall ref_uncorrected{0.03125, 0.875, false, true, false};
const update::HeavyBall nesterov_velocity{
    .learning_rate = 0.03125, .momentum = 0.875, .nesterov = true, .lr_in_velocity = true};
const RefHeavyBall ref_nesterov_velocity{0.03125, 0.875, true, true, true};
const update::DelayCompensated dc{.learning_rate = 0.0625, .lambda = 0.5};
const RefDc ref_dc{0.0625, 0.5};
const update::AdaptiveDelayCompensated dca{
    .learning_rate = 0.015625, .lambda0 = 2.0, .mean_square_decay = 0.9375, .epsilon = 0x1p-23};
const RefAdaptiveDc ref_dca{0.015625, 2.0, 0.9375, 0x1p-23};
const update::Adam adam{
    .learning_rate = 0.015625, .beta1 = 0.875, .beta2 = 1.0 - 0x1p-10, .epsilon = 0x1p-27};
const RefAdam ref_adam{0.015625, 0.875, 1.0 - 0x1p-10, 0x1p-27};

const schedule::LinearWarmup<schedule::StepDecay> warmup_step{.steps = 16,
                                                              .then = {.every = 64, .gamma = 0.5}};
const RefLinearWarmup<RefStep> ref_warmup_step{16, {64, 0.5}};

template <class Visit>
void for_each_rule(Visit&& visit) {
  using update::Scheduled;
  visit("Sgd", sgd, ref_sgd);
  visit("MomentumCorrection", ema, ref_ema);
  visit("HeavyBall", heavy_ball, ref_heavy_ball);
  visit("HeavyBall (Nesterov)", nesterov, ref_nesterov);
  visit("DelayCompensated", dc, ref_dc);
  visit("AdaptiveDelayCompensated", dca, ref_dca);
  visit("Adam", adam, ref_adam);
  visit("StalenessAware<HeavyBall>", update::StalenessAware<update::HeavyBall>{heavy_ball},
        RefStalenessAware<RefHeavyBall>{ref_heavy_ball});
  visit("StalenessAware<Adam>", update::StalenessAware<update::Adam>{adam},
        RefStalenessAware<RefAdam>{ref_adam});
  visit("StalenessAware<DelayCompensated>", update::StalenessAware<update::DelayCompensated>{dc},
        RefStalenessAware<RefDc>{ref_dc});
  visit("WeightDecay<MomentumCorrection>",
        update::WeightDecay<update::MomentumCorrection>{.inner = ema, .decay = 0.0078125},
        RefWeightDecay<RefEma>{ref_ema, 0.0078125});
  visit("WeightDecay<AdaptiveDelayCompensated>",
        update::WeightDecay<update::AdaptiveDelayCompensated>{.inner = dca, .decay = 0.0078125},
        RefWeightDecay<RefAdaptiveDc>{ref_dca, 0.0078125});
  visit("ClipByValue<HeavyBall (Nesterov)>",
        update::ClipByValue<update::HeavyBall>{.inner = nesterov, .limit = 0.5},
        RefClipByValue<RefHeavyBall>{ref_nesterov, 0.5});
  visit("ClipByNorm<Adam>", update::ClipByNorm<update::Adam>{.inner = adam, .max_norm = 2.0},
        RefClipByNorm<RefAdam>{ref_adam, 2.0});
  visit("ClipByNorm<DelayCompensated>",
        update::ClipByNorm<update::DelayCompensated>{.inner = dc, .max_norm = 2.0},
        RefClipByNorm<RefDc>{ref_dc, 2.0});
  visit("Scheduled<Sgd, Formula>",
        Scheduled<update::Sgd, schedule::StepDecay>{.inner = sgd,
                                                    .schedule = {.every = 50, .gamma = 0.5}},
        RefScheduled<RefSgd, RefStep>{ref_sgd, {50, 0.5}});
  visit("Scheduled<MomentumCorrection, Exponential>",
        Scheduled<update::MomentumCorrection, schedule::Exponential>{.inner = ema,
                                                                     .schedule = {.gamma = 0.99}},
        RefScheduled<RefEma, RefExponential>{ref_ema, {0.99}});
  visit("Scheduled<HeavyBall (lr in velocity), LinearWarmup<Formula>>",
        Scheduled<update::HeavyBall, schedule::LinearWarmup<schedule::StepDecay>>{
            .inner = velocity, .schedule = warmup_step},
        RefScheduled<RefHeavyBall, RefLinearWarmup<RefStep>>{ref_velocity, ref_warmup_step});
  visit("Scheduled<HeavyBall (lr in velocity, uncorrected), InverseSqrt>",
        Scheduled<update::HeavyBall, schedule::InverseSqrt>{.inner = uncorrected,
                                                            .schedule = {.scale = 20.0}},
        RefScheduled<RefHeavyBall, RefInverseSqrt>{ref_uncorrected, {20.0}});
  visit("Scheduled<HeavyBall (Nesterov, lr in velocity), Exponential>",
        Scheduled<update::HeavyBall, schedule::Exponential>{.inner = nesterov_velocity,
                                                            .schedule = {.gamma = 0.99}},
        RefScheduled<RefHeavyBall, RefExponential>{ref_nesterov_velocity, {0.99}});
  visit("Scheduled<Adam, LinearWarmup<Constant>>",
        Scheduled<update::Adam, schedule::LinearWarmup<>>{.inner = adam, .schedule = {.steps = 32}},
        RefScheduled<RefAdam, RefLinearWarmup<RefConstant>>{ref_adam, {32, {}}});
  visit("Scheduled<AdaptiveDelayCompensated, InverseSqrt>",
        Scheduled<update::AdaptiveDelayCompensated, schedule::InverseSqrt>{
            .inner = dca, .schedule = {.scale = 20.0}},
        RefScheduled<RefAdaptiveDc, RefInverseSqrt>{ref_dca, {20.0}});
}

// Locked with small stripes, so that the longer vectors span several of them.
template <class F>
void for_each_policy(F&& f) {
  f("Locked", Locked{.stripes = 4, .min_stripe_elements = 8});
  f("LockFree", LockFree{});
}

// ---------------------------------------------------------------------------------------------
// The public path: a store over the caller's parameters and worker handles, next to the
// reference model of the same sequence of pulls and pushes.
// ---------------------------------------------------------------------------------------------

/// A dense gradient (index = 0..n-1) or a sparse one.
template <class T>
struct Gradient {
  bool sparse = false;
  std::vector<std::size_t> index{};
  std::vector<T> value{};
};

/// Unit-normal values; a sparse gradient touches each coordinate with probability 0.3.
template <class T>
Gradient<T> random_gradient(std::mt19937_64& rng, std::size_t n, bool sparse, double scale = 1.0) {
  Gradient<T> g{.sparse = sparse};
  std::bernoulli_distribution touch(0.3);
  std::normal_distribution<double> normal(0.0, scale);
  for (std::size_t i = 0; i < n; ++i) {
    if (!sparse || touch(rng)) {
      g.index.push_back(i);
      g.value.push_back(static_cast<T>(normal(rng)));
    }
  }
  return g;
}

template <class T>
Gradient<T> zero_gradient(std::size_t n) {
  Gradient<T> g;
  for (std::size_t i = 0; i < n; ++i) {
    g.index.push_back(i);
  }
  g.value.assign(n, T{0});
  return g;
}

/// Parameters, a store attached to them, a handle and a pull buffer per worker.
template <class T, class Rule, class Policy>
class Session {
 public:
  using Optimizer = asyncopt::AsyncOptimizer<T, Rule, Policy>;
  using Store = typename Optimizer::store_type;

  Session(const Rule& rule, const Policy& policy, std::vector<T> w0, std::size_t workers = 2)
      : w(std::move(w0)), store_(Optimizer(rule, policy).attach(w, workers)) {
    for (std::size_t k = 0; k < workers; ++k) {
      handles_.push_back(store_->worker(k));
      pulled_.emplace_back(w.size());
    }
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  Session(Session&&) = delete;
  Session& operator=(Session&&) = delete;
  ~Session() = default;

  void pull(std::size_t k) { handles_[k].pull(pulled_[k]); }

  asyncopt::PushResult push(std::size_t k, const Gradient<T>& g) {
    if (g.sparse) {
      return handles_[k].push(std::span<const std::size_t>(g.index), std::span<const T>(g.value));
    }
    return handles_[k].push(std::span<const T>(g.value));
  }

  [[nodiscard]] const std::vector<T>& pulled(std::size_t k) const { return pulled_[k]; }
  [[nodiscard]] Store& store() { return *store_; }

  std::vector<T> w;  // declared before the store, which holds a span of it

 private:
  std::unique_ptr<Store> store_;
  std::vector<typename Store::Worker> handles_;
  std::vector<std::vector<T>> pulled_;
};

/// The reference model of a store: w, the rule state and each worker's pulled copy, in double.
template <class Ref>
class Reference {
 public:
  Reference(const Ref& rule, const std::vector<double>& w0, std::size_t workers = 2)
      : w(w0), state(w0.size(), RefState{}), rule_(rule), seen_(workers, w0), seen_t_(workers, 0) {}

  void pull(std::size_t k) {
    seen_[k] = w;
    seen_t_[k] = t_;
  }

  template <class T>
  void push(std::size_t k, const Gradient<T>& g) {
    double sum = 0.0;
    for (const T v : g.value) {
      sum += static_cast<double>(v) * static_cast<double>(v);
    }
    const RefInfo info{.t = t_, .tau = t_ - seen_t_[k], .gradient_norm = std::sqrt(sum)};
    for (std::size_t j = 0; j < g.index.size(); ++j) {
      const std::size_t i = g.index[j];
      max_gap_ = std::max(max_gap_, std::abs(w[i] - seen_[k][i]));
      rule_(w[i], static_cast<double>(g.value[j]), seen_[k][i], state[i], info);
    }
    ++t_;
  }

  /// The largest |w - w_seen| any pushed coordinate had: what delay compensation works on.
  [[nodiscard]] double max_gap() const { return max_gap_; }

  std::vector<double> w;
  std::vector<RefState> state;

 private:
  Ref rule_;
  std::vector<std::vector<double>> seen_;
  std::vector<std::uint64_t> seen_t_;
  std::uint64_t t_ = 0;
  double max_gap_ = 0.0;
};

struct Agreement {
  double max_error = 0.0;
  double max_gap = 0.0;
  std::uint64_t max_staleness = 0;
  bool all_applied = true;
};

constexpr int pushes = 200;

/// 200 pushes of random gradients by two workers that pull at random (so the staleness and
/// w - w_seen vary), `sparse_share` of them sparse; the largest error of w over all pushes.
template <class T, class Rule, class Ref, class Policy>
Agreement compare_with_reference(const Rule& rule, const Ref& ref, const Policy& policy,
                                 std::size_t n, double sparse_share, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto w0 = random_vector<T>(rng, n);
  Session<T, Rule, Policy> lib(rule, policy, w0);
  Reference<Ref> model(ref, std::vector<double>(w0.begin(), w0.end()));
  std::bernoulli_distribution coin(0.5);
  std::bernoulli_distribution sparse(sparse_share);
  Agreement out;
  for (std::size_t k = 0; k < 2; ++k) {
    lib.pull(k);
    model.pull(k);
  }
  for (int p = 0; p < pushes; ++p) {
    const std::size_t k = coin(rng) ? 1 : 0;
    if (coin(rng)) {
      lib.pull(k);
      model.pull(k);
    }
    const auto g = random_gradient<T>(rng, n, sparse(rng));
    const auto result = lib.push(k, g);
    model.push(k, g);
    out.all_applied = out.all_applied && result.applied;
    out.max_staleness = std::max(out.max_staleness, result.staleness);
    for (std::size_t i = 0; i < n; ++i) {
      out.max_error = std::max(out.max_error, relative_error(lib.w[i], model.w[i]));
    }
  }
  out.max_gap = model.max_gap();
  return out;
}

/// One pull or push in a scripted sequence.
struct Op {
  bool pull = false;
  std::size_t worker = 0;
  bool sparse = false;
};

struct Lockstep {
  bool same = true;             // identical bits after every push
  std::uint64_t staleness = 0;  // bit tau set when a push had staleness tau (tau < 64)
  bool moved = false;           // the parameters changed at all
};

/// Runs the same script with the same random gradients on two stores; compares all bits.
template <class T, class RuleA, class RuleB, class Policy>
Lockstep run_lockstep(const RuleA& a, const RuleB& b, const Policy& policy, std::size_t n,
                      const std::vector<Op>& script, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto w0 = random_vector<T>(rng, n);
  Session<T, RuleA, Policy> first(a, policy, w0);
  Session<T, RuleB, Policy> second(b, policy, w0);
  Lockstep out;
  for (const Op& op : script) {
    if (op.pull) {
      first.pull(op.worker);
      second.pull(op.worker);
      continue;
    }
    const auto g = random_gradient<T>(rng, n, op.sparse);
    const auto result = first.push(op.worker, g);
    second.push(op.worker, g);
    if (result.staleness < 64) {
      out.staleness |= std::uint64_t{1} << result.staleness;
    }
    out.same = out.same && same_bits(first.w, second.w);
  }
  out.moved = !same_bits(first.w, w0);
  return out;
}

/// Two workers, each push preceded by a pull with probability 1/2, half the pushes sparse.
std::vector<Op> random_script(std::uint64_t seed, int count) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution coin(0.5);
  std::vector<Op> script = {{.pull = true, .worker = 0}, {.pull = true, .worker = 1}};
  for (int p = 0; p < count; ++p) {
    const std::size_t k = coin(rng) ? 1 : 0;
    if (coin(rng)) {
      script.push_back({.pull = true, .worker = k});
    }
    script.push_back({.pull = false, .worker = k, .sparse = coin(rng)});
  }
  return script;
}

// ---------------------------------------------------------------------------------------------
// The kernels, called directly.
// ---------------------------------------------------------------------------------------------

/// w, w_seen (w plus a perturbation, so DC's term is non-zero) and the rule's state slots
/// (positive: valid second moments and mean squares for every rule).
template <class T, std::size_t Slots>
struct Arrays {
  std::vector<T> w;
  std::vector<T> w_seen;
  std::array<std::vector<T>, Slots> state;

  kernels::StatePointers<T, Slots> pointers() {
    kernels::StatePointers<T, Slots> p{};
    for (std::size_t k = 0; k < Slots; ++k) {
      p[k] = state[k].data();
    }
    return p;
  }
  kernels::DenseOperands<T, Slots> dense(const std::vector<T>& g) {
    return {.w = w.data(), .g = g.data(), .state = pointers(), .w_seen = w_seen.data()};
  }
  kernels::SparseOperands<T, Slots> sparse(const Gradient<T>& g) {
    return {.w = w.data(),
            .index = g.index.data(),
            .value = g.value.data(),
            .state = pointers(),
            .w_seen = w_seen.data()};
  }
};

template <class T, std::size_t Slots>
Arrays<T, Slots> random_arrays(std::mt19937_64& rng, std::size_t n) {
  Arrays<T, Slots> a;
  a.w = random_vector<T>(rng, n);
  const auto shift = random_vector<T>(rng, n, 0.3);
  a.w_seen = a.w;
  for (std::size_t i = 0; i < n; ++i) {
    a.w_seen[i] += shift[i];
  }
  std::uniform_real_distribution<double> positive(0.1, 2.0);
  for (auto& slot : a.state) {
    slot.resize(n);
    for (auto& x : slot) {
      x = static_cast<T>(positive(rng));
    }
  }
  return a;
}

template <class T>
double norm_of(const std::vector<T>& v) {
  double sum = 0.0;
  for (const T x : v) {
    sum += static_cast<double>(x) * static_cast<double>(x);
  }
  return std::sqrt(sum);
}

template <class Rule>
constexpr bool is_sgd_or_dc =
    std::is_same_v<Rule, update::Sgd> || std::is_same_v<Rule, update::DelayCompensated>;

template <class T, class Rule, class Policy>
using OptimizerOf = asyncopt::AsyncOptimizer<T, Rule, Policy>;

}  // namespace

// =============================================================================================
// 1. Every rule against its reference over many random pushes.
// =============================================================================================

TEMPLATE_TEST_CASE(
    "every rule and decorator matches its double-precision reference over 200 random pushes",
    "[rules]", float, double) {
  for_each_rule([](const char* name, const auto& rule, const auto& ref) {
    using Rule = std::decay_t<decltype(rule)>;
    DYNAMIC_SECTION(name) {
      for_each_policy([&](const char* policy_name, const auto& policy) {
        // Half the pushes sparse; rules that read w_seen also run with sparse pushes only.
        std::vector<double> shares = {0.5};
        if constexpr (asyncopt::needs_w_seen_v<Rule>) {
          shares.push_back(1.0);
        }
        for (const std::size_t n : lengths) {
          for (const double share : shares) {
            INFO(policy_name << ", n = " << n << ", sparse share = " << share);
            const auto a = compare_with_reference<TestType>(rule, ref, policy, n, share, 1000 + n);
            CAPTURE(a.max_error, a.max_gap, a.max_staleness);
            REQUIRE(a.all_applied);
            REQUIRE(a.max_error <= drift_bound<TestType>);
            // The two workers interleave, so staleness above 1 and a stale w_seen occur.
            REQUIRE(a.max_staleness >= 2);
            REQUIRE(a.max_gap > 1e-2);
          }
        }
      });
    }
  });
}

// =============================================================================================
// 2. Exact special cases.
// =============================================================================================

TEMPLATE_TEST_CASE("DC-ASGD with lambda = 0 equals plain ASGD bit for bit", "[rules]", float,
                   double) {
  const update::DelayCompensated no_compensation{.learning_rate = 0.0625, .lambda = 0.0};
  for_each_policy([&](const char* policy_name, const auto& policy) {
    for (const std::size_t n : lengths) {
      INFO(policy_name << ", n = " << n);
      const auto run = run_lockstep<TestType>(no_compensation, sgd, policy, n,
                                              random_script(7 + n, 100), 11 + n);
      REQUIRE(run.moved);
      REQUIRE(run.staleness > 0b11);  // some push had staleness 2 or more
      REQUIRE(run.same);
    }
  });
}

TEMPLATE_TEST_CASE("StalenessAware at staleness 0 and 1 equals its inner rule bit for bit",
                   "[rules]", float, double) {
  // Worker 0 pulls and pushes (staleness 0); then both pull, 0 pushes (0) and 1 pushes (1).
  std::vector<Op> script;
  for (int round = 0; round < 15; ++round) {
    const bool sparse = round % 2 == 1;
    script.push_back({.pull = true, .worker = 0});
    script.push_back({.pull = false, .worker = 0, .sparse = sparse});
    script.push_back({.pull = true, .worker = 0});
    script.push_back({.pull = true, .worker = 1});
    script.push_back({.pull = false, .worker = 0, .sparse = sparse});
    script.push_back({.pull = false, .worker = 1, .sparse = !sparse});
  }
  auto check = [&](const char* name, const auto& inner) {
    using Inner = std::decay_t<decltype(inner)>;
    const update::StalenessAware<Inner> aware{inner};
    for_each_policy([&](const char* policy_name, const auto& policy) {
      for (const std::size_t n : lengths) {
        INFO(name << ", " << policy_name << ", n = " << n);
        const auto run = run_lockstep<TestType>(aware, inner, policy, n, script, 3 + n);
        REQUIRE(run.moved);
        REQUIRE(run.staleness == 0b11);  // exactly staleness 0 and 1 occurred
        REQUIRE(run.same);
      }
    });
  };
  check("Sgd", sgd);
  check("HeavyBall (Nesterov)", nesterov);
  check("Adam", adam);
  check("DelayCompensated", dc);
  check("AdaptiveDelayCompensated", dca);
}

TEMPLATE_TEST_CASE(
    "StalenessAware at staleness 3 equals its inner rule with a third of the "
    "learning rate",
    "[rules]", float, double) {
  // Worker 0 pulls; worker 1 pulls and pushes zeros three times (no change to w or to a zero
  // state, but the store's version advances); then worker 0 pushes g with staleness 3. The
  // plain rule with lr / 3 runs the same script.
  auto check = [&](const char* name, const auto& inner) {
    using Inner = std::decay_t<decltype(inner)>;
    const update::StalenessAware<Inner> aware{inner};
    Inner third = inner;
    third.learning_rate = inner.learning_rate / 3.0;
    for_each_policy([&](const char* policy_name, const auto& policy) {
      for (const std::size_t n : lengths) {
        INFO(name << ", " << policy_name << ", n = " << n);
        std::mt19937_64 rng(n);
        const auto w0 = random_vector<TestType>(rng, n);
        Session<TestType, update::StalenessAware<Inner>, std::decay_t<decltype(policy)>> a(
            aware, policy, w0);
        Session<TestType, Inner, std::decay_t<decltype(policy)>> b(third, policy, w0);
        a.pull(0);
        b.pull(0);
        for (int k = 0; k < 3; ++k) {
          a.pull(1);
          b.pull(1);
          REQUIRE(a.push(1, zero_gradient<TestType>(n)).staleness == 0);
          b.push(1, zero_gradient<TestType>(n));
        }
        REQUIRE(same_bits(a.w, w0));
        const auto g = random_gradient<TestType>(rng, n, false);
        REQUIRE(a.push(0, g).staleness == 3);
        b.push(0, g);
        REQUIRE_FALSE(same_bits(a.w, w0));
        double error = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          error = std::max(error, relative_error(a.w[i], b.w[i]));
        }
        CAPTURE(error);
        REQUIRE(error <= step_bound<TestType>);
      }
    });
  };
  check("Sgd", sgd);
  check("MomentumCorrection", ema);
  check("HeavyBall (Nesterov)", nesterov);
  check("Adam", adam);
  check("DelayCompensated", dc);
  check("AdaptiveDelayCompensated", dca);
}

// =============================================================================================
// 3. Momentum correction (Goyal et al. 2017, sec. 2.1).
// =============================================================================================

namespace {

// Warm-up over 50 updates, then the learning rate divided by 10 every 100 updates.
const schedule::LinearWarmup<schedule::StepDecay> goyal_schedule{
    .steps = 50, .then = {.every = 100, .gamma = 0.1}};

/// The largest relative difference of w between the two rules over 300 dense pushes of the
/// same random gradients by one worker, in double.
template <class RuleA, class RuleB, class Policy>
double max_difference(const RuleA& a, const RuleB& b, const Policy& policy, std::size_t n) {
  std::mt19937_64 rng(17 + n);
  const auto w0 = random_vector<double>(rng, n);
  Session<double, RuleA, Policy> first(a, policy, w0, 1);
  Session<double, RuleB, Policy> second(b, policy, w0, 1);
  double worst = 0.0;
  for (int step = 0; step < 300; ++step) {
    first.pull(0);
    second.pull(0);
    const auto g = random_gradient<double>(rng, n, false);
    first.push(0, g);
    second.push(0, g);
    for (std::size_t i = 0; i < n; ++i) {
      worst = std::max(worst, relative_error(first.w[i], second.w[i]));
    }
  }
  return worst;
}

template <class Inner>
update::Scheduled<Inner, schedule::LinearWarmup<schedule::StepDecay>> with_goyal_schedule(
    const Inner& inner) {
  return {.inner = inner, .schedule = goyal_schedule};
}

}  // namespace

TEST_CASE(
    "with momentum correction the lr-in-velocity heavy ball equals the classic form under "
    "warm-up and step decay",
    "[rules]") {
  for (const bool nest : {false, true}) {
    const update::HeavyBall classic{.learning_rate = 0.1, .momentum = 0.9, .nesterov = nest};
    update::HeavyBall corrected = classic;
    corrected.lr_in_velocity = true;
    corrected.momentum_correction = true;
    for_each_policy([&](const char* policy_name, const auto& policy) {
      for (const std::size_t n : lengths) {
        INFO((nest ? "Nesterov, " : "heavy ball, ") << policy_name << ", n = " << n);
        const double difference =
            max_difference(with_goyal_schedule(corrected), with_goyal_schedule(classic), policy, n);
        CAPTURE(difference);
        REQUIRE(difference <= 1e-6);
      }
    });
  }
}

TEST_CASE(
    "without momentum correction the lr-in-velocity heavy ball departs from the classic "
    "form (negative control)",
    "[rules]") {
  const update::HeavyBall classic{.learning_rate = 0.1, .momentum = 0.9};
  const update::HeavyBall uncorrected_velocity{
      .learning_rate = 0.1, .momentum = 0.9, .lr_in_velocity = true, .momentum_correction = false};
  for_each_policy([&](const char* policy_name, const auto& policy) {
    for (const std::size_t n : lengths) {
      INFO(policy_name << ", n = " << n);
      const double difference = max_difference(with_goyal_schedule(uncorrected_velocity),
                                               with_goyal_schedule(classic), policy, n);
      CAPTURE(difference);
      REQUIRE(difference > 1e-3);
    }
  });
}

// =============================================================================================
// 4. Non-finite gradients.
// =============================================================================================

TEMPLATE_TEST_CASE(
    "a NaN or Inf gradient changes neither the parameters nor the rule state, "
    "and is counted",
    "[rules]", float, double) {
  const std::array<TestType, 3> poison = {std::numeric_limits<TestType>::quiet_NaN(),
                                          std::numeric_limits<TestType>::infinity(),
                                          -std::numeric_limits<TestType>::infinity()};
  for_each_rule([&](const char* name, const auto& rule, const auto& /*ref*/) {
    using Rule = std::decay_t<decltype(rule)>;
    for_each_policy([&](const char* policy_name, const auto& policy) {
      using Policy = std::decay_t<decltype(policy)>;
      for (const std::size_t n : lengths) {
        INFO(name << ", " << policy_name << ", n = " << n);
        // `dirty` receives a poisoned push before every third valid one; `clean` never does.
        // Equal bits after every later valid push mean the rejected push left the rule state
        // (momentum, moments, Adam's step count) as it was.
        std::mt19937_64 rng(5 + n);
        const auto w0 = random_vector<TestType>(rng, n);
        Session<TestType, Rule, Policy> clean(rule, policy, w0);
        Session<TestType, Rule, Policy> dirty(rule, policy, w0);
        std::bernoulli_distribution coin(0.5);
        std::uint64_t rejected = 0;
        bool unchanged = true;
        bool same = true;
        for (std::size_t k = 0; k < 2; ++k) {
          clean.pull(k);
          dirty.pull(k);
        }
        for (int p = 0; p < 30; ++p) {
          const std::size_t k = coin(rng) ? 1 : 0;
          if (coin(rng)) {
            clean.pull(k);
            dirty.pull(k);
          }
          if (p % 3 == 1) {
            auto bad = random_gradient<TestType>(rng, n, coin(rng));
            if (bad.index.empty()) {
              bad.index.push_back(n - 1);
              bad.value.push_back(TestType{1});
            }
            // Anywhere: in the SIMD body or in the scalar tail.
            bad.value[rng() % bad.value.size()] = poison[rejected % poison.size()];
            const auto before = dirty.w;
            const auto version = dirty.store().version();
            const auto result = dirty.push(k, bad);
            unchanged = unchanged && !result.applied && same_bits(dirty.w, before) &&
                        dirty.store().version() == version;
            ++rejected;
          }
          const auto g = random_gradient<TestType>(rng, n, coin(rng));
          clean.push(k, g);
          dirty.push(k, g);
          same = same && same_bits(clean.w, dirty.w);
        }
        REQUIRE(unchanged);
        REQUIRE(same);
        REQUIRE_FALSE(same_bits(clean.w, w0));
        const auto stats = dirty.store().stats();
        REQUIRE(stats.rejected == rejected);
        REQUIRE(stats.updates == 30);
        REQUIRE(clean.store().stats().rejected == 0);
      }
    });
  });
}

// =============================================================================================
// 5. Clipping bounds the applied change.
// =============================================================================================

TEMPLATE_TEST_CASE("ClipByNorm bounds the norm of every applied change by max_norm", "[rules]",
                   float, double) {
  constexpr double max_norm = 1.5;
  const update::ClipByNorm<update::Sgd> rule{.inner = {.learning_rate = 1.0}, .max_norm = max_norm};
  for_each_policy([&](const char* policy_name, const auto& policy) {
    for (const std::size_t n : lengths) {
      INFO(policy_name << ", n = " << n);
      std::mt19937_64 rng(23 + n);
      Session<TestType, std::decay_t<decltype(rule)>, std::decay_t<decltype(policy)>> s(
          rule, policy, std::vector<TestType>(n, TestType{0}), 1);
      std::uniform_real_distribution<double> log_scale(-2.0, 1.5);
      int clipped = 0;
      int passed = 0;
      for (int p = 0; p < 40; ++p) {
        // w is reset to 0 so that w after the push is the change itself, without the
        // rounding of a float w of unrelated size.
        std::fill(s.w.begin(), s.w.end(), TestType{0});
        s.pull(0);
        const auto g =
            random_gradient<TestType>(rng, n, p % 2 == 1, std::pow(10.0, log_scale(rng)));
        REQUIRE(s.push(0, g).applied);
        const double change = norm_of(s.w);
        const double g_norm = norm_of(g.value);
        CAPTURE(p, g_norm, change);
        REQUIRE(change <= max_norm * (1.0 + 1e-6));
        if (g_norm > max_norm) {
          ++clipped;
          REQUIRE(change >= max_norm * (1.0 - 1e-6));  // rescaled, not zeroed
        } else {
          ++passed;
          REQUIRE(relative_error(change, g_norm) <= step_bound<TestType>);
        }
      }
      REQUIRE(clipped > 0);
      if (n > 1) {
        REQUIRE(passed > 0);
      }
    }
  });
}

TEMPLATE_TEST_CASE(
    "ClipByValue bounds every element of the applied change by limit times the "
    "learning rate",
    "[rules]", float, double) {
  constexpr double lr = 0.5;
  constexpr double limit = 0.25;
  const update::ClipByValue<update::Sgd> rule{.inner = {.learning_rate = lr}, .limit = limit};
  for_each_policy([&](const char* policy_name, const auto& policy) {
    for (const std::size_t n : lengths) {
      INFO(policy_name << ", n = " << n);
      std::mt19937_64 rng(29 + n);
      Session<TestType, std::decay_t<decltype(rule)>, std::decay_t<decltype(policy)>> s(
          rule, policy, std::vector<TestType>(n, TestType{0}), 1);
      bool bounded = true;
      bool exact_inside = true;
      int clipped = 0;
      for (int p = 0; p < 40; ++p) {
        std::fill(s.w.begin(), s.w.end(), TestType{0});
        s.pull(0);
        const auto g = random_gradient<TestType>(rng, n, p % 2 == 1, 0.5);
        s.push(0, g);
        for (std::size_t j = 0; j < g.index.size(); ++j) {
          const double change = -static_cast<double>(s.w[g.index[j]]);
          const double gj = static_cast<double>(g.value[j]);
          // lr and limit are powers of two: lr * limit and lr * g are exact.
          bounded = bounded && std::abs(change) <= limit * lr;
          if (std::abs(gj) < limit) {
            exact_inside = exact_inside && change == lr * gj;
          } else {
            ++clipped;
            exact_inside = exact_inside && change == std::copysign(limit * lr, gj);
          }
        }
      }
      REQUIRE(bounded);
      REQUIRE(exact_inside);
      REQUIRE(clipped > 0);
    }
  });
}

// =============================================================================================
// 6. Momentum beats plain SGD on an ill-conditioned quadratic.
// =============================================================================================

namespace {

// f(w) = 1/2 sum h_i w_i^2 with h_i evenly spaced from mu = 1 to L = 100 (condition number
// 100), n = 33, w0 = 1.
constexpr std::size_t quadratic_n = 33;
constexpr double curvature_min = 1.0;
constexpr double curvature_max = 100.0;
constexpr int quadratic_steps = 200;

double curvature(std::size_t i) {
  return curvature_min + (curvature_max - curvature_min) * static_cast<double>(i) /
                             static_cast<double>(quadratic_n - 1);
}

/// f after 200 exact gradients pulled and pushed through the store by one worker.
template <class T, class Rule, class Policy>
double quadratic_after(const Rule& rule, const Policy& policy) {
  Session<T, Rule, Policy> s(rule, policy, std::vector<T>(quadratic_n, T{1}), 1);
  Gradient<T> g = zero_gradient<T>(quadratic_n);
  for (int step = 0; step < quadratic_steps; ++step) {
    s.pull(0);
    for (std::size_t i = 0; i < quadratic_n; ++i) {
      g.value[i] = static_cast<T>(curvature(i) * static_cast<double>(s.pulled(0)[i]));
    }
    s.push(0, g);
  }
  double f = 0.0;
  for (std::size_t i = 0; i < quadratic_n; ++i) {
    f += 0.5 * curvature(i) * static_cast<double>(s.w[i]) * static_cast<double>(s.w[i]);
  }
  return std::isfinite(f) ? f : std::numeric_limits<double>::infinity();
}

}  // namespace

TEMPLATE_TEST_CASE(
    "momentum beats plain SGD tenfold on a quadratic with condition number 100 in "
    "200 steps",
    "[rules]", float, double) {
  // f0 = 833.25. Plain Sgd gets the best step of a small grid, c / L for c in
  // {0.5, 1, 1.5, 1.9}: c = 1.9 gives f = 2.3e-4 (c = 1 gives 9.0e-3; the slowest mode
  // contracts by 1 - c / kappa per step). HeavyBall at lr = 1 / L with mu = 0.9, untuned,
  // contracts every mode by about sqrt(0.9) = 0.949 per step: f = 3.1e-7, 740 times less.
  // MomentumCorrection averages gradients, so its steps are (1 - beta) times heavy ball's at
  // the same lr; at lr = (1 / L) / (1 - beta) it is heavy ball with step 1 / L and momentum
  // beta. Its best beta of {0.5, 0.8, 0.9} is 0.8: f = 1.3e-13.
  constexpr double inverse_l = 1.0 / curvature_max;
  for_each_policy([&](const char* policy_name, const auto& policy) {
    INFO(policy_name);
    double f_sgd = std::numeric_limits<double>::infinity();
    for (const double c : {0.5, 1.0, 1.5, 1.9}) {
      f_sgd = std::min(
          f_sgd, quadratic_after<TestType>(update::Sgd{.learning_rate = c * inverse_l}, policy));
    }
    const double f_heavy_ball = quadratic_after<TestType>(
        update::HeavyBall{.learning_rate = inverse_l, .momentum = 0.9}, policy);
    double f_ema = std::numeric_limits<double>::infinity();
    for (const double beta : {0.5, 0.8, 0.9}) {
      f_ema = std::min(f_ema, quadratic_after<TestType>(
                                  update::MomentumCorrection{
                                      .learning_rate = inverse_l / (1.0 - beta), .beta = beta},
                                  policy));
    }
    CAPTURE(f_sgd, f_heavy_ball, f_ema);
    REQUIRE(f_sgd > 1e-4);  // the ill-conditioning shows: plain SGD is far from done
    REQUIRE(f_heavy_ball * 10.0 <= f_sgd);
    REQUIRE(f_ema * 10.0 <= f_sgd);
  });
}

// =============================================================================================
// 7. Sparse pushes against dense ones, through the kernels.
// =============================================================================================

TEMPLATE_TEST_CASE(
    "a sparse update changes the touched coordinates as a dense one does and "
    "leaves the others, w and state, alone",
    "[rules]", float, double) {
  // Not sparse == dense in general: a dense push of zeros still decays the momentum of the
  // coordinates it does not touch. For Sgd and DC, whose state is empty, it is (next test).
  for_each_rule([&](const char* name, const auto& rule, const auto& /*ref*/) {
    using Rule = std::decay_t<decltype(rule)>;
    constexpr std::size_t slots = Rule::state_slots;
    for (const std::size_t n : lengths) {
      INFO(name << ", n = " << n);
      std::mt19937_64 rng(31 + n);
      const auto original = random_arrays<TestType, slots>(rng, n);
      auto g = random_gradient<TestType>(rng, n, true);
      if (g.index.empty()) {
        g.index.push_back(0);
        g.value.push_back(TestType{1});
      }
      std::vector<TestType> dense_g(n, TestType{0});
      std::vector<bool> touched(n, false);
      for (std::size_t j = 0; j < g.index.size(); ++j) {
        dense_g[g.index[j]] = g.value[j];
        touched[g.index[j]] = true;
      }
      const auto step = rule.template formula<TestType>(
          asyncopt::UpdateInfo{.staleness = 2, .version = 9, .gradient_norm = norm_of(g.value)});
      auto dense = original;
      kernels::apply_dense<kernels::PlainAccess>(step, dense.dense(dense_g), 0, n);
      auto sparse = original;
      kernels::apply_sparse<kernels::PlainAccess>(step, sparse.sparse(g), 0, g.index.size());
      auto relaxed = original;
      kernels::apply_sparse<kernels::RelaxedAccess>(step, relaxed.sparse(g), 0, g.index.size());
      REQUIRE(same_bits(sparse.w, relaxed.w));
      bool untouched_kept = true;
      double error = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        if (touched[i]) {
          error = std::max(error, relative_error(sparse.w[i], dense.w[i]));
        } else {
          untouched_kept = untouched_kept && sparse.w[i] == original.w[i];
        }
        for (std::size_t k = 0; k < slots; ++k) {
          if (touched[i]) {
            error = std::max(error, relative_error(sparse.state[k][i], dense.state[k][i]));
          } else {
            untouched_kept = untouched_kept && sparse.state[k][i] == original.state[k][i];
          }
        }
      }
      CAPTURE(error);
      REQUIRE(untouched_kept);
      REQUIRE(error <= step_bound<TestType>);
    }
  });
}

TEMPLATE_TEST_CASE(
    "for Sgd and DC-ASGD a sparse push equals a dense push with zeros elsewhere, "
    "bit for bit",
    "[rules]", float, double) {
  // Through the store under LockFree both pushes run the scalar path (relaxed atomics), so
  // the same formula sees the same operands; under Locked the dense push runs the SIMD body
  // and only the bound of the kernel test applies.
  auto check = [&](const char* name, const auto& rule) {
    using Rule = std::decay_t<decltype(rule)>;
    for (const std::size_t n : lengths) {
      INFO(name << ", n = " << n);
      std::mt19937_64 rng(37 + n);
      const auto w0 = random_vector<TestType>(rng, n);
      Session<TestType, Rule, LockFree> dense(rule, LockFree{}, w0);
      Session<TestType, Rule, LockFree> sparse(rule, LockFree{}, w0);
      Session<TestType, Rule, Locked> simd(rule, Locked{.stripes = 1}, w0);
      bool same = true;
      double error = 0.0;
      std::bernoulli_distribution coin(0.5);
      for (std::size_t k = 0; k < 2; ++k) {
        dense.pull(k);
        sparse.pull(k);
        simd.pull(k);
      }
      for (int p = 0; p < 50; ++p) {
        const std::size_t k = coin(rng) ? 1 : 0;
        if (coin(rng)) {
          dense.pull(k);
          sparse.pull(k);
          simd.pull(k);
        }
        const auto g = random_gradient<TestType>(rng, n, true);
        Gradient<TestType> zeros = zero_gradient<TestType>(n);
        for (std::size_t j = 0; j < g.index.size(); ++j) {
          zeros.value[g.index[j]] = g.value[j];
        }
        sparse.push(k, g);
        dense.push(k, zeros);
        simd.push(k, zeros);
        same = same && same_bits(sparse.w, dense.w);
        for (std::size_t i = 0; i < n; ++i) {
          error = std::max(error, relative_error(simd.w[i], sparse.w[i]));
        }
      }
      CAPTURE(error);
      REQUIRE(same);
      REQUIRE(error <= drift_bound<TestType>);
    }
  };
  check("Sgd", sgd);
  check("DelayCompensated", dc);
}

// =============================================================================================
// 8. The SIMD body and the scalar tail against the per-element reference.
// =============================================================================================

TEMPLATE_TEST_CASE(
    "the SIMD body and the scalar tail both match the per-element double "
    "reference",
    "[rules]", float, double) {
  // Bit-for-bit agreement of body and tail is not promised: the compiler may contract a * b + c
  // into an FMA in one and not the other.
  for_each_rule([&](const char* name, const auto& rule, const auto& ref) {
    using Rule = std::decay_t<decltype(rule)>;
    constexpr std::size_t slots = Rule::state_slots;
    for (const std::size_t n : lengths) {
      INFO(name << ", n = " << n);
      std::mt19937_64 rng(41 + n);
      const auto original = random_arrays<TestType, slots>(rng, n);
      const auto g = random_vector<TestType>(rng, n);
      const double g_norm = norm_of(g);
      const auto step = rule.template formula<TestType>(
          asyncopt::UpdateInfo{.staleness = 3, .version = 9, .gradient_norm = g_norm});
      const RefInfo info{.t = 9, .tau = 3, .gradient_norm = g_norm};

      auto whole = original;  // SIMD body and tail
      kernels::apply_dense<kernels::PlainAccess>(step, whole.dense(g), 0, n);
      auto one_by_one = original;  // every element through the scalar tail
      for (std::size_t i = 0; i < n; ++i) {
        kernels::apply_dense<kernels::PlainAccess>(step, one_by_one.dense(g), i, i + 1);
      }
      auto relaxed = original;  // the scalar path of LockFree
      kernels::apply_dense<kernels::RelaxedAccess>(step, relaxed.dense(g), 0, n);

      double error = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        double w = static_cast<double>(original.w[i]);
        RefState s{};
        for (std::size_t k = 0; k < slots; ++k) {
          s[k] = static_cast<double>(original.state[k][i]);
        }
        ref(w, static_cast<double>(g[i]), static_cast<double>(original.w_seen[i]), s, info);
        for (const auto* got : {&whole, &one_by_one, &relaxed}) {
          error = std::max(error, relative_error(got->w[i], w));
          for (std::size_t k = 0; k < slots; ++k) {
            error = std::max(error, relative_error(got->state[k][i], s[k]));
          }
        }
      }
      CAPTURE(error);
      REQUIRE(error <= step_bound<TestType>);
      REQUIRE_FALSE(same_bits(whole.w, original.w));
    }
  });
}

// =============================================================================================
// 9. Validation of hyper-parameters.
// =============================================================================================

namespace {

/// attach() validates: a bad setting throws std::invalid_argument naming `field` and leaves
/// the parameters untouched.
template <class T, class Rule>
void require_rejected(const Rule& rule, const std::string& field) {
  INFO(field);
  std::vector<T> w = {T{1}, T{-2}, T{3}};
  const auto before = w;
  for_each_policy([&](const char* /*policy_name*/, const auto& policy) {
    const OptimizerOf<T, Rule, std::decay_t<decltype(policy)>> opt(rule, policy);
    REQUIRE_THROWS_AS(opt.attach(w, 1), std::invalid_argument);
    REQUIRE_THROWS_WITH(opt.attach(w, 1), Catch::Contains(field));
  });
  REQUIRE(same_bits(w, before));
}

}  // namespace

TEMPLATE_TEST_CASE(
    "bad hyper-parameters of every rule, decorator and schedule throw "
    "std::invalid_argument naming the field",
    "[rules]", float, double) {
  using T = TestType;
  using update::Scheduled;
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  constexpr double inf = std::numeric_limits<double>::infinity();

  for (const double lr : {0.0, -0.1, nan, inf}) {
    require_rejected<T>(update::Sgd{.learning_rate = lr}, "Sgd::learning_rate");
    require_rejected<T>(update::MomentumCorrection{.learning_rate = lr},
                        "MomentumCorrection::learning_rate");
    require_rejected<T>(update::HeavyBall{.learning_rate = lr}, "HeavyBall::learning_rate");
    require_rejected<T>(update::DelayCompensated{.learning_rate = lr},
                        "DelayCompensated::learning_rate");
    require_rejected<T>(update::AdaptiveDelayCompensated{.learning_rate = lr},
                        "AdaptiveDelayCompensated::learning_rate");
    require_rejected<T>(update::Adam{.learning_rate = lr}, "Adam::learning_rate");
  }
  for (const double mu : {1.0, 1.5, -1.0, nan}) {
    require_rejected<T>(update::HeavyBall{.momentum = mu}, "HeavyBall::momentum");
  }
  for (const double beta : {1.0, 1.5, -0.1, nan}) {
    require_rejected<T>(update::MomentumCorrection{.beta = beta}, "MomentumCorrection::beta");
    require_rejected<T>(update::AdaptiveDelayCompensated{.mean_square_decay = beta},
                        "AdaptiveDelayCompensated::mean_square_decay");
    require_rejected<T>(update::Adam{.beta1 = beta}, "Adam::beta1");
    require_rejected<T>(update::Adam{.beta2 = beta}, "Adam::beta2");
  }
  for (const double eps : {0.0, -1e-8, nan, inf}) {
    require_rejected<T>(update::Adam{.epsilon = eps}, "Adam::epsilon");
    require_rejected<T>(update::AdaptiveDelayCompensated{.epsilon = eps},
                        "AdaptiveDelayCompensated::epsilon");
  }
  for (const double negative : {-0.01, nan, inf}) {
    require_rejected<T>(update::DelayCompensated{.lambda = negative}, "DelayCompensated::lambda");
    require_rejected<T>(update::AdaptiveDelayCompensated{.lambda0 = negative},
                        "AdaptiveDelayCompensated::lambda0");
    require_rejected<T>(update::WeightDecay<update::Sgd>{.decay = negative}, "WeightDecay::decay");
  }
  for (const double limit : {0.0, -1.0, nan, inf}) {
    require_rejected<T>(update::ClipByValue<update::Sgd>{.limit = limit}, "ClipByValue::limit");
    require_rejected<T>(update::ClipByNorm<update::Sgd>{.max_norm = limit}, "ClipByNorm::max_norm");
  }
  // A decorator validates the rule it wraps.
  const update::Adam bad_adam{.beta1 = 1.0};
  require_rejected<T>(update::StalenessAware<update::Adam>{bad_adam}, "Adam::beta1");
  require_rejected<T>(update::WeightDecay<update::Adam>{.inner = bad_adam}, "Adam::beta1");
  require_rejected<T>(update::ClipByValue<update::Adam>{.inner = bad_adam}, "Adam::beta1");
  require_rejected<T>(update::ClipByNorm<update::Adam>{.inner = bad_adam}, "Adam::beta1");
  require_rejected<T>(Scheduled<update::Adam, schedule::StepDecay>{.inner = bad_adam},
                      "Adam::beta1");

  // Schedules.
  require_rejected<T>(Scheduled<update::Sgd, schedule::StepDecay>{.schedule = {.every = 0}},
                      "schedule::StepDecay::every");
  for (const double gamma : {0.0, -0.5, 1.5, nan}) {
    require_rejected<T>(Scheduled<update::Sgd, schedule::StepDecay>{.schedule = {.gamma = gamma}},
                        "schedule::StepDecay::gamma");
    require_rejected<T>(Scheduled<update::Sgd, schedule::Exponential>{.schedule = {.gamma = gamma}},
                        "schedule::Exponential::gamma");
  }
  for (const double scale : {0.0, -10.0, nan, inf}) {
    require_rejected<T>(Scheduled<update::Sgd, schedule::InverseSqrt>{.schedule = {.scale = scale}},
                        "schedule::InverseSqrt::scale");
  }
  require_rejected<T>(Scheduled<update::Sgd, schedule::LinearWarmup<>>{.schedule = {.steps = 0}},
                      "schedule::LinearWarmup::steps");
  require_rejected<T>(
      Scheduled<update::Sgd, schedule::LinearWarmup<schedule::StepDecay>>{
          .schedule = {.then = {.gamma = 2.0}}},
      "schedule::StepDecay::gamma");
}

TEST_CASE("Precision rounds a double as a conversion to float or double does", "[rules]") {
  const asyncopt::Precision f = asyncopt::Precision::of<float>();
  const asyncopt::Precision d = asyncopt::Precision::of<double>();
  const double flt_max = std::numeric_limits<float>::max();
  const double half_ulp = std::ldexp(1.0, 127 - 24);  // half the spacing of floats at FLT_MAX
  CHECK(f.name == "float");
  CHECK(d.name == "double");
  // Up to FLT_MAX plus half an ulp a value rounds to FLT_MAX; from there on to infinity.
  CHECK(f.round(3.4028235e38) == flt_max);
  CHECK(f.round(flt_max + 0.5 * half_ulp) == flt_max);
  CHECK(std::isinf(f.round(flt_max + half_ulp)));
  CHECK(f.round(-1e39) == -std::numeric_limits<double>::infinity());
  CHECK(f.holds(3.4028235e38));
  CHECK_FALSE(f.holds(3.4028236e38));
  CHECK(d.holds(1e300));
  // Small values: a denormal float is kept (not 0), below it the value becomes 0.
  CHECK(f.represents(1e-45));
  CHECK(f.round(1e-45) == static_cast<double>(std::numeric_limits<float>::denorm_min()));
  CHECK_FALSE(f.represents(1e-46));
  CHECK(f.holds(1e-46));
  CHECK(d.represents(1e-300));
  // Zeros, negative values and the rounding of ordinary values.
  CHECK(f.represents(0.0));
  CHECK(f.represents(-0.0));
  CHECK(f.represents(-2.5));
  CHECK(f.round(0.1) == static_cast<double>(0.1F));
  CHECK(d.round(0.1) == 0.1);
  CHECK(f.round(1.0 - 1e-11) == 1.0);
  CHECK_FALSE(f.represents(std::numeric_limits<double>::quiet_NaN()));
}

TEST_CASE(
    "settings that float cannot hold are refused by a float store and accepted by a double "
    "one, through decorators too",
    "[rules]") {
  using update::Scheduled;
  // Each is valid as a double but turns into inf, 0 or 1 as a float, which would break the
  // run at its first update instead of at the start.
  const double too_large = 1e39;        // > FLT_MAX: inf in float
  const double too_small = 1e-50;       // < the smallest float: 0 in float
  const double almost_one = 1 - 1e-11;  // 1 in float: a decay that never forgets
  auto refused = [&](const auto& rule, const std::string& message) {
    require_rejected<float>(rule, message);
    std::vector<double> w = {1.0, -2.0, 3.0};
    const OptimizerOf<double, std::decay_t<decltype(rule)>, Locked> opt(rule);
    REQUIRE_NOTHROW(opt.attach(w, 1));
  };
  refused(update::Sgd{.learning_rate = too_large},
          "Sgd::learning_rate is 1e+39, which is inf in float");
  refused(update::Sgd{.learning_rate = too_small},
          "Sgd::learning_rate is 1e-50, which is 0 in float");
  refused(update::MomentumCorrection{.beta = almost_one},
          "MomentumCorrection::beta is 0.99999999999, which is 1 in float");
  refused(update::HeavyBall{.momentum = -almost_one},
          "HeavyBall::momentum is -0.99999999999, which is -1 in float");
  refused(update::Adam{.beta2 = almost_one}, "Adam::beta2 is 0.99999999999, which is 1 in float");
  refused(update::Adam{.epsilon = too_small}, "Adam::epsilon is 1e-50, which is 0 in float");
  refused(update::AdaptiveDelayCompensated{.lambda0 = too_large},
          "AdaptiveDelayCompensated::lambda0 is 1e+39, which is inf in float");
  refused(update::DelayCompensated{.lambda = too_large}, "DelayCompensated::lambda is 1e+39");
  refused(update::ClipByValue<update::Sgd>{.limit = too_small},
          "ClipByValue::limit is 1e-50, which is 0");
  // Decorators and schedules check the rule they wrap in the same precision.
  const update::Sgd bad{.learning_rate = too_large};
  refused(update::StalenessAware<update::Sgd>{bad}, "Sgd::learning_rate is 1e+39");
  refused(update::WeightDecay<update::Sgd>{.inner = bad}, "Sgd::learning_rate is 1e+39");
  refused(update::ClipByNorm<update::Sgd>{.inner = bad}, "Sgd::learning_rate is 1e+39");
  refused(Scheduled<update::Sgd, schedule::InverseSqrt>{.inner = bad},
          "Sgd::learning_rate is 1e+39");
  // Where 0 or infinity is harmless in float, the setting is accepted: a decay that becomes
  // 0, a clipping limit beyond float's range (it clips nothing), a norm compared in double.
  std::vector<float> wf = {1.0F, 2.0F};
  REQUIRE_NOTHROW(
      OptimizerOf<float, update::Adam, Locked>(update::Adam{.beta1 = too_small}).attach(wf, 1));
  REQUIRE_NOTHROW(OptimizerOf<float, update::ClipByValue<update::Sgd>, Locked>(
                      update::ClipByValue<update::Sgd>{.limit = too_large})
                      .attach(wf, 1));
  REQUIRE_NOTHROW(OptimizerOf<float, update::ClipByNorm<update::Sgd>, Locked>(
                      update::ClipByNorm<update::Sgd>{.max_norm = too_large})
                      .attach(wf, 1));
  // A zero stays a valid zero (no decay, no lambda).
  const OptimizerOf<float, update::DelayCompensated, Locked> zero_lambda(
      update::DelayCompensated{.lambda = 0.0});
  std::vector<float> w = {1.0F, 2.0F};
  REQUIRE_NOTHROW(zero_lambda.attach(w, 1));
}

// =============================================================================================
// 10. Delay compensation needs a pull.
// =============================================================================================

TEMPLATE_TEST_CASE("a delay-compensated push without a pull throws std::logic_error", "[rules]",
                   float, double) {
  auto check = [&](const char* name, const auto& rule) {
    using Rule = std::decay_t<decltype(rule)>;
    for_each_policy([&](const char* policy_name, const auto& policy) {
      INFO(name << ", " << policy_name);
      constexpr std::size_t n = 17;
      std::mt19937_64 rng(43);
      const auto w0 = random_vector<TestType>(rng, n);
      Session<TestType, Rule, std::decay_t<decltype(policy)>> s(rule, policy, w0);
      const auto dense = random_gradient<TestType>(rng, n, false);
      const auto sparse = random_gradient<TestType>(rng, n, true);
      REQUIRE_THROWS_AS(s.push(0, dense), std::logic_error);
      REQUIRE_THROWS_WITH(s.push(0, dense), Catch::Contains("pull"));
      REQUIRE_THROWS_WITH(s.push(1, sparse), Catch::Contains("pull"));
      REQUIRE(same_bits(s.w, w0));
      REQUIRE(s.store().version() == 0);
      s.pull(0);
      REQUIRE(s.push(0, dense).applied);
    });
  };
  check("DelayCompensated", dc);
  check("AdaptiveDelayCompensated", dca);
  check("StalenessAware<DelayCompensated>", update::StalenessAware<update::DelayCompensated>{dc});
  check("Scheduled<AdaptiveDelayCompensated, Formula>",
        update::Scheduled<update::AdaptiveDelayCompensated, schedule::StepDecay>{.inner = dca});
}

// =============================================================================================
// 11. Rules written by users, as docs/guide.md shows them.
// =============================================================================================

namespace math = asyncopt::update::math;

// The guide's example: RMSProp (Tieleman and Hinton, 2012), written once for scalars and SIMD
// batches with math::sqrt.
struct RmsProp {
  double learning_rate = 0.01;
  double rho = 0.9;
  double epsilon = 1e-8;

  static constexpr std::size_t state_slots = 1;  // the mean square v

  template <class Scalar>
  struct Formula {
    Scalar learning_rate;
    Scalar rho;
    Scalar one_minus_rho;
    Scalar epsilon;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 1>& state) const {
      V& v = state[0];
      v = V(rho) * v + V(one_minus_rho) * g * g;
      w -= V(learning_rate) * g / (math::sqrt(v) + V(epsilon));
    }
  };

  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale), static_cast<Scalar>(rho),
            static_cast<Scalar>(1.0 - rho), static_cast<Scalar>(epsilon)};
  }

  void validate() const {
    if (!(learning_rate > 0.0 && rho >= 0.0 && rho < 1.0 && epsilon > 0.0)) {
      throw std::invalid_argument(
          "RmsProp: learning_rate and epsilon must be positive, rho in [0, 1)");
    }
  }
};

// The guide's example of a choice per element without a branch: signSGD (Bernstein et al.,
// 2018), w <- w - lr * sign(g), with sign(0) = 0.
struct SignSgd {
  double learning_rate = 0.01;

  static constexpr std::size_t state_slots = 0;

  template <class Scalar>
  struct Formula {
    Scalar learning_rate;

    template <class V>
    ASYNCOPT_HD void operator()(V& w, const V& g, std::array<V, 0>& /*state*/) const {
      const V zero(0);
      const V sign = math::select(g > zero, V(1), math::select(g < zero, V(-1), zero));
      w -= V(learning_rate) * sign;
    }
  };

  template <class Scalar>
  [[nodiscard]] Formula<Scalar> formula(const asyncopt::UpdateInfo& info) const {
    return {static_cast<Scalar>(learning_rate * info.lr_scale)};
  }

  void validate() const { update::detail::require_learning_rate("SignSgd", learning_rate); }
};

static_assert(asyncopt::UpdateRule<RmsProp> && asyncopt::UpdateRule<SignSgd>);

// Pushes the same dense gradient `pushes` times from one worker through an optimizer over `w`
// built from the rule's constructor, and returns the parameters.
template <class T, class Rule, class Policy>
std::vector<T> push_constant(const Rule& rule, const Policy& policy, std::vector<T> w,
                             const std::vector<T>& g, int pushes) {
  const asyncopt::AsyncOptimizer<T, Rule, Policy> optimizer(rule, policy);
  auto store = optimizer.attach(w, 1);
  auto handle = store->worker(0);
  std::vector<T> pulled(w.size());
  for (int t = 0; t < pushes; ++t) {
    handle.pull(std::span<T>(pulled));
    REQUIRE(handle.push(std::span<const T>(g)).applied);
  }
  return w;
}

TEMPLATE_TEST_CASE(
    "user-written rules run on batches and scalars alike and match their closed forms", "[rules]",
    float, double) {
  constexpr int pushes = 50;
  for_each_policy([&](const char* policy_name, const auto& policy) {
    for (const std::size_t n : lengths) {
      INFO(policy_name << ", n = " << n);
      std::mt19937_64 rng(77 + n);
      const auto w0 = random_vector<TestType>(rng, n);
      auto g = random_vector<TestType>(rng, n);
      // Zero gradients, in the SIMD body (where n allows one) and in the scalar tail:
      // sign(0) = 0, and RMSProp leaves those parameters alone too.
      const std::vector<std::size_t> still =
          n > 1 ? std::vector<std::size_t>{0, n - 1} : std::vector<std::size_t>{};
      for (const std::size_t i : still) {
        g[i] = TestType{0};
      }

      // RMSProp from v = 0 under a constant gradient: v_t = (1 - rho^t) g^2.
      const RmsProp rms{.learning_rate = 0.01, .rho = 0.9, .epsilon = 1e-3};
      const auto w_rms = push_constant(rms, policy, w0, g, pushes);
      // signSGD: w_T = w_0 - T * lr * sign(g).
      const SignSgd sign{.learning_rate = 0.125};
      const auto w_sign = push_constant(sign, policy, w0, g, pushes);

      double rms_error = 0.0;
      double sign_error = 0.0;
      double moved = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        const double gi = static_cast<double>(g[i]);
        double expected = static_cast<double>(w0[i]);
        for (int t = 1; t <= pushes; ++t) {
          const double v = (1.0 - std::pow(rms.rho, t)) * gi * gi;
          expected -= rms.learning_rate * gi / (std::sqrt(v) + rms.epsilon);
        }
        rms_error = std::max(rms_error, relative_error(static_cast<double>(w_rms[i]), expected));
        const double sign_g = gi > 0.0 ? 1.0 : (gi < 0.0 ? -1.0 : 0.0);
        const double expected_sign =
            static_cast<double>(w0[i]) - pushes * sign.learning_rate * sign_g;
        sign_error =
            std::max(sign_error, relative_error(static_cast<double>(w_sign[i]), expected_sign));
        moved = std::max(moved, std::abs(static_cast<double>(w_rms[i] - w0[i])));
      }
      CAPTURE(rms_error, sign_error, moved);
      REQUIRE(moved > 0.1);
      REQUIRE(rms_error <= drift_bound<TestType>);
      REQUIRE(sign_error <= drift_bound<TestType>);
      for (const std::size_t i : still) {
        REQUIRE(w_rms[i] == w0[i]);
        REQUIRE(w_sign[i] == w0[i]);
      }
    }
  });
}
