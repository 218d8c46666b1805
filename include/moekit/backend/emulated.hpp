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

}  // namespace moekit
