// cast<U>: float <-> bf16/half/double conversions on both a host and a device
// backend, and the gradient of a cast.
#include <catch2/catch.hpp>

#include <moekit.hpp>
#include <moekit/autograd/ops/cast.hpp>

using namespace moekit;

TEST_CASE("cast: float to bf16 and back rounds each value once", "[tensor][cast]") {
  auto x = from_values<float>(shape<4>{}, {1.0f, 1.0f + 0x1p-8f, -3.140625f, 1e-3f});
  auto h = cast<bf16>(x);
  auto back = cast<float>(h);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(back[i] == float(bf16(x[i])));
  REQUIRE(back[1] == 1.0f);  // a tie rounds to even
  REQUIRE(back[2] == -3.140625f);  // representable in bf16
}

TEST_CASE("cast: half and double on a device backend equal the host", "[tensor][cast]") {
  rng g(11);
  auto x = normal<float>(g, shape<dyn, 9>{6});  // (6, 9)
  auto host = cast<float>(cast<half>(x));
  auto dev = cast<float>(cast<half>(x.to<emulated_device>())).to<cpu>();
  auto wide = cast<double>(x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(dev[i] == host[i]);
    REQUIRE(host[i] == float(half(x[i])));
    REQUIRE(wide[i] == static_cast<double>(x[i]));
  }
}

TEST_CASE("cast: the gradient of a cast is the cast gradient", "[autograd][cast]") {
  tape t;
  auto x = t.variable(from_values<double>(shape<3>{}, {0.5, -1.25, 2.0}));
  auto y = cast<float>(x);          // (3) float
  auto loss = sum(y * y);           // Σ y²
  t.backward(loss);
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(x.grad()[i] == Approx(2.0 * x.value()[i]));
}

TEST_CASE("cast: a bf16 matmul between float casts trains like the float one", "[autograd][cast]") {
  // Mixed precision: float master values, the product in bf16 (float
  // accumulation), gradients back in float. Equal to the float product up to
  // bf16 rounding of the operands and the result.
  rng g(5);
  auto xv = normal<float>(g, shape<8, 16>{});  // (8, 16)
  auto wv = normal<float>(g, shape<16, 4>{});  // (16, 4)
  auto run = [&](bool low) {
    tape t;
    auto x = t.variable(xv.clone());
    auto w = t.variable(wv.clone());
    auto y = low ? cast<float>(matmul(cast<bf16>(x), cast<bf16>(w))) : matmul(x, w);  // (8, 4)
    t.backward(sum(y * y));
    return std::tuple{y.value().clone(), x.grad().clone(), w.grad().clone()};
  };
  auto [y32, dx32, dw32] = run(false);
  auto [y16, dx16, dw16] = run(true);
  auto close = [](const auto& a, const auto& b, double scale) {
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(b[i] == Approx(a[i]).margin(0.03 * scale));
  };
  close(y32, y16, 4.0);    // |y| ~ sqrt(16) = 4; bf16 keeps 8 bits (≈ 0.4 % per rounding)
  close(dx32, dx16, 32.0);
  close(dw32, dw16, 64.0);
  bool any_differs = false;  // and it really ran in bf16
  for (std::size_t i = 0; i < y32.size(); ++i) any_differs = any_differs || y16[i] != y32[i];
  REQUIRE(any_differs);
}
