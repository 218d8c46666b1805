// moekit/autograd/tape.hpp — the explicit tape. Each differentiable op records
// one node: its backward function (holding only what backward needs) and the
// cell its output's gradient accumulates in, both placed in an arena. backward()
// walks the nodes in reverse; reset() frees them for the next step.
#pragma once

#include <cstddef>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../tensor/ops/creation.hpp"
#include "arena.hpp"
#include "grad_mode.hpp"
#include "var.hpp"

namespace moekit {

class tape {
 public:
  tape() : previous_(current_slot()) {
    current_slot() = this;
    nodes_.reserve(256);
  }
  ~tape() {
    destroy_nodes();
    current_slot() = previous_;
  }
  tape(const tape&) = delete;
  tape& operator=(const tape&) = delete;

  /// The innermost live tape on this thread (ops on parameters alone record there).
  static tape* current() noexcept { return current_slot(); }

  /// A leaf whose gradient is wanted (inputs of gradient checks, learned inputs).
  template <class T, class S, class B>
  var<T, S, B> variable(tensor<T, S, B> x) {
    auto* obj = emplace<leaf<T, S, B>>(nullptr);
    return var<T, S, B>(std::move(x), this, &obj->cell);
  }
  /// A constant leaf: no gradient flows to it (data, labels).
  template <class T, class S, class B>
  var<T, S, B> input(tensor<T, S, B> x) noexcept {
    return var<T, S, B>(std::move(x), this, nullptr);
  }

  /// Records an op's output with its backward function `f(dy)`, which must call
  /// accumulate() on the inputs that require grad.
  template <class T, class S, class B, class F>
  var<T, S, B> record(tensor<T, S, B> out, F&& f) {
    using obj_t = op_node<T, S, B, std::decay_t<F>>;
    auto* obj = emplace<obj_t>(&obj_t::run, std::forward<F>(f));
    return var<T, S, B>(std::move(out), this, &obj->cell);
  }

  /// Records an op whose backward runs in every backward pass, with a zero
  /// gradient when none reached its output: a collective that every process
  /// must join in the same order (dist/exchange.hpp), whatever its own
  /// gradients are.
  template <class T, class S, class B, class F>
  var<T, S, B> record_collective(tensor<T, S, B> out, F&& f) {
    using obj_t = collective_node<T, S, B, std::decay_t<F>>;
    auto* obj = emplace<obj_t>(&obj_t::run, std::forward<F>(f), out.shape());
    return var<T, S, B>(std::move(out), this, &obj->cell);
  }

  /// Backpropagates from a one-element root (a loss), seeding d(root) = 1.
  template <class T, class S, class B>
  void backward(const var<T, S, B>& root) {
    if (root.size() != 1)
      throw shape_error("backward: root " + root.shape().str() + " is not a scalar; pass a seed gradient");
    backward(root, ones<T, B>(root.shape()));
  }
  /// Backpropagates from `root` with d(root) = seed.
  template <class T, class S, class B, class S2>
  void backward(const var<T, S, B>& root, const tensor<T, S2, B>& seed) {
    if (!root.requires_grad()) throw value_error("backward: the root does not depend on anything that requires grad");
    if (root.tape_ptr() != this) throw value_error("backward: the root was recorded on another tape");
    root.accumulate(seed.clone());
    for (std::size_t i = nodes_.size(); i-- > 0;)
      if (nodes_[i].run) nodes_[i].run(nodes_[i].obj);
  }

  /// Frees every node and the tensors they hold; vars of this tape become invalid.
  void reset() noexcept {
    destroy_nodes();
    arena_.reset();
  }

  /// Nodes recorded so far (ops and leaves that require grad).
  std::size_t size() const noexcept { return nodes_.size(); }

 private:
  struct node {
    void (*run)(void*);
    void (*destroy)(void*) noexcept;
    void* obj;
  };
  template <class T, class S, class B>
  struct leaf {
    detail::grad_cell<T, S, B> cell;
  };
  template <class T, class S, class B, class F>
  struct op_node {
    explicit op_node(F fn) : f(std::move(fn)) {}
    F f;
    detail::grad_cell<T, S, B> cell;
    // Runs the op's backward when a gradient reached its output, then drops
    // that gradient: only leaves keep theirs.
    static void run(void* p) {
      auto* self = static_cast<op_node*>(p);
      if (!self->cell.grad.defined()) return;
      auto dy = std::move(self->cell.grad);
      self->cell.grad = {};
      self->f(dy);
    }
  };

  template <class T, class S, class B, class F>
  struct collective_node {
    collective_node(F fn, S s) : f(std::move(fn)), out_shape(s) {}
    F f;
    S out_shape;
    detail::grad_cell<T, S, B> cell;
    static void run(void* p) {
      auto* self = static_cast<collective_node*>(p);
      auto dy = self->cell.grad.defined() ? std::move(self->cell.grad) : zeros<T, B>(self->out_shape);
      self->cell.grad = {};
      self->f(dy);
    }
  };

  template <class Obj, class... Args>
  Obj* emplace(void (*run)(void*), Args&&... args) {
    void* mem = arena_.allocate(sizeof(Obj), alignof(Obj));
    auto* obj = new (mem) Obj(std::forward<Args>(args)...);
    nodes_.push_back({run, [](void* p) noexcept { static_cast<Obj*>(p)->~Obj(); }, obj});
    return obj;
  }

  void destroy_nodes() noexcept {
    for (std::size_t i = nodes_.size(); i-- > 0;) nodes_[i].destroy(nodes_[i].obj);
    nodes_.clear();
  }

  static tape*& current_slot() noexcept {
    thread_local tape* t = nullptr;
    return t;
  }

  detail::arena arena_;
  std::vector<node> nodes_;
  tape* previous_;
};

namespace detail {

inline tape* first_tape() noexcept { return nullptr; }
template <class V, class... Vs>
tape* first_tape(const V& v, const Vs&... vs) noexcept {
  return v.tape_ptr() ? v.tape_ptr() : first_tape(vs...);
}

}  // namespace detail

/// Whether record(op, out, backward, inputs...) will record a backward: grad
/// mode is on and an input requires grad. An op asks before its forward when
/// what it keeps for the backward costs work of its own.
template <class... In>
bool will_record(const In&... inputs) noexcept {
  return grad_enabled() && (inputs.requires_grad() || ...);
}

/// The one entry point differentiable ops use: returns `out` as a var, and,
/// when grad mode is on and any input requires grad, records `backward` for it.
/// `backward(dy)` gets the output's gradient and accumulates into the inputs.
template <class T, class S, class B, class F, class... In>
var<T, S, B> record(const char* op, tensor<T, S, B> out, F&& backward, const In&... inputs) {
  tape* t = detail::first_tape(inputs...);
  if (!t) t = tape::current();
  if (!will_record(inputs...)) return var<T, S, B>(std::move(out), t, nullptr);
  if (!t)
    throw value_error(std::string(op) + ": no tape to record on; create a moekit::tape before using parameters");
  return t->record(std::move(out), std::forward<F>(backward));
}

}  // namespace moekit
