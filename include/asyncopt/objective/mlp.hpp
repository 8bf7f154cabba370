// A multilayer perceptron with a softmax output: the non-convex model of the experiments.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <asyncopt/objective/data.hpp>
#include <asyncopt/objective/detail.hpp>
#include <asyncopt/objective/options.hpp>

namespace asyncopt::objective {

/// The nonlinearity of an Mlp's hidden layers.
enum class Activation {
  relu,  ///< max(0, z)
  tanh   ///< tanh(z)
};

/// The shape of an Mlp's hidden part: the widths of its one or two hidden layers and their
/// nonlinearity.
struct MlpShape {
  /// One or two widths, each at least 1.
  std::vector<std::size_t> hidden = {128};
  /// The hidden layers' nonlinearity.
  Activation activation = Activation::relu;
};

/// A multilayer perceptron for K classes: a_0 = x_i, a_l = act(W_l a_{l-1} + b_l) for its one
/// or two hidden layers, logits z_i = W_o a_L + b_o, and the objective
/// mean_i (logsumexp(z_i) - z_{i,y_i}) + 0.5 l2 (sum of the squared weights; biases are not
/// penalised). Parameters, layer after layer from the input: W_l (one row per output unit,
/// row-major), then b_l (iff `intercept`). Dense data only; every method is const and safe
/// from several threads. The objective is not convex, and at w = 0 every hidden unit is alike
/// and stays so: start from initial_parameters(seed). Reference: Goodfellow, Bengio,
/// Courville, Deep Learning, 2016, 6.5.
template <class Matrix>
class Mlp : public ModelData<Matrix, Eigen::VectorXi> {
  using Base = ModelData<Matrix, Eigen::VectorXi>;
  static_assert(!detail::is_sparse_v<Matrix>, "asyncopt::objective::Mlp takes dense data");

 public:
  /// The element type of the data and of the parameters: float or double.
  using Scalar = typename Matrix::Scalar;
  /// One class per example, each in [0, classes).
  using Labels = Eigen::VectorXi;
  /// The L2 penalty on the weights and whether the layers have biases.
  using Options = objective::Options;

  /// Takes the data and labels by value: pass them with std::move to avoid a copy. Throws
  /// std::invalid_argument for bad data, labels, classes or shape.
  Mlp(Matrix data, Labels labels, int classes, const MlpShape& shape = {}, Options options = {})
      : Base("Mlp", std::move(data), std::move(labels), options),
        classes_(classes),
        activation_(shape.activation) {
    if (classes_ < 1) {
      detail::fail(this->type(), "",
                   "the number of classes must be positive, got " + std::to_string(classes_));
    }
    if (shape.hidden.empty() || shape.hidden.size() > 2) {
      detail::fail(
          this->type(), "",
          "the network has one or two hidden layers, got " + std::to_string(shape.hidden.size()));
    }
    for (Eigen::Index i = 0; i < this->labels().size(); ++i) {
      const int y = this->labels()[i];
      if (y < 0 || y >= classes_) {
        detail::fail(this->type(), "",
                     "the label at row " + std::to_string(i) + " is " + std::to_string(y) +
                         "; labels must be in [0, " + std::to_string(classes_) + ")");
      }
    }
    auto in = static_cast<Eigen::Index>(this->num_features());
    std::size_t at = 0;
    auto add = [&](Eigen::Index out) {
      const Layer layer{
          .in = in, .out = out, .weights = at, .biases = at + static_cast<std::size_t>(out * in)};
      layers_.push_back(layer);
      at = layer.biases + (this->intercept() ? static_cast<std::size_t>(out) : 0);
      in = out;
    };
    for (const std::size_t width : shape.hidden) {
      if (width == 0) {
        detail::fail(this->type(), "", "a hidden layer's width must be at least 1");
      }
      add(static_cast<Eigen::Index>(width));
    }
    add(classes_);
    dimension_ = at;
  }

  /// The number of classes K.
  [[nodiscard]] int classes() const noexcept { return classes_; }

  /// The number of parameters: every layer's weights and biases.
  [[nodiscard]] std::size_t dimension() const noexcept { return dimension_; }

  /// Starting parameters: every weight uniform in +-sqrt(6 / (in + out)) of its layer
  /// (Glorot and Bengio, AISTATS 2010), drawn from `seed`, and zero biases.
  [[nodiscard]] std::vector<Scalar> initial_parameters(std::uint64_t seed) const {
    std::vector<Scalar> w(dimension_, Scalar(0));
    std::mt19937_64 rng(seed);
    for (const Layer& layer : layers_) {
      const double limit = std::sqrt(6.0 / static_cast<double>(layer.in + layer.out));
      std::uniform_real_distribution<double> uniform(-limit, limit);
      for (std::size_t k = 0; k < static_cast<std::size_t>(layer.in * layer.out); ++k) {
        w[layer.weights + k] = static_cast<Scalar>(uniform(rng));
      }
    }
    return w;
  }

  /// The full objective: mean cross-entropy over all examples plus 0.5 l2 ||weights||^2.
  [[nodiscard]] double loss(std::span<const Scalar> w) const {
    this->check_size("loss", "w", w.size(), dimension_);
    Pass pass(layers_.size());
    double sum = 0.0;
    const Eigen::Index rows = this->data().rows();
    for (Eigen::Index begin = 0; begin < rows; begin += chunk) {
      const Eigen::Index count = std::min(chunk, rows - begin);
      forward(w, this->data().middleRows(begin, count), pass);
      const auto& z = pass.activations.back();
      for (Eigen::Index r = 0; r < count; ++r) {
        const detail::Vector<Scalar> logits = z.row(r).transpose();
        sum += detail::log_sum_exp(logits) - static_cast<double>(logits[this->labels()[begin + r]]);
      }
    }
    double squares = 0.0;
    for (const Layer& layer : layers_) {
      squares += weights(w, layer).template cast<double>().squaredNorm();
    }
    return sum / static_cast<double>(this->num_examples()) + 0.5 * this->l2() * squares;
  }

  /// grad <- mean over `batch` of the cross-entropy gradient (back-propagation), plus l2 times
  /// every weight.
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    this->check_size("gradient", "w", w.size(), dimension_);
    this->check_size("gradient", "grad", grad.size(), dimension_);
    this->check_batch("gradient", batch);
    const auto b = static_cast<Eigen::Index>(batch.size());
    Block x(b, this->data().cols());
    for (Eigen::Index r = 0; r < b; ++r) {
      x.row(r) = this->data().row(static_cast<Eigen::Index>(batch[static_cast<std::size_t>(r)]));
    }
    Pass pass(layers_.size());
    forward(w, x, pass);
    // delta <- d(mean loss) / d(logits): (softmax(z) - e_y) / b, row by row.
    Block delta = pass.activations.back();
    for (Eigen::Index r = 0; r < b; ++r) {
      detail::Vector<Scalar> p = delta.row(r).transpose();
      detail::softmax_in_place(p);
      p[this->labels()[static_cast<Eigen::Index>(batch[static_cast<std::size_t>(r)])]] -= Scalar(1);
      delta.row(r) = p.transpose() / static_cast<Scalar>(b);
    }
    for (std::size_t l = layers_.size(); l-- > 0;) {
      const Layer& layer = layers_[l];
      const Block& input = l == 0 ? x : pass.activations[l - 1];
      weights(grad, layer).noalias() = delta.transpose() * input;
      if (this->intercept()) {
        // Row by row, element-wise: the same bits whatever the address of `grad`. (Eigen's
        // colwise().sum() into a slice of grad sums the columns in one order in the SIMD
        // body and in another in the unaligned head and tail, so the result depended on
        // where the caller's buffer happened to lie.)
        auto bias = biases(grad, layer);
        bias.setZero();
        for (Eigen::Index r = 0; r < delta.rows(); ++r) {
          bias += delta.row(r).transpose();
        }
      }
      if (l > 0) {
        Block back = delta * weights(w, layer);
        const Block& a = pass.activations[l - 1];  // act(z) of the layer below
        if (activation_ == Activation::relu) {
          back = (a.array() > Scalar(0)).select(back, Scalar(0));
        } else {
          back.array() *= Scalar(1) - a.array().square();
        }
        delta = std::move(back);
      }
    }
    if (this->l2() != 0.0) {
      const auto l2 = static_cast<Scalar>(this->l2());
      for (const Layer& layer : layers_) {
        weights(grad, layer) += l2 * weights(w, layer);
      }
    }
  }

  /// The predicted class of example `row`: the largest logit (the lowest class on ties).
  [[nodiscard]] int predict(std::span<const Scalar> w, std::size_t row) const {
    this->check_size("predict", "w", w.size(), dimension_);
    this->check_row("predict", row);
    Pass pass(layers_.size());
    forward(w, this->data().middleRows(static_cast<Eigen::Index>(row), 1), pass);
    Eigen::Index best = 0;
    pass.activations.back().row(0).maxCoeff(&best);
    return static_cast<int>(best);
  }

  /// The fraction of examples whose predicted class is their label.
  [[nodiscard]] double accuracy(std::span<const Scalar> w) const {
    this->check_size("accuracy", "w", w.size(), dimension_);
    Pass pass(layers_.size());
    std::size_t correct = 0;
    const Eigen::Index rows = this->data().rows();
    for (Eigen::Index begin = 0; begin < rows; begin += chunk) {
      const Eigen::Index count = std::min(chunk, rows - begin);
      forward(w, this->data().middleRows(begin, count), pass);
      for (Eigen::Index r = 0; r < count; ++r) {
        Eigen::Index best = 0;
        pass.activations.back().row(r).maxCoeff(&best);
        correct += static_cast<int>(best) == this->labels()[begin + r] ? 1 : 0;
      }
    }
    return static_cast<double>(correct) / static_cast<double>(this->num_examples());
  }

 private:
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  static constexpr Eigen::Index chunk = 256;  // rows per forward pass of loss() and accuracy()

  struct Layer {
    Eigen::Index in;      // inputs
    Eigen::Index out;     // outputs
    std::size_t weights;  // where W (out x in, row-major) starts
    std::size_t biases;   // where b starts (iff intercept)
  };

  // Each layer's output for a block of rows: act(z) of the hidden layers, the logits last.
  struct Pass {
    explicit Pass(std::size_t layers) : activations(layers) {}
    std::vector<Block> activations;
  };

  template <class Parameters>
  [[nodiscard]] auto weights(std::span<Parameters> w, const Layer& layer) const {
    using Map =
        std::conditional_t<std::is_const_v<Parameters>, Eigen::Map<const Block>, Eigen::Map<Block>>;
    return Map(w.data() + layer.weights, layer.out, layer.in);
  }

  template <class Parameters>
  [[nodiscard]] auto biases(std::span<Parameters> w, const Layer& layer) const {
    return detail::as_vector(w).segment(static_cast<Eigen::Index>(layer.biases), layer.out);
  }

  template <class Rows>
  void forward(std::span<const Scalar> w, const Rows& x, Pass& pass) const {
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      Block& z = pass.activations[l];
      if (l == 0) {
        z.noalias() = x * weights(w, layer).transpose();
      } else {
        z.noalias() = pass.activations[l - 1] * weights(w, layer).transpose();
      }
      if (this->intercept()) {
        z.rowwise() += biases(w, layer).transpose();
      }
      if (l + 1 < layers_.size()) {
        if (activation_ == Activation::relu) {
          z = z.cwiseMax(Scalar(0));
        } else {
          z = z.array().tanh().matrix();
        }
      }
    }
  }

  int classes_;
  Activation activation_;
  std::vector<Layer> layers_;
  std::size_t dimension_ = 0;
};

}  // namespace asyncopt::objective
