// moekit/dist/checkpoint.hpp — sharded training checkpoints of a model with
// expert-parallel layers, loadable on any number of ranks (and by a
// single-process model with plain moe::layers).
//
//   dist::save_sharded("run.ckpt", comm, model, opt, {{"step", "300"}});
//       rank r of P writes run.ckpt.<r>-of-<P>.safetensors (atomically): its
//       weight sets of every sharded bank and their optimizer state; rank 0
//       also everything replicated (written once) and the index, in its
//       header's metadata: the rank count, each sharded bank's path and
//       weight-set count, and a run token every shard of this save carries.
//   auto meta = dist::load_sharded("run.ckpt", comm2, model2, opt2);
//       on P' ranks (P' dividing each bank's set count, or a model whose
//       banks are whole): each rank reads the index, takes the replicated
//       tensors from shard 0 and assembles its weight sets (and their
//       optimizer buffers) from the shards that hold them, then loads them
//       with io::load_checkpoint's checks (all or nothing).
//
// Rows: a sharded tensor's leading axis is its weight sets (a weight, a bias)
// or, for a flat optimizer buffer, sets × elements per set; both are cut and
// joined by set.
#pragma once

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../io/checkpoint.hpp"
#include "communicator.hpp"
#include "data_parallel.hpp"

namespace moekit::dist {

namespace detail {

inline std::filesystem::path shard_path(const std::filesystem::path& base, std::size_t rank, std::size_t ranks) {
  return base.string() + "." + std::to_string(rank) + "-of-" + std::to_string(ranks) + ".safetensors";
}

/// The parameter a checkpoint record belongs to: "optim.<param>.buffer0" -> "<param>.buffer0".
inline std::string_view owner_name(std::string_view record) {
  const std::string_view prefix = io::optimizer_prefix;
  return record.substr(0, prefix.size()) == prefix ? record.substr(prefix.size()) : record;
}

/// "a=8;b.c=4" <-> {a: 8, b.c: 4}
inline std::string join_banks(const std::map<std::string, std::size_t>& banks) {
  std::string out;
  for (const auto& [path, sets] : banks) out += (out.empty() ? "" : ";") + path + "=" + std::to_string(sets);
  return out;
}
inline std::map<std::string, std::size_t> split_banks(const std::string& text, const std::filesystem::path& file) {
  std::map<std::string, std::size_t> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find(';', at), text.size());
    const std::string item = text.substr(at, end - at);
    const std::size_t eq = item.rfind('=');
    std::size_t sets = 0;
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size() ||
        item.find_first_not_of("0123456789", eq + 1) != std::string::npos || item.size() - eq > 10 ||
        (sets = std::stoul(item.substr(eq + 1))) == 0)
      throw io_error(file.string() + ": metadata moekit.dist.banks: malformed entry '" + item + "'");
    out[item.substr(0, eq)] = sets;
    at = end + 1;
  }
  return out;
}

/// The sharded bank `name` lies under, or null.
inline const std::pair<const std::string, std::size_t>* bank_of(std::string_view name,
                                                                 const std::map<std::string, std::size_t>& banks) {
  for (const auto& b : banks)
    if (is_sharded(name, {b.first})) return &b;
  return nullptr;
}

/// Sharded banks of `model` with their global set counts.
template <class M>
std::map<std::string, std::size_t> sharded_banks(M& model, const communicator& comm) {
  std::map<std::string, std::size_t> out;
  for (const auto& p : sharded_paths(model)) out[p] = 0;
  // Each sharded bank's weight sets: those of its first parameter, times P.
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (auto* b = bank_of(name, out); b && b->second == 0)
      out[b->first] = p.shape().extents()[0] * comm.ranks();
  });
  return out;
}

}  // namespace detail

/// Writes this rank's shard of a sharded checkpoint (see the top of the file);
/// every rank of `comm` must call it. The shards of one save share a run token.
template <parameterized M, class Opt>
void save_sharded(const std::filesystem::path& base, const communicator& comm, M& model, const Opt& opt,
                  io::metadata_map metadata = {}) {
  const auto banks = detail::sharded_banks(model, comm);
  std::uint64_t token = comm.rank() == 0 ? std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32) : 0;
  comm.broadcast(&token, sizeof token, 0, "save_sharded");
  std::vector<io::tensor_record> records;
  auto keep = [&](io::tensor_record r) {
    if (comm.rank() == 0 || detail::bank_of(detail::owner_name(r.name), banks)) records.push_back(std::move(r));
  };
  visit_parameters(model, [&](const std::string& name, auto& p) { keep(io::record_of(name, p.value())); });
  visit_buffers(model, [&](const std::string& name, auto& t) { keep(io::record_of(name, t)); });
  using io::optimizer_state_records;  // or the one ADL finds for a type-erased optimizer
  for (auto& r : optimizer_state_records(opt, io::optimizer_prefix)) keep(std::move(r));
  metadata["moekit.dist.rank"] = std::to_string(comm.rank());
  metadata["moekit.dist.ranks"] = std::to_string(comm.size());
  metadata["moekit.dist.banks"] = detail::join_banks(banks);
  metadata["moekit.dist.token"] = std::to_string(token);
  metadata.try_emplace("format", "pt");
  io::save_safetensors(detail::shard_path(base, static_cast<std::size_t>(comm.rank()), comm.ranks()), records,
                       metadata);
  comm.barrier("save_sharded");  // every shard is on disk when any rank returns
}

/// Loads a sharded checkpoint written on any number of ranks into this rank's
/// `model` and `opt`; returns the metadata given to save_sharded. io_error
/// naming the file and tensor when a shard is missing, from another save, or
/// does not fit the model.
template <parameterized M, class Opt>
io::metadata_map load_sharded(const std::filesystem::path& base, const communicator& comm, M& model, Opt& opt) {
  // The index: shard 0 of however many ranks wrote it.
  std::filesystem::path first;
  std::size_t saved_ranks = 0;
  for (std::size_t p = 1; p <= 65536 && first.empty(); ++p)
    if (std::filesystem::exists(detail::shard_path(base, 0, p))) first = detail::shard_path(base, 0, p), saved_ranks = p;
  if (first.empty()) throw io_error(base.string() + ": no shard " + base.string() + ".0-of-<P>.safetensors");
  const auto index = io::read_safetensors(first);
  const auto meta = [&](const io::safetensors_data& f, const std::string& key) {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw io_error(f.path.string() + ": metadata " + key + " missing (not a sharded checkpoint?)");
    return it->second;
  };
  if (meta(index, "moekit.dist.ranks") != std::to_string(saved_ranks))
    throw io_error(first.string() + ": metadata moekit.dist.ranks is '" + meta(index, "moekit.dist.ranks") +
                   "', the file name says " + std::to_string(saved_ranks));
  const auto saved_banks = detail::split_banks(meta(index, "moekit.dist.banks"), first);
  const std::string token = meta(index, "moekit.dist.token");
  std::vector<io::safetensors_data> shards;
  shards.reserve(saved_ranks);
  for (std::size_t q = 0; q < saved_ranks; ++q) {
    shards.push_back(q == 0 ? index : io::read_safetensors(detail::shard_path(base, q, saved_ranks)));
    if (meta(shards.back(), "moekit.dist.token") != token)
      throw io_error(shards.back().path.string() + ": from another save than " + first.string() +
                     " (run tokens differ): the checkpoint is incomplete");
  }
  // What this rank holds of each bank: sets [first, first + count).
  const auto mine = detail::sharded_banks(model, comm);
  for (const auto& [path, sets] : mine) {
    const auto it = saved_banks.find(path);
    if (it == saved_banks.end() || it->second != sets)
      throw io_error(first.string() + ": bank " + path + " has " +
                     (it == saved_banks.end() ? std::string("no shards") : std::to_string(it->second) + " weight sets") +
                     " in the checkpoint, the model " + std::to_string(sets));
  }
  // The composed file: replicated records from shard 0, sharded ones joined by set.
  io::safetensors_data composed{first, {}, index.metadata, index.buffer};
  for (const auto& r : index.tensors) {
    const auto* bank = detail::bank_of(detail::owner_name(r.name), saved_banks);
    if (!bank || r.shape.empty()) {  // replicated, or a step count (the same in every shard)
      composed.tensors.push_back(r);
      continue;
    }
    const std::size_t g = bank->second, per_file = g / saved_ranks;
    if (g % saved_ranks != 0 || r.shape[0] % per_file != 0 || r.bytes.size() % per_file != 0)
      throw io_error(first.string() + ": tensor '" + r.name + "' " + io::detail::shape_str(r.shape) +
                     " does not hold " + std::to_string(per_file) + " of " + std::to_string(g) + " weight sets");
    std::size_t lo = 0, hi = g;  // the sets this rank needs
    if (auto* m = detail::bank_of(detail::owner_name(r.name), mine)) {
      lo = static_cast<std::size_t>(comm.rank()) * (m->second / comm.ranks());
      hi = lo + m->second / comm.ranks();
    }
    const std::size_t set_bytes = r.bytes.size() / per_file;
    auto bytes = std::make_shared<std::vector<std::byte>>((hi - lo) * set_bytes);
    for (std::size_t s = lo; s < hi; ++s) {
      const auto& shard = shards[s / per_file];
      const io::tensor_record* part = shard.find(r.name);
      if (!part || part->shape != r.shape || part->dtype != r.dtype)
        throw io_error(shard.path.string() + ": tensor '" + r.name + "' missing or shaped unlike in " + first.string());
      std::memcpy(bytes->data() + (s - lo) * set_bytes, part->bytes.data() + (s % per_file) * set_bytes, set_bytes);
    }
    io::tensor_record out{r.name, r.dtype, r.shape, std::span<const std::byte>(*bytes), bytes};
    out.shape[0] = r.shape[0] / per_file * (hi - lo);
    composed.tensors.push_back(std::move(out));
  }
  auto out = io::load_checkpoint(composed, model, opt);
  for (auto it = out.begin(); it != out.end();) it = it->first.starts_with("moekit.dist.") ? out.erase(it) : std::next(it);
  return out;
}

}  // namespace moekit::dist
