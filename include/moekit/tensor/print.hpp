// moekit/tensor/print.hpp — human-readable tensors: shape, then values with
// long axes elided ("...") the way NumPy and PyTorch print.
#pragma once

#include <cstddef>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>

#include "../core/dtype.hpp"
#include "tensor.hpp"

namespace moekit {

struct print_options {
  std::size_t edge = 3;       // values shown at each end of a long axis
  std::size_t threshold = 8;  // axes longer than this are elided
  int precision = 4;
};

namespace detail {
template <class T, class S, class B>
void print_axis(std::ostream& os, const tensor<T, S, B>& x, std::size_t axis, std::size_t offset,
                const print_options& opt) {
  const std::size_t n = x.extent(axis);
  std::size_t stride = 1;
  for (std::size_t i = axis + 1; i < S::rank(); ++i) stride *= x.extent(i);
  os << '[';
  for (std::size_t i = 0; i < n; ++i) {
    if (n > opt.threshold && i == opt.edge) {
      os << (axis + 1 == S::rank() ? "..., " : "...,\n ");
      i = n - opt.edge;
    }
    if (axis + 1 == S::rank()) os << x[offset + i];
    else print_axis(os, x, axis + 1, offset + i * stride, opt);
    if (i + 1 < n) os << (axis + 1 == S::rank() ? ", " : ",\n ");
  }
  os << ']';
}
/// The values of a host tensor, nested brackets per axis.
template <class T, class S, class B>
std::ostream& print_values(std::ostream& os, const tensor<T, S, B>& x, const print_options& opt) {
  std::ostringstream body;
  body << std::setprecision(opt.precision);
  if constexpr (S::rank() == 0) body << x[0];
  else print_axis(body, x, 0, 0, opt);
  return os << body.str() << '\n';
}
}  // namespace detail

/// Writes `tensor<F32, (2, 3), cpu>` and the values. A device tensor is
/// copied to the host first (one device-to-host transfer, which waits for it).
template <class T, class S, class B>
std::ostream& print(std::ostream& os, const tensor<T, S, B>& x, const print_options& opt = {}) {
  os << "tensor<" << dtype_name<T>() << ", " << x.shape().str() << ", " << B::name << ">\n";
  if (!x.defined()) return os << "(undefined)\n";
  if constexpr (!B::host_accessible) {
    static_assert(transferable<B, cpu>, "print: no transfer from this backend to the host");
    return detail::print_values(os, x.template to<cpu>(), opt);
  } else {
    return detail::print_values(os, x, opt);
  }
}

template <class T, class S, class B>
std::string to_string(const tensor<T, S, B>& x, const print_options& opt = {}) {
  std::ostringstream os;
  print(os, x, opt);
  return os.str();
}

template <class T, class S, class B>
std::ostream& operator<<(std::ostream& os, const tensor<T, S, B>& x) {
  return print(os, x);
}

}  // namespace moekit
