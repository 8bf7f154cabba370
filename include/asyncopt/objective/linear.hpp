// The linear models with one output per example (least squares, logistic regression): their
// loss, gradient and sparse gradients, written once over the per-example loss.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <asyncopt/core/sparse.hpp>
#include <asyncopt/objective/data.hpp>
#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// A linear model z_i = x_i . w + b with a per-example loss ell(z_i, y_i), the base of
/// LeastSquares and LogisticRegression. `Loss` gives the loss as the static function
/// `double value(double z, double y)` and its derivative in z as `double slope(double z,
/// double y)` (SquaredLoss, LogisticLoss). Parameters: [w_0..w_{d-1}, b], b iff `intercept`.
/// An objective of your own with another such loss can derive from it, checking its labels
/// in its constructor.
template <class Matrix, class Loss>
class SingleOutputModel
    : public ModelData<Matrix, Eigen::Matrix<typename Matrix::Scalar, Eigen::Dynamic, 1>> {
  using Base = ModelData<Matrix, Eigen::Matrix<typename Matrix::Scalar, Eigen::Dynamic, 1>>;

 public:
  /// The element type of the data and of the parameters: float or double.
  using Scalar = typename Matrix::Scalar;
  /// One real label per example.
  using Labels = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// The number of parameters: one weight per feature, then the bias if any.
  [[nodiscard]] std::size_t dimension() const noexcept {
    return this->num_features() + (this->intercept() ? 1 : 0);
  }

  /// The full objective: mean loss over all examples plus 0.5 * l2 * ||w||^2.
  [[nodiscard]] double loss(std::span<const Scalar> w) const {
    this->check_size("loss", "w", w.size(), dimension());
    const auto wv = detail::as_vector(w);
    double sum = 0.0;
    for (Eigen::Index i = 0; i < this->data().rows(); ++i) {
      sum +=
          Loss::value(static_cast<double>(margin(wv, i)), static_cast<double>(this->labels()[i]));
    }
    const auto weights = wv.head(this->data().cols()).template cast<double>();
    return sum / static_cast<double>(this->num_examples()) +
           0.5 * this->l2() * weights.squaredNorm();
  }

  /// grad <- mean over `batch` of the loss gradient, plus l2 * w on the weights.
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    this->check_size("gradient", "w", w.size(), dimension());
    this->check_size("gradient", "grad", grad.size(), dimension());
    this->check_batch("gradient", batch);
    const auto wv = detail::as_vector(w);
    auto gv = detail::as_vector(grad);
    const Eigen::Index d = this->data().cols();
    gv.setZero();
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      const Scalar c = scale * slope(wv, i);
      detail::add_scaled_row(this->data(), i, c, gv.head(d));
      if (this->intercept()) {
        gv[d] += c;
      }
    }
    if (this->l2() != 0.0) {
      gv.head(d) += static_cast<Scalar>(this->l2()) * wv.head(d);
    }
  }

  /// out <- H v, H the Hessian at w of the batch's mean loss plus the L2 term: the mean over
  /// `batch` of ell''(z_i, y_i) (x_i . v_w + v_b) [x_i, 1], plus l2 * v on the weights. For a
  /// `Loss` with `static double curvature(double z, double y)`, its second derivative in z
  /// (SquaredLoss, LogisticLoss): what a Newton-type solver (GIANT) multiplies by.
  void hessian_vector(std::span<const Scalar> w, std::span<const std::size_t> batch,
                      std::span<const Scalar> v, std::span<Scalar> out) const requires
      requires(double z, double y) {
    { Loss::curvature(z, y) } -> std::convertible_to<double>;
  }
  {
    this->check_size("hessian_vector", "w", w.size(), dimension());
    this->check_size("hessian_vector", "v", v.size(), dimension());
    this->check_size("hessian_vector", "out", out.size(), dimension());
    this->check_batch("hessian_vector", batch);
    const auto wv = detail::as_vector(w);
    const auto vv = detail::as_vector(v);
    auto ov = detail::as_vector(out);
    const Eigen::Index d = this->data().cols();
    ov.setZero();
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      const auto curvature = static_cast<Scalar>(Loss::curvature(
          static_cast<double>(margin(wv, i)), static_cast<double>(this->labels()[i])));
      const Scalar c = scale * curvature * margin(vv, i);
      detail::add_scaled_row(this->data(), i, c, ov.head(d));
      if (this->intercept()) {
        ov[d] += c;
      }
    }
    if (this->l2() != 0.0) {
      ov.head(d) += static_cast<Scalar>(this->l2()) * vv.head(d);
    }
  }

  /// Writes the parameters the batch's sparse gradient reads and writes, strictly
  /// increasing: the features its rows have entries in, then the bias. A worker pulls just
  /// these before calling sparse_gradient.
  void touched(std::span<const std::size_t> batch,
               std::vector<std::size_t>& index) const requires detail::is_sparse_v<Matrix> {
    this->check_batch("touched", batch);
    touched_unchecked(batch, index);
  }

  /// Clears `g`, then writes the batch gradient on the parameters the batch touches: the
  /// features its rows have entries in, then the bias. The L2 term is added on those weights
  /// only (the Hogwild! convention); elsewhere the dense gradient differs by l2 * w.
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       SparseGradient<Scalar>& g) const requires detail::is_sparse_v<Matrix> {
    this->check_size("sparse_gradient", "w", w.size(), dimension());
    this->check_batch("sparse_gradient", batch);
    g.clear();
    touched_unchecked(batch, g.index);
    if (batch.size() == 1) {
      // The touched weights, packed, in g.value, which row_values overwrites entry by entry.
      const auto row = detail::sparse_row(this->data(), static_cast<Eigen::Index>(batch[0]));
      g.value.resize(g.index.size());
      for (std::size_t k = 0; k < g.index.size(); ++k) {
        g.value[k] = w[g.index[k]];
      }
      row_values(batch[0], row, g, g.value.data());
      return;
    }
    fill_values(batch, g,
                [&](std::size_t /*position*/, std::size_t parameter) { return w[parameter]; });
  }

  /// The same for a `g` whose indices touched(batch) already wrote, from the parameters at
  /// those indices only, packed: `w_touched[k]` is parameter `g.index[k]` (as a worker's
  /// pull_values(g.index, w_touched) gives them). Only the values are written, each row read
  /// once. `g.index` may hold more than the batch touches, the L2 term alone then lands
  /// there; indices that are not strictly increasing, out of range, or missing a feature or
  /// the bias the batch needs, or a `w_touched` of another length, throw
  /// std::invalid_argument.
  void touched_gradient(std::span<const Scalar> w_touched, std::span<const std::size_t> batch,
                        SparseGradient<Scalar>& g) const requires detail::is_sparse_v<Matrix> {
    if (w_touched.size() != g.index.size()) {
      detail::fail(this->type(), "touched_gradient",
                   "w_touched has " + std::to_string(w_touched.size()) + " entries, expected " +
                       std::to_string(g.index.size()) + " (one per entry of g.index)");
    }
    this->check_batch("touched_gradient", batch);
    if (batch.size() == 1 && row_gradient(batch[0], w_touched, g)) {
      return;
    }
    if (!asyncopt::detail::strictly_increasing_below(g.index, dimension())) {
      detail::fail(this->type(), "touched_gradient",
                   "g.index: " + asyncopt::detail::index_list_error(g.index, dimension()) +
                       "; pass the indices touched() wrote");
    }
    if (this->intercept() && (g.index.empty() || g.index.back() != this->num_features())) {
      detail::fail(this->type(), "touched_gradient",
                   "g.index must end with the bias, " + std::to_string(this->num_features()) +
                       "; pass the indices touched() wrote");
    }
    fill_values(batch, g, [&](std::size_t position, std::size_t /*parameter*/) {
      return w_touched[position];
    });
  }

 protected:
  /// Takes and checks the data, labels and options as ModelData does; `type`, the class name
  /// the messages start with, must outlive the object (a string literal).
  SingleOutputModel(std::string_view type, Matrix data, Labels labels, Options options)
      : Base(type, std::move(data), std::move(labels), options) {}

  /// x_i . w + b
  template <class Weights>
  [[nodiscard]] Scalar margin(const Weights& w, Eigen::Index i) const {
    const Eigen::Index d = this->data().cols();
    Scalar z = detail::row_dot(this->data(), i, w.head(d));
    if (this->intercept()) {
      z += w[d];
    }
    return z;
  }

 private:
  void touched_unchecked(std::span<const std::size_t> batch,
                         std::vector<std::size_t>& index) const {
    detail::gather_columns(this->data(), batch, index);
    if (this->intercept()) {
      index.push_back(this->num_features());
    }
  }

  // The gradient of one example `id` whose touched() list g.index holds exactly (the row's
  // columns, then the bias if any), from w_touched (one value per entry): row_values without
  // searching for each entry's position. Returns false, writing nothing, when g.index is
  // another list.
  bool row_gradient(std::size_t id, std::span<const Scalar> w_touched,
                    SparseGradient<Scalar>& g) const {
    const auto row = detail::sparse_row(this->data(), static_cast<Eigen::Index>(id));
    const std::size_t bias = this->intercept() ? 1 : 0;
    if (g.index.size() != row.size + bias ||
        (bias == 1 && g.index.back() != this->num_features())) {
      return false;
    }
    std::size_t differ = 0;
    for (std::size_t k = 0; k < row.size; ++k) {
      differ |= g.index[k] ^ static_cast<std::size_t>(row.column[k]);
    }
    if (differ != 0) {
      return false;
    }
    row_values(id, row, g, w_touched.data());
    return true;
  }

  // g.value <- the gradient of the one example `id`, whose row is `row`, at g.index = the
  // row's columns then the bias if any; w[k] is the value of parameter g.index[k] (w may be
  // g.value itself: each w[k] is read before out[k] is written). The margin is a
  // detail::LaneSum of the row's terms, then the bias added, and each value is formed as
  // fill_values forms it (from a zero: the same signed zeros), so the two agree bit for bit.
  void row_values(std::size_t id, const detail::SparseRow<Matrix>& row, SparseGradient<Scalar>& g,
                  const Scalar* w) const {
    // detail::LaneSum's sum, a block of lanes at a time.
    using Sum = detail::LaneSum<Scalar>;
    constexpr std::size_t lanes = Sum::lanes;
    Sum sum;
    std::size_t k = 0;
    for (; k + lanes <= row.size; k += lanes) {
      for (std::size_t l = 0; l < lanes; ++l) {
        sum.add(k + l, row.value[k + l], w[k + l]);
      }
    }
    for (; k < row.size; ++k) {
      sum.add(k, row.value[k], w[k]);
    }
    Scalar z = sum.total();
    if (this->intercept()) {
      z += w[row.size];
    }
    const auto i = static_cast<Eigen::Index>(id);
    const auto c = static_cast<Scalar>(
        Loss::slope(static_cast<double>(z), static_cast<double>(this->labels()[i])));
    g.value.resize(g.index.size());
    Scalar* const out = g.value.data();
    if (this->l2() != 0.0) {
      const auto l2 = static_cast<Scalar>(this->l2());
      for (std::size_t e = 0; e < row.size; ++e) {
        const Scalar cx = Scalar(0) + c * row.value[e];
        out[e] = cx + l2 * w[e];
      }
    } else {
      for (std::size_t e = 0; e < row.size; ++e) {
        out[e] = Scalar(0) + c * row.value[e];
      }
    }
    if (this->intercept()) {
      out[row.size] = Scalar(0) + c;
    }
  }

  // g.value <- the batch gradient at the indices in g.index (strictly increasing, in range,
  // the bias last when there is one): the rest of sparse_gradient and touched_gradient.
  // weight(position, parameter) is the value of parameter g.index[position]. The margin is a
  // detail::LaneSum of the row's terms, then the bias added: the bits of row_values.
  template <class Weight>
  void fill_values(std::span<const std::size_t> batch, SparseGradient<Scalar>& g,
                   Weight&& weight) const {
    const std::size_t touched = g.index.size() - (this->intercept() ? 1 : 0);
    const std::span<const std::size_t> columns(g.index.data(), touched);
    g.value.assign(g.index.size(), Scalar(0));
    const Scalar b = this->intercept() ? weight(touched, g.index[touched]) : Scalar(0);
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    Scalar bias = 0;
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      detail::LaneSum<Scalar> sum;
      std::size_t entry = 0;
      if (!detail::for_each_entry_position(
              this->data(), i, columns,
              [&](std::size_t pos, Scalar x) { sum.add(entry++, x, weight(pos, g.index[pos])); })) {
        detail::fail(
            this->type(), "touched_gradient",
            "g.index lacks a feature of row " + std::to_string(id) +
                ": it must hold every parameter the batch touches, as touched() writes it");
      }
      Scalar z = sum.total();
      if (this->intercept()) {
        z += b;
      }
      const Scalar c = scale * static_cast<Scalar>(Loss::slope(
                                   static_cast<double>(z), static_cast<double>(this->labels()[i])));
      detail::for_each_entry_position(this->data(), i, columns,
                                      [&](std::size_t pos, Scalar x) { g.value[pos] += c * x; });
      bias += c;
    }
    if (this->l2() != 0.0) {
      const auto l2 = static_cast<Scalar>(this->l2());
      for (std::size_t t = 0; t < touched; ++t) {
        g.value[t] += l2 * weight(t, g.index[t]);
      }
    }
    if (this->intercept()) {
      g.value[touched] = bias;
    }
  }

  template <class Weights>
  [[nodiscard]] Scalar slope(const Weights& w, Eigen::Index i) const {
    return static_cast<Scalar>(
        Loss::slope(static_cast<double>(margin(w, i)), static_cast<double>(this->labels()[i])));
  }
};

}  // namespace asyncopt::objective
