// moekit/backend/cpu/cpu.hpp — the host backend policy: memory from the
// caching pool, GEMM through CBLAS, loops on OpenMP.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

#include "../backend.hpp"
#include "pool.hpp"

namespace moekit {

struct cpu {
  static constexpr std::string_view name = "cpu";
  static constexpr bool host_accessible = true;
  static void* allocate(std::size_t bytes) { return detail::host_pool::local().allocate(bytes); }
  static void deallocate(void* p, std::size_t bytes) noexcept { detail::host_pool::local().deallocate(p, bytes); }
};

template <>
struct transfer<cpu, cpu> {
  static void copy(const void* src, void* dst, std::size_t bytes) noexcept {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

static_assert(backend<cpu>);

}  // namespace moekit
