// moekit/autograd/parameter.hpp — parameter<T, Shape, B>: a learned tensor and
// its gradient. It is a var (so every op takes it directly) whose gradient cell
// it owns: gradients accumulate there across tape resets until zero_grad().
#pragma once

#include <memory>
#include <utility>

#include "../tensor/ops/creation.hpp"
#include "var.hpp"

namespace moekit {

template <class T, shape_like S, backend B = cpu>
class parameter : public var<T, S, B> {
  using base = var<T, S, B>;

 public:
  using tensor_type = tensor<T, S, B>;

  parameter() = default;
  /// Takes `init` as the value; the gradient starts at zero.
  explicit parameter(tensor_type init) : cell_owner_(std::make_unique<detail::grad_cell<T, S, B>>()) {
    cell_owner_->grad = zeros<T, B>(init.shape());
    cell_owner_->persistent = true;
    base::value_ = std::move(init);
    base::cell_ = cell_owner_.get();
  }

  /// Deep copy: value and gradient. An unset parameter (an optional bias left
  /// out) copies as unset.
  parameter(const parameter& o) : base() {
    if (!o.value().defined()) return;
    *this = parameter(o.value().clone());
    cell_owner_->grad = o.grad().clone();
  }
  parameter& operator=(const parameter& o) {
    if (this != &o) *this = parameter(o);
    return *this;
  }
  parameter(parameter&&) noexcept = default;
  parameter& operator=(parameter&&) noexcept = default;

  /// The value, writable (optimizers update it in place; loaders fill it).
  const tensor_type& value() const noexcept { return base::value_; }
  tensor_type& value() noexcept { return base::value_; }

  void zero_grad() {
    if (cell_owner_) fill(cell_owner_->grad, T(0));
  }

 private:
  std::unique_ptr<detail::grad_cell<T, S, B>> cell_owner_;
};

}  // namespace moekit
