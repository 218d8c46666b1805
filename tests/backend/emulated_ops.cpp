// Every op on emulated_device (host_accessible = false, the CPU kernels) gives
// the cpu result, forward and backward through the tape. Both backends run the
// same kernels, so the results agree to rounding; what this pins is that the
// generic code above the kernels takes device paths (no host indexing) that
// compute the same thing as the host paths.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <moekit.hpp>

using namespace moekit;

namespace {

using flat = std::vector<double>;
using results = std::vector<flat>;

/// A tensor of any backend copied to the host, flattened to double.
template <class T, class S, class B>
flat host_flat(const tensor<T, S, B>& x) {
  REQUIRE(x.defined());
  const auto h = x.template to<cpu>();
  flat out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<double>(h[i]);
  return out;
}

/// `run.template operator()<B>()` on cpu and on emulated_device: the same values.
template <class F>
void require_backends_agree(F run) {
  const results host = run.template operator()<cpu>();
  const results device = run.template operator()<emulated_device>();
  REQUIRE(host.size() == device.size());
  for (std::size_t k = 0; k < host.size(); ++k) {
    INFO("result " << k);
    REQUIRE(host[k].size() == device[k].size());
    REQUIRE(!host[k].empty());
    for (std::size_t i = 0; i < host[k].size(); ++i) {
      INFO("element " << i);
      REQUIRE(device[k][i] == Approx(host[k][i]).epsilon(1e-12).margin(1e-12));
    }
  }
}

template <class X>
concept host_indexable = requires(const X& t) {
  t[0];
  t.span();
};

/// normal(0, 1) made on the host, then moved to B.
template <class B, class S>
tensor<double, S, B> random_on(rng& g, const S& s) {
  return normal<double>(g, s).template to<B>();
}

}  // namespace

TEST_CASE("emulated_device: tensor indexing is not available, to<cpu>() round-trips", "[backend][emulated]") {
  STATIC_REQUIRE(host_indexable<tensor<float, shape<3>, cpu>>);
  STATIC_REQUIRE(!host_indexable<tensor<float, shape<3>, emulated_device>>);
  const auto h = from_values(shape<3>{}, {1.f, 2.f, 3.f});
  const auto back = h.to<emulated_device>().to<cpu>();
  REQUIRE(back[0] == 1.f);
  REQUIRE(back[2] == 3.f);
}

TEST_CASE("emulated_device: reductions over every axis, variance, argmax", "[backend][emulated]") {
  require_backends_agree([]<class B>() {
    rng g(1);
    auto x = random_on<B>(g, shape<2, 3, 4>{});
    auto m = random_on<B>(g, shape<dyn, dyn>{5, 7});
    return results{host_flat(sum<0>(x)), host_flat(sum<1>(x)),     host_flat(sum<2>(x)),
                   host_flat(mean<1>(x)), host_flat(max<1>(x)),     host_flat(variance<1>(x)),
                   host_flat(variance<0>(x, 0)), host_flat(variance<2>(x)), host_flat(sum(x)),
                   host_flat(argmax(m))};
  });
}

TEST_CASE("emulated_device: autograd reductions, arithmetic, activations", "[backend][emulated]") {
  require_backends_agree([]<class B>() {
    rng g(2);
    tape t;
    auto a = t.variable(random_on<B>(g, shape<dyn, 4>{3}));
    auto b = t.variable(random_on<B>(g, shape<3, 4>{}));
    auto row = t.variable(random_on<B>(g, shape<4>{}));
    auto y = sum(mean<0>(gelu(add_rows(a * b, row))) + sum<1>(transpose(tanh(a - b))));
    t.backward(y);
    return results{host_flat(y.value()), host_flat(a.grad()), host_flat(b.grad()), host_flat(row.grad())};
  });
}

TEST_CASE("emulated_device: softmax, norms, matmul, concat, split, rope, dropout", "[backend][emulated]") {
  require_backends_agree([]<class B>() {
    rng g(3);
    tape t;
    auto x = t.variable(random_on<B>(g, shape<dyn, 6>{4}));
    auto w = t.variable(random_on<B>(g, shape<6, 6>{}));
    auto gamma = t.variable(random_on<B>(g, shape<6>{}));
    auto beta = t.variable(random_on<B>(g, shape<6>{}));
    auto h = layer_norm(matmul(x, w), gamma, beta);
    auto both = concat<1>(softmax(h), rms_norm(log_softmax(x), gamma));  // (4, 12)
    auto parts = split<1>(both, {5, 7});
    auto r = rope(reshape(both, shape<2, 2, 12>{}), 1);
    rng drop(9);
    auto d = dropout(parts[1], 0.25, drop);
    auto y = sum(r * r) + sum(d) + sum(parts[0]);
    t.backward(y);
    return results{host_flat(y.value()), host_flat(x.grad()), host_flat(w.grad()), host_flat(gamma.grad()),
                   host_flat(beta.grad())};
  });
}

TEST_CASE("emulated_device: cross entropy, nll, mix, soft targets, kl, mse", "[backend][emulated]") {
  require_backends_agree([]<class B>() {
    rng g(4);
    tape t;
    auto logits = t.variable(random_on<B>(g, shape<dyn, 5>{6}));
    auto teacher = t.variable(random_on<B>(g, shape<dyn, 5>{6}));
    const auto labels = from_values(shape<dyn>{6}, {0, 4, -100, 2, 1, 3}).template to<B>();
    const auto labels_b = from_values(shape<6>{}, {1, 1, 2, 3, -100, 0}).template to<B>();
    auto target = softmax(random_on<B>(g, shape<dyn, 5>{6}));
    auto ce = cross_entropy(logits, labels, {.label_smoothing = 0.1});
    auto ce_none = cross_entropy<reduction::none>(logits, labels);
    auto mix = cross_entropy_mix(logits, labels, labels_b, 0.3);
    auto nl = nll<reduction::sum>(log_softmax(logits), labels);
    auto soft = cross_entropy(logits, target);
    auto kl = kl_div(log_softmax(logits), target);
    auto distill = kl_div(logits, teacher, 2.0);
    auto sq = mse(logits, teacher);
    auto y = ce + sum(ce_none) + mix + nl + soft + kl + distill + sq;
    t.backward(y);
    return results{host_flat(ce.value()), host_flat(ce_none.value()), host_flat(mix.value()), host_flat(nl.value()),
                   host_flat(soft.value()), host_flat(kl.value()),    host_flat(distill.value()),
                   host_flat(sq.value()), host_flat(logits.grad()),  host_flat(teacher.grad())};
  });
}

TEST_CASE("emulated_device: all rows ignored gives mean 0 on both backends", "[backend][emulated]") {
  require_backends_agree([]<class B>() {
    rng g(5);
    tape t;
    auto logits = t.variable(random_on<B>(g, shape<dyn, 3>{2}));
    const auto labels = from_values(shape<dyn>{2}, {-100, -100}).template to<B>();
    auto ce = cross_entropy(logits, labels);
    t.backward(ce);
    return results{host_flat(ce.value()), host_flat(logits.grad())};
  });
}

TEST_CASE("emulated_device: host labels for a device loss are checked on the host", "[backend][emulated][loss]") {
  rng g(6);
  tape t;
  auto logits = t.variable(random_on<emulated_device>(g, shape<dyn, 3>{3}));
  const auto bad = from_values(shape<dyn>{3}, {0, 3, 1});
  REQUIRE_THROWS_AS(cross_entropy(logits, bad), value_error);
  REQUIRE_THROWS_WITH(cross_entropy(logits, bad), Catch::Contains("cross_entropy") && Catch::Contains("label 3"));
  REQUIRE_THROWS_WITH(nll(logits, bad), Catch::Contains("nll"));
  REQUIRE_THROWS_WITH(cross_entropy_mix(logits, bad, from_values(shape<dyn>{3}, {0, 1, 2}), 0.5),
                      Catch::Contains("cross_entropy_mix"));
  // Host labels give the same loss as the same labels on the device.
  const auto good = from_values(shape<dyn>{3}, {0, 2, 1});
  const auto on_host = cross_entropy(logits, good).value().to<cpu>();
  const auto on_device = cross_entropy(logits, good.to<emulated_device>()).value().to<cpu>();
  REQUIRE(on_host[0] == on_device[0]);
}

TEST_CASE("emulated_device: out-of-range device labels count as ignored", "[backend][emulated][loss]") {
  // A device cannot range-check labels without a sync, so they are skipped
  // safely, exactly like ignore_index (including mean's denominator).
  rng g(7);
  tape t;
  auto x = random_on<emulated_device>(g, shape<dyn, 4>{4});
  auto logits = t.variable(x);
  const auto wild = from_values(shape<dyn>{4}, {1, 4, -7, 3}).to<emulated_device>();
  const auto ignored = from_values(shape<dyn>{4}, {1, -100, -100, 3}).to<emulated_device>();
  auto a = cross_entropy(logits, wild, {.label_smoothing = 0.2});
  auto b = cross_entropy(logits, ignored, {.label_smoothing = 0.2});
  REQUIRE(host_flat(a.value()) == host_flat(b.value()));
  auto c = nll<reduction::none>(logits, wild);
  REQUIRE(host_flat(c.value())[1] == 0.0);
  REQUIRE(host_flat(c.value())[2] == 0.0);
  t.backward(a);
  const flat grad = host_flat(logits.grad());
  tape t2;
  auto logits2 = t2.variable(x);
  t2.backward(cross_entropy(logits2, ignored, {.label_smoothing = 0.2}));
  REQUIRE(grad == host_flat(logits2.grad()));
}

TEST_CASE("emulated_device: out-of-range device indices never read or write out of bounds",
          "[backend][emulated][index]") {
  // The host throws on them (tests/tensor); a device cannot look without a
  // sync, so a bad gather index gives a zero row and a bad scatter index adds nothing.
  const auto x = from_values<float>(shape<dyn, 2>{3}, {1, 2, 3, 4, 5, 6}).to<emulated_device>();  // (3, 2)
  const auto idx = from_values<index_t>(shape<dyn>{4}, {2, 3, -1, 0}).to<emulated_device>();
  REQUIRE(host_flat(gather_rows(x, idx)) == flat{5, 6, 0, 0, 0, 0, 1, 2});
  const auto src = from_values<float>(shape<dyn, 2>{4}, {1, 1, 2, 2, 3, 3, 4, 4}).to<emulated_device>();  // (4, 2)
  REQUIRE(host_flat(scatter_add_rows(src, idx, 3)) == flat{4, 4, 0, 0, 1, 1});
}

TEST_CASE("emulated_device: attention with causal, length and padding masks", "[backend][emulated][attention]") {
  require_backends_agree([]<class B>() {
    rng g(8);
    nn::multi_head_attention<dyn, dyn, double, B> mha(g, 8, 2, {.rope = true});
    tape t;
    auto x = t.variable(random_on<B>(g, shape<dyn, dyn, 8>{2, 5}));
    // Masks built on the host; the device layer checks and moves them.
    nn::attention_mask<cpu> lengths{.causal = true, .key_lengths = from_values(shape<dyn>{2}, {3, 0})};
    tensor<std::uint8_t, shape<dyn, dyn>> flags(shape<dyn, dyn>{2, 5});
    for (std::size_t i = 0; i < flags.size(); ++i) flags[i] = i % 3 == 1;
    nn::attention_mask<cpu> padding{.key_padding = flags};
    auto y1 = mha(x, lengths);
    auto y2 = mha(x, padding.to<B>());
    auto loss = sum(y1 * y1) + sum(y2);
    t.backward(loss);
    results out{host_flat(y1.value()), host_flat(y2.value()), host_flat(x.grad())};
    visit_parameters(mha, [&](const std::string&, auto& p) { out.push_back(host_flat(p.grad())); });
    return out;
  });
}

TEST_CASE("emulated_device: host masks for a device layer are checked on the host", "[backend][emulated][attention]") {
  rng g(9);
  nn::multi_head_attention<8, 2, float, emulated_device> mha(g);
  tape t;
  auto x = t.input(normal<float>(g, shape<dyn, dyn, 8>{2, 4}).to<emulated_device>());
  nn::attention_mask<cpu> bad{.key_lengths = from_values(shape<dyn>{2}, {2, 5})};
  REQUIRE_THROWS_WITH(mha(x, bad), Catch::Contains("multi_head_attention") && Catch::Contains("key length 5"));
  nn::attention_mask<cpu> wrong_rows{.key_lengths = from_values(shape<dyn>{3}, {1, 1, 1})};
  REQUIRE_THROWS_AS(mha(x, wrong_rows), shape_error);
}

TEST_CASE("emulated_device: layers with buffers, embedding, top_k, logsumexp, dropout layer",
          "[backend][emulated][nn]") {
  require_backends_agree([]<class B>() {
    rng g(10);
    nn::batch_norm1d<4, double, B> bn;
    nn::embedding<7, 4, double, B> emb(g);
    nn::layer_norm<4, double, B> ln;
    nn::dropout drop(0.3, 77);
    tape t;
    auto x = t.variable(random_on<B>(g, shape<dyn, 4>{5}));
    const auto ids = from_values(shape<dyn, dyn>{2, 3}, {0, 6, 2, 2, 5, 1}).template to<B>();
    auto e = emb(ids);  // (2, 3, 4)
    auto h = drop(ln(bn(x)));
    auto [v, i] = top_k(h, 2);
    auto y = sum(v) + sum(logsumexp_rows(h)) + sum(e * e);
    t.backward(y);
    results out{host_flat(y.value()), host_flat(x.grad()), host_flat(i)};
    visit_parameters(bn, [&](const std::string&, auto& p) { out.push_back(host_flat(p.grad())); });
    visit_buffers(bn, [&](const std::string&, auto& b) { out.push_back(host_flat(b)); });
    out.push_back(host_flat(emb.weight().grad()));
    return out;
  });
}

TEST_CASE("emulated_device: gradient clipping, its norm and the clipped gradients", "[backend][emulated][optim]") {
  require_backends_agree([]<class B>() {
    rng g(11);
    nn::linear<dyn, dyn, double, B> fc(g, 700, 9);  // 6300 weights: more than one block of 4096
    tape t;
    auto x = t.input(random_on<B>(g, shape<dyn, dyn>{3, 700}));
    t.backward(sum(fc(x)) * 50.0);
    auto views = parameter_views<double, B>(fc);
    const double norm = optim::clip_grad_norm(views, 1.0);
    double after = 0;
    for (const auto& v : views) after += host_flat(sum(v.grad * v.grad))[0];
    REQUIRE(norm > 1.0);
    REQUIRE(std::sqrt(after) == Approx(1.0).epsilon(1e-5));
    results out{{norm}};
    for (const auto& v : views) out.push_back(host_flat(v.grad));
    return out;
  });
}

TEST_CASE("emulated_device: float clipping norm matches the host's double sum", "[backend][emulated][optim]") {
  rng g1(12), g2(12);
  nn::linear<dyn, dyn, float, cpu> host(g1, 300, 40);
  nn::linear<dyn, dyn, float, emulated_device> device(g2, 300, 40);
  fill(host.weight().grad(), 0.25f);
  fill(device.weight().grad(), 0.25f);
  const double expected = std::sqrt(300.0 * 40.0 * 0.0625);
  REQUIRE(optim::clip_grad_norm<float>(host, 1e9) == Approx(expected).epsilon(1e-12));
  REQUIRE(optim::clip_grad_norm<float, emulated_device>(device, 1e9) == Approx(expected).epsilon(1e-7));
}

TEST_CASE("emulated_device: print copies to the host", "[backend][emulated][print]") {
  const auto h = from_values(shape<2, 2>{}, {1.5f, 2.f, 3.f, 4.f});
  const std::string host = to_string(h), device = to_string(h.to<emulated_device>());
  REQUIRE(device.starts_with("tensor<F32, (2, 2), emulated_device>"));
  REQUIRE(device.substr(device.find('\n')) == host.substr(host.find('\n')));
  REQUIRE(host.find("[[1.5, 2],") != std::string::npos);
}

TEST_CASE("emulated_device: gather_batch takes host indices for device data", "[backend][emulated][data]") {
  rng g(13);
  const auto x = normal<float>(g, shape<dyn, 3>{6});
  const auto idx = from_values(shape<dyn>{3}, {5, 0, 2});
  const auto on_device = data::gather_batch(x.to<emulated_device>(), idx).to<cpu>();
  const auto on_host = data::gather_batch(x, idx);
  for (std::size_t i = 0; i < on_host.size(); ++i) REQUIRE(on_device[i] == on_host[i]);
  REQUIRE_THROWS_WITH(data::gather_batch(x.to<emulated_device>(), from_values(shape<dyn>{2}, {0, 6})),
                      Catch::Contains("gather_batch") && Catch::Contains("6"));
}

TEST_CASE("reduce_middle: sum and max over a middle axis match a reference loop", "[backend][reduce]") {
  rng g(14);
  const auto x = normal<double>(g, shape<3, 5, 4>{});
  const auto s = sum<1>(x.to<emulated_device>()).to<cpu>();
  const auto m = max<1>(x);
  for (std::size_t o = 0; o < 3; ++o)
    for (std::size_t j = 0; j < 4; ++j) {
      double acc = 0, best = x(o, 0, j);
      for (std::size_t i = 0; i < 5; ++i) {
        acc += x(o, i, j);
        best = std::max(best, x(o, i, j));
      }
      REQUIRE(s(o, j) == acc);  // the same order of additions
      REQUIRE(m(o, j) == best);
    }
}
