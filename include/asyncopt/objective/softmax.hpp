// Multinomial (softmax) logistic regression.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>

#include <Eigen/Core>

#include <asyncopt/core/sparse.hpp>
#include <asyncopt/objective/data.hpp>
#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// Minimises mean_i (logsumexp(z_i) - z_{i,y_i}) + 0.5 l2 ||W||^2, z_i = W x_i + b, K classes;
/// class k's d weights at [k*d, (k+1)*d), then K biases (iff `intercept`). `sparse_gradient`
/// puts L2 on touched weights only: it differs from `gradient` by l2 * w elsewhere (Hogwild!).
/// Reference: Bishop, Pattern Recognition and Machine Learning, 2006, 4.3.4.
template <class Matrix>
class SoftmaxRegression : public ModelData<Matrix, Eigen::VectorXi> {
  using Base = ModelData<Matrix, Eigen::VectorXi>;

 public:
  /// The element type of the data and of the parameters: float or double.
  using Scalar = typename Matrix::Scalar;
  /// One class per example, each in [0, classes).
  using Labels = Eigen::VectorXi;
  /// The L2 penalty and whether the model has an intercept.
  using Options = objective::Options;

  /// Takes the data and labels by value: pass them with std::move to avoid a copy.
  SoftmaxRegression(Matrix data, Labels labels, int classes, Options options = {})
      : Base("SoftmaxRegression", std::move(data), std::move(labels), options), classes_(classes) {
    if (classes_ < 1) {
      detail::fail(this->type(), "",
                   "the number of classes must be positive, got " + std::to_string(classes_));
    }
    for (Eigen::Index i = 0; i < this->labels().size(); ++i) {
      const int y = this->labels()[i];
      if (y < 0 || y >= classes_) {
        detail::fail(this->type(), "",
                     "the label at row " + std::to_string(i) + " is " + std::to_string(y) +
                         "; labels must be in [0, " + std::to_string(classes_) + ")");
      }
    }
  }

  /// The number of classes K, at least 1.
  [[nodiscard]] int classes() const noexcept { return classes_; }

  /// The number of parameters: K * d weights, then K biases if any.
  [[nodiscard]] std::size_t dimension() const noexcept {
    const auto k = static_cast<std::size_t>(classes_);
    return k * this->num_features() + (this->intercept() ? k : 0);
  }

  /// The full objective: mean cross-entropy over all examples plus 0.5 * l2 * ||W||^2.
  [[nodiscard]] double loss(std::span<const Scalar> w) const {
    this->check_size("loss", "w", w.size(), dimension());
    detail::Vector<Scalar> z(classes_);
    double sum = 0.0;
    for (Eigen::Index i = 0; i < this->data().rows(); ++i) {
      logits(w, i, z);
      sum += detail::log_sum_exp(z) - static_cast<double>(z[this->labels()[i]]);
    }
    const auto weights = weight_matrix(w).template cast<double>();
    return sum / static_cast<double>(this->num_examples()) +
           0.5 * this->l2() * weights.squaredNorm();
  }

  /// grad <- mean over `batch` of the cross-entropy gradient, plus l2 * W on the weights.
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    this->check_size("gradient", "w", w.size(), dimension());
    this->check_size("gradient", "grad", grad.size(), dimension());
    this->check_batch("gradient", batch);
    detail::as_vector(grad).setZero();
    Eigen::Map<detail::RowMajorMatrix<Scalar>> gw(grad.data(), classes_, this->data().cols());
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    detail::Vector<Scalar> p(classes_);
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      residual(w, i, scale, p);
      detail::add_outer_row(this->data(), i, p, gw);
      if (this->intercept()) {
        biases(grad) += p;
      }
    }
    if (this->l2() != 0.0) {
      gw += static_cast<Scalar>(this->l2()) * weight_matrix(w);
    }
  }

  /// out <- H v, H the Hessian at w of the batch's mean cross-entropy plus the L2 term: per
  /// example, with p = softmax(W x + b) and u = V x + v_b, the logits' Hessian
  /// diag(p) - p p^T times u, s = p (u - p . u), spread as s x^T on the weights and s on the
  /// biases; their mean over `batch`, plus l2 * V on the weights. What a Newton-type solver
  /// (GIANT) multiplies by.
  void hessian_vector(std::span<const Scalar> w, std::span<const std::size_t> batch,
                      std::span<const Scalar> v, std::span<Scalar> out) const {
    this->check_size("hessian_vector", "w", w.size(), dimension());
    this->check_size("hessian_vector", "v", v.size(), dimension());
    this->check_size("hessian_vector", "out", out.size(), dimension());
    this->check_batch("hessian_vector", batch);
    detail::as_vector(out).setZero();
    Eigen::Map<detail::RowMajorMatrix<Scalar>> ow(out.data(), classes_, this->data().cols());
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    detail::Vector<Scalar> p(classes_);
    detail::Vector<Scalar> u(classes_);
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      logits(w, i, p);
      detail::softmax_in_place(p);
      logits(v, i, u);
      const Scalar pu = p.dot(u);
      u = (scale * p.array() * (u.array() - pu)).matrix();
      detail::add_outer_row(this->data(), i, u, ow);
      if (this->intercept()) {
        biases(out) += u;
      }
    }
    if (this->l2() != 0.0) {
      ow += static_cast<Scalar>(this->l2()) * weight_matrix(v);
    }
  }

  /// Clears `g`, then writes the batch gradient on the parameters the batch touches: k*d + j
  /// for every class k and feature j its rows have entries in, then the K biases. The L2 term
  /// is added on those weights only (the Hogwild! convention); elsewhere the dense gradient
  /// differs by l2 * w.
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       SparseGradient<Scalar>& g) const requires detail::is_sparse_v<Matrix> {
    this->check_size("sparse_gradient", "w", w.size(), dimension());
    this->check_batch("sparse_gradient", batch);
    const auto k_count = static_cast<std::size_t>(classes_);
    const std::size_t d = this->num_features();
    g.clear();
    detail::gather_columns(this->data(), batch, g.index);
    // Class k's block repeats the touched features, shifted by k*d; blocks and the biases
    // after them keep the indices strictly increasing.
    const std::size_t touched = g.index.size();
    g.index.resize(k_count * touched + (this->intercept() ? k_count : 0));
    for (std::size_t k = 1; k < k_count; ++k) {
      for (std::size_t t = 0; t < touched; ++t) {
        g.index[k * touched + t] = k * d + g.index[t];
      }
    }
    if (this->intercept()) {
      for (std::size_t k = 0; k < k_count; ++k) {
        g.index[k_count * touched + k] = k_count * d + k;
      }
    }
    g.value.assign(g.index.size(), Scalar(0));

    const std::span<const std::size_t> columns(g.index.data(), touched);
    const Scalar scale = Scalar(1) / static_cast<Scalar>(batch.size());
    detail::Vector<Scalar> p(classes_);
    for (const std::size_t id : batch) {
      const auto i = static_cast<Eigen::Index>(id);
      residual(w, i, scale, p);
      // `columns` came from the batch's own rows: every column is there.
      detail::for_each_entry_position(this->data(), i, columns, [&](std::size_t pos, Scalar x) {
        for (std::size_t k = 0; k < k_count; ++k) {
          g.value[k * touched + pos] += p[static_cast<Eigen::Index>(k)] * x;
        }
      });
      if (this->intercept()) {
        for (std::size_t k = 0; k < k_count; ++k) {
          g.value[k_count * touched + k] += p[static_cast<Eigen::Index>(k)];
        }
      }
    }
    if (this->l2() != 0.0) {
      const auto l2 = static_cast<Scalar>(this->l2());
      for (std::size_t t = 0; t < k_count * touched; ++t) {
        g.value[t] += l2 * w[g.index[t]];
      }
    }
  }

  /// The predicted class of example `row`: the one with the largest logit (lowest on ties).
  [[nodiscard]] int predict(std::span<const Scalar> w, std::size_t row) const {
    this->check_size("predict", "w", w.size(), dimension());
    this->check_row("predict", row);
    detail::Vector<Scalar> z(classes_);
    return predict_unchecked(w, static_cast<Eigen::Index>(row), z);
  }

  /// The fraction of examples whose predicted class is their label.
  [[nodiscard]] double accuracy(std::span<const Scalar> w) const {
    this->check_size("accuracy", "w", w.size(), dimension());
    detail::Vector<Scalar> z(classes_);
    std::size_t correct = 0;
    for (Eigen::Index i = 0; i < this->data().rows(); ++i) {
      correct += predict_unchecked(w, i, z) == this->labels()[i] ? 1 : 0;
    }
    return static_cast<double>(correct) / static_cast<double>(this->num_examples());
  }

 private:
  [[nodiscard]] Eigen::Map<const detail::RowMajorMatrix<Scalar>> weight_matrix(
      std::span<const Scalar> w) const {
    return {w.data(), classes_, this->data().cols()};
  }

  template <class Parameters>
  [[nodiscard]] auto biases(std::span<Parameters> w) const {
    const auto offset = static_cast<Eigen::Index>(classes_) * this->data().cols();
    return detail::as_vector(w).segment(offset, classes_);
  }

  /// z <- W x_i + b
  void logits(std::span<const Scalar> w, Eigen::Index i, detail::Vector<Scalar>& z) const {
    detail::multiply_row(this->data(), i, weight_matrix(w), z);
    if (this->intercept()) {
      z += biases(w);
    }
  }

  /// p <- scale * (softmax(z_i) - e_{y_i}): example i's gradient with respect to its logits.
  void residual(std::span<const Scalar> w, Eigen::Index i, Scalar scale,
                detail::Vector<Scalar>& p) const {
    logits(w, i, p);
    detail::softmax_in_place(p);
    p[this->labels()[i]] -= Scalar(1);
    p *= scale;
  }

  [[nodiscard]] int predict_unchecked(std::span<const Scalar> w, Eigen::Index i,
                                      detail::Vector<Scalar>& z) const {
    logits(w, i, z);
    Eigen::Index best = 0;
    z.maxCoeff(&best);
    return static_cast<int>(best);
  }

  int classes_;
};

}  // namespace asyncopt::objective
