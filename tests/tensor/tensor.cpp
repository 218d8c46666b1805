// Tensors: storage semantics (handles share, clone copies), creation, views,
// element-wise ops and broadcasts, matmul, reductions, printing, and the
// runtime shape errors that name the op and both shapes.
#include <catch2/catch.hpp>

#include <moekit.hpp>

using namespace moekit;

TEST_CASE("tensor: handles share storage, clone copies", "[tensor]") {
  auto a = zeros<float>(shape<2, 3>{});
  auto b = a;
  b(1, 2) = 5;
  REQUIRE(a(1, 2) == 5);
  REQUIRE(a.use_count() == 2);
  auto c = a.clone();
  c(1, 2) = 7;
  REQUIRE(a(1, 2) == 5);
  REQUIRE(c.use_count() == 1);
  REQUIRE(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  tensor<float, shape<2, 3>> moved = std::move(b);
  REQUIRE_FALSE(b.defined());  // NOLINT: moved-from handles are undefined by contract
  REQUIRE(moved(1, 2) == 5);
}

TEST_CASE("tensor: creation", "[tensor]") {
  auto f = full<double>(shape<dyn, 2>{3}, 2.5);
  for (double v : f.span()) REQUIRE(v == 2.5);
  auto o = ones<float>(shape<4>{});
  REQUIRE(o[3] == 1.0f);
  auto r = arange<float>(5, 1.0f, 0.5f);
  REQUIRE(r.size() == 5);
  REQUIRE(r[4] == 3.0f);
  auto v = from_values<int>(shape<2, 2>{}, {1, 2, 3, 4});
  REQUIRE(v(1, 0) == 3);
  REQUIRE_THROWS_AS(from_values<int>(shape<2, 2>{}, {1, 2, 3}), shape_error);
}

TEST_CASE("tensor: reshape shares and checks sizes", "[tensor]") {
  auto a = arange<float>(12);
  auto m = a.reshape(shape<3, 4>{});
  m(2, 3) = -1;
  REQUIRE(a[11] == -1);
  auto d = a.reshape(shape<dyn, 6>{2});
  REQUIRE(d(1, 0) == 6);
  REQUIRE_THROWS_AS(a.reshape(shape<5, 2>{}), shape_error);
  REQUIRE_THROWS_WITH(a.reshape(shape<5, 2>{}), Catch::Contains("reshape") && Catch::Contains("(12)") &&
                                                    Catch::Contains("(5, 2)"));
  auto s = shape_cast<shape<3, 4>>(a.reshape(shape<dyn, 4>{3}));
  REQUIRE(s(2, 3) == -1);
  using S44 = shape<4, 4>;
  auto rows3 = a.reshape(shape<dyn, 4>{3});
  REQUIRE_THROWS_AS(shape_cast<S44>(rows3), shape_error);
}

TEST_CASE("tensor: row slices are views", "[tensor]") {
  auto a = arange<double>(12).reshape(shape<4, 3>{});
  auto r = a.rows(1, 3);
  REQUIRE(r.extent(0) == 2);
  REQUIRE(r(0, 0) == 3);
  r(1, 2) = 100;
  REQUIRE(a(2, 2) == 100);
  REQUIRE(a.rows(4, 4).size() == 0);
  REQUIRE_THROWS_AS(a.rows(2, 5), shape_error);
}

TEST_CASE("tensor: element-wise ops, scalars and broadcasts", "[tensor]") {
  auto a = from_values<double>(shape<2, 3>{}, {1, 2, 3, 4, 5, 6});
  auto b = full<double>(shape<dyn, 3>{2}, 2.0);
  auto s = a + b;
  REQUIRE(s(1, 2) == 8);
  REQUIRE((a * b)(0, 1) == 4);
  REQUIRE((a - b)(0, 0) == -1);
  REQUIRE((a / b)(1, 1) == 2.5);
  REQUIRE((a * 3.0)(1, 0) == 12);
  REQUIRE((10.0 - a)(0, 2) == 7);
  REQUIRE((1.0 / a)(1, 0) == 0.25);
  REQUIRE((-a)(0, 0) == -1);
  auto row = from_values<double>(shape<3>{}, {10, 20, 30});
  auto col = from_values<double>(shape<2>{}, {100, 200});
  REQUIRE(add_rows(a, row)(1, 2) == 36);
  REQUIRE(mul_rows(a, row)(0, 1) == 40);
  REQUIRE(sub_cols(a, col)(1, 0) == -196);
  REQUIRE(div_cols(a, col)(0, 2) == Approx(0.03));
  auto wrong = full<double>(shape<dyn, 3>{3}, 1.0);
  REQUIRE_THROWS_AS(a + wrong, shape_error);
  REQUIRE_THROWS_WITH(a * wrong, Catch::Contains("mul") && Catch::Contains("(2, 3)") && Catch::Contains("(3, 3)"));
  auto short_row = full<double>(shape<dyn>{2}, 1.0);
  REQUIRE_THROWS_WITH(add_rows(a, short_row), Catch::Contains("add_rows"));
}

TEST_CASE("tensor: activations and math", "[tensor]") {
  auto x = from_values<double>(shape<4>{}, {-2, -0.5, 0.5, 2});
  auto r = relu(x);
  REQUIRE(r[0] == 0);
  REQUIRE(r[3] == 2);
  REQUIRE(gelu(x)[3] == Approx(2 * 0.5 * (1 + std::erf(2 / std::sqrt(2.0)))));
  REQUIRE(sigmoid(x)[0] == Approx(1 / (1 + std::exp(2.0))));
  REQUIRE(silu(x)[2] == Approx(0.5 / (1 + std::exp(-0.5))));
  REQUIRE(tanh(x)[1] == Approx(std::tanh(-0.5)));
  REQUIRE(elu(x, 2.0)[0] == Approx(2 * (std::exp(-2.0) - 1)));
  REQUIRE(leaky_relu(x, 0.1)[1] == Approx(-0.05));
  REQUIRE(exp(x)[3] == Approx(std::exp(2.0)));
  REQUIRE(pow(x, 2.0)[0] == Approx(4));
  REQUIRE(sigmoid(full<float>(shape<1>{}, -1000.0f))[0] == 0.0f);  // no overflow
}

TEST_CASE("tensor: matmul and bmm", "[tensor]") {
  auto a = from_values<double>(shape<2, 3>{}, {1, 2, 3, 4, 5, 6});
  auto b = from_values<double>(shape<3, 2>{}, {7, 8, 9, 10, 11, 12});
  auto c = matmul(a, b);
  STATIC_REQUIRE(std::is_same_v<decltype(c), tensor<double, shape<2, 2>>>);
  REQUIRE(c(0, 0) == 58);
  REQUIRE(c(1, 1) == 154);
  auto ct = matmul<trans::both>(b, a);  // bᵀ aᵀ = (a b)ᵀ
  REQUIRE(ct(0, 1) == c(1, 0));
  auto ab = matmul<trans::a>(a, a);  // aᵀ a: (3, 3)
  REQUIRE(ab(2, 2) == 9 + 36);
  auto batch = bmm(a.reshape(shape<1, 2, 3>{}), b.reshape(shape<1, 3, 2>{}));
  REQUIRE(batch(0, 1, 0) == 139);
  auto dyn_a = a.reshape(shape<dyn, dyn>{3, 2});
  REQUIRE_THROWS_AS(matmul(dyn_a, b), shape_error);
  REQUIRE_THROWS_WITH(matmul(dyn_a, b), Catch::Contains("matmul: (3, 2) x (3, 2): inner dimensions 2 != 3"));
}

TEST_CASE("tensor: reductions over an axis", "[tensor]") {
  auto x = arange<double>(24).reshape(shape<2, 3, 4>{});
  auto s1 = sum<1>(x);  // (2, 4)
  STATIC_REQUIRE(std::is_same_v<decltype(s1), tensor<double, shape<2, 4>>>);
  REQUIRE(s1(0, 0) == 0 + 4 + 8);
  REQUIRE(s1(1, 3) == 15 + 19 + 23);
  REQUIRE(sum<2>(x)(1, 2) == 20 + 21 + 22 + 23);
  REQUIRE(sum<0>(x)(2, 1) == 9 + 21);
  REQUIRE(mean<2>(x)(0, 0) == 1.5);
  REQUIRE(max<1>(x)(1, 2) == 22);
  REQUIRE(sum(x)[0] == 276);
  auto v = variance<1>(from_values<double>(shape<2, 3>{}, {1, 2, 3, 2, 2, 2}));
  REQUIRE(v[0] == Approx(1.0));  // unbiased, as torch.var
  REQUIRE(v[1] == 0.0);
  REQUIRE(variance<1>(from_values<double>(shape<1, 3>{}, {1, 2, 3}), 0)[0] == Approx(2.0 / 3));
  auto am = argmax(from_values<float>(shape<2, 3>{}, {1, 5, 2, 9, 0, 9}));
  REQUIRE(am[0] == 1);
  REQUIRE(am[1] == 0);
}

TEST_CASE("tensor: print elides long axes", "[tensor][print]") {
  auto small = from_values<double>(shape<2, 2>{}, {1, 2, 3, 4.5});
  auto text = to_string(small);
  REQUIRE_THAT(text, Catch::Contains("tensor<F64, (2, 2), cpu>"));
  REQUIRE_THAT(text, Catch::Contains("[[1, 2],\n [3, 4.5]]"));
  auto big = to_string(arange<float>(100));
  REQUIRE_THAT(big, Catch::Contains("[0, 1, 2, ..., 97, 98, 99]"));
}
