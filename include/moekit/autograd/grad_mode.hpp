// moekit/autograd/grad_mode.hpp — whether ops record onto the tape.
#pragma once

namespace moekit {

namespace detail {
inline bool& grad_enabled_flag() noexcept {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

/// True unless a no_grad scope is active on this thread.
inline bool grad_enabled() noexcept { return detail::grad_enabled_flag(); }

/// While alive, ops on this thread record nothing (evaluation, optimizer steps).
class no_grad {
 public:
  no_grad() noexcept : saved_(detail::grad_enabled_flag()) { detail::grad_enabled_flag() = false; }
  ~no_grad() { detail::grad_enabled_flag() = saved_; }
  no_grad(const no_grad&) = delete;
  no_grad& operator=(const no_grad&) = delete;

 private:
  bool saved_;
};

}  // namespace moekit
