// Lock: the uncontended paths of the mapped-table backend inline (one branch
// on the handle's backend kind), everything else through the backend.
#include "locktable/lock.h"

#include "backend.h"
#include "local/hot_path.h"

namespace locktable {

using detail::BackendKind;

namespace {

Status empty_handle() { return Status(Code::invalid_argument, "empty lock handle"); }

// The mapped table's uncontended exclusive pair runs inline in Lock::acquire
// and Lock::release (hot_path.h), with no call but the acquire's clock read,
// so that the compiler saves few registers around it; everything else is out
// of line: the shared-mode paths, the backend, a failed fast path.
[[gnu::noinline]] AcquireResult acquire_rest(Lock& lock, Mode mode, const Deadline& deadline) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return AcquireResult{empty_handle(), {}};
  if (detail::LockAccess::kind(lock) == BackendKind::local && mode == Mode::shared) {
    uint64_t token;
    if (detail::local_fast_acquire_shared(lock, &token)) return AcquireResult{Status(), {}, token};
  }
  return backend->acquire(lock, mode, deadline);
}

[[gnu::noinline]] Status release_rest(Lock& lock, Mode mode) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return empty_handle();
  if (detail::LockAccess::kind(lock) == BackendKind::local) {
    const bool fast = mode == Mode::shared ? detail::local_fast_release_shared(lock)
                                           : detail::release_exclusive_fast_recorded(lock);
    if (fast) return Status::OK();
  }
  return backend->release(lock, mode);
}

}  // namespace

AcquireResult Lock::acquire(Mode mode, Deadline deadline) {
  if (kind_ == uint8_t(BackendKind::local) && mode == Mode::exclusive) {
    auto* s = static_cast<format::Slot*>(state_);
    uint64_t token;
    if (detail::try_acquire_exclusive_fast(s, incarnation_, &token)) {
      if (__builtin_expect(detail::history_on(detail::hot_of(*this)), 0)) {
        detail::finish_fast_acquire_recorded(*this, token);
      } else {
        detail::set_acquired_at(s, detail::realtime_coarse_ns());
      }
      return AcquireResult{Status(), {}, token};
    }
  }
  return acquire_rest(*this, mode, deadline);
}

Status Lock::release(Mode mode) {
  if (kind_ == uint8_t(BackendKind::local) && mode == Mode::exclusive &&
      !detail::history_on(detail::hot_of(*this))) {
    auto* s = static_cast<format::Slot*>(state_);
    detail::Word128 old;
    if (detail::try_release_exclusive_fast(s, incarnation_, &old)) {
      if (__builtin_expect((detail::tid_word(old) & format::kWaiters) != 0, 0)) detail::wake_after_release(s, old);
      return Status::OK();
    }
  }
  return release_rest(*this, mode);
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
