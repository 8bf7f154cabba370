// The move-only base of a worker handle.
#pragma once

#include <cstddef>
#include <utility>

namespace asyncopt::store {

/// What every worker handle of a store is: a reference to its store and a worker id, movable
/// but not copyable. When a handle goes (it is destroyed or assigned over), it calls
/// `store.release(id)` (noexcept) once; a moved-from handle releases nothing. A derived
/// handle whose members must outlive the release (buffers a device may still read) calls
/// release() in its own destructor first.
template <class Store>
class Handle {
 public:
  /// The worker id this handle was created for.
  [[nodiscard]] std::size_t id() const noexcept { return id_; }

  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

 protected:
  /// A handle of worker `id` on `store`.
  Handle(Store& store, std::size_t id) noexcept : store_(&store), id_(id) {}
  /// Takes over `other`'s worker id; `other` may then only be destroyed or assigned to.
  Handle(Handle&& other) noexcept : store_(std::exchange(other.store_, nullptr)), id_(other.id_) {}
  /// Releases this handle's worker id, then takes over `other`'s.
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      release();
      store_ = std::exchange(other.store_, nullptr);
      id_ = other.id_;
    }
    return *this;
  }
  ~Handle() { release(); }

  /// The store; only while the handle is not moved from.
  [[nodiscard]] Store& store() const noexcept { return *store_; }

  /// Calls store.release(id) unless done already or moved from.
  void release() noexcept {
    if (store_ != nullptr) {
      std::exchange(store_, nullptr)->release(id_);
    }
  }

 private:
  Store* store_;
  std::size_t id_;
};

}  // namespace asyncopt::store
