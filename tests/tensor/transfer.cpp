// tensor::to<B2>(): between cpu and a device backend (the emulated one here,
// CUDA in tests/cuda) the data arrive unchanged; to the same backend it is
// the same storage, as PyTorch's .to() is.
#include <catch2/catch.hpp>

#include <moekit.hpp>

using namespace moekit;

TEST_CASE("tensor: to<B>() round trip through a device backend", "[tensor][transfer]") {
  rng g(3);
  auto x = normal<float>(g, shape<dyn, 7>{5});  // (5, 7)
  auto d = x.to<emulated_device>();
  STATIC_REQUIRE(std::is_same_v<decltype(d), tensor<float, shape<dyn, 7>, emulated_device>>);
  REQUIRE(d.shape() == x.shape());
  REQUIRE(d.data() != x.data());
  auto back = d.to<cpu>();
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(back[i] == x[i]);

  auto same = x.to<cpu>();
  REQUIRE(same.data() == x.data());
  REQUIRE(x.use_count() == 2);
}

TEST_CASE("tensor: to<B>() of index and 16-bit tensors", "[tensor][transfer]") {
  auto idx = from_values<index_t>(shape<3>{}, {4, -1, 7});
  auto back = idx.to<emulated_device>().to<cpu>();
  REQUIRE(back[0] == 4);
  REQUIRE(back[1] == -1);
  REQUIRE(back[2] == 7);

  tensor<bf16, shape<2>> h(shape<2>{});
  h[0] = bf16(1.5f), h[1] = bf16(-3.0f);
  auto hb = h.to<emulated_device>().to<cpu>();
  REQUIRE(float(hb[0]) == 1.5f);
  REQUIRE(float(hb[1]) == -3.0f);
}

TEST_CASE("tensor: an empty tensor transfers", "[tensor][transfer]") {
  tensor<float, shape<dyn>> e(shape<dyn>{0});
  auto back = e.to<emulated_device>().to<cpu>();
  REQUIRE(back.size() == 0);
}
