// A seeded generator of sparse text-classification data with the statistics of RCV1, for
// Hogwild!-style benchmarks where the real corpus is not at hand. docs/data.md says what it
// models and what it does not. One cohesive thing, hence its length: the generator's
// settings, its model of document lengths, vocabulary and labels, and their checks.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>

#include <asyncopt/core/random.hpp>

namespace asyncopt::io {

namespace detail {

/// The shortest decimal that reads back as v ("0.6", not "0.600000"), for messages.
[[nodiscard]] inline std::string shortest_decimal(double v) {
  std::array<char, 32> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), v);
  return {buffer.data(), result.ptr};
}

}  // namespace detail

/// Options of generate_rcv1_like(), set with designated initializers:
/// `generate_rcv1_like<float>({.examples = 20'000, .seed = 7})`. The defaults give RCV1's
/// shape (LYRL2004 tf-idf version): 47,236 features, about 74 non-zeros per row.
struct Rcv1LikeOptions {
  /// Rows. RCV1 has 804,414; the default, about 7.4 million non-zeros (60 MB as float),
  /// streams from memory rather than cache like the real set, yet builds in a fraction of a
  /// second.
  std::size_t examples = 100'000;
  /// Columns (the vocabulary): RCV1's 47,236 stems.
  std::size_t features = 47'236;
  /// Mean non-zeros per row (distinct features of a document). RCV1: about 74 to 76.
  double mean_nonzeros = 74.0;
  /// Spread of the row lengths: a row has round(exp(mu + sigma N(0, 1))) non-zeros with mu
  /// chosen so the mean is mean_nonzeros, clamped to [1, features / 2]. 0.6 (coefficient of
  /// variation 0.66) spans RCV1's range from a few to about a thousand: with the default
  /// seed, 300,000 rows hold 4 to 1,057 non-zeros and 804,414 rows 4 to 1,395.
  double nonzeros_sigma = 0.6;
  /// Feature ranks are drawn with probability proportional to 1 / rank^s (Zipf's law;
  /// s = 1 for word frequencies in English text), without repeats within a row.
  double zipf_exponent = 1.0;
  /// Term frequency of a feature in a row: 1 + Geometric, each further occurrence with this
  /// probability (0.3: 70% of a row's features occur once, the mean is 1.43).
  double repeat_probability = 0.3;
  /// Scatter the ranks over the feature ids with a seeded permutation, as RCV1's
  /// alphabetical ids do; when false, id = rank and the most frequent features share cache
  /// lines, which a shared-memory benchmark would notice.
  bool shuffle_features = true;
  /// Fraction of the planted weights that are non-zero (at least one).
  double weight_density = 0.1;
  /// Fraction of rows whose noiseless label is 1 (the planted bias is set to give it).
  double positive_fraction = 0.5;
  /// Probability that a row's label is flipped after the planted model has set it. Non-zero
  /// by default so that the classes overlap and an unregularised logistic loss has a
  /// minimiser.
  double flip_probability = 0.05;
  /// Seed of every random choice; the same seed gives the same data.
  std::uint64_t seed = 0x5eed;

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& what) {
      throw std::invalid_argument("asyncopt: Rcv1LikeOptions::" + what);
    };
    auto text = [](double v) { return detail::shortest_decimal(v); };
    constexpr auto max_index = static_cast<std::size_t>(std::numeric_limits<int>::max());
    if (examples == 0 || examples > max_index) {
      fail("examples must be in [1, " + std::to_string(max_index) + "], got " +
           std::to_string(examples));
    }
    if (features < 2 || features > max_index) {
      fail("features must be in [2, " + std::to_string(max_index) + "], got " +
           std::to_string(features));
    }
    const std::size_t longest = features / 2;  // the longest row, in non-zeros
    const auto half = static_cast<double>(longest);
    if (!(mean_nonzeros >= 1.0 && mean_nonzeros <= half)) {
      fail("mean_nonzeros must be in [1, features / 2 = " + text(half) + "], got " +
           text(mean_nonzeros));
    }
    const double expected = static_cast<double>(examples) * mean_nonzeros;
    if (expected > static_cast<double>(max_index)) {
      fail("examples = " + std::to_string(examples) +
           " with mean_nonzeros = " + text(mean_nonzeros) + " expects " + text(expected) +
           " non-zeros, more than a sparse matrix with int indices holds (" +
           std::to_string(max_index) + ")");
    }
    if (!(nonzeros_sigma >= 0.0 && nonzeros_sigma <= 3.0)) {
      fail("nonzeros_sigma must be in [0, 3], got " + text(nonzeros_sigma));
    }
    if (!(zipf_exponent >= 0.0 && zipf_exponent <= 3.0)) {
      fail("zipf_exponent must be in [0, 3], got " + text(zipf_exponent));
    }
    if (!(repeat_probability >= 0.0 && repeat_probability <= 0.9)) {
      fail("repeat_probability must be in [0, 0.9], got " + text(repeat_probability));
    }
    if (!(weight_density > 0.0 && weight_density <= 1.0)) {
      fail("weight_density must be in (0, 1], got " + text(weight_density));
    }
    if (!(positive_fraction > 0.0 && positive_fraction < 1.0)) {
      fail("positive_fraction must be in (0, 1), got " + text(positive_fraction));
    }
    if (!(flip_probability >= 0.0 && flip_probability <= 0.5)) {
      fail("flip_probability must be in [0, 0.5], got " + text(flip_probability));
    }
  }
};

/// A generated data set: the rows, their labels, and the model that labelled them.
template <class Scalar>
struct Rcv1LikeDataset {
  /// examples x features, one row per example; column ids strictly increase within a row,
  /// every value is positive and every row has L2 norm 1.
  Eigen::SparseMatrix<Scalar, Eigen::RowMajor> data;
  /// The labels, 0 or 1, after the flips of flip_probability.
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> labels;
  /// The labels before the flips: 1 exactly when data.row(i) . weights + bias >= 0, the sum
  /// taken in double over the stored values in column order.
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> clean_labels;
  /// The planted weights, one per feature; a weight_density fraction of them is non-zero.
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> weights;
  /// The planted bias: half-way between the two margins that bracket positive_fraction
  /// (then rounded to Scalar).
  Scalar bias = 0;
  /// feature_by_rank[r] is the id of the feature of Zipf rank r (0 the most frequent).
  Eigen::VectorXi feature_by_rank;

  /// [weights..., bias]: the parameter layout of objective::LogisticRegression with an
  /// intercept.
  [[nodiscard]] std::vector<Scalar> planted_parameters() const {
    std::vector<Scalar> w(weights.data(), weights.data() + weights.size());
    w.push_back(bias);
    return w;
  }
};

namespace detail {

/// Seeds of the generator's independent streams, so that one part (the labels, say) can
/// change without shifting the random numbers of another.
struct SyntheticStreams {
  std::uint64_t permutation;
  std::uint64_t weights;
  std::uint64_t lengths;
  std::uint64_t ids;
  std::uint64_t frequencies;
  std::uint64_t flips;

  explicit SyntheticStreams(std::uint64_t seed) noexcept
      : permutation(splitmix64(seed)),
        weights(splitmix64(seed)),
        lengths(splitmix64(seed)),
        ids(splitmix64(seed)),
        frequencies(splitmix64(seed)),
        flips(splitmix64(seed)) {}
};

/// p * 2^64 as an integer, for comparing a probability against a raw 64-bit draw.
[[nodiscard]] inline std::uint64_t probability_threshold(double p) noexcept {
  if (!(p > 0.0)) {
    return 0;
  }
  if (p >= 1.0) {
    return std::numeric_limits<std::uint64_t>::max();
  }
  return static_cast<std::uint64_t>(std::ldexp(p, 64));
}

/// A standard normal deviate by the Box-Muller transform.
[[nodiscard]] inline double standard_normal(Xoshiro256& rng) noexcept {
  const double u1 = 1.0 - rng.uniform();  // in (0, 1], so the logarithm is finite
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

/// Walker's alias method (Vose's construction): O(n) setup, then an index with probability
/// proportional to its weight from one 64-bit draw and one table cell.
class AliasTable {
 public:
  explicit AliasTable(const std::vector<double>& weights) : cells_(weights.size()) {
    const std::size_t n = weights.size();
    double total = 0.0;
    for (const double w : weights) {
      total += w;
    }
    std::vector<double> scaled(n);
    std::vector<std::uint32_t> small;
    std::vector<std::uint32_t> large;
    for (std::size_t i = 0; i < n; ++i) {
      scaled[i] = weights[i] / total * static_cast<double>(n);
      (scaled[i] < 1.0 ? small : large).push_back(static_cast<std::uint32_t>(i));
      cells_[i].alias = static_cast<std::uint32_t>(i);
    }
    while (!small.empty() && !large.empty()) {
      const std::uint32_t s = small.back();
      small.pop_back();
      const std::uint32_t l = large.back();
      cells_[s].threshold = probability_threshold(scaled[s]);
      cells_[s].alias = l;
      scaled[l] = (scaled[l] + scaled[s]) - 1.0;
      if (scaled[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    // What is left has probability 1 up to rounding.
    for (const std::uint32_t i : large) {
      cells_[i].threshold = std::numeric_limits<std::uint64_t>::max();
    }
    for (const std::uint32_t i : small) {
      cells_[i].threshold = std::numeric_limits<std::uint64_t>::max();
    }
  }

  [[nodiscard]] std::uint32_t operator()(Xoshiro256& rng) const noexcept {
    // The high word of draw * n picks a cell uniformly; the low word is a uniform fraction
    // independent of it.
    const auto m = static_cast<asyncopt::detail::Uint128>(rng()) * cells_.size();
    const Cell& cell = cells_[static_cast<std::size_t>(m >> 64U)];
    return static_cast<std::uint64_t>(m) < cell.threshold ? static_cast<std::uint32_t>(m >> 64U)
                                                          : cell.alias;
  }

 private:
  struct Cell {
    std::uint64_t threshold = 0;  // keep the cell's own index below this fraction of 2^64
    std::uint32_t alias = 0;
  };
  std::vector<Cell> cells_;
};

/// Draws `count` distinct ids from `table` into `out`, as successive sampling without
/// replacement: draw, reject a repeat, draw again. `taken` marks the ids already in the row
/// and is left marked. When repeats pile up (a row that holds most of the probability
/// mass, as with a steep zipf_exponent), the rest are drawn exactly by Efraimidis-Spirakis
/// keys over the free ids (Inf. Process. Lett. 97(5), 2006), so a row costs O(features) at
/// worst.
template <class Index>
void draw_distinct(const AliasTable& table, const std::vector<double>& weight, Xoshiro256& rng,
                   std::vector<std::uint8_t>& taken, std::size_t count, Index* out,
                   std::vector<std::pair<double, std::uint32_t>>& keys) {
  const std::size_t budget = taken.size() / 4;
  std::size_t drawn = 0;
  std::size_t rejected = 0;
  while (drawn < count && rejected <= budget) {
    const std::uint32_t id = table(rng);
    if (taken[id] != 0) {
      ++rejected;
      continue;
    }
    taken[id] = 1;
    out[drawn++] = static_cast<Index>(id);
  }
  if (drawn == count) {
    return;
  }
  // Key log(u) / w: the largest keys are the next ids of a successive sample.
  keys.clear();
  for (std::size_t id = 0; id < taken.size(); ++id) {
    if (taken[id] == 0) {
      const double u = 1.0 - rng.uniform();
      keys.emplace_back(std::log(u) / weight[id], static_cast<std::uint32_t>(id));
    }
  }
  const auto need = static_cast<std::ptrdiff_t>(count - drawn);
  std::nth_element(keys.begin(), keys.begin() + (need - 1), keys.end(), std::greater<>());
  for (std::ptrdiff_t j = 0; j < need; ++j) {
    const std::uint32_t id = keys[static_cast<std::size_t>(j)].second;
    taken[id] = 1;
    out[drawn++] = static_cast<Index>(id);
  }
}

}  // namespace detail

/// A sparse binary classification set with RCV1's shape, sparsity and skew.
///
/// Row i has n_i = round(exp(mu + sigma g)) distinct features (g standard normal, clamped
/// to [1, features / 2]), drawn by Zipf rank without replacement; feature f of rank r gets
/// (1 + ln tf) * ln(1 + 1 / df_r), with tf = 1 + Geometric(repeat_probability) and df_r =
/// 1 - exp(-mean_nonzeros p_r) the expected fraction of rows holding rank r (p_r its Zipf
/// probability); each row is then scaled to unit L2 norm. Labels come from a planted linear
/// model: weight_density of the features get N(0, 1) weights, the bias splits the margins
/// at positive_fraction, and each label is flipped with flip_probability.
///
/// Time O(nnz log(row length)) after O(features) setup (a row's ids are sorted); memory the
/// matrix plus O(examples + features). The same options give the same data, bit for bit,
/// with the same compiler and math library. Elsewhere the ids, row lengths and labels are
/// the same in practice (an ulp of difference in exp, log or pow changes one only where it
/// straddles a rounding boundary) and the values may differ in the last bit.
///
/// Throws std::invalid_argument naming the option when `options` are invalid, or naming
/// `examples` when the non-zeros (expected, or as drawn) would not fit the matrix's int
/// indices.
template <std::floating_point Scalar>
[[nodiscard]] Rcv1LikeDataset<Scalar> generate_rcv1_like(const Rcv1LikeOptions& options = {}) {
  using Matrix = Eigen::SparseMatrix<Scalar, Eigen::RowMajor>;
  using Index = typename Matrix::StorageIndex;
  options.validate();
  const std::size_t n = options.examples;
  const std::size_t d = options.features;
  const detail::SyntheticStreams streams(options.seed);
  Rcv1LikeDataset<Scalar> out;

  // ---- Features: rank -> id, Zipf probabilities and idf by id ------------------------------
  std::vector<std::size_t> order(d);
  if (options.shuffle_features) {
    random_permutation(order, streams.permutation);
  } else {
    std::iota(order.begin(), order.end(), std::size_t{0});
  }
  out.feature_by_rank.resize(static_cast<Eigen::Index>(d));
  std::vector<double> weight_of(d);  // Zipf weight of each id, unnormalised
  double total = 0.0;
  for (std::size_t r = 0; r < d; ++r) {
    out.feature_by_rank[static_cast<Eigen::Index>(r)] = static_cast<int>(order[r]);
    weight_of[order[r]] = std::pow(static_cast<double>(r + 1), -options.zipf_exponent);
    total += weight_of[order[r]];
  }
  std::vector<double> idf(d);
  for (std::size_t id = 0; id < d; ++id) {
    const double df = -std::expm1(-options.mean_nonzeros * weight_of[id] / total);
    idf[id] = std::log1p(1.0 / df);
  }
  const detail::AliasTable table(weight_of);
  // 1 + ln tf for the term frequencies that occur in practice.
  std::array<double, 64> log_tf{};
  for (std::size_t tf = 1; tf < log_tf.size(); ++tf) {
    log_tf[tf] = 1.0 + std::log(static_cast<double>(tf));
  }

  // ---- Planted weights ---------------------------------------------------------------------
  out.weights.setZero(static_cast<Eigen::Index>(d));
  {
    Xoshiro256 rng(streams.weights);
    const auto wanted = std::llround(options.weight_density * static_cast<double>(d));
    const auto nonzero = static_cast<std::size_t>(std::max<long long>(1, wanted));
    std::vector<std::size_t> ids(d);
    std::iota(ids.begin(), ids.end(), std::size_t{0});
    // A partial Fisher-Yates shuffle: the first `nonzero` ids are a uniform subset.
    for (std::size_t i = 0; i < nonzero; ++i) {
      std::swap(ids[i], ids[i + static_cast<std::size_t>(rng.below(d - i))]);
      out.weights[static_cast<Eigen::Index>(ids[i])] =
          static_cast<Scalar>(detail::standard_normal(rng));
    }
  }

  // ---- Row lengths -------------------------------------------------------------------------
  const double sigma = options.nonzeros_sigma;
  const double mu = std::log(options.mean_nonzeros) - 0.5 * sigma * sigma;
  const std::size_t half = d / 2;
  const auto longest = static_cast<double>(half);
  std::vector<Index> outer(n + 1);
  {
    Xoshiro256 rng(streams.lengths);
    std::size_t nnz = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double length = std::exp(mu + sigma * detail::standard_normal(rng));
      nnz += static_cast<std::size_t>(std::clamp(std::round(length), 1.0, longest));
      if (nnz > static_cast<std::size_t>(std::numeric_limits<Index>::max())) {
        throw std::invalid_argument(
            "asyncopt: Rcv1LikeOptions::examples = " + std::to_string(n) +
            " with mean_nonzeros = " + detail::shortest_decimal(options.mean_nonzeros) +
            " draws more non-zeros than a sparse matrix with int indices holds (" +
            std::to_string(std::numeric_limits<Index>::max()) + ")");
      }
      outer[i + 1] = static_cast<Index>(nnz);
    }
  }

  // ---- Rows --------------------------------------------------------------------------------
  out.data.resize(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
  out.data.resizeNonZeros(static_cast<Eigen::Index>(outer[n]));
  std::copy(outer.begin(), outer.end(), out.data.outerIndexPtr());
  Index* inner = out.data.innerIndexPtr();
  Scalar* values = out.data.valuePtr();
  std::vector<double> margin(n);
  {
    Xoshiro256 id_rng(streams.ids);
    Xoshiro256 tf_rng(streams.frequencies);
    const std::uint64_t repeat = detail::probability_threshold(options.repeat_probability);
    std::vector<std::uint8_t> taken(d, 0);
    std::vector<std::pair<double, std::uint32_t>> keys;
    std::vector<double> row_values;
    for (std::size_t i = 0; i < n; ++i) {
      const auto begin = static_cast<std::size_t>(outer[i]);
      const auto count = static_cast<std::size_t>(outer[i + 1]) - begin;
      Index* ids = inner + begin;
      detail::draw_distinct(table, weight_of, id_rng, taken, count, ids, keys);
      std::sort(ids, ids + count);
      row_values.resize(count);
      double squares = 0.0;
      for (std::size_t j = 0; j < count; ++j) {
        const auto id = static_cast<std::size_t>(ids[j]);
        taken[id] = 0;
        std::size_t tf = 1;
        while (tf_rng() < repeat) {
          ++tf;
        }
        const double v =
            (tf < log_tf.size() ? log_tf[tf] : 1.0 + std::log(static_cast<double>(tf))) * idf[id];
        row_values[j] = v;
        squares += v * v;
      }
      const double scale = 1.0 / std::sqrt(squares);
      double z = 0.0;
      for (std::size_t j = 0; j < count; ++j) {
        const auto v = static_cast<Scalar>(row_values[j] * scale);
        values[begin + j] = v;
        z += static_cast<double>(v) *
             static_cast<double>(out.weights[static_cast<Eigen::Index>(ids[j])]);
      }
      margin[i] = z;
    }
  }

  // ---- Labels ------------------------------------------------------------------------------
  // The bias puts round(n * positive_fraction) margins above the threshold: half-way between
  // the two sorted margins at the cut, so no row sits on the boundary unless margins tie.
  {
    const auto positives = std::min<std::size_t>(
        n,
        static_cast<std::size_t>(std::llround(options.positive_fraction * static_cast<double>(n))));
    std::vector<double> sorted = margin;
    double threshold = 0.0;
    if (positives == 0) {
      threshold = *std::max_element(sorted.begin(), sorted.end()) + 1.0;
    } else if (positives == n) {
      threshold = *std::min_element(sorted.begin(), sorted.end()) - 1.0;
    } else {
      const auto cut = static_cast<std::ptrdiff_t>(n - positives);
      std::nth_element(sorted.begin(), sorted.begin() + cut, sorted.end());
      const double above = sorted[static_cast<std::size_t>(cut)];
      const double below = *std::max_element(sorted.begin(), sorted.begin() + cut);
      threshold = below + 0.5 * (above - below);
    }
    out.bias = static_cast<Scalar>(-threshold);
  }
  out.labels.resize(static_cast<Eigen::Index>(n));
  out.clean_labels.resize(static_cast<Eigen::Index>(n));
  Xoshiro256 flip_rng(streams.flips);
  const std::uint64_t flip = detail::probability_threshold(options.flip_probability);
  const auto bias = static_cast<double>(out.bias);
  for (std::size_t i = 0; i < n; ++i) {
    const bool positive = margin[i] + bias >= 0.0;
    const bool flipped = flip_rng() < flip;
    const auto row = static_cast<Eigen::Index>(i);
    out.clean_labels[row] = positive ? Scalar(1) : Scalar(0);
    out.labels[row] = positive != flipped ? Scalar(1) : Scalar(0);
  }
  return out;
}

}  // namespace asyncopt::io
