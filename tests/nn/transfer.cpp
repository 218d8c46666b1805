// nn::copy_state and optim::copy_state: a model and its optimizer moved
// between backends (cpu and emulated_device, which the host may not index)
// keep every bit, mismatches name the tensor, and training resumes exactly.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/nn/transfer.hpp>

using namespace moekit;

namespace {

constexpr mlp::config tiny{.in = 5, .width = 6, .blocks = 2, .classes = 3, .expansion = 2};

/// A model with a buffer (batch norm running statistics) besides parameters.
template <class B>
struct net {
  nn::linear<5, 6, float, B> fc;
  nn::batch_norm1d<6, float, B> bn;
  explicit net(rng& g) : fc(g) {}
  template <class S>
  auto operator()(const var<float, S, B>& x) {
    return bn(fc(x));
  }
  template <class V>
  void parameters(V&& visit) {
    visit("fc", fc);
    visit("bn", bn);
  }
};

/// Every parameter and buffer as raw host bytes, in visiting order.
template <class M>
std::vector<unsigned char> bytes_of(M& model) {
  std::vector<unsigned char> out;
  auto add = [&](const auto& t) {
    const auto h = t.template to<cpu>();
    const auto* p = reinterpret_cast<const unsigned char*>(h.data());
    out.insert(out.end(), p, p + h.size() * sizeof(*h.data()));
  };
  visit_parameters(model, [&](const std::string&, auto& p) { add(p.value()); });
  visit_buffers(model, [&](const std::string&, auto& b) { add(b); });
  return out;
}

template <class B, class M, class Opt>
void train_step(M& model, Opt& opt, std::uint64_t seed) {
  rng g(seed);
  tape t;
  opt.zero_grad();
  auto x = t.input(normal<float>(g, shape<dyn, dyn>{8, 5}).template to<B>());
  const auto y = from_values(shape<dyn>{8}, {0, 1, 2, 0, 1, 2, 2, 1});
  t.backward(cross_entropy(model(x), y));
  opt.step();
}

}  // namespace

TEST_CASE("copy_state: cpu -> emulated_device -> cpu is bitwise identical", "[nn][transfer]") {
  rng g1(1), g2(2), g3(3);
  net<cpu> host(g1);
  {
    // Move the running statistics off their initial values.
    tape t;
    (void)host(t.input(normal<float>(g1, shape<dyn, 5>{7})));
  }
  net<emulated_device> device(g2);
  net<cpu> back(g3);
  REQUIRE(bytes_of(host) != bytes_of(back));
  nn::copy_state(host, device);
  REQUIRE(bytes_of(device) == bytes_of(host));
  nn::copy_state(device, back);
  REQUIRE(bytes_of(back) == bytes_of(host));
  // The copies own their memory: changing the source later leaves them alone.
  fill(host.fc.weight().value(), 0.5f);
  REQUIRE(bytes_of(back) != bytes_of(host));
}

TEST_CASE("copy_state: a whole MLP moves and predicts the same", "[nn][transfer][mlp]") {
  rng g1(4), g2(5);
  mlp::bottleneck_mlp<tiny, float, cpu> host(g1);
  mlp::bottleneck_mlp<tiny, float, emulated_device> device(g2);
  nn::copy_state(host, device);
  rng gx(6);
  const auto x = normal<float>(gx, shape<dyn, 5>{4});
  tape t;
  const auto a = host(t.input(x)).value();
  const auto b = device(t.input(x.to<emulated_device>())).value().to<cpu>();
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("copy_state: mismatched names, shapes and types throw naming the tensor", "[nn][transfer]") {
  rng g(7);
  mlp::bottleneck_mlp<tiny, float, cpu> host(g);
  mlp::bottleneck_mlp<mlp::config{.in = 5, .width = 6, .blocks = 3, .classes = 3, .expansion = 2}, float,
                      emulated_device>
      deeper(g);
  REQUIRE_THROWS_AS(nn::copy_state(host, deeper), value_error);
  REQUIRE_THROWS_WITH(nn::copy_state(host, deeper), Catch::Contains("copy_state") && Catch::Contains("blocks.2."));
  REQUIRE_THROWS_WITH(nn::copy_state(deeper, host), Catch::Contains("blocks.2.") && Catch::Contains("source"));

  mlp::bottleneck_mlp<mlp::config{.in = 5, .width = 6, .blocks = 2, .classes = 4, .expansion = 2}, float,
                      emulated_device>
      wider(g);
  const auto before = bytes_of(wider);
  REQUIRE_THROWS_AS(nn::copy_state(host, wider), shape_error);
  REQUIRE_THROWS_WITH(nn::copy_state(host, wider), Catch::Contains("head.weight") && Catch::Contains("(6, 3)") &&
                                                       Catch::Contains("(6, 4)"));
  REQUIRE(bytes_of(wider) == before);  // nothing copied on failure

  mlp::bottleneck_mlp<tiny, double, emulated_device> doubles(g);
  REQUIRE_THROWS_WITH(nn::copy_state(host, doubles), Catch::Contains("F32") && Catch::Contains("F64"));
}

TEST_CASE("optim::copy_state: training resumes identically on the other backend", "[nn][transfer][optim]") {
  rng g1(8), g2(9), g3(10);
  net<cpu> host(g1);
  optim::adamw<float, cpu> host_opt(host, {.lr = 1e-2, .amsgrad = true});
  train_step<cpu>(host, host_opt, 1);
  train_step<cpu>(host, host_opt, 2);

  net<emulated_device> device(g2);
  optim::adamw<float, emulated_device> device_opt(device, {.lr = 0.5});  // options are taken over too
  nn::copy_state(host, device);
  optim::copy_state(host_opt, device_opt);
  REQUIRE(device_opt.steps() == 2);
  REQUIRE(device_opt.lr(0) == 1e-2);
  REQUIRE(device_opt.state(0, 0).step == 2);
  REQUIRE(device_opt.state(0, 0).buffers.size() == 3);

  train_step<cpu>(host, host_opt, 3);
  train_step<emulated_device>(device, device_opt, 3);
  REQUIRE(bytes_of(device) == bytes_of(host));

  // And back to a fresh host copy, which then continues like the original.
  net<cpu> back(g3);
  optim::adamw<float, cpu> back_opt(back);
  nn::copy_state(device, back);
  optim::copy_state(device_opt, back_opt);
  train_step<cpu>(host, host_opt, 4);
  train_step<cpu>(back, back_opt, 4);
  REQUIRE(bytes_of(back) == bytes_of(host));
  // The state was copied, not shared: stepping one leaves the other's buffers alone.
  REQUIRE(back_opt.state(0, 0).buffers[0].data() != host_opt.state(0, 0).buffers[0].data());
}

TEST_CASE("optim::copy_state: a different parameter list throws and changes nothing", "[nn][transfer][optim]") {
  rng g(11);
  net<cpu> a(g);
  mlp::bottleneck_mlp<tiny, float, emulated_device> other(g);
  optim::sgd<float, cpu> from(a, {.lr = 0.1, .momentum = 0.9});
  optim::sgd<float, emulated_device> to(other, {.lr = 0.1, .momentum = 0.9});
  train_step<cpu>(a, from, 1);
  REQUIRE_THROWS_AS(optim::copy_state(from, to), value_error);
  REQUIRE_THROWS_WITH(optim::copy_state(from, to), Catch::Contains("sgd") && Catch::Contains("copy_state"));
  REQUIRE(to.steps() == 0);

  // Same names, another size.
  net<cpu> b(g);
  optim::sgd<float, cpu> same_names(parameter_views<float>(b), {.lr = 0.1});
  auto views = parameter_views<float, emulated_device>(other);
  views.resize(4);
  std::swap(views[0], views[2]);  // now 6 elements where b's fc.weight has 30
  for (std::size_t i = 0; i < 4; ++i) views[i].name = parameter_views<float>(b)[i].name;
  optim::sgd<float, emulated_device> renamed(views, {.lr = 0.1});
  REQUIRE_THROWS_AS(optim::copy_state(same_names, renamed), shape_error);
  REQUIRE_THROWS_WITH(optim::copy_state(same_names, renamed), Catch::Contains("fc.weight"));
}
