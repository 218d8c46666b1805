// moekit/autograd/var.hpp — var<T, Shape, B>: a value tensor, the tape it was
// recorded on, and (when it requires grad) the cell its gradient accumulates in.
#pragma once

#include <cstddef>
#include <utility>

#include "../tensor/ops/elementwise.hpp"
#include "../tensor/tensor.hpp"

namespace moekit {

class tape;

namespace detail {

/// Where the gradient of one var accumulates. Cells of recorded vars live in
/// the tape's arena; a parameter owns its cell, whose buffer persists across steps.
template <class T, class S, class B>
struct grad_cell {
  tensor<T, S, B> grad;
  bool persistent = false;  // a parameter's: always add into `grad` in place

  void accumulate(tensor<T, S, B> dx) {
    if (!grad.defined()) {
      grad = std::move(dx);
    } else if (writable()) {
      add_into(grad, dx);
    } else {
      grad = grad + dx;  // shared with another cell: never write through it
    }
  }

  /// Whether a new gradient may be added straight into `grad`: it exists and
  /// is this cell's own (a parameter's, or not shared with another cell).
  bool writable() const noexcept { return grad.defined() && (persistent || grad.use_count() == 1); }
};

}  // namespace detail

template <class T, shape_like S, backend B = cpu>
class var {
 public:
  using value_type = T;
  using shape_type = S;
  using backend_type = B;
  using tensor_type = tensor<T, S, B>;

  static constexpr std::size_t rank() noexcept { return S::rank(); }

  var() = default;
  var(tensor_type value, moekit::tape* t, detail::grad_cell<T, S, B>* cell) noexcept
      : value_(std::move(value)), tape_(t), cell_(cell) {}

  const tensor_type& value() const noexcept { return value_; }
  const S& shape() const noexcept { return value_.shape(); }
  std::size_t size() const noexcept { return value_.size(); }
  std::size_t extent(std::size_t i) const noexcept { return value_.extent(i); }

  /// Whether a gradient flows to this var (it was made by variable(), is a
  /// parameter, or depends on one).
  bool requires_grad() const noexcept { return cell_ != nullptr; }
  /// The tape this var was recorded on (null for parameters and plain constants).
  moekit::tape* tape_ptr() const noexcept { return tape_; }

  /// The accumulated gradient, after tape.backward(); undefined if none reached
  /// it. Only leaves (variables, parameters) keep theirs after backward.
  const tensor_type& grad() const noexcept {
    static const tensor_type none;
    return cell_ ? cell_->grad : none;
  }

  /// Adds dx to this var's gradient (no-op when it requires none). Backward
  /// functions call this; dx may have a more or less static shape type.
  template <class S2>
  void accumulate(const tensor<T, S2, B>& dx) const {
    if (!cell_) return;
    if constexpr (std::is_same_v<S, S2>) cell_->accumulate(dx);
    else cell_->accumulate(shape_cast<S>(dx));
  }

  /// Adds a gradient that add_to(grad) can sum straight into the existing
  /// gradient tensor (a GEMM with beta = 1: no temporary, no add pass: a
  /// parameter's gradient after the first step), or that make() returns as
  /// a new tensor otherwise. The two differ only in rounding order.
  template <class Make, class AddTo>
  void accumulate_with(Make&& make, AddTo&& add_to) const {
    if (!cell_) return;
    if (cell_->writable()) add_to(cell_->grad);
    else accumulate(make());
  }

 protected:
  tensor_type value_;
  moekit::tape* tape_ = nullptr;
  detail::grad_cell<T, S, B>* cell_ = nullptr;
};

namespace detail {
template <class X>
struct is_var : std::false_type {};
template <class T, class S, class B>
struct is_var<var<T, S, B>> : std::true_type {};
}  // namespace detail

}  // namespace moekit
