// moekit/backend/backend.hpp — the backend policy concept. A backend is a tag
// type that says where memory lives and how to get it; its kernel set is
// `kernels<B>`, which every op is written against once.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

namespace moekit {

/// A backend policy: a name, whether its memory is host-addressable, and an allocator.
template <class B>
concept backend = requires(std::size_t bytes, void* p) {
  { B::name } -> std::convertible_to<std::string_view>;
  { B::host_accessible } -> std::convertible_to<bool>;
  { B::allocate(bytes) } -> std::same_as<void*>;
  { B::deallocate(p, bytes) } -> std::same_as<void>;
};

/// Copies bytes from memory of backend From to memory of backend To, ordered
/// like every other op of the destination (host memory is ready on return).
/// Specialised for each pair a backend supports: `static void copy(const void*
/// src, void* dst, std::size_t bytes)`.
template <class From, class To>
struct transfer;

/// Backends From and To between which tensors can be copied.
template <class From, class To>
concept transferable = requires(const void* src, void* dst, std::size_t bytes) {
  { transfer<From, To>::copy(src, dst, bytes) } -> std::same_as<void>;
};

/// The kernel set of backend B (GEMM, map, reductions, softmax, top-k, gather,
/// scatter-add, sort, histogram, scan ...). Specialised by each backend.
template <class B>
struct kernels;

}  // namespace moekit
