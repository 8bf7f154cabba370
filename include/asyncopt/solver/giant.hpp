// GIANT: a distributed approximate Newton method in rounds.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <asyncopt/core/collective.hpp>
#include <asyncopt/core/objective.hpp>
#include <asyncopt/core/pairwise.hpp>
#include <asyncopt/core/threads.hpp>

namespace asyncopt {

/// GIANT (Wang, Roosta, Xu, Mahoney, "GIANT: Globally Improved Approximate Newton Method for
/// Distributed Optimization", NeurIPS 2018): each round, the workers' gradients on their
/// shards are summed into the full gradient g (one all-reduce); each worker solves its local
/// Newton system H_k p_k = g by conjugate gradient, with Hessian-vector products on its
/// shard only; the directions are averaged into p (a second all-reduce), and w <- w - step p,
/// the step fixed or found by a backtracking line search on the full objective. With equal
/// local Hessians one round is a Newton step; otherwise p = mean_k(H_k^{-1}) g, a better
/// direction than g the more alike the shards are.
///
/// Worker k of the job (this process's workers first + 0, 1, ..., across processes) takes
/// the contiguous examples [k N / K, (k + 1) N / K) of N examples and K workers, and the
/// shards weigh by their sizes: g is the mean gradient over all examples, p the
/// size-weighted mean of the local directions. Sums run in worker order in a pairwise tree,
/// so a run does not depend on thread timing.
struct Giant {
  /// Worker threads of this process.
  std::size_t workers = 2;
  /// Rounds at most.
  std::size_t rounds = 20;
  /// Stop before a round whose gradient norm is at most this (0: run every round).
  double gradient_tolerance = 0.0;
  /// Conjugate-gradient iterations of a local solve at most.
  std::size_t cg_iterations = 100;
  /// A local solve stops when ||H_k p_k - g|| <= cg_tolerance ||g||.
  double cg_tolerance = 1e-10;
  /// The step along -p, or the first one the line search tries.
  double step = 1.0;
  /// Backtracking: halve the step until the full objective decreases by at least 1e-4 times
  /// step times g . p (Armijo), at most 50 times; a round that finds no such step leaves w
  /// as it is and ends the run.
  bool line_search = false;

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& what) {
      throw std::invalid_argument("asyncopt: Giant::" + what);
    };
    if (workers == 0) {
      fail("workers must be at least 1");
    }
    if (rounds == 0) {
      fail("rounds must be at least 1");
    }
    if (cg_iterations == 0) {
      fail("cg_iterations must be at least 1");
    }
    if (!(cg_tolerance >= 0.0) || std::isinf(cg_tolerance)) {
      fail("cg_tolerance must be finite and non-negative, got " + std::to_string(cg_tolerance));
    }
    if (!(gradient_tolerance >= 0.0) || std::isinf(gradient_tolerance)) {
      fail("gradient_tolerance must be finite and non-negative, got " +
           std::to_string(gradient_tolerance));
    }
    if (!(step > 0.0) || std::isinf(step)) {
      fail("step must be finite and positive, got " + std::to_string(step));
    }
  }
};

/// What giant() did.
struct GiantReport {
  /// Rounds run (each: two all-reduces, the local solves, one step).
  std::size_t rounds = 0;
  /// The full objective before the first round and after each.
  std::vector<double> loss;
  /// ||g|| at the start of the last round run (or of the round that stopped the run).
  double gradient_norm = std::numeric_limits<double>::quiet_NaN();
  /// Hessian-vector products over the job's workers, each on one shard.
  std::uint64_t hessian_vector_products = 0;
  /// Bytes this process handed to the rounds' all-reduces of gradients and directions (0 in a
  /// job of one process; the few counts exchanged at the start and the end are not counted).
  std::uint64_t collective_bytes = 0;
  /// Wall time of the call.
  double seconds = 0.0;
};

namespace detail::giant {

// Runs body(k) once for each k in [0, workers), one thread each; rethrows the first exception.
template <class Body>
void on_workers(std::size_t workers, Body&& body) {
  store::run_threads(workers, [&body](std::size_t k) {
    body(k);
    return false;
  });
}

template <class Scalar>
double dot(std::span<const Scalar> a, std::span<const Scalar> b) {
  double sum = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  }
  return sum;
}

}  // namespace detail::giant

/// Runs GIANT (see Giant) on `f` from `w`, in place, with the workers of this process and,
/// when `across` spans several processes (every process holding the same data and calling
/// giant() with the same options), theirs. Returns what it did. Throws std::invalid_argument
/// for bad options or a `w` of the wrong size, and what the objective throws.
template <class F, class Scalar>
GiantReport giant(const F& f, std::span<Scalar> w, const Giant& options,
                  collective::Ref across = {}) {
  static_assert(HessianObjective<F, Scalar>,
                "asyncopt: giant() needs an objective with hessian_vector(w, batch, v, out) "
                "(LeastSquares, LogisticRegression and SoftmaxRegression have it)");
  options.validate();
  const auto start = std::chrono::steady_clock::now();
  const std::size_t n = w.size();
  if (n != f.dimension()) {
    throw std::invalid_argument("asyncopt: giant() got " + std::to_string(n) +
                                " parameters for an objective of dimension " +
                                std::to_string(f.dimension()));
  }
  const std::size_t local = options.workers;
  const std::size_t first = collective::offset(across, local);
  const std::size_t total = collective::total(across, local);
  const std::size_t examples = f.num_examples();

  // Worker k's shard, and its weight |shard|.
  std::vector<std::vector<std::size_t>> shards(local);
  for (std::size_t k = 0; k < local; ++k) {
    const std::size_t begin = (first + k) * examples / total;
    const std::size_t end = (first + k + 1) * examples / total;
    shards[k].resize(end - begin);
    std::iota(shards[k].begin(), shards[k].end(), begin);
  }
  // Per worker: its weighted vector of the round.
  std::vector<std::vector<Scalar>> rows(local, std::vector<Scalar>(n));
  std::vector<std::uint64_t> products(local, 0);
  std::vector<Scalar> g(n);
  std::vector<Scalar> p(n);

  GiantReport report;
  const std::span<const Scalar> params(w);
  report.loss.push_back(static_cast<double>(f.loss(params)));
  const auto scale = static_cast<Scalar>(1.0 / static_cast<double>(examples));

  // out <- (1 / N) sum over the job of the workers' rows: the first row's partial sums go
  // straight into `out`, so the sum needs no copy.
  auto job_mean = [&](std::vector<Scalar>& out) {
    detail::PairwiseSum<Scalar> pairwise(n);
    for (std::size_t k = 0; k < local; ++k) {
      pairwise.add(rows[k].data(), k == 0 ? out.data() : rows[k].data());
    }
    pairwise.finish();
    if (across.size() > 1) {
      across.all_reduce_sum(std::span<Scalar>(out.data(), n));
      report.collective_bytes += n * sizeof(Scalar);
    }
    for (std::size_t i = 0; i < n; ++i) {
      out[i] *= scale;
    }
  };

  for (std::size_t round = 0; round < options.rounds; ++round) {
    // The full gradient: sum_k |s_k| g_k / N.
    detail::giant::on_workers(local, [&](std::size_t k) {
      std::vector<Scalar>& row = rows[k];
      if (shards[k].empty()) {
        std::fill(row.begin(), row.end(), Scalar{0});
        return;
      }
      const std::span<Scalar> out(row.data(), n);
      f.gradient(params, std::span<const std::size_t>(shards[k]), out);
      const auto weight = static_cast<Scalar>(shards[k].size());
      for (Scalar& v : out) {
        v *= weight;
      }
    });
    job_mean(g);
    const std::span<const Scalar> gradient(g.data(), n);
    report.gradient_norm = std::sqrt(detail::giant::dot(gradient, gradient));
    if (report.gradient_norm <= options.gradient_tolerance) {
      break;
    }

    // Each worker's direction p_k ~ H_k^{-1} g by conjugate gradient, weighted by |s_k|.
    detail::giant::on_workers(local, [&](std::size_t k) {
      std::vector<Scalar>& row = rows[k];
      const std::span<Scalar> x(row.data(), n);
      std::fill(row.begin(), row.end(), Scalar{0});
      if (shards[k].empty()) {
        return;
      }
      const std::span<const std::size_t> shard(shards[k]);
      std::vector<Scalar> r(gradient.begin(), gradient.end());
      std::vector<Scalar> d = r;
      std::vector<Scalar> hd(n);
      double rr = detail::giant::dot(std::span<const Scalar>(r), std::span<const Scalar>(r));
      const double stop = options.cg_tolerance * options.cg_tolerance * rr;
      for (std::size_t it = 0; it < options.cg_iterations && rr > stop; ++it) {
        f.hessian_vector(params, shard, std::span<const Scalar>(d), std::span<Scalar>(hd));
        ++products[k];
        const double curvature =
            detail::giant::dot(std::span<const Scalar>(d), std::span<const Scalar>(hd));
        if (!(curvature > 0.0)) {
          break;  // not positive definite along d: keep what we have
        }
        const auto alpha = static_cast<Scalar>(rr / curvature);
        for (std::size_t i = 0; i < n; ++i) {
          x[i] += alpha * d[i];
          r[i] -= alpha * hd[i];
        }
        const double next =
            detail::giant::dot(std::span<const Scalar>(r), std::span<const Scalar>(r));
        const auto beta = static_cast<Scalar>(next / rr);
        rr = next;
        for (std::size_t i = 0; i < n; ++i) {
          d[i] = r[i] + beta * d[i];
        }
      }
      const auto weight = static_cast<Scalar>(shard.size());
      for (Scalar& v : x) {
        v *= weight;
      }
    });
    job_mean(p);

    // The step, fixed or backtracked on the full objective. A line search that finds no
    // decrease in 50 halvings leaves w as it is and ends the run: p is no descent direction
    // at the precision left.
    if (options.line_search) {
      const double before = report.loss.back();
      const double slope = detail::giant::dot(gradient, std::span<const Scalar>(p.data(), n));
      std::vector<Scalar> trial(n);
      double step = options.step;
      bool accepted = false;
      double after = before;
      for (int halvings = 0; halvings < 50 && !accepted; ++halvings, step *= 0.5) {
        const auto s = static_cast<Scalar>(step);
        for (std::size_t i = 0; i < n; ++i) {
          trial[i] = w[i] - s * p[i];
        }
        after = static_cast<double>(f.loss(std::span<const Scalar>(trial)));
        accepted = after <= before - 1e-4 * step * slope;
      }
      if (!accepted) {
        break;
      }
      std::copy(trial.begin(), trial.end(), w.begin());
      ++report.rounds;
      report.loss.push_back(after);
      continue;
    }
    const auto s = static_cast<Scalar>(options.step);
    for (std::size_t i = 0; i < n; ++i) {
      w[i] -= s * p[i];
    }
    ++report.rounds;
    report.loss.push_back(static_cast<double>(f.loss(params)));
  }

  std::vector<double> counted = {
      static_cast<double>(std::accumulate(products.begin(), products.end(), std::uint64_t{0}))};
  if (across.size() > 1) {
    across.all_reduce_sum(std::span<double>(counted));
  }
  report.hessian_vector_products = static_cast<std::uint64_t>(counted[0]);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace asyncopt
