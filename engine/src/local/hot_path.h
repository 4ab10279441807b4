// The mapped-table backend's uncontended acquire and release, exclusive and
// shared, inline, so that Lock::acquire and Lock::release (engine/src/lock.cc)
// run them on the handle's cached slot pointer with no virtual call (see
// backend.h). Whatever they do not finish goes to the slow paths in
// lock_protocol.h through the backend; they change nothing when they give up
// (a join they made they back out first). The protocol is specified in
// lock_protocol.cc.
#pragma once

#include <cstdint>

#include "atomic128.h"
#include "backend.h"
#include "clock.h"
#include "crash_point.h"
#include "history_ring.h"
#include "reader_records.h"
#include "robust_list.h"
#include "slot_state.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

// What the inline paths need of their table, reached through Lock::hot_.
struct LocalHot {
  const uint32_t* history_level;  // the header's level word (any process may change it)
  uint64_t file_id;               // TableFile::id(): keys the reader-record cache
};

// Wakes the threads asleep on the slot's owner record after a change away
// from `old`: all of them when readers wait (they may all get in), otherwise one.
void wake_waiters(format::Slot* s, const Word128& old);

// A wake-up a change owes its slot's sleepers, done by the caller once it has
// appended the change's history event: a woken thread's next change must not
// reach the ring before the change that woke it (the drainer would count the
// earlier one late).
struct PendingWake {
  format::Slot* slot = nullptr;
  Word128 old{0, 0};     // the record the change replaced (wake_waiters decides how many)
  bool all = false;      // wake every sleeper whatever `old` says
  bool drainer = false;  // wake the owner draining on the readers word instead
  void run() const;
};

// Bookkeeping an exclusive owner does right after its CAS wrote `written`:
// put the slot on the thread's robust list, then record its tid for after
// the kernel clears it. The caller takes the token and stamps the time once
// it is in (no reader counted).
inline void after_exclusive_acquire(format::Slot* s, ThreadSelf& me, const Word128& written) {
  robust_enqueue(me.robust, &s->robust_next);
  robust_clear_pending(me.robust);
  __atomic_store_n(&s->owner_shadow, format::make_owner_shadow(me.tid, generation(written)), __ATOMIC_RELEASE);
}

inline void set_acquired_at(format::Slot* s, uint64_t now_ns) {
  __atomic_store_n(&s->acquired_at, now_ns, __ATOMIC_RELAXED);
}

// The new exclusive owner's fencing token. REQUIRES: the caller holds `s`
// exclusively and is in (it is the only writer of the token).
inline uint64_t take_token(format::Slot* s) {
  uint64_t t = __atomic_load_n(&s->token, __ATOMIC_RELAXED) + 1;
  __atomic_store_n(&s->token, t, __ATOMIC_RELAXED);
  return t;
}

// What an uncontended exclusive acquire did.
enum class FastTake : uint8_t {
  no,       // nothing: the slow path decides
  in,       // holds it and is in
  readers,  // holds it, but readers are counted in: it must drain them (the slow path)
};

// Uncontended exclusive acquire (ACQUIRE in lock_protocol.cc), with no call:
// the thread is set up (thread_self), and the record is FREE with no flag and
// no waiter bit. One 16-byte CAS, from the value this thread last wrote there
// (a release followed by an acquire) or else from two plain loads; a failed
// CAS goes to the slow path, which retries. After the CAS, the readers word
// (*readers) says whether it is in. The caller takes the token once it is.
inline FastTake try_acquire_exclusive_fast(format::Slot* s, uint32_t incarnation, uint64_t* readers) {
  ThreadSelf& me = tls_self;
  if (__builtin_expect(me.ready == 0, 0)) return FastTake::no;
  Word128 cur = likely_value(me, s);
  // After the record was read (or CASed from a value this thread wrote,
  // which no removal and re-creation can bring back): see NAMES.
  if (cur.lo != 0 || load_incarnation(s) != incarnation) return FastTake::no;
  robust_pending(me.robust, &s->robust_next);
  // (this thread, its start time, generation + 1)
  const Word128 desired{me.owner_lo, (uint64_t{generation(cur) + 1} << 32) | me.start};
  if (!cas128(&s->owner, cur, desired)) {
    robust_clear_pending(me.robust);
    return FastTake::no;
  }
  after_exclusive_acquire(s, me, desired);
  remember_value(me, s, desired);
  // Dekker (SHARED MODE): the CAS was a full barrier; a reader not counted
  // now will see this owner and back out.
  *readers = load_readers(s);
  return format::reader_count(*readers) == 0 ? FastTake::in : FastTake::readers;
}

// Exclusive release by an owner that owes no repair (the common case), with
// no call. False, having changed nothing, when the slow path must decide.
// On success *old is the record the release CAS replaced. With history on,
// the caller reads the hold's time stamp and token first (a new owner
// overwrites them once the record is FREE).
inline bool try_release_exclusive_fast(format::Slot* s, uint32_t incarnation, Word128* old) {
  ThreadSelf& me = tls_self;
  if (me.ready == 0 || me.abandoned_count != 0) return false;  // a release may have to pass "abandoned" on
  if (load_incarnation(s) != incarnation) return false;       // a stale handle (slow path says so)
  Word128 cur = guess128(&s->owner);
  // tid_word and pid_word are read together (one 8-byte load): if they name
  // this thread it owns the lock, and nothing but waiter bits can change
  // under a live owner that is in. The CAS corrects a stale generation or
  // waiter bits.
  if (!owned_by_fast(cur, me)) return false;
  RobustHead* head = me.robust;
  robust_pending(head, &s->robust_next);
  robust_dequeue(head, &s->robust_next);
  Word128 desired;
  do {
    desired = Word128{0, uint64_t{generation(cur) + 1} << 32};  // FREE, generation + 1
  } while (!cas128(&s->owner, cur, desired));
  robust_clear_pending(head);
  remember_value(me, s, desired);
  *old = cur;
  return true;
}

// The rest of an uncontended exclusive acquire with history on
// (local_table.cc): the time stamp and the `acquired` event; `readers` is the
// readers word it was in at.
void finish_fast_acquire_recorded(Lock& lock, uint64_t token, uint64_t readers);

// An uncontended exclusive acquire that found readers counted in: it holds
// the lock and drains them, as the slow path does (local_table.cc).
AcquireResult drain_after_fast_acquire(Lock& lock, const Deadline& deadline);

// A whole uncontended exclusive release with history on (local_table.cc):
// the release, then its event, then the wake-up of a waiter. False when the
// slow path must decide.
bool release_exclusive_fast_recorded(Lock& lock);

// Wakes the waiters a release from `old` owes (WAITERS was set), out of line.
void wake_after_release(format::Slot* s, Word128 old);

// Appends a history event of the handle's table (local_table.cc).
void local_record(Backend* backend, RingEvent ev, uint64_t time_ns);  // by value: the inline paths keep theirs in registers

inline bool history_on(const LocalHot* hot) {
  return __atomic_load_n(hot->history_level, __ATOMIC_RELAXED) != format::kHistoryOff;
}

inline const LocalHot* hot_of(const Lock& lock) { return static_cast<const LocalHot*>(LockAccess::hot(lock)); }

// Appends a history event of the handle's table: inline when the calling
// thread's first ring segment is this table's (the usual case), else through
// local_record, which finds or claims the segment.
// REQUIRES: history is on; `me` is the calling thread's ThreadSelf, ready.
inline void record_event(ThreadSelf& me, const Lock& lock, RingEvent ev, uint64_t time_ns) {
  if (__builtin_expect(me.segment_count != 0 && me.segments[0].table == hot_of(lock)->file_id, 1)) {
    HistoryRing::append(me.segments[0], me, ev, time_ns);
    return;
  }
  local_record(LockAccess::backend(lock), ev, time_ns);
}

// The generation of the exclusive epoch a reader's change belongs to (ORDER
// IN HISTORY): that of the last FREE record, one before a DRAINING owner's.
// For a leave, the owner record is read before its add: while the reader is
// counted no writer gets in, so no exclusive change comes between the read
// and the add, where after the add a writer may already have been in and out.
inline uint32_t reader_epoch(const Word128& owner) {
  return generation(owner) - (is_exclusive(pid_word(owner)) ? 1 : 0);
}

// Wakes a DRAINING owner asleep on the readers word (out of line).
void wake_drainer(format::Slot* s);

inline uint32_t load_owner_pid_word(const format::Slot* s) {
  return __atomic_load_n(&s->owner.pid_word, __ATOMIC_ACQUIRE);
}

// After a change of the readers word from `before` that took a reader out
// (a leave, a backout): the change that empties the count wakes an owner
// that drains (SHARED MODE, leave step 3).
inline void after_reader_out(format::Slot* s, uint64_t before) {
  if (format::reader_count(before) == 1 && (load_owner_pid_word(s) & format::kDraining)) wake_drainer(s);
}

// Takes a join that was counted in back out (SHARED MODE, join step 4').
inline void back_out(format::Slot* s) { after_reader_out(s, add_readers(s, format::kReaderBackout)); }

// The rest of an uncontended shared acquire with history on (local_table.cc):
// the time stamp and the `acquired` event; `before` is the readers word its
// join added to, `owner` the owner record it read after.
void finish_join_recorded(Lock& lock, format::ReaderRecord* record, uint64_t before, const Word128& owner,
                          uint64_t token);

// The rest of an uncontended shared release with history on (local_table.cc):
// the `released` event, then the wake-up the leave owes a draining owner
// (PendingWake); `owner` and `token` were read before the leave.
void finish_leave_recorded(Lock& lock, format::ReaderRecord* record, uint64_t before, const Word128& owner,
                           uint64_t token);

// Uncontended shared acquire (SHARED MODE in lock_protocol.cc): the thread is
// set up, has an idle reader record of this table cached and room for one
// more inline hold, and the owner record is FREE with no flag (waiter bits
// aside). False when the slow path must decide: then nothing changed (a join
// that found a writer, RETIRED or another incarnation is backed out).
// REQUIRES: `lock` was made by the mapped-table backend.
[[gnu::always_inline]] inline bool try_join_fast(Lock& lock, uint64_t* token) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  ThreadSelf& me = tls_self;
  const LocalHot* hot = hot_of(lock);
  if (__builtin_expect(me.ready == 0, 0) || me.shared_count >= kInlineSharedHolds ||
      find_inline_shared_hold(me, s) != nullptr) {
    return false;
  }
  uint32_t c = me.cached_count;
  while (c > 0 && me.cache[c - 1].table != hot->file_id) --c;
  if (c == 0) return false;
  const CachedReader rec = me.cache[c - 1];
  const uint32_t index = LockAccess::index(lock);
  const uint64_t idle = format::make_reader_op(index, format::ReaderState::idle, rec.claim);
  store_op(rec.record, format::reader_op_in_state(idle, format::ReaderState::joining));
  crash_point("join:after_intent");  // test builds only (crash_point.h); nothing otherwise
  const uint64_t before = add_readers(s, format::kReaderJoin);
  crash_point("join:after_add");
  // After the add (a full barrier): a writer that CASed before it is seen here.
  const Word128 owner = guess128(&s->owner);
  constexpr uint64_t kWaiterBits = uint64_t{format::kWaiters} | (uint64_t{format::kSharedWaiters} << 32);
  if ((owner.lo & ~kWaiterBits) != 0 || load_incarnation(s) != LockAccess::incarnation(lock) ||
      format::reader_count(before) >= kReaderCountLimit) {
    back_out(s);
    store_op(rec.record, idle);
    return false;
  }
  store_op(rec.record, format::reader_op_in_state(idle, format::ReaderState::in));
  // Out of the cache (the last entry, usually: no copy), into the holds.
  if (--me.cached_count != c - 1) me.cache[c - 1] = me.cache[me.cached_count];
  me.shared[me.shared_count++] = SharedHold{s, rec.record, rec.index, rec.claim};
  __atomic_store_n(&rec.record->incarnation, LockAccess::incarnation(lock), __ATOMIC_RELAXED);
  *token = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
  if (__builtin_expect(history_on(hot), 0)) {
    finish_join_recorded(lock, rec.record, before, owner, *token);
  } else {
    __atomic_store_n(&rec.record->acquired_at, realtime_coarse_ns(), __ATOMIC_RELAXED);
  }
  return true;
}

// Uncontended shared release of an inline hold with room for its record in
// the cache. REQUIRES: `lock` was made by the mapped-table backend.
[[gnu::always_inline]] inline bool try_leave_fast(Lock& lock) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  ThreadSelf& me = tls_self;
  if (__builtin_expect(me.ready == 0, 0)) return false;
  SharedHold* hold = find_inline_shared_hold(me, s);
  if (hold == nullptr || me.cached_count >= kReaderCacheSize) return false;
  if (load_incarnation(s) != LockAccess::incarnation(lock)) return false;
  const SharedHold h = *hold;
  const uint64_t idle = format::make_reader_op(LockAccess::index(lock), format::ReaderState::idle, h.claim);
  // For the event, read before the leave: a writer may take a new token, or
  // be in and out, right after it (reader_epoch).
  const bool history = history_on(hot_of(lock));
  uint64_t token = 0;
  Word128 owner{0, 0};
  if (__builtin_expect(history, 0)) {
    token = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
    owner = guess128(&s->owner);
  }
  store_op(h.record, format::reader_op_in_state(idle, format::ReaderState::leaving));
  crash_point("leave:after_intent");
  const uint64_t before = add_readers(s, format::kReaderLeave);  // this thread is counted: count >= 1
  crash_point("leave:after_add");
  after_ended_step(s, before, +1);
  store_op(h.record, idle);
  if (SharedHold* last = &me.shared[--me.shared_count]; hold != last) *hold = *last;  // usually the last: no copy
  crash_point("leave:before_free");
  me.cache[me.cached_count++] = CachedReader{hot_of(lock)->file_id, h.record, h.record_index, h.claim};
  if (__builtin_expect(history, 0)) {
    finish_leave_recorded(lock, h.record, before, owner, token);  // the event, then the wake-up
  } else {
    after_reader_out(s, before);
  }
  return true;
}

}  // namespace locktable::detail
