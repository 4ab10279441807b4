// The mapped-table backend's uncontended exclusive acquire and release,
// inline, so that Lock::acquire and Lock::release (engine/src/lock.cc) run
// them on the handle's cached slot pointer with no virtual call (see
// backend.h). Everything they do not finish goes to the slow paths in
// lock_protocol.h through the backend. The protocol is specified in
// lock_protocol.cc.
#pragma once

#include <cstdint>

#include "atomic128.h"
#include "backend.h"
#include "clock.h"
#include "history_ring.h"
#include "robust_list.h"
#include "slot_state.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

inline void track_hold(ThreadSelf& me, format::Slot* s, const Word128& written) {
  if (me.held_count < kTrackedHolds) me.held[me.held_count++] = TrackedHold{s, written.lo, written.hi};
}

// Forgets the hold of `s`; true (and the record written at acquire in
// *written) if it was tracked.
inline bool untrack_hold(ThreadSelf& me, format::Slot* s, Word128* written = nullptr) {
  for (uint32_t i = me.held_count; i-- > 0;) {
    if (me.held[i].slot == s) {
      if (written != nullptr) *written = Word128{me.held[i].lo, me.held[i].hi};
      me.held[i] = me.held[--me.held_count];
      return true;
    }
  }
  return false;
}

// Wakes the threads asleep on the slot after a change away from `old`: all of
// them when readers wait (they may all get in), otherwise one.
void wake_waiters(format::Slot* s, const Word128& old);

// Bookkeeping an exclusive owner does right after its CAS: put the slot on the
// thread's robust list, record its tid for after the kernel clears it, and
// remember the record written (the release CAS expects it). The caller stamps
// the acquisition time (set_acquired_at), sharing the clock read with history.
inline void after_exclusive_acquire(format::Slot* s, ThreadSelf& me, const Word128& written) {
  if (RobustHead* head = me.robust) {
    robust_enqueue(head, &s->robust_next);
    robust_clear_pending(head);
  }
  __atomic_store_n(&s->owner_shadow, uint64_t{me.tid} | (uint64_t{generation(written)} << 32), __ATOMIC_RELAXED);
  track_hold(me, s, written);
}

inline void set_acquired_at(format::Slot* s, uint64_t now_ns) {
  __atomic_store_n(&s->acquired_at, now_ns, __ATOMIC_RELAXED);
}

// Uncontended exclusive acquire: the record is FREE with no flags and no
// pending reader operation. One 16-byte CAS. (A variant that skipped the read
// and CASed against the last FREE record the handle saw measured no faster, and
// had to give back a re-created name's lock after the fact.)
inline bool try_acquire_exclusive_fast(format::Slot* s, uint32_t incarnation, ThreadSelf& me) {
  Word128 cur = guess128(&s->owner);
  if (cur.lo != 0 || aux_word(cur) != 0) return false;
  if (load_incarnation(s) != incarnation) return false;  // after reading the record (see protocol)
  Word128 desired = make_word(me.tid, me.pid, me.start, generation(cur) + 1);
  RobustHead* head = me.robust;
  if (head != nullptr) robust_pending(head, &s->robust_next);
  if (!cas128(&s->owner, cur, desired)) {
    if (head != nullptr) robust_clear_pending(head);
    return false;
  }
  after_exclusive_acquire(s, me, desired);
  return true;
}

// Exclusive release by a thread that tracked the hold and owes no repair (the
// common case). Returns false, having changed nothing, otherwise. The CAS
// expects the record this thread wrote at acquire (no read first); waiters may
// have added their bits since, which the failed CAS reports.
inline bool try_release_exclusive_fast(format::Slot* s, uint32_t incarnation, ThreadSelf& me) {
  if (me.abandoned_count != 0) return false;  // a release may have to pass "abandoned" on
  if (load_incarnation(s) != incarnation) return false;  // a stale handle (slow path says so)
  Word128 cur;
  // Tracked means this thread acquired it and has not released it: it owns it
  // (a live owner is never taken over), so unlinking its list node is safe.
  if (!untrack_hold(me, s, &cur)) return false;
  RobustHead* head = me.robust;
  if (head != nullptr) {
    robust_pending(head, &s->robust_next);
    robust_dequeue(head, &s->robust_next);
  }
  // Only the WAITERS / SHARED_WAITERS bits can change under an owner; the CAS
  // fails at most until it has seen them.
  Word128 desired = make_word(0, 0, 0, generation(cur) + 1);
  while (!cas128(&s->owner, cur, desired)) {
  }
  if (head != nullptr) robust_clear_pending(head);
  if (tid_word(cur) & format::kWaiters) wake_waiters(s, cur);
  return true;
}

// Appends a history event of the handle's table (local_table.cc).
void local_record(Backend* backend, const RingEvent& ev, uint64_t time_ns);

inline bool history_on(const uint32_t* level) {
  return __atomic_load_n(level, __ATOMIC_RELAXED) != format::kHistoryOff;
}

// REQUIRES: `lock` was made by the mapped-table backend.
inline bool local_fast_acquire(Lock& lock) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  if (!try_acquire_exclusive_fast(s, LockAccess::incarnation(lock), thread_self())) return false;
  uint64_t now = realtime_coarse_ns();
  set_acquired_at(s, now);
  if (history_on(LockAccess::history_level(lock))) {
    local_record(LockAccess::backend(lock),
                 RingEvent{format::kEventAcquired, format::kModeExclusive, 0, LockAccess::index(lock),
                           LockAccess::incarnation(lock), 0, 0},
                 now);
  }
  return true;
}

// REQUIRES: `lock` was made by the mapped-table backend.
inline bool local_fast_release(Lock& lock) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  const bool history = history_on(LockAccess::history_level(lock));
  uint64_t acquired_at = history ? __atomic_load_n(&s->acquired_at, __ATOMIC_RELAXED) : 0;
  if (!try_release_exclusive_fast(s, LockAccess::incarnation(lock), thread_self())) return false;
  if (history) {
    uint64_t now = realtime_coarse_ns();
    local_record(LockAccess::backend(lock),
                 RingEvent{format::kEventReleased, format::kModeExclusive, 0, LockAccess::index(lock),
                           LockAccess::incarnation(lock), 0, now > acquired_at ? now - acquired_at : 0},
                 now);
  }
  return true;
}

}  // namespace locktable::detail
