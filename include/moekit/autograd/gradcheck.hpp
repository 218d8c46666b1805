// moekit/autograd/gradcheck.hpp — check_gradients(f, inputs...): compares the
// tape's gradients of f with central finite differences, in double precision.
//
//   auto r = moekit::check_gradients([](auto x, auto w) { return matmul(x, w); }, x, w);
//   REQUIRE(r.ok);   // r.message says which input and element disagree
//
// f takes one var per input tensor and returns a var of any shape; the check
// differentiates the scalar sum(f(...) * R) for a fixed random R, so every
// output element takes part.
#pragma once

#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../core/random.hpp"
#include "../tensor/ops/creation.hpp"
#include "parameter_tree.hpp"
#include "tape.hpp"

namespace moekit {

struct gradcheck_options {
  double eps = 1e-6;    // finite-difference step
  double atol = 1e-6;   // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-4;
  std::uint64_t seed = 0x5eed;  // for the projection R
};

struct gradcheck_result {
  bool ok = true;
  std::size_t checked = 0;  // elements compared
  double max_abs_error = 0;
  std::string message;      // the first failure, or "ok"
};

namespace detail {

template <class T, class S, class B>
double projected(const tensor<T, S, B>& y, const tensor<T, S, B>& r) {
  double acc = 0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += static_cast<double>(y[i]) * static_cast<double>(r[i]);
  return acc;
}

/// sum(f(inputs...) * R) evaluated without recording.
template <class F, class Proj, class... Ts>
double evaluate(F& f, const Proj& r, const Ts&... inputs) {
  no_grad guard;
  tape t;
  auto y = f(t.input(inputs)...);
  return projected(shape_cast<typename Proj::shape_type>(y.value()), r);
}

/// Central differences of `evaluate()` against `grad` for every element of x
/// (perturbed in place and restored); records the first failure in res.
template <class X, class G, class Eval>
void compare_elements(X& x, const G& grad, Eval&& evaluate, const std::string& what, const gradcheck_options& opt,
                      gradcheck_result& res) {
  for (std::size_t i = 0; i < x.size() && res.ok; ++i) {
    const double saved = static_cast<double>(x[i]);
    x[i] = saved + opt.eps;
    const double up = evaluate();
    x[i] = saved - opt.eps;
    const double down = evaluate();
    x[i] = saved;
    const double numeric = (up - down) / (2 * opt.eps);
    const double analytic = grad.defined() ? static_cast<double>(grad[i]) : 0.0;
    const double err = std::abs(analytic - numeric);
    res.max_abs_error = std::max(res.max_abs_error, err);
    ++res.checked;
    if (!(err <= opt.atol + opt.rtol * std::abs(numeric))) {
      std::ostringstream m;
      m << what << " element " << i << ": analytic " << analytic << " vs numeric " << numeric << " (error " << err
        << ")";
      res.ok = false;
      res.message = m.str();
    }
  }
}

}  // namespace detail

template <class F, class... Ts>
gradcheck_result check_gradients(F f, const Ts&... inputs_in) {
  return check_gradients(gradcheck_options{}, std::move(f), inputs_in...);
}

template <class F, class... Ts>
gradcheck_result check_gradients(const gradcheck_options& opt, F f, const Ts&... inputs_in) {
  static_assert((std::is_same_v<typename Ts::value_type, double> && ...),
                "check_gradients: inputs must be double tensors");
  static_assert((Ts::backend_type::host_accessible && ...),
                "check_gradients: finite differences perturb elements on the host: pass host (cpu) tensors");
  gradcheck_result res;
  std::tuple<Ts...> inputs{inputs_in.clone()...};

  // Analytic gradients through the tape.
  tape t;
  auto vars = std::apply([&](const auto&... x) { return std::tuple{t.variable(x)...}; }, inputs);
  auto y = std::apply([&](const auto&... v) { return f(v...); }, vars);
  rng g(opt.seed);
  auto r = normal<double>(g, y.shape());
  t.backward(y, r);

  auto check_input = [&](auto& x, const auto& v, std::size_t which) {
    auto evaluate = [&] {
      return std::apply([&](const auto&... in) { return detail::evaluate(f, r, in...); }, inputs);
    };
    detail::compare_elements(x, v.grad(), evaluate, "input " + std::to_string(which) + " " + x.shape().str(), opt, res);
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (check_input(std::get<I>(inputs), std::get<I>(vars), I), ...);
  }(std::index_sequence_for<Ts...>{});
  if (res.ok) res.message = "ok";
  return res;
}

/// The same check for a model's own parameters (a layer reads its parameter
/// members, so they cannot be passed as inputs): f(tape&) runs the model on
/// fixed inputs (`t.input(x)`) and returns a var; every parameter whose path
/// starts with `prefix` is perturbed in place and compared with its grad.
template <parameterized M, class F>
gradcheck_result check_parameter_gradients(M& model, F f, std::string_view prefix = "",
                                           const gradcheck_options& opt = {}) {
  gradcheck_result res;
  visit_parameters(model, [](const std::string&, auto& p) {
    static_assert(std::remove_cvref_t<decltype(p)>::backend_type::host_accessible,
                  "check_parameter_gradients: finite differences perturb parameters on the host: use a cpu model");
    p.zero_grad();
  });
  tape t;
  auto y = f(t);
  rng g(opt.seed);
  auto r = normal<double>(g, y.shape());
  t.backward(y, r);
  auto evaluate = [&] {
    no_grad off;
    tape te;
    return detail::projected(shape_cast<typename decltype(r)::shape_type>(f(te).value()), r);
  };
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name.starts_with(prefix)) detail::compare_elements(p.value(), p.grad().clone(), evaluate, name, opt, res);
  });
  if (res.ok) res.message = "ok";
  return res;
}

}  // namespace moekit
