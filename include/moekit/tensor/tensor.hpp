// moekit/tensor/tensor.hpp — tensor<T, Shape, B>: a cheap handle to contiguous
// row-major storage plus its shape. Copies share memory; clone() copies it.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "../backend/cpu/kernels.hpp"
#include "../core/checked.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/shape.hpp"
#include "../core/shape_rules.hpp"
#include "storage.hpp"

namespace moekit {

template <class T, shape_like S, backend B = cpu>
class tensor {
 public:
  using value_type = T;
  using shape_type = S;
  using backend_type = B;

  static constexpr std::size_t rank() noexcept { return S::rank(); }

  /// An undefined tensor: no storage. `defined()` is false.
  tensor() noexcept = default;

  /// Uninitialised storage for `s` (see zeros(), full(), ... for initialised ones).
  /// shape_error when the byte size of `s` overflows std::size_t,
  /// allocation_error when it is over allocation_limit() or memory is short.
  explicit tensor(const S& s)
      : storage_(detail::storage_ref<B>::allocate(checked_bytes(s.extents(), sizeof(T), "tensor"))),
        data_(static_cast<T*>(storage_.data())),
        shape_(s) {}

  tensor(const tensor&) = default;
  tensor& operator=(const tensor&) = default;
  /// Moving leaves the source undefined.
  tensor(tensor&& o) noexcept
      : storage_(std::move(o.storage_)), data_(std::exchange(o.data_, nullptr)), shape_(o.shape_) {}
  tensor& operator=(tensor&& o) noexcept {
    storage_ = std::move(o.storage_);
    data_ = std::exchange(o.data_, nullptr);
    shape_ = o.shape_;
    return *this;
  }

  /// A view of existing storage (used by reshape, rows and the tape).
  tensor(detail::storage_ref<B> storage, T* data, const S& s) noexcept
      : storage_(std::move(storage)), data_(data), shape_(s) {}

  const S& shape() const noexcept { return shape_; }
  std::size_t size() const noexcept { return shape_.size(); }
  std::size_t extent(std::size_t i) const noexcept { return shape_.extent(i); }
  bool defined() const noexcept { return data_ != nullptr; }
  /// Handles sharing this storage (1: this handle owns it alone).
  int use_count() const noexcept { return storage_.use_count(); }

  T* data() const noexcept { return data_; }
  const detail::storage_ref<B>& storage() const noexcept { return storage_; }

  /// Host access by flat index.
  T& operator[](std::size_t i) const noexcept
    requires(B::host_accessible)
  {
    return data_[i];
  }
  /// Host access by multi-index, row-major.
  template <std::integral... I>
    requires(B::host_accessible && sizeof...(I) == S::rank())
  T& operator()(I... idx) const noexcept {
    std::size_t flat = 0, axis = 0;
    ((flat = flat * shape_.extent(axis++) + static_cast<std::size_t>(idx)), ...);
    return data_[flat];
  }
  std::span<T> span() const noexcept
    requires(B::host_accessible)
  {
    return {data_, size()};
  }

  /// A deep copy with its own storage.
  tensor clone() const {
    tensor out(shape_);
    if constexpr (B::host_accessible) std::memcpy(out.data_, data_, size() * sizeof(T));
    else kernels<B>::copy(size(), data_, out.data_);
    return out;
  }

  /// This tensor on backend B2: itself when B2 is B (shares storage, like
  /// PyTorch's .to()), else a copy. A copy to the host waits for the device.
  template <backend B2>
    requires transferable<B, B2>
  tensor<T, S, B2> to() const {
    if constexpr (std::is_same_v<B, B2>) {
      return *this;
    } else {
      tensor<T, S, B2> out(shape_);
      transfer<B, B2>::copy(data_, out.data(), size() * sizeof(T));
      return out;
    }
  }

  /// The same memory seen with another shape of equal size (shares storage).
  template <shape_like S2>
  tensor<T, S2, B> reshape(const S2& s) const {
    if constexpr (S::all_static() && S2::all_static())
      static_assert(S{}.size() == S2{}.size(), "reshape: sizes differ");
    if (checked_count(s.extents(), "reshape") != size())
      throw shape_error("reshape: " + shape_.str() + " -> " + s.str() + ": sizes differ (" + std::to_string(size()) +
                        " vs " + std::to_string(s.size()) + ")");
    return {storage_, data_, s};
  }
  /// Reshape to a fully static shape type: `x.reshape<shape<4, 8>>()`.
  template <shape_like S2>
    requires(S2::all_static())
  tensor<T, S2, B> reshape() const {
    return reshape(S2{});
  }

  /// Rows [begin, end) along the first axis (shares storage).
  template <class S1 = S>
    requires(S1::rank() >= 1)
  tensor<T, rows_shape_t<S1>, B> rows(std::size_t begin, std::size_t end) const {
    if (begin > end || end > shape_.extent(0))
      throw shape_error("rows: [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + shape_.str() +
                        ": out of range");
    const std::size_t row = shape_.extent(0) ? size() / shape_.extent(0) : 0;
    auto ext = shape_.extents();
    ext[0] = end - begin;
    return {storage_, data_ + begin * row, rows_shape_t<S>::from_extents(ext, "rows")};
  }

 private:
  detail::storage_ref<B> storage_;
  T* data_ = nullptr;
  [[no_unique_address]] S shape_{};
};

/// The same tensor under another shape type with the same extents, e.g. from
/// `shape<dyn, 784>` to `shape<64, 784>`; throws shape_error if a static extent differs.
template <shape_like S2, class T, class S, backend B>
tensor<T, S2, B> shape_cast(const tensor<T, S, B>& x) {
  static_assert(S2::rank() == S::rank(), "shape_cast: ranks differ");
  return x.reshape(S2::from_extents(x.shape().extents(), "shape_cast"));
}

namespace detail {
/// x on backend B2: directly where the two backends copy to each other, else
/// through the host (e.g. emulated_device to cuda). Shares x when B2 is B.
template <backend B2, class T, class S, class B>
tensor<T, S, B2> to_backend(const tensor<T, S, B>& x) {
  if constexpr (transferable<B, B2>) return x.template to<B2>();
  else return x.template to<cpu>().template to<B2>();
}
/// A copy of x with its own storage on backend B2 (never shares x's).
template <backend B2, class T, class S, class B>
tensor<T, S, B2> copy_to_backend(const tensor<T, S, B>& x) {
  if constexpr (std::is_same_v<B, B2>) return x.clone();
  else return to_backend<B2>(x);
}

template <class X>
struct is_tensor : std::false_type {};
template <class T, class S, class B>
struct is_tensor<tensor<T, S, B>> : std::true_type {};
}  // namespace detail

/// Any moekit::tensor.
template <class X>
concept tensor_type = detail::is_tensor<std::remove_cvref_t<X>>::value;

}  // namespace moekit
