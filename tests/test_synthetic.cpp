// The RCV1-like generator: reproducibility, the shape and normalisation of every row, the
// row-length and Zipf statistics it promises, the planted labels, and option validation.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <catch2/catch.hpp>

#include <asyncopt/io/synthetic.hpp>
#include <asyncopt/objective/logistic.hpp>

namespace {

using asyncopt::io::generate_rcv1_like;
using asyncopt::io::Rcv1LikeDataset;
using asyncopt::io::Rcv1LikeOptions;
using Catch::Contains;

template <class T>
using Sparse = Eigen::SparseMatrix<T, Eigen::RowMajor>;

// A few thousand rows: enough for the statistics below, fast under the sanitizers.
constexpr std::size_t rows = 4000;

const Rcv1LikeDataset<float>& shared_float() {
  static const auto data = generate_rcv1_like<float>({.examples = rows});
  return data;
}

// Bit-for-bit equality is the point, so object representations are compared on purpose.
// NOLINTBEGIN(bugprone-suspicious-memory-comparison)
template <class T>
bool identical(const Rcv1LikeDataset<T>& a, const Rcv1LikeDataset<T>& b) {
  const auto n = static_cast<std::size_t>(a.data.rows());
  const auto nnz = static_cast<std::size_t>(a.data.nonZeros());
  return a.data.rows() == b.data.rows() && a.data.cols() == b.data.cols() &&
         a.data.nonZeros() == b.data.nonZeros() &&
         std::memcmp(a.data.outerIndexPtr(), b.data.outerIndexPtr(), (n + 1) * sizeof(int)) == 0 &&
         std::memcmp(a.data.innerIndexPtr(), b.data.innerIndexPtr(), nnz * sizeof(int)) == 0 &&
         std::memcmp(a.data.valuePtr(), b.data.valuePtr(), nnz * sizeof(T)) == 0 &&
         a.labels.size() == b.labels.size() &&
         std::memcmp(a.labels.data(), b.labels.data(), n * sizeof(T)) == 0 &&
         std::memcmp(a.clean_labels.data(), b.clean_labels.data(), n * sizeof(T)) == 0 &&
         a.weights.size() == b.weights.size() &&
         std::memcmp(a.weights.data(), b.weights.data(),
                     static_cast<std::size_t>(a.weights.size()) * sizeof(T)) == 0 &&
         std::memcmp(&a.bias, &b.bias, sizeof(T)) == 0 && a.feature_by_rank == b.feature_by_rank;
}
// NOLINTEND(bugprone-suspicious-memory-comparison)

/// The number of rows holding each Zipf rank.
template <class T>
std::vector<double> rows_per_rank(const Rcv1LikeDataset<T>& set) {
  std::vector<std::size_t> rank_of(static_cast<std::size_t>(set.data.cols()));
  for (Eigen::Index r = 0; r < set.feature_by_rank.size(); ++r) {
    rank_of[static_cast<std::size_t>(set.feature_by_rank[r])] = static_cast<std::size_t>(r);
  }
  std::vector<double> count(rank_of.size(), 0.0);
  for (Eigen::Index k = 0; k < set.data.nonZeros(); ++k) {
    count[rank_of[static_cast<std::size_t>(set.data.innerIndexPtr()[k])]] += 1.0;
  }
  return count;
}

/// Least-squares slope of log(mean count per rank) against log(rank) over octaves of ranks
/// [128, 256), ..., [8192, 16384): binning keeps every point at hundreds of counts or more.
double log_log_slope(const std::vector<double>& count) {
  std::vector<double> x;
  std::vector<double> y;
  for (std::size_t low = 128; 2 * low <= 16384; low *= 2) {
    double sum = 0.0;
    for (std::size_t r = low; r < 2 * low; ++r) {
      sum += count[r];
    }
    x.push_back(std::log(static_cast<double>(low)));
    y.push_back(std::log(sum / static_cast<double>(low)));
  }
  const auto points = static_cast<double>(x.size());
  double mx = 0.0;
  double my = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    mx += x[i] / points;
    my += y[i] / points;
  }
  double sxy = 0.0;
  double sxx = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
  }
  return sxy / sxx;
}

/// Row i's margin under the planted model, summed in double in column order as the generator
/// does.
template <class T>
double planted_margin(const Rcv1LikeDataset<T>& set, Eigen::Index i) {
  double z = 0.0;
  for (typename Sparse<T>::InnerIterator it(set.data, i); it; ++it) {
    z += static_cast<double>(it.value()) * static_cast<double>(set.weights[it.col()]);
  }
  return z + static_cast<double>(set.bias);
}

}  // namespace

TEST_CASE("generate_rcv1_like: the same seed gives the same data bit for bit") {
  const Rcv1LikeOptions options{.examples = 1500, .seed = 42};
  SECTION("float") {
    const auto a = generate_rcv1_like<float>(options);
    const auto b = generate_rcv1_like<float>(options);
    CHECK(identical(a, b));
    auto other = options;
    other.seed = 43;
    const auto c = generate_rcv1_like<float>(other);
    CHECK_FALSE(identical(a, c));
    CHECK(a.data.nonZeros() != c.data.nonZeros());
    CHECK(a.labels != c.labels);
    CHECK(a.weights != c.weights);
    CHECK(a.feature_by_rank != c.feature_by_rank);
  }
  SECTION("double") {
    const auto a = generate_rcv1_like<double>(options);
    const auto b = generate_rcv1_like<double>(options);
    CHECK(identical(a, b));
    // The same random choices as in float: the structure matches, the values to rounding.
    const auto f = generate_rcv1_like<float>(options);
    REQUIRE(a.data.nonZeros() == f.data.nonZeros());
    CHECK(std::equal(a.data.innerIndexPtr(), a.data.innerIndexPtr() + a.data.nonZeros(),
                     f.data.innerIndexPtr()));
    CHECK((a.data.cast<float>() - f.data).norm() < 1e-4);
  }
}

TEST_CASE("generate_rcv1_like: shape, sorted ids, positive values, unit rows") {
  const auto& set = shared_float();
  REQUIRE(set.data.rows() == static_cast<Eigen::Index>(rows));
  REQUIRE(set.data.cols() == 47236);
  CHECK(set.data.isCompressed());
  CHECK(set.labels.size() == set.data.rows());
  CHECK(set.clean_labels.size() == set.data.rows());
  CHECK(set.weights.size() == set.data.cols());

  std::size_t bad_order = 0;
  std::size_t bad_value = 0;
  std::size_t bad_norm = 0;
  std::size_t empty = 0;
  for (Eigen::Index i = 0; i < set.data.rows(); ++i) {
    double squares = 0.0;
    int previous = -1;
    std::size_t count = 0;
    for (Sparse<float>::InnerIterator it(set.data, i); it; ++it) {
      bad_order += it.index() > previous ? 0 : 1;
      previous = static_cast<int>(it.index());
      bad_value += it.value() > 0.0F && std::isfinite(it.value()) ? 0 : 1;
      squares += static_cast<double>(it.value()) * static_cast<double>(it.value());
      ++count;
    }
    empty += count == 0 ? 1 : 0;
    bad_norm += std::abs(std::sqrt(squares) - 1.0) <= 1e-5 ? 0 : 1;
  }
  CHECK(bad_order == 0);
  CHECK(bad_value == 0);
  CHECK(bad_norm == 0);
  CHECK(empty == 0);

  // Every label is 0 or 1; feature_by_rank is a permutation of the ids.
  CHECK(((set.labels.array() == 0.0F) || (set.labels.array() == 1.0F)).all());
  CHECK(((set.clean_labels.array() == 0.0F) || (set.clean_labels.array() == 1.0F)).all());
  std::vector<int> ids(set.feature_by_rank.data(),
                       set.feature_by_rank.data() + set.feature_by_rank.size());
  std::sort(ids.begin(), ids.end());
  for (std::size_t j = 0; j < ids.size(); ++j) {
    REQUIRE(ids[j] == static_cast<int>(j));
  }
  // The ranks are scattered over the ids by default, in rank order on request.
  CHECK(set.feature_by_rank[0] != 0);
  const auto in_order = generate_rcv1_like<float>({.examples = 10, .shuffle_features = false});
  for (Eigen::Index r = 0; r < in_order.feature_by_rank.size(); ++r) {
    REQUIRE(in_order.feature_by_rank[r] == r);
  }
}

TEST_CASE("generate_rcv1_like: row lengths are lognormal with mean 74") {
  const auto& set = shared_float();
  std::vector<double> length(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    const auto* outer = set.data.outerIndexPtr();
    length[i] = static_cast<double>(outer[i + 1] - outer[i]);
  }
  double mean = 0.0;
  for (const double n : length) {
    mean += n / static_cast<double>(rows);
  }
  double variance = 0.0;
  for (const double n : length) {
    variance += (n - mean) * (n - mean) / static_cast<double>(rows - 1);
  }
  // Sigma 0.6 gives a standard deviation of 74 * 0.66 = 49 per row, 0.77 for the mean of
  // 4000 rows: 3 is about four standard errors.
  CHECK(std::abs(mean - 74.0) < 3.0);
  // Coefficient of variation sqrt(exp(0.36) - 1) = 0.66.
  CHECK(std::sqrt(variance) / mean == Approx(0.66).margin(0.08));
  const auto [shortest, longest] = std::minmax_element(length.begin(), length.end());
  CHECK(*shortest >= 1.0);
  CHECK(*shortest < 20.0);
  CHECK(*longest > 250.0);

  // Sigma 0: every row has round(mean) non-zeros.
  const auto fixed =
      generate_rcv1_like<float>({.examples = 200, .mean_nonzeros = 30.4, .nonzeros_sigma = 0.0});
  for (Eigen::Index i = 0; i < fixed.data.rows(); ++i) {
    REQUIRE(fixed.data.outerIndexPtr()[i + 1] - fixed.data.outerIndexPtr()[i] == 30);
  }
}

TEST_CASE("generate_rcv1_like: feature frequencies follow Zipf's law") {
  const auto count = rows_per_rank(shared_float());
  // The ten most frequent ranks each occur more often than any of ranks 100 to 110.
  const double top_low = *std::min_element(count.begin(), count.begin() + 10);
  const double mid_high = *std::max_element(count.begin() + 100, count.begin() + 111);
  CHECK(top_low > mid_high);
  // Over ranks 128 to 16384 the fraction of rows holding a rank is about mean_nonzeros *
  // p_r, proportional to r^-s. The few most frequent ranks saturate (they are in nearly
  // every row) and flatten the curve by about 0.01 at rank 128; the sampling error of the
  // slope over seven octaves with hundreds to thousands of counts each is about 0.01. 0.1
  // covers both with room and still tells s = 1 from s = 0.8 or 1.2.
  const double slope = log_log_slope(count);
  CHECK(slope == Approx(-1.0).margin(0.1));

  // The exponent is an option; the measured slope follows it.
  const auto steep = generate_rcv1_like<float>({.examples = rows, .zipf_exponent = 1.5});
  CHECK(log_log_slope(rows_per_rank(steep)) == Approx(-1.5).margin(0.1));
}

TEST_CASE("generate_rcv1_like: the planted model sets the labels") {
  SECTION("noiseless labels are classified perfectly and are balanced") {
    const auto set = generate_rcv1_like<float>({.examples = rows, .flip_probability = 0.0});
    CHECK(set.labels == set.clean_labels);
    const double positives = static_cast<double>(set.labels.sum()) / static_cast<double>(rows);
    CHECK(positives >= 0.3);
    CHECK(positives <= 0.7);
    // Recomputing the margin as the generator does gives its labels. A margin within 1e-9
    // of zero could round differently if the compiler fused one sum and not the other.
    std::size_t wrong = 0;
    std::size_t near_zero = 0;
    for (Eigen::Index i = 0; i < set.data.rows(); ++i) {
      const double z = planted_margin(set, i);
      if (std::abs(z) < 1e-9) {
        ++near_zero;
      } else if ((z >= 0.0) != (set.clean_labels[i] == 1.0F)) {
        ++wrong;
      }
    }
    CHECK(wrong == 0);
    CHECK(near_zero <= rows / 1000);
    // The planted weights are sparse as asked: 10% of the features.
    const auto nonzero = (set.weights.array() != 0.0F).count();
    CHECK(nonzero == std::lround(0.1 * 47236));
  }
  SECTION("flipped labels agree with the model at about 1 - flip_probability") {
    const auto set = generate_rcv1_like<float>({.examples = rows, .flip_probability = 0.1});
    double agree = 0.0;
    for (Eigen::Index i = 0; i < set.data.rows(); ++i) {
      agree += set.labels[i] == set.clean_labels[i] ? 1.0 : 0.0;
    }
    agree /= static_cast<double>(rows);
    // Standard error sqrt(0.1 * 0.9 / 4000) = 0.0047; 0.025 is over five.
    CHECK(agree == Approx(0.9).margin(0.025));
    const double positives = static_cast<double>(set.labels.sum()) / static_cast<double>(rows);
    CHECK(positives >= 0.3);
    CHECK(positives <= 0.7);
  }
  SECTION("positive_fraction sets the balance") {
    const auto set = generate_rcv1_like<float>(
        {.examples = rows, .positive_fraction = 0.2, .flip_probability = 0.0});
    const double positives = static_cast<double>(set.labels.sum()) / static_cast<double>(rows);
    CHECK(positives == Approx(0.2).margin(0.02));
  }
}

TEST_CASE("generate_rcv1_like: LogisticRegression accepts the data") {
  auto set = generate_rcv1_like<float>({.examples = 1000, .flip_probability = 0.0});
  const auto planted = set.planted_parameters();
  asyncopt::objective::LogisticRegression<Sparse<float>> model(set.data, std::move(set.labels));
  REQUIRE(model.dimension() == 47237);
  const std::vector<float> zero(model.dimension(), 0.0F);
  CHECK(model.loss(zero) == Approx(std::log(2.0)).epsilon(1e-12));
  // In float the planted model still separates the noiseless labels.
  CHECK(model.accuracy(planted) >= 0.999);
}

TEST_CASE("generate_rcv1_like: rows that hold most of the mass are still drawn exactly") {
  // Half of 64 features per row, and a steep Zipf over 1000: repeats pile up and the
  // generator finishes such rows by weighted keys.
  SECTION("half the features") {
    const auto set = generate_rcv1_like<double>(
        {.examples = 300, .features = 64, .mean_nonzeros = 32, .nonzeros_sigma = 0.0});
    for (Eigen::Index i = 0; i < set.data.rows(); ++i) {
      REQUIRE(set.data.outerIndexPtr()[i + 1] - set.data.outerIndexPtr()[i] == 32);
      int previous = -1;
      for (Sparse<double>::InnerIterator it(set.data, i); it; ++it) {
        REQUIRE(it.index() > previous);
        previous = static_cast<int>(it.index());
      }
    }
    // The rarest ranks are the least frequent, even when most ranks are in every other row.
    const auto count = rows_per_rank(set);
    CHECK(count[0] == 300.0);
    CHECK(count[0] > count[63]);
    CHECK(std::accumulate(count.begin(), count.begin() + 8, 0.0) >
          std::accumulate(count.begin() + 56, count.end(), 0.0));
  }
  SECTION("a steep Zipf") {
    const auto set = generate_rcv1_like<double>(
        {.examples = 200, .features = 1000, .mean_nonzeros = 200, .zipf_exponent = 3.0});
    for (Eigen::Index i = 0; i < set.data.rows(); ++i) {
      int previous = -1;
      for (Sparse<double>::InnerIterator it(set.data, i); it; ++it) {
        REQUIRE(it.index() > previous);
        previous = static_cast<int>(it.index());
      }
    }
  }
}

TEST_CASE("generate_rcv1_like: invalid options are named") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto check = [](Rcv1LikeOptions options, const std::string& field) {
    CAPTURE(field);
    REQUIRE_THROWS_AS(generate_rcv1_like<float>(options), std::invalid_argument);
    REQUIRE_THROWS_WITH(generate_rcv1_like<float>(options),
                        Contains("Rcv1LikeOptions::" + field + " "));
  };
  check({.examples = 0}, "examples");
  check({.examples = std::size_t{1} << 40U}, "examples");
  check({.examples = 30'000'000}, "examples");  // 2.2e9 expected non-zeros
  check({.features = 1}, "features");
  check({.features = std::size_t{1} << 40U}, "features");
  check({.mean_nonzeros = 0.5}, "mean_nonzeros");
  check({.features = 100, .mean_nonzeros = 51}, "mean_nonzeros");
  check({.mean_nonzeros = nan}, "mean_nonzeros");
  check({.nonzeros_sigma = -0.1}, "nonzeros_sigma");
  check({.nonzeros_sigma = nan}, "nonzeros_sigma");
  check({.zipf_exponent = -1.0}, "zipf_exponent");
  check({.zipf_exponent = std::numeric_limits<double>::infinity()}, "zipf_exponent");
  check({.repeat_probability = 1.0}, "repeat_probability");
  check({.weight_density = 0.0}, "weight_density");
  check({.weight_density = 1.5}, "weight_density");
  check({.positive_fraction = 0.0}, "positive_fraction");
  check({.positive_fraction = 1.0}, "positive_fraction");
  check({.flip_probability = 0.6}, "flip_probability");
  check({.flip_probability = nan}, "flip_probability");
  REQUIRE_THROWS_WITH(generate_rcv1_like<float>({.flip_probability = 0.6}),
                      Contains("must be in [0, 0.5], got 0.6"));
  // The defaults and the boundaries are accepted.
  CHECK_NOTHROW(Rcv1LikeOptions{}.validate());
  CHECK_NOTHROW(Rcv1LikeOptions{
      .nonzeros_sigma = 0.0, .zipf_exponent = 0.0, .weight_density = 1.0, .flip_probability = 0.5}
                    .validate());
}
