// Lock: the uncontended paths of the mapped-table backend inline (one branch
// on the handle's backend kind), everything else through the backend.
#include "locktable/lock.h"

#include "backend.h"
#include "local/hot_path.h"

namespace locktable {

using detail::BackendKind;

namespace {

Status empty_handle() { return Status(Code::invalid_argument, "empty lock handle"); }

}  // namespace

AcquireResult Lock::acquire(Mode mode, Deadline deadline) {
  if (kind_ == uint8_t(BackendKind::local) && mode == Mode::exclusive && detail::local_fast_acquire(*this)) {
    return AcquireResult{};
  }
  if (backend_ == nullptr) return AcquireResult{empty_handle(), {}};
  return backend_->acquire(*this, mode, deadline);
}

Status Lock::release(Mode mode) {
  if (kind_ == uint8_t(BackendKind::local) && mode == Mode::exclusive && detail::local_fast_release(*this)) {
    return Status::OK();
  }
  if (backend_ == nullptr) return empty_handle();
  return backend_->release(*this, mode);
}

bool Lock::abandoned() const { return backend_ != nullptr && backend_->holds_abandoned(*this); }

Status Lock::mark_consistent() {
  if (backend_ == nullptr) return empty_handle();
  return backend_->mark_consistent(*this);
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
