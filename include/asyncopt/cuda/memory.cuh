// Device memory, pinned host memory, streams and events, each owned by one RAII object.
#pragma once

#include <cstddef>
#include <cuda_runtime.h>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <asyncopt/cuda/error.cuh>

namespace asyncopt::gpu {

/// A view of `size()` elements of type T in device memory: what the device functions take
/// where std::span would name host memory, so that the two cannot be mixed up. Converts to
/// DeviceSpan<const T>.
template <class T>
class DeviceSpan {
 public:
  /// The element type, possibly const.
  using element_type = T;

  /// An empty view.
  constexpr DeviceSpan() noexcept = default;
  /// The `size` elements at device address `data`.
  constexpr DeviceSpan(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  /// A view of const elements from one of mutable ones.
  template <class U>
  requires std::is_same_v<const U, T>
  constexpr DeviceSpan(DeviceSpan<U> other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), size_(other.size()) {}

  /// The device address of the first element.
  [[nodiscard]] constexpr T* data() const noexcept { return data_; }
  /// The number of elements.
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }
  /// The number of bytes.
  [[nodiscard]] constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  /// Whether the view has no element.
  [[nodiscard]] constexpr bool empty() const noexcept { return size_ == 0; }
  /// The `count` elements from `offset` (the caller keeps them inside the view).
  [[nodiscard]] constexpr DeviceSpan subspan(std::size_t offset, std::size_t count) const noexcept {
    return {data_ + offset, count};
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {

/// cudaMalloc and cudaFree.
struct DeviceMemory {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
    return p;
  }
  static void release(void* p) noexcept { static_cast<void>(cudaFree(p)); }
};

/// cudaMallocHost and cudaFreeHost: page-locked host memory.
struct PinnedMemory {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    check(cudaMallocHost(&p, bytes), "cudaMallocHost of " + std::to_string(bytes) + " bytes");
    return p;
  }
  static void release(void* p) noexcept { static_cast<void>(cudaFreeHost(p)); }
};

/// `size` elements of T from `Memory`, released by the destructor (a failure there cannot be
/// reported, and is ignored). Move-only; a moved-from array is empty.
template <class T, class Memory>
class Array {
  static_assert(std::is_trivially_copyable_v<T>, "asyncopt: CUDA buffers hold trivial types");

 public:
  Array() noexcept = default;
  explicit Array(std::size_t size)
      : data_(size > 0 ? static_cast<T*>(Memory::allocate(size * sizeof(T))) : nullptr),
        size_(size) {}
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  Array(Array&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Array& operator=(Array&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~Array() { release(); }

  /// The address of the first element (null when empty).
  [[nodiscard]] T* data() const noexcept { return data_; }
  /// The number of elements.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) {
      Memory::release(data_);
      data_ = nullptr;
    }
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Destroys a stream or an event when its owner goes (a failure cannot be reported).
struct DestroyStream {
  void operator()(cudaStream_t stream) const noexcept {
    static_cast<void>(cudaStreamDestroy(stream));
  }
};
struct DestroyEvent {
  void operator()(cudaEvent_t event) const noexcept { static_cast<void>(cudaEventDestroy(event)); }
};

}  // namespace detail

/// `size` elements of T in device memory (cudaMalloc), freed by the destructor. Move-only; a
/// moved-from buffer is empty. The contents start undefined; fill them with zero(), upload()
/// or a kernel.
template <class T>
class DeviceBuffer : public detail::Array<T, detail::DeviceMemory> {
  using Base = detail::Array<T, detail::DeviceMemory>;

 public:
  /// An empty buffer (no allocation).
  DeviceBuffer() noexcept = default;
  /// Allocates `size` elements on the current device; throws Error (out of memory, no
  /// device) when cudaMalloc fails.
  explicit DeviceBuffer(std::size_t size) : Base(size) {}

  /// The whole buffer as a DeviceSpan.
  [[nodiscard]] DeviceSpan<T> span() const noexcept { return {this->data(), this->size()}; }

  /// Sets every byte to zero, in the order of `stream`.
  void zero(cudaStream_t stream = nullptr) {
    if (this->size() > 0) {
      check(cudaMemsetAsync(this->data(), 0, this->size() * sizeof(T), stream), "cudaMemsetAsync");
    }
  }
  /// Copies `host` (size() elements) into the buffer and waits for the copy.
  void upload(std::span<const T> host) {
    require_size(host.size(), "upload");
    if (this->size() > 0) {
      check(cudaMemcpy(this->data(), host.data(), this->size() * sizeof(T), cudaMemcpyHostToDevice),
            "cudaMemcpy to the device");
      // cudaMemcpy from pageable memory may return before the data has landed, and streams
      // created non-blocking do not wait for the default stream.
      check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize after an upload");
    }
  }
  /// Copies the buffer into `host` (size() elements) and waits for the copy.
  void download(std::span<T> host) const {
    require_size(host.size(), "download");
    if (this->size() > 0) {
      check(cudaMemcpy(host.data(), this->data(), this->size() * sizeof(T), cudaMemcpyDeviceToHost),
            "cudaMemcpy to the host");
    }
  }

 private:
  void require_size(std::size_t size, const char* what) const {
    if (size != this->size()) {
      throw std::invalid_argument(std::string("asyncopt: ") + what + " of " + std::to_string(size) +
                                  " elements for a device buffer of " +
                                  std::to_string(this->size()));
    }
  }
};

/// `size` elements of T in page-locked host memory (cudaMallocHost), which the device reads
/// and writes by DMA: the fast target of a pull to the host. Move-only; a moved-from buffer
/// is empty.
template <class T>
class PinnedBuffer : public detail::Array<T, detail::PinnedMemory> {
  using Base = detail::Array<T, detail::PinnedMemory>;

 public:
  /// An empty buffer (no allocation).
  PinnedBuffer() noexcept = default;
  /// Allocates `size` value-initialized elements; throws Error when cudaMallocHost fails.
  explicit PinnedBuffer(std::size_t size) : Base(size) {
    for (T& x : span()) {
      x = T{};
    }
  }

  /// The whole buffer as a host span.
  [[nodiscard]] std::span<T> span() const noexcept { return {this->data(), this->size()}; }
};

/// A CUDA stream that does not synchronize with the legacy default stream. Move-only.
class Stream {
 public:
  /// Creates the stream on the current device; throws Error on failure.
  Stream() : stream_(create()) {}

  /// The stream's handle, for kernel launches and copies.
  [[nodiscard]] cudaStream_t get() const noexcept { return stream_.get(); }
  /// Waits until everything queued on the stream has finished; throws Error for a failure
  /// the device reported meanwhile.
  void synchronize() const { check(cudaStreamSynchronize(get()), "cudaStreamSynchronize"); }

 private:
  static cudaStream_t create() {
    cudaStream_t stream = nullptr;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    return stream;
  }
  std::unique_ptr<std::remove_pointer_t<cudaStream_t>, detail::DestroyStream> stream_;
};

/// A CUDA event without timing, for ordering work across streams. Move-only.
class Event {
 public:
  /// Creates the event; throws Error on failure.
  Event() : event_(create()) {}

  /// The event's handle.
  [[nodiscard]] cudaEvent_t get() const noexcept { return event_.get(); }
  /// Marks the point `stream` has reached: later waits on the event wait for it.
  void record(cudaStream_t stream) const {
    check(cudaEventRecord(get(), stream), "cudaEventRecord");
  }
  /// Makes work queued on `stream` after this call wait for the last record() (a no-op
  /// before the first).
  void wait_in(cudaStream_t stream) const {
    check(cudaStreamWaitEvent(stream, get(), 0), "cudaStreamWaitEvent");
  }

 private:
  static cudaEvent_t create() {
    cudaEvent_t event = nullptr;
    check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    return event;
  }
  std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, detail::DestroyEvent> event_;
};

}  // namespace asyncopt::gpu
