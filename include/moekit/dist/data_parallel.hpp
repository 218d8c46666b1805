// moekit/dist/data_parallel.hpp — data parallelism around expert parallelism.
// Every parameter is either replicated (router, attention, norms, embeddings,
// shared experts: the same on every rank) or sharded (the weight sets of a
// dist::expert_parallel layer: each rank its own). After each rank's
// backward on its part of the batch:
//
//   dist::synchronize_gradients(comm, model);   // mean over ranks (default)
//   opt.step();                                 // the same step on every rank
//
// replicated gradients are all-reduced in buckets (a few large MPI_Allreduce
// calls instead of one per parameter) and, with reduction::mean, divided by P;
// sharded gradients already hold every rank's tokens (the exchange brought
// them back) and are only divided by P. With each rank's loss the mean over
// its T tokens, mean gives the gradient of the mean over all P·T tokens:
// exactly what one process computes on the whole batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "../optim/optimizer.hpp"
#include "../tensor/ops/elementwise.hpp"
#include "communicator.hpp"

namespace moekit::dist {

enum class reduction { mean, sum };

/// A layer whose "experts" are sharded over ranks (dist::expert_parallel).
template <class L>
concept sharded_layer = requires { requires L::is_expert_parallel; };

namespace detail {
/// Calls f(path of a sharded subtree) for every sharded expert bank under `model`.
template <class M, class F>
void visit_sharded(M& model, F& f, const std::string& path) {
  if constexpr (sharded_layer<M>) f(path.empty() ? std::string("experts") : path + ".experts");
  model.parameters([&](std::string_view name, auto& item) {
    if constexpr (!parameter_type<decltype(item)>)
      visit_sharded(item, f, path.empty() ? std::string(name) : path + "." + std::string(name));
  });
}
}  // namespace detail

/// The dotted paths of the sharded expert banks under `model` ("blocks.0.mlp.experts").
template <parameterized M>
std::vector<std::string> sharded_paths(M& model) {
  std::vector<std::string> out;
  auto add = [&](std::string p) { out.push_back(std::move(p)); };
  detail::visit_sharded(model, add, "");
  return out;
}

/// Whether the parameter at `name` lies under one of `sharded` paths.
inline bool is_sharded(std::string_view name, const std::vector<std::string>& sharded) {
  return std::any_of(sharded.begin(), sharded.end(), [&](const std::string& p) {
    return name.size() > p.size() && name.substr(0, p.size()) == p && name[p.size()] == '.';
  });
}

/// All-reduces the gradients of replicated parameters of element type T
/// (buckets of about `bucket_bytes`) and, for reduction::mean, divides every
/// gradient, sharded ones included, by the number of ranks.
template <class T = float, backend B = cpu, parameterized M>
void synchronize_gradients(const communicator& comm, M& model, reduction r = reduction::mean,
                           std::size_t bucket_bytes = std::size_t{4} << 20) {
  const auto sharded = sharded_paths(model);
  auto views = parameter_views<T, B>(model);
  std::vector<T> bucket;
  std::vector<std::size_t> members;  // views in the bucket
  auto flush = [&] {
    comm.all_reduce_sum(bucket.data(), bucket.size(), "synchronize_gradients");
    std::size_t at = 0;
    for (std::size_t i : members) {
      auto& g = views[i].grad;
      const std::size_t n = g.size();
      if constexpr (B::host_accessible) std::memcpy(g.data(), bucket.data() + at, n * sizeof(T));
      else {
        auto host = tensor<T, shape<dyn>, cpu>(shape<dyn>{n});
        std::memcpy(host.data(), bucket.data() + at, n * sizeof(T));
        fill(g, T(0));
        add_into(g, moekit::detail::to_backend<B>(host));
      }
      at += n;
    }
    bucket.clear();
    members.clear();
  };
  for (std::size_t i = 0; i < views.size(); ++i) {
    if (is_sharded(views[i].name, sharded) || !views[i].grad.defined()) continue;
    const auto& g = views[i].grad;
    if constexpr (B::host_accessible) bucket.insert(bucket.end(), g.data(), g.data() + g.size());
    else {
      const auto host = g.template to<cpu>();
      bucket.insert(bucket.end(), host.data(), host.data() + host.size());
    }
    members.push_back(i);
    if (bucket.size() * sizeof(T) >= bucket_bytes) flush();
  }
  flush();  // every rank flushes the same buckets: the parameters are listed alike
  if (r == reduction::mean) optim::scale_grads(views, 1.0 / static_cast<double>(comm.ranks()));
}

/// Clips the gradients of every parameter of element type T to the global L2
/// norm `max_norm`, the norm one process would see: replicated gradients
/// (synchronised already: call this after synchronize_gradients) counted
/// once, sharded ones summed over ranks. Returns the norm before clipping.
template <class T = float, backend B = cpu, parameterized M>
double clip_grad_norm(const communicator& comm, M& model, double max_norm) {
  if (!(max_norm >= 0)) throw value_error("dist::clip_grad_norm: max_norm = " + std::to_string(max_norm) + " must be >= 0");
  const auto sharded = sharded_paths(model);
  auto views = parameter_views<T, B>(model);
  double squares[2] = {0, 0};  // replicated, sharded
  for (const auto& v : views) {
    if (!v.grad.defined()) continue;
    const auto host = v.grad.template to<cpu>();
    double s = 0;
    for (std::size_t i = 0; i < host.size(); ++i) s += static_cast<double>(host[i]) * static_cast<double>(host[i]);
    squares[is_sharded(v.name, sharded) ? 1 : 0] += s;
  }
  comm.all_reduce_sum(&squares[1], 1, "clip_grad_norm");
  const double norm = std::sqrt(squares[0] + squares[1]);
  if (!std::isfinite(norm)) throw value_error("dist::clip_grad_norm: the total gradient norm is not finite");
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) optim::scale_grads(views, coef);
  return norm;
}

/// Parameters of the whole model across `comm`: replicated ones once, the
/// sharded ones of every rank (all ranks get the same count).
template <parameterized M>
std::size_t count_parameters(const communicator& comm, M& model) {
  const auto sharded = sharded_paths(model);
  std::uint64_t counts[2] = {0, 0};  // replicated, sharded
  visit_parameters(model, [&](const std::string& name, auto& p) { counts[is_sharded(name, sharded) ? 1 : 0] += p.size(); });
  comm.all_reduce_sum(&counts[1], 1, "count_parameters");
  return static_cast<std::size_t>(counts[0] + counts[1]);
}

/// Copies rank `root`'s values of every replicated parameter to every rank
/// (start from the same weights however each rank built its model).
template <class T = float, backend B = cpu, parameterized M>
void broadcast_parameters(const communicator& comm, M& model, int root = 0) {
  const auto sharded = sharded_paths(model);
  for (auto& v : parameter_views<T, B>(model)) {
    if (is_sharded(v.name, sharded)) continue;
    if constexpr (B::host_accessible) comm.broadcast(v.value.data(), v.value.size() * sizeof(T), root, v.name);
    else {
      auto host = v.value.template to<cpu>();
      comm.broadcast(host.data(), host.size() * sizeof(T), root, v.name);
      fill(v.value, T(0));
      add_into(v.value, moekit::detail::to_backend<B>(host));
    }
  }
}

}  // namespace moekit::dist
