// moekit/backend/emulated.hpp — emulated_device: a backend whose memory the
// host may not index (host_accessible = false), run by the CPU kernels.
//
// Code written for a device backend takes the same paths here as on CUDA:
// tensor indexing does not compile, routing and losses use the device
// algorithms (sort, histogram, scan), and data reach the host only through
// to<cpu>(). So a machine without a GPU still runs, and tests, every
// device-side code path above the kernels; only the CUDA kernels themselves
// need a GPU.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <string_view>

#include "backend.hpp"
#include "cpu/kernels.hpp"

namespace moekit {

struct emulated_device {
  static constexpr std::string_view name = "emulated_device";
  static constexpr bool host_accessible = false;
  static void* allocate(std::size_t bytes) { return cpu::allocate(bytes); }
  static void deallocate(void* p, std::size_t bytes) noexcept { cpu::deallocate(p, bytes); }
};

static_assert(backend<emulated_device>);

template <>
struct kernels<emulated_device> : kernels<cpu> {};

template <>
struct transfer<cpu, emulated_device> : transfer<cpu, cpu> {};
template <>
struct transfer<emulated_device, cpu> : transfer<cpu, cpu> {};
template <>
struct transfer<emulated_device, emulated_device> : transfer<cpu, cpu> {};

/// emulated_device that counts its copies to the host: each one is a point
/// where code on a GPU would wait for the device. Tests and benchmarks check
/// host-sync budgets with it (an MoE layer step: 0 when dropless).
struct metered_device {
  static constexpr std::string_view name = "metered_device";
  static constexpr bool host_accessible = false;
  static void* allocate(std::size_t bytes) { return cpu::allocate(bytes); }
  static void deallocate(void* p, std::size_t bytes) noexcept { cpu::deallocate(p, bytes); }
  /// Copies metered_device -> cpu so far in this process.
  static std::size_t host_reads() noexcept { return reads().load(std::memory_order_relaxed); }
  static void count_host_read() noexcept { reads().fetch_add(1, std::memory_order_relaxed); }

 private:
  static std::atomic<std::size_t>& reads() noexcept {
    static std::atomic<std::size_t> n{0};
    return n;
  }
};

static_assert(backend<metered_device>);

template <>
struct kernels<metered_device> : kernels<cpu> {};

template <>
struct transfer<cpu, metered_device> : transfer<cpu, cpu> {};
template <>
struct transfer<metered_device, metered_device> : transfer<cpu, cpu> {};
template <>
struct transfer<metered_device, cpu> {
  static void copy(const void* src, void* dst, std::size_t bytes) noexcept {
    metered_device::count_host_read();
    transfer<cpu, cpu>::copy(src, dst, bytes);
  }
};

}  // namespace moekit
