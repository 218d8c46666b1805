// moekit/autograd/ops/arithmetic.hpp — differentiable +, -, *, / on vars:
// same shape, with a scalar, and with a row or column operand broadcast.
#pragma once

#include "../../tensor/ops/elementwise.hpp"
#include "../../tensor/ops/sums.hpp"
#include "../tape.hpp"

namespace moekit {

// ---- same shape -------------------------------------------------------------
template <class T, class SA, class SB, class B>
auto operator+(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("add", a.value() + b.value(), [a, b](const auto& dy) {
    a.accumulate(dy);
    b.accumulate(dy);
  }, a, b);
}
template <class T, class SA, class SB, class B>
auto operator-(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("sub", a.value() - b.value(), [a, b](const auto& dy) {
    a.accumulate(dy);
    if (b.requires_grad()) b.accumulate(-dy);
  }, a, b);
}
template <class T, class SA, class SB, class B>
auto operator*(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("mul", a.value() * b.value(), [a, b](const auto& dy) {
    if (a.requires_grad()) a.accumulate(dy * b.value());
    if (b.requires_grad()) b.accumulate(dy * a.value());
  }, a, b);
}
template <class T, class SA, class SB, class B>
auto operator/(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  auto y = a.value() / b.value();
  return record("div", y, [a, b, y](const auto& dy) {
    auto da = dy / b.value();                    // d(a/b)/da = 1/b
    if (b.requires_grad()) b.accumulate(-(da * y));  // d(a/b)/db = -(a/b)/b
    a.accumulate(da);
  }, a, b);
}
template <class T, class S, class B>
var<T, S, B> operator-(const var<T, S, B>& x) {
  return record("neg", -x.value(), [x](const auto& dy) { x.accumulate(-dy); }, x);
}

// ---- with a scalar ------------------------------------------------------------
template <class T, class S, class B>
var<T, S, B> operator+(const var<T, S, B>& x, std::type_identity_t<T> s) {
  return record("add_scalar", x.value() + s, [x](const auto& dy) { x.accumulate(dy); }, x);
}
template <class T, class S, class B>
var<T, S, B> operator+(std::type_identity_t<T> s, const var<T, S, B>& x) { return x + s; }
template <class T, class S, class B>
var<T, S, B> operator-(const var<T, S, B>& x, std::type_identity_t<T> s) { return x + (-s); }
template <class T, class S, class B>
var<T, S, B> operator-(std::type_identity_t<T> s, const var<T, S, B>& x) {
  return record("rsub_scalar", s - x.value(), [x](const auto& dy) { x.accumulate(-dy); }, x);
}
template <class T, class S, class B>
var<T, S, B> operator*(const var<T, S, B>& x, std::type_identity_t<T> s) {
  return record("mul_scalar", x.value() * s, [x, s](const auto& dy) { x.accumulate(dy * s); }, x);
}
template <class T, class S, class B>
var<T, S, B> operator*(std::type_identity_t<T> s, const var<T, S, B>& x) { return x * s; }
template <class T, class S, class B>
var<T, S, B> operator/(const var<T, S, B>& x, std::type_identity_t<T> s) { return x * (T(1) / s); }
template <class T, class S, class B>
var<T, S, B> operator/(std::type_identity_t<T> s, const var<T, S, B>& x) {
  auto y = s / x.value();
  return record("rdiv_scalar", y, [x, y, s](const auto& dy) {
    x.accumulate(-(dy * y * y) / s);  // d(s/x)/dx = -s/x² = -y²/s
  }, x);
}

// ---- broadcast: a row over the rows of x, or a column over its columns ---------
template <class T, class SX, class SR, class B>
var<T, SX, B> add_rows(const var<T, SX, B>& x, const var<T, SR, B>& row) {
  return record("add_rows", add_rows(x.value(), row.value()), [x, row](const auto& dy) {
    x.accumulate(dy);
    if (row.requires_grad()) row.accumulate(column_sums(dy, row.shape()));
  }, x, row);
}
template <class T, class SX, class SR, class B>
var<T, SX, B> sub_rows(const var<T, SX, B>& x, const var<T, SR, B>& row) {
  return record("sub_rows", sub_rows(x.value(), row.value()), [x, row](const auto& dy) {
    x.accumulate(dy);
    if (row.requires_grad()) row.accumulate(-column_sums(dy, row.shape()));
  }, x, row);
}
template <class T, class SX, class SR, class B>
var<T, SX, B> mul_rows(const var<T, SX, B>& x, const var<T, SR, B>& row) {
  return record("mul_rows", mul_rows(x.value(), row.value()), [x, row](const auto& dy) {
    if (x.requires_grad()) x.accumulate(mul_rows(dy, row.value()));
    if (row.requires_grad()) row.accumulate(column_sums(dy * x.value(), row.shape()));
  }, x, row);
}
template <class T, class SX, class SR, class B>
var<T, SX, B> div_rows(const var<T, SX, B>& x, const var<T, SR, B>& row) {
  auto y = div_rows(x.value(), row.value());
  return record("div_rows", y, [x, row, y](const auto& dy) {
    auto dx = div_rows(dy, row.value());
    if (row.requires_grad()) row.accumulate(-column_sums(dx * y, row.shape()));
    x.accumulate(dx);
  }, x, row);
}
template <class T, class SX, class SC, class B>
var<T, SX, B> add_cols(const var<T, SX, B>& x, const var<T, SC, B>& col) {
  return record("add_cols", add_cols(x.value(), col.value()), [x, col](const auto& dy) {
    x.accumulate(dy);
    if (col.requires_grad()) col.accumulate(row_sums(dy, col.shape()));
  }, x, col);
}
template <class T, class SX, class SC, class B>
var<T, SX, B> sub_cols(const var<T, SX, B>& x, const var<T, SC, B>& col) {
  return record("sub_cols", sub_cols(x.value(), col.value()), [x, col](const auto& dy) {
    x.accumulate(dy);
    if (col.requires_grad()) col.accumulate(-row_sums(dy, col.shape()));
  }, x, col);
}
template <class T, class SX, class SC, class B>
var<T, SX, B> mul_cols(const var<T, SX, B>& x, const var<T, SC, B>& col) {
  return record("mul_cols", mul_cols(x.value(), col.value()), [x, col](const auto& dy) {
    if (x.requires_grad()) x.accumulate(mul_cols(dy, col.value()));
    if (col.requires_grad()) col.accumulate(row_sums(dy * x.value(), col.shape()));
  }, x, col);
}
template <class T, class SX, class SC, class B>
var<T, SX, B> div_cols(const var<T, SX, B>& x, const var<T, SC, B>& col) {
  auto y = div_cols(x.value(), col.value());
  return record("div_cols", y, [x, col, y](const auto& dy) {
    auto dx = div_cols(dy, col.value());
    if (col.requires_grad()) col.accumulate(-row_sums(dx * y, col.shape()));
    x.accumulate(dx);
  }, x, col);
}

}  // namespace moekit
