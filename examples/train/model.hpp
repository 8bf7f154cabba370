// The trained model as the general trainer sees it: a type-erased Model over any of the
// objective types (softmax, logistic or least squares, dense or sparse; the MLP, dense), and
// the two views
// through which the optimizer sees it.
//
// Compile time: every rule x policy pair instantiates one optimizer, and each of those
// instantiates optimize() twice, once for dense and once for sparse data. The objectives
// reach it through the two views over a Model, so the six objective types do not multiply
// the 7 x 5 x 2 instantiations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <asyncopt/objective/objective.hpp>
#include <asyncopt/optimizer.hpp>

#include "data.hpp"

namespace examples::train {

/// A trained model as the trainer sees it: the objective's methods, and its accuracy where it
/// classifies. One implementation per objective type; the optimizer sees it through
/// DenseView or SparseView.
class Model {
 public:
  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&&) = delete;
  Model& operator=(Model&&) = delete;
  virtual ~Model() = default;

  [[nodiscard]] virtual bool sparse() const = 0;
  [[nodiscard]] virtual std::size_t dimension() const = 0;
  [[nodiscard]] virtual std::size_t num_examples() const = 0;
  [[nodiscard]] virtual double loss(std::span<const Scalar> w) const = 0;
  virtual void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                        std::span<Scalar> grad) const = 0;
  virtual void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                               asyncopt::SparseGradient<Scalar>& g) const = 0;
  virtual void touched(std::span<const std::size_t> batch,
                       std::vector<std::size_t>& index) const = 0;
  /// The fraction of examples classified right; nullopt for regression.
  [[nodiscard]] virtual std::optional<double> accuracy(std::span<const Scalar> w) const = 0;
  /// Where training starts: zero, or the objective's initial_parameters(seed) (the MLP's).
  [[nodiscard]] virtual std::vector<Scalar> initial_parameters(std::uint64_t seed) const = 0;
};

template <class F>
class ModelOf final : public Model {
 public:
  explicit ModelOf(F f) : f_(std::move(f)) {}

  [[nodiscard]] bool sparse() const override { return asyncopt::TouchedParameters<F>; }
  [[nodiscard]] std::size_t dimension() const override { return f_.dimension(); }
  [[nodiscard]] std::size_t num_examples() const override { return f_.num_examples(); }
  [[nodiscard]] double loss(std::span<const Scalar> w) const override { return f_.loss(w); }
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const override {
    f_.gradient(w, batch, grad);
  }
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<Scalar>& g) const override {
    if constexpr (requires { f_.sparse_gradient(w, batch, g); }) {
      f_.sparse_gradient(w, batch, g);
    } else {
      throw std::logic_error("sparse_gradient called on a dense model");
    }
  }
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const override {
    if constexpr (requires { f_.touched(batch, index); }) {
      f_.touched(batch, index);
    } else {
      throw std::logic_error("touched called on a dense model");
    }
  }
  [[nodiscard]] std::optional<double> accuracy(std::span<const Scalar> w) const override {
    if constexpr (requires { f_.accuracy(w); }) {
      return f_.accuracy(w);
    } else {
      return std::nullopt;
    }
  }
  [[nodiscard]] std::vector<Scalar> initial_parameters(std::uint64_t seed) const override {
    if constexpr (requires { f_.initial_parameters(seed); }) {
      return f_.initial_parameters(seed);
    } else {
      return std::vector<Scalar>(f_.dimension(), Scalar(0));
    }
  }

 private:
  F f_;
};

/// A Model as an asyncopt::Objective: optimize() pushes dense gradients.
struct DenseView {
  const Model* model;
  [[nodiscard]] std::size_t dimension() const { return model->dimension(); }
  [[nodiscard]] std::size_t num_examples() const { return model->num_examples(); }
  [[nodiscard]] double loss(std::span<const Scalar> w) const { return model->loss(w); }
  void gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                std::span<Scalar> grad) const {
    model->gradient(w, batch, grad);
  }
};

/// A sparse Model as an asyncopt::SparseObjective with TouchedParameters: optimize() pulls
/// the parameters a batch touches and pushes sparse gradients.
struct SparseView : DenseView {
  void sparse_gradient(std::span<const Scalar> w, std::span<const std::size_t> batch,
                       asyncopt::SparseGradient<Scalar>& g) const {
    model->sparse_gradient(w, batch, g);
  }
  void touched(std::span<const std::size_t> batch, std::vector<std::size_t>& index) const {
    model->touched(batch, index);
  }
};

using EpochCallback = std::function<void(const asyncopt::EpochInfo<Scalar>&)>;

/// A training run but for its rule and policy, which examples/dispatch.hpp picks by name.
struct Run {
  const Model& model;
  std::span<Scalar> w;
  asyncopt::Options options;
  const EpochCallback& callback;
};

/// Trains `run.model` with an optimizer of `rule`, `consistency` and `transport` (shared
/// memory unless given): through SparseView where the model is sparse, else through DenseView.
template <class Rule, class Consistency, class Transport = asyncopt::transport::SharedMemory>
asyncopt::Report optimize(const Rule& rule, const Consistency& consistency, const Run& run,
                          const Transport& transport = {}) {
  const asyncopt::AsyncOptimizer<Scalar, Rule, Consistency, Transport> optimizer(rule, consistency,
                                                                                 transport);
  if (run.model.sparse()) {
    return optimizer.optimize(SparseView{{&run.model}}, run.w, run.options, run.callback);
  }
  return optimizer.optimize(DenseView{&run.model}, run.w, run.options, run.callback);
}

}  // namespace examples::train
