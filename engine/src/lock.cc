// Lock: the uncontended paths of the mapped-table backend inline (one branch
// on the handle's backend kind), in a function for each mode, everything else
// through the backend.
#include "locktable/lock.h"

#include "backend.h"
#include "local/hot_path.h"

namespace locktable {

using detail::BackendKind;

namespace {

Status empty_handle() { return Status(Code::invalid_argument, "empty lock handle"); }

// The mapped table's uncontended paths (hot_path.h) run inline in the
// functions of each mode, with no call but the clock read, so that the
// compiler saves few registers around them; everything else is out of line:
// the backend, a fast path that gave up, the history events.
[[gnu::noinline]] AcquireResult acquire_rest(Lock& lock, Mode mode, const Deadline& deadline) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return AcquireResult{empty_handle(), {}};
  return backend->acquire(lock, mode, deadline);
}

[[gnu::noinline]] Status release_rest(Lock& lock, Mode mode) {
  detail::Backend* backend = detail::LockAccess::backend(lock);
  if (backend == nullptr) return empty_handle();
  return backend->release(lock, mode);
}

}  // namespace

AcquireResult Lock::acquire_exclusive(Deadline deadline) {
  if (kind_ == uint8_t(BackendKind::local)) {
    auto* s = static_cast<format::Slot*>(state_);
    uint64_t readers;
    const detail::FastTake taken = detail::try_acquire_exclusive_fast(s, incarnation_, &readers);
    if (__builtin_expect(taken == detail::FastTake::in, 1)) {
      const uint64_t token = detail::take_token(s);
      if (__builtin_expect(detail::history_on(detail::hot_of(*this)), 0)) {
        detail::finish_fast_acquire_recorded(*this, token, readers);
      } else {
        detail::set_acquired_at(s, detail::realtime_coarse_ns());
      }
      return AcquireResult{Status(), {}, token};
    }
    if (taken == detail::FastTake::readers) return detail::drain_after_fast_acquire(*this, deadline);
  }
  return acquire_rest(*this, Mode::exclusive, deadline);
}

AcquireResult Lock::acquire_shared(Deadline deadline) {
  uint64_t token;
  if (kind_ == uint8_t(BackendKind::local) && detail::try_join_fast(*this, &token)) {
    return AcquireResult{Status(), {}, token};
  }
  return acquire_rest(*this, Mode::shared, deadline);
}

Status Lock::release_exclusive() {
  if (kind_ == uint8_t(BackendKind::local)) {
    if (__builtin_expect(detail::history_on(detail::hot_of(*this)), 0)) {
      if (detail::release_exclusive_fast_recorded(*this)) return Status::OK();
    } else {
      auto* s = static_cast<format::Slot*>(state_);
      detail::Word128 old;
      if (detail::try_release_exclusive_fast(s, incarnation_, &old)) {
        if (__builtin_expect((detail::tid_word(old) & format::kWaiters) != 0, 0)) detail::wake_after_release(s, old);
        return Status::OK();
      }
    }
  }
  return release_rest(*this, Mode::exclusive);
}

Status Lock::release_shared() {
  if (kind_ == uint8_t(BackendKind::local) && detail::try_leave_fast(*this)) return Status::OK();
  return release_rest(*this, Mode::shared);
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
