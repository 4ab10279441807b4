#include "locktable/lock.h"

#include <fmt/format.h>

#include "lock_protocol.h"
#include "table_core.h"

namespace locktable {

using detail::RingEvent;
using detail::TableCore;
using detail::ThreadSelf;

namespace {

bool history_on(const uint32_t* level) { return __atomic_load_n(level, __ATOMIC_RELAXED) != 0; }

Status empty_handle() { return Status(Code::invalid_argument, "empty lock handle"); }

uint64_t since(uint64_t then) {
  uint64_t now = detail::realtime_coarse_ns();
  return now > then ? now - then : 0;
}

}  // namespace

AcquireResult Lock::acquire(Mode mode, Deadline deadline) {
  if (core_ == nullptr) return AcquireResult{empty_handle(), {}};
  if (mode == Mode::exclusive) {
    ThreadSelf& me = detail::thread_self();
    if (detail::try_acquire_exclusive_fast(slot_, incarnation_, me)) {
      uint64_t now = detail::realtime_coarse_ns();
      detail::set_acquired_at(slot_, now);
      if (history_on(history_level_)) {
        core_->record_at(RingEvent{uint8_t(EventKind::acquired), 0, 0, index_, incarnation_, 0, 0}, now);
      }
      return AcquireResult{};
    }
  }
  return core_->acquire_slow(*this, mode, deadline);
}

Status Lock::release(Mode mode) {
  if (core_ == nullptr) return empty_handle();
  if (mode == Mode::exclusive) {
    ThreadSelf& me = detail::thread_self();
    const bool history = history_on(history_level_);
    uint64_t acquired_at = history ? __atomic_load_n(&slot_->acquired_at, __ATOMIC_RELAXED) : 0;
    if (detail::try_release_exclusive_fast(slot_, incarnation_, me)) {
      if (history) {
        uint64_t now = detail::realtime_coarse_ns();
        core_->record_at(RingEvent{uint8_t(EventKind::released), 0, 0, index_, incarnation_, 0,
                                   now > acquired_at ? now - acquired_at : 0},
                         now);
      }
      return Status::OK();
    }
  }
  return core_->release_slow(*this, mode);
}

bool Lock::abandoned() const { return core_ != nullptr && detail::holds_abandoned(slot_); }

Status Lock::mark_consistent() {
  if (core_ == nullptr) return empty_handle();
  if (detail::mark_consistent(slot_) != Code::ok) {
    return Status(Code::not_owner, fmt::format("lock '{}': not held by this thread", name_));
  }
  return Status::OK();
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

namespace detail {

void TableCore::dead_found(uint32_t slot_index, const Owner& dead, Mode mode) {
  if (!history_on()) return;
  format::Slot* s = file_->slot(slot_index);
  record(RingEvent{uint8_t(EventKind::recovered), uint8_t(mode), 0, slot_index, s ? load_incarnation(s) : 0, dead.tid,
                   (uint64_t{dead.pid} << 32) | dead.start_time});
}

AcquireResult TableCore::acquire_slow(Lock& lock, Mode mode, const Deadline& deadline) {
  Acquired a = mode == Mode::exclusive
                   ? acquire_exclusive(*file_, lock.slot_, lock.index_, lock.incarnation_, deadline, *this)
                   : acquire_shared(*file_, lock.slot_, lock.index_, lock.incarnation_, deadline,
                                    realtime_coarse_ns(), *this);
  const uint8_t m = uint8_t(mode);
  switch (a.code) {
    case Code::ok:
    case Code::abandoned: {
      bool abandoned = a.code == Code::abandoned;
      if (history_on()) {
        // (A takeover's `recovered` event was recorded before its CAS: dead_found.)
        record(RingEvent{uint8_t(EventKind::acquired), m, uint16_t(abandoned ? format::kEventAbandoned : 0),
                         lock.index_, lock.incarnation_, 0, a.wait_ns});
      }
      if (!abandoned) return AcquireResult{};
      return AcquireResult{
          Status(Code::abandoned,
                 fmt::format("lock '{}': previous holder (pid {}, tid {}) died holding it; repair, then "
                             "mark_consistent()",
                             lock.name_, a.dead_owner.pid, a.dead_owner.tid)),
          a.dead_owner};
    }
    case Code::timed_out:
      record(RingEvent{uint8_t(EventKind::timeout), m, 0, lock.index_, lock.incarnation_, 0, a.wait_ns});
      return AcquireResult{Status(Code::timed_out, fmt::format("lock '{}': timed out", lock.name_)), {}};
    case Code::already_held:
      return AcquireResult{Status(Code::already_held, fmt::format("lock '{}': already held by this thread{}",
                                                                  lock.name_, mode == Mode::shared
                                                                                  ? ""
                                                                                  : " (no recursion, no upgrade)")),
                           {}};
    case Code::stale_handle:
      return AcquireResult{Status(Code::stale_handle,
                                  fmt::format("lock '{}': removed (or re-created) since this handle was made; look "
                                              "it up again", lock.name_)),
                           {}};
    case Code::capacity:
      return AcquireResult{
          Status(Code::capacity, fmt::format("{}: no free reader record for lock '{}' (table at max_slots)", dir_,
                                             lock.name_)),
          {}};
    default:
      return AcquireResult{Status(a.code, fmt::format("lock '{}': {}", lock.name_, code_name(a.code))), {}};
  }
}

Status TableCore::release_slow(Lock& lock, Mode mode) {
  bool left_abandoned = false;
  uint64_t acquired_at = 0;
  Code c;
  if (mode == Mode::exclusive) {
    acquired_at = __atomic_load_n(&lock.slot_->acquired_at, __ATOMIC_RELAXED);
    c = release_exclusive(lock.slot_, lock.incarnation_, &left_abandoned);
  } else {
    c = release_shared(*file_, lock.slot_, lock.index_, lock.incarnation_, &left_abandoned, &acquired_at);
  }
  if (c == Code::stale_handle) {
    return Status(Code::stale_handle,
                  fmt::format("lock '{}': removed (or re-created) since this handle was made", lock.name_));
  }
  if (c == Code::not_owner) {
    return Status(Code::not_owner, fmt::format("lock '{}': not held {}by this thread", lock.name_,
                                               mode == Mode::shared ? "shared " : ""));
  }
  if (history_on()) {
    record(RingEvent{uint8_t(EventKind::released), uint8_t(mode),
                     uint16_t(left_abandoned ? format::kEventAbandoned : 0), lock.index_, lock.incarnation_, 0,
                     since(acquired_at)});
  }
  return Status::OK();
}

}  // namespace detail
}  // namespace locktable
