// Data parallelism around expert parallelism, on char_lm's model: three
// training steps on P ranks (each with 1/P of the windows, experts sharded,
// gradients synchronised, clipped by the global norm) give the parameters of
// one process training on the whole batch; a sharded checkpoint saved on P
// ranks loads on P/2 ranks and on one (into a plain single-process model).
#include <catch2/catch.hpp>

#include <moekit/dist/checkpoint.hpp>
#include <moekit/dist/data_parallel.hpp>
#include <moekit/dist/expert_parallel.hpp>

#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../../examples/common/char_training.hpp"
#include "../support/compare.hpp"

using namespace moekit;
using moekit::testing::max_diff;

namespace {

constexpr std::size_t vocabulary = 16, d_model = 8, d_ff = 12, experts = 4, seq = 8, windows = 8;
using ffn = moe::ffn_expert<dyn, dyn>;
using router_t = moe::top_k_router<dyn, dyn, 2>;
using plain_layer = moe::layer<router_t, ffn>;
using ep_layer = dist::expert_parallel<router_t, ffn>;
using plain_model = examples::char_transformer<plain_layer>;
using ep_model = examples::char_transformer<ep_layer>;

const examples::char_model_config config{.vocabulary = vocabulary, .d_model = d_model, .layers = 2, .heads = 2};

plain_layer make_layer(rng& g) {
  router_t router(g, {}, d_model, experts, 2);  // dropless, no aux loss: routing is per token
  return plain_layer(std::move(router), plain_layer::bank_type(g, experts, d_model, d_ff));
}
plain_model make_plain(std::uint64_t seed) {
  rng g(seed);
  return plain_model(g, config, [](rng& r, std::size_t) { return make_layer(r); });
}
ep_model make_ep(std::uint64_t seed, const dist::communicator& comm) {
  rng g(seed);
  return ep_model(g, config, [&](rng& r, std::size_t) { return ep_layer::shard(comm, make_layer(r)); });
}

tensor<index_t, shape<dyn>> text() {
  rng g(4);
  tensor<index_t, shape<dyn>> t(shape<dyn>{400});
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<index_t>(g.next_u32() % vocabulary);
  return t;
}

/// Windows [first, first + count) of step k's batch.
examples::char_batch batch(std::size_t step, std::size_t first, std::size_t count) {
  static const auto tokens = text();
  rng g(1, (step + 1) << 32);
  auto starts = examples::random_starts(g, tokens.size(), seq, windows);
  return examples::make_char_batch(tokens, {starts.begin() + static_cast<std::ptrdiff_t>(first),
                                            starts.begin() + static_cast<std::ptrdiff_t>(first + count)}, seq);
}

std::map<std::string, tensor<float, shape<dyn>, cpu>> values_of(auto& model) {
  std::map<std::string, tensor<float, shape<dyn>, cpu>> out;
  for (auto& v : parameter_views<float>(model)) out[v.name] = v.value.clone();
  return out;
}

/// Every parameter of `model` (sharded banks: its sets) against the whole-model `ref`.
void check_same(auto& model, const std::map<std::string, tensor<float, shape<dyn>, cpu>>& ref,
                const dist::communicator& comm, double tol) {
  const auto sharded = dist::sharded_paths(model);
  for (auto& [name, v] : values_of(model)) {
    INFO("rank " << comm.rank() << " of " << comm.size() << ": " << name);
    REQUIRE(ref.count(name) == 1);
    const auto& whole = ref.at(name);
    if (dist::is_sharded(name, sharded)) {
      const std::size_t per_rank = whole.size() / comm.ranks(), first = per_rank * static_cast<std::size_t>(comm.rank());
      CHECK(v.size() == per_rank);
      CHECK(max_diff(v, whole.rows(first, first + per_rank)) < tol);
    } else {
      CHECK(max_diff(v, whole) < tol);
    }
  }
}

}  // namespace

TEST_CASE("data + expert parallel char_lm: 3 steps on P ranks = one process on the whole batch; sharded checkpoints",
          "[dist]") {
  auto comm = dist::communicator::world();
  const std::size_t p = comm.ranks(), r = static_cast<std::size_t>(comm.rank());
  REQUIRE(windows % p == 0);
  REQUIRE(experts % p == 0);
  constexpr int steps = 3;
  constexpr double lr = 1e-2, clip = 0.3, tol = 2e-5;

  auto ref = make_plain(8);
  auto ref_opt = examples::adamw_for(ref, lr, 0.1);
  auto model = make_ep(8, comm);
  auto opt = examples::adamw_for(model, lr, 0.1);
  double ref_norm = 0, norm = 0;
  for (int k = 0; k < steps; ++k) {
    {
      ref_opt.zero_grad();
      const auto b = batch(static_cast<std::size_t>(k), 0, windows);
      tape t;
      t.backward(cross_entropy(ref(b.inputs), b.targets));
      ref_norm = optim::clip_grad_norm(ref_opt, clip);
      ref_opt.step();
    }
    opt.zero_grad();
    const auto b = batch(static_cast<std::size_t>(k), r * windows / p, windows / p);
    tape t;
    t.backward(cross_entropy(model(b.inputs), b.targets));  // the mean over this rank's tokens
    dist::synchronize_gradients(comm, model);                // mean over ranks: the mean over all tokens
    norm = dist::clip_grad_norm(comm, model, clip);
    opt.step();
  }
  CHECK(norm == Approx(ref_norm).epsilon(1e-5));
  CHECK(ref_norm > clip);  // clipping took part
  const auto expected = values_of(ref);
  check_same(model, expected, comm, tol);

  // A sharded checkpoint: saved on P ranks, loaded on P/2 and on 1.
  std::uint64_t id = r == 0 ? static_cast<std::uint64_t>(::getpid()) : 0;
  comm.broadcast(&id, sizeof id, 0, "test");
  const auto dir = std::filesystem::temp_directory_path() / ("moekit_dist_test_" + std::to_string(id) + "_" +
                                                             std::to_string(p));
  if (r == 0) std::filesystem::create_directories(dir);
  comm.barrier();
  dist::save_sharded(dir / "run", comm, model, opt, {{"step", "3"}});
  if (p >= 2) {
    auto half = comm.split(static_cast<int>(r / (p / 2)), static_cast<int>(r));
    REQUIRE(half.ranks() == p / 2);
    auto loaded = make_ep(99, half);
    auto loaded_opt = examples::adamw_for(loaded, lr, 0.1);
    const auto meta = dist::load_sharded(dir / "run", half, loaded, loaded_opt);
    CHECK(meta.at("step") == "3");
    CHECK(loaded_opt.steps() == steps);
    check_same(loaded, expected, half, tol);
  }
  {
    auto one = dist::communicator::self();
    auto whole = make_plain(99);
    auto whole_opt = examples::adamw_for(whole, lr, 0.1);
    dist::load_sharded(dir / "run", one, whole, whole_opt);
    CHECK(whole_opt.steps() == steps);
    check_same(whole, expected, one, tol);
    // Its optimizer state is the reference's: one more step on the same batch
    // lands both on the same parameters.
    auto step = [](auto& m, auto& o) {
      o.zero_grad();
      const auto b = batch(7, 0, windows);
      tape t;
      t.backward(cross_entropy(m(b.inputs), b.targets));
      o.step();
    };
    auto ref_copy = make_plain(1);
    auto ref_copy_opt = examples::adamw_for(ref_copy, lr, 0.1);
    dist::load_sharded(dir / "run", one, ref_copy, ref_copy_opt);
    step(whole, whole_opt);
    step(ref, ref_opt);
    check_same(whole, values_of(ref), one, tol);
  }
  comm.barrier();
  // A missing shard and a shard of another save are errors, not a partial load.
  if (r == 0 && p >= 2) {
    auto one = dist::communicator::self();
    auto m = make_plain(5);
    auto o = examples::adamw_for(m, lr, 0.1);
    const auto last = dir / ("run." + std::to_string(p - 1) + "-of-" + std::to_string(p) + ".safetensors");
    std::filesystem::rename(last, dir / "moved");
    CHECK_THROWS_AS(dist::load_sharded(dir / "run", one, m, o), io_error);
    std::filesystem::rename(dir / "moved", last);
    // Another save's shard 0 (on this rank alone, P = 1) does not pair with the others.
    auto solo = make_ep(3, one);
    auto solo_opt = examples::adamw_for(solo, lr, 0.1);
    dist::save_sharded(dir / "other", one, solo, solo_opt);
    std::filesystem::copy_file(dir / "other.0-of-1.safetensors", dir / ("run.0-of-" + std::to_string(p) + ".safetensors"),
                               std::filesystem::copy_options::overwrite_existing);
    CHECK_THROWS_WITH(dist::load_sharded(dir / "run", one, m, o), Catch::Contains("moekit.dist.ranks"));
  }
  comm.barrier();
  if (r == 0) std::filesystem::remove_all(dir);
}
