// Lock: the uncontended paths of the mapped-table backend inline (one branch
// on the handle's backend kind), everything else through the backend.
#include "locktable/lock.h"

#include "backend.h"
#include "local/hot_path.h"

namespace locktable {

using detail::BackendKind;

namespace {

Status empty_handle() { return Status(Code::invalid_argument, "empty lock handle"); }

// The mapped table's uncontended paths are inlined into Lock::acquire and
// Lock::release (callgrind: a call and a return into a second function cost
// more than the registers the shared path then saves for the exclusive one,
// exclusive pair 257 -> 250 instructions, shared 355 -> 335); the backend's
// paths stay out of line.
[[gnu::noinline]] AcquireResult acquire_backend(Lock& lock, Mode mode, const Deadline& deadline) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return AcquireResult{empty_handle(), {}};
  return backend->acquire(lock, mode, deadline);
}

[[gnu::always_inline]] inline AcquireResult acquire_local_exclusive(Lock& lock, const Deadline& deadline) {
  uint64_t token;
  if (detail::local_fast_acquire(lock, &token)) return AcquireResult{Status(), {}, token};
  return acquire_backend(lock, Mode::exclusive, deadline);
}

[[gnu::always_inline]] inline AcquireResult acquire_local_shared(Lock& lock, const Deadline& deadline) {
  uint64_t token;
  if (detail::local_fast_acquire_shared(lock, &token)) return AcquireResult{Status(), {}, token};
  return acquire_backend(lock, Mode::shared, deadline);
}

[[gnu::noinline]] Status release_backend(Lock& lock, Mode mode) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return empty_handle();
  return backend->release(lock, mode);
}

[[gnu::always_inline]] inline Status release_local_exclusive(Lock& lock) {
  detail::ReleaseTail tail;
  if (!detail::try_release_exclusive_fast(static_cast<format::Slot*>(detail::LockAccess::state(lock)),
                                          detail::LockAccess::incarnation(lock),
                                          detail::hot_of(lock)->history_level, &tail)) {
    return release_backend(lock, Mode::exclusive);
  }
  if (__builtin_expect(detail::release_tail_pending(tail), 0)) detail::finish_fast_release(lock, tail);
  return Status::OK();
}

[[gnu::always_inline]] inline Status release_local_shared(Lock& lock) {
  if (detail::local_fast_release_shared(lock)) return Status::OK();
  return release_backend(lock, Mode::shared);
}

}  // namespace

AcquireResult Lock::acquire(Mode mode, Deadline deadline) {
  if (kind_ == uint8_t(BackendKind::local)) {
    return mode == Mode::exclusive ? acquire_local_exclusive(*this, deadline) : acquire_local_shared(*this, deadline);
  }
  return acquire_backend(*this, mode, deadline);
}

Status Lock::release(Mode mode) {
  if (kind_ == uint8_t(BackendKind::local)) {
    return mode == Mode::exclusive ? release_local_exclusive(*this) : release_local_shared(*this);
  }
  return release_backend(*this, mode);
}

bool Lock::abandoned() const { return backend_ != nullptr && backend_->holds_abandoned(*this); }

Status Lock::mark_consistent() {
  if (backend_ == nullptr) return empty_handle();
  return backend_->mark_consistent(*this);
}

uint64_t Lock::token() const { return backend_ == nullptr ? 0 : backend_->token(*this); }

Status Lock::downgrade() {
  if (backend_ == nullptr) return empty_handle();
  return backend_->downgrade(*this);
}

void Lock::lock() {
  AcquireResult r = acquire(Mode::exclusive, Deadline::never());
  if (!r.held()) throw Error(r.status);
}

bool Lock::try_lock() { return timed(Mode::exclusive, Deadline::now()); }

void Lock::unlock() {
  Status s = release(Mode::exclusive);
  if (!s.ok()) throw Error(s);
}

void Lock::lock_shared() {
  AcquireResult r = acquire(Mode::shared, Deadline::never());
  if (!r.held()) throw Error(r.status);
}

bool Lock::try_lock_shared() { return timed(Mode::shared, Deadline::now()); }

void Lock::unlock_shared() {
  Status s = release(Mode::shared);
  if (!s.ok()) throw Error(s);
}

bool Lock::timed(Mode mode, Deadline deadline) {
  AcquireResult r = acquire(mode, deadline);
  if (r.held()) return true;
  if (r.status.code() == Code::timed_out) return false;
  throw Error(r.status);
}

}  // namespace locktable
