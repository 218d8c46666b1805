// dist::expert_parallel against one process: P ranks, each with its T tokens,
// give the outputs and every gradient of one process that runs the same
// moe::layer on each rank's T tokens in turn (routing groups are per rank).
#include <catch2/catch.hpp>

#include <moekit/backend/emulated.hpp>
#include <moekit/dist/data_parallel.hpp>
#include <moekit/dist/expert_parallel.hpp>
#include <moekit/moe.hpp>

#include <map>
#include <string>
#include <vector>

#include "../support/compare.hpp"

using namespace moekit;
using moekit::testing::max_diff;

namespace {

constexpr std::size_t d_model = 6, d_ff = 5, experts = 8, tokens = 12;  // tokens per rank
using ffn = moe::ffn_expert<d_model, d_ff>;

/// x and the output weights of every rank (the same on every rank).
struct global_batch {
  std::vector<tensor<double, shape<dyn, dyn>, cpu>> x, w;  // per rank: (tokens, d_model)
};
global_batch make_batch(std::size_t ranks, std::uint64_t seed) {
  rng g(seed);
  global_batch b;
  for (std::size_t r = 0; r < ranks; ++r) {
    b.x.push_back(normal<double>(g, shape<dyn, dyn>{tokens, d_model}));
    b.w.push_back(normal<double>(g, shape<dyn, dyn>{tokens, d_model}));
  }
  return b;
}

/// Gradients by parameter name.
template <class M>
std::map<std::string, tensor<double, shape<dyn>, cpu>> grads_of(M& model) {
  std::map<std::string, tensor<double, shape<dyn>, cpu>> out;
  for (auto& v : parameter_views<double>(model)) out[v.name] = v.grad.clone();
  return out;
}

/// One process runs `full` on every rank's tokens; this rank runs `ep` on its
/// own; outputs, input gradients and every parameter gradient must agree.
template <class Full, class EP>
void check_against_one_process(Full& full, EP& ep, const dist::communicator& comm, std::uint64_t seed) {
  const auto b = make_batch(comm.ranks(), seed);
  const auto r = static_cast<std::size_t>(comm.rank());
  // The reference: every rank's tokens through the whole layer, loss summed.
  std::vector<tensor<double, shape<dyn, dyn>, cpu>> ref_y, ref_dx;
  {
    tape t;
    std::vector<var<double, shape<dyn, dyn>, cpu>> xs;
    var<double, scalar_shape, cpu> loss;
    for (std::size_t s = 0; s < comm.ranks(); ++s) {
      xs.push_back(t.variable(b.x[s].clone()));
      auto y = full(xs.back());
      ref_y.push_back(y.value().clone());
      auto l = sum(y * t.input(b.w[s]));
      loss = s == 0 ? l : loss + l;
    }
    t.backward(loss);
    for (auto& x : xs) ref_dx.push_back(x.grad().clone());
  }
  const auto ref = grads_of(full);
  // This rank's part.
  tape t;
  auto x = t.variable(b.x[r].clone());
  auto y = ep(x);
  t.backward(sum(y * t.input(b.w[r])));
  CHECK(max_diff(y.value(), ref_y[r]) < 1e-12);
  CHECK(max_diff(x.grad(), ref_dx[r]) < 1e-12);
  // Replicated parameters: each rank holds its tokens' part; summed over ranks
  // they are the reference's. Expert weights: this rank's sets' rows.
  dist::synchronize_gradients<double>(comm, ep, dist::reduction::sum);
  const std::size_t sets = ep.experts().weight_sets(), first = ep.first_set();
  for (auto& [name, g] : grads_of(ep)) {
    INFO("rank " << r << " gradient " << name);
    REQUIRE(ref.count(name) == 1);
    const auto& whole = ref.at(name);
    if (name.rfind("experts.", 0) == 0) {
      const std::size_t per_set = whole.size() / full.experts().weight_sets();
      CHECK(g.size() == sets * per_set);
      CHECK(max_diff(g, whole.rows(first * per_set, (first + sets) * per_set)) < 1e-12);
    } else {
      CHECK(max_diff(g, whole) < 1e-12);
    }
  }
}

}  // namespace

TEST_CASE("expert_parallel: top-2, dropless, load-balance loss", "[dist]") {
  auto comm = dist::communicator::world();
  using router_t = moe::top_k_router<d_model, experts, 2, double>;
  using layer_t = moe::layer<router_t, ffn, double>;
  auto make = [] {
    rng g(3);
    router_t router(g, {.load_balance_weight = 0.01, .z_loss_weight = 0.001});
    typename layer_t::bank_type bank(g);
    return layer_t(std::move(router), std::move(bank));
  };
  auto full = make();
  auto ep = dist::expert_parallel<router_t, ffn, double>::shard(comm, make());
  CHECK(ep.experts().weight_sets() == experts / comm.ranks());
  check_against_one_process(full, ep, comm, 17);
}

TEST_CASE("expert_parallel: top-2 with a capacity that drops, and a shared expert", "[dist]") {
  auto comm = dist::communicator::world();
  using router_t = moe::top_k_router<d_model, experts, 2, double>;
  using layer_t = moe::layer<router_t, ffn, double>;
  auto make = [] {
    rng g(5);
    router_t router(g, {.capacity_factor = 0.5, .load_balance_weight = 0.01});
    typename layer_t::bank_type bank(g);
    return layer_t(std::move(router), std::move(bank), typename layer_t::shared_type(g));
  };
  auto full = make();
  auto ep = dist::expert_parallel<router_t, ffn, double>::shard(comm, make());
  check_against_one_process(full, ep, comm, 19);
  CHECK(ep.last_routing().dropped > 0);  // the capacity did drop tokens on this rank
}

TEST_CASE("expert_parallel: expert choice", "[dist]") {
  auto comm = dist::communicator::world();
  using router_t = moe::expert_choice_router<d_model, experts, double>;
  using layer_t = moe::layer<router_t, ffn, double>;
  auto make = [] {
    rng g(7);
    router_t router(g, {.capacity_factor = 1.5});
    typename layer_t::bank_type bank(g);
    return layer_t(std::move(router), std::move(bank));
  };
  auto full = make();
  auto ep = dist::expert_parallel<router_t, ffn, double>::shard(comm, make());
  check_against_one_process(full, ep, comm, 23);
}

TEST_CASE("expert_parallel: a merged bank (8 slots, 4 weight sets) shards by weight set", "[dist]") {
  auto comm = dist::communicator::world();
  using router_t = moe::top_k_router<d_model, experts, 2, double>;
  using layer_t = moe::layer<router_t, ffn, double>;
  auto make = [] {
    rng g(9);
    router_t router(g, {});
    typename layer_t::bank_type bank(g);
    layer_t l(std::move(router), std::move(bank));
    l.experts().share(moe::slot_map<cpu>({0, 1, 2, 3, 3, 2, 1, 0}));
    return l;
  };
  auto full = make();
  if (4 % comm.ranks() != 0) return;
  auto ep = dist::expert_parallel<router_t, ffn, double>::shard(comm, make());
  CHECK(ep.experts().weight_sets() == 4 / comm.ranks());
  check_against_one_process(full, ep, comm, 29);
}

TEST_CASE("expert_parallel: clear errors", "[dist]") {
  auto comm = dist::communicator::world();
  using router_t = moe::top_k_router<d_model, dyn, 1, double>;
  using layer_t = moe::layer<router_t, ffn, double>;
  rng g(1);
  const std::size_t e = comm.ranks() + 1;  // never divisible by P > 1
  layer_t full(router_t(g, {}, d_model, e), typename layer_t::bank_type(g, e));
  if (comm.ranks() > 1)
    CHECK_THROWS_WITH((dist::expert_parallel<router_t, ffn, double>::shard(comm, std::move(full))),
                      Catch::Contains("do not divide over"));
}

TEST_CASE("exchange_rows: uneven counts, ranks that send or receive nothing, and the backward", "[dist]") {
  auto comm = dist::communicator::world();
  const std::size_t p = comm.ranks(), r = static_cast<std::size_t>(comm.rank());
  // Rank q sends q rows to every other rank: rank 0 sends nothing but
  // receives from everyone.
  std::vector<std::size_t> send(p, r), recv(p, 0);
  send[r] = 0;
  for (std::size_t q = 0; q < p; ++q) recv[q] = q == r ? 0 : q;
  std::size_t n = 0, m = 0;
  for (auto v : send) n += v;
  for (auto v : recv) m += v;
  tape t;
  auto x = t.variable(tensor<double, shape<dyn, 3>, cpu>(shape<dyn, 3>{n}));
  for (std::size_t i = 0; i < n * 3; ++i) x.value().data()[i] = static_cast<double>(100 * r + i);
  auto y = dist::exchange_rows(comm, x, send, recv, true, "test");
  REQUIRE(y.extent(0) == m);
  std::size_t at = 0;
  for (std::size_t q = 0; q < p; ++q) {
    if (q == r) continue;
    const std::size_t first = (r < q ? r : r - 1) * q;  // q's rows for this rank, among q's rows in rank order
    for (std::size_t i = 0; i < q; ++i, ++at)
      for (std::size_t c = 0; c < 3; ++c)
        CHECK(y.value().data()[at * 3 + c] == static_cast<double>(100 * q + (first + i) * 3 + c));
  }
  // d/dx of Σ y ⊙ y: 2·x comes back to each sent row.
  t.backward(sum(y * y));
  for (std::size_t i = 0; i < n * 3; ++i) CHECK(x.grad().data()[i] == 2 * x.value().data()[i]);
}

TEST_CASE("expert_parallel on a backend the host cannot read (emulated device): the staged exchange", "[dist]") {
  // emulated_device runs the device code path on the CPU: the plan's offsets
  // are copied back and the rows staged through host memory, as on a GPU
  // without NCCL. The same layer on the host gives the same step.
  auto comm = dist::communicator::world();
  auto run = [&](auto tag) {
    using B = decltype(tag);
    using router_t = moe::top_k_router<d_model, experts, 2, float, B>;
    using layer_t = moe::layer<router_t, moe::ffn_expert<d_model, d_ff>, float, B>;
    rng g(31);
    router_t router(g, {.capacity_factor = 0.75, .load_balance_weight = 0.01});
    typename layer_t::bank_type bank(g);
    auto ep = dist::sharded_t<layer_t>::shard(comm, layer_t(std::move(router), std::move(bank),
                                                             typename layer_t::shared_type(g)));
    rng gx(37, static_cast<std::uint64_t>(comm.rank() + 1) << 32);
    const auto xh = normal<float>(gx, shape<dyn, dyn>{tokens, d_model});
    const auto wh = normal<float>(gx, shape<dyn, dyn>{tokens, d_model});
    tape t;
    auto x = t.variable(xh.template to<B>());
    auto y = ep(x);
    t.backward(sum(y * t.input(wh.template to<B>())));
    dist::synchronize_gradients<float, B>(comm, ep);
    std::vector<tensor<float, shape<dyn>, cpu>> out{y.value().template to<cpu>().reshape(shape<dyn>{y.size()}),
                                                    x.grad().template to<cpu>().reshape(shape<dyn>{x.size()})};
    for (auto& v : parameter_views<float, B>(ep)) out.push_back(v.grad.template to<cpu>());
    return out;
  };
  const auto host = run(cpu{});
  const auto device = run(emulated_device{});
  REQUIRE(host.size() == device.size());
  for (std::size_t i = 0; i < host.size(); ++i) CHECK(max_diff(host[i], device[i]) < 1e-5);
}

TEST_CASE("communicator: counts that do not fit the communicator are a value_error before any MPI call", "[dist]") {
  auto world = dist::communicator::world();
  const std::size_t p = world.ranks();
  std::vector<std::size_t> wrong(p + 1, 0), right(p, 0);
  double dummy = 0;
  CHECK_THROWS_WITH(world.all_to_all_v(&dummy, wrong, &dummy, right, sizeof dummy, "test"),
                    Catch::Contains("all_to_all_v (test)") && Catch::Contains("the communicator has"));
  CHECK_THROWS_AS(world.start_all_to_all_v(&dummy, right, &dummy, wrong, sizeof dummy, "test"), value_error);
  const std::vector<std::int64_t> three(3, 0);
  if (p != 3) CHECK_THROWS_AS(world.all_to_all<std::int64_t>(three, 1, "test"), value_error);
}
