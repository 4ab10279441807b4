// The lock protocol on one slot: acquire, release, takeover, shared mode,
// removal and repair. lock_protocol.cc opens with the full description of the
// protocol; this header holds the two uncontended paths inline, because they
// are the hot path of every embedding program.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "atomic128.h"
#include "death_log.h"
#include "locktable/types.h"
#include "robust_list.h"
#include "system_info.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

class TableFile;

// A dead holder taken out of a lock (by recovery, or by a waiter).
struct Freed {
  uint32_t slot;
  Mode mode;
  Owner dead_owner;
};

struct Acquired {
  Code code = Code::ok;       // ok, abandoned, timed_out, already_held, stale_handle, capacity, io_error
  Owner dead_owner;           // abandoned: the holder that died
  uint64_t wait_ns = 0;       // time spent waiting (0 when it never slept)
};

inline uint32_t load_incarnation(const format::Slot* s) {
  return std::atomic_ref<const uint32_t>(s->incarnation).load(std::memory_order_acquire);
}

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

// --- slow paths (lock_protocol.cc) ---

Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline, DeathLog& log);
// Both check the handle's incarnation: a stale handle never releases the
// hold of the name that now owns the slot (stale_handle).
Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned);

// Frees the reader records the calling thread keeps cached for `file` (called
// as the table closes). Other threads' cached records stay claimed: they keep
// the mapping alive (TableCore::process_holds_locks) and are freed, or marked
// by the kernel, when those threads end. Cache entries are keyed by
// TableFile::id(), never reused, so a closed table's entry is never touched.
void drop_cached_readers(TableFile& file);

// `now_ns` stamps the reader's acquisition time (0: unknown, no clock read).
Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline, uint64_t now_ns, DeathLog& log);
Code release_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation, bool* left_abandoned,
                    uint64_t* acquired_at);

// Whether the calling thread holds the slot (in `mode`), and whether it holds
// it abandoned (not yet marked consistent).
bool holds(format::Slot* s, Mode mode);
bool holds_abandoned(format::Slot* s);
Code mark_consistent(format::Slot* s);

// Recovery. recover_slot frees the slot of a dead exclusive owner;
// recover_readers scans the reader pool once and takes every dead reader out
// of the lock it held. Each records what it did (or, with dry_run, would do).
void recover_slot(format::Slot* s, uint32_t slot_index, bool dry_run, std::vector<Freed>* freed, DeathLog& log);
void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed, DeathLog& log);

// Counted readers of a shared slot according to the reader records, for
// `check`; false when the slot changed while counting.
bool count_readers(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t* record_count,
                   uint32_t* counted);

// Removal and reuse of a slot by the name map (see "Names" in the protocol).
Code retire_slot(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation);
uint32_t prepare_slot_for_new_name(format::Slot* s);  // returns the new incarnation
bool unretire_slot(format::Slot* s, uint32_t incarnation);
bool slot_is_retired(format::Slot* s);

// After a reboot: frees the slot (abandoned if it was held). True if it was held.
bool reset_slot_after_reboot(format::Slot* s);
void reset_reader_after_reboot(format::ReaderRecord* r);

// A snapshot of a slot for listing and checking.
struct SlotView {
  LockState state = LockState::free;
  Mode mode = Mode::exclusive;
  Owner owner;                 // exclusive holder
  bool owner_alive = true;
  uint32_t readers = 0;        // shared count
  uint32_t waiters = 0;
  bool abandoned = false;
  bool retired = false;
  uint64_t acquired_at = 0;
  Word128 raw{0, 0};
};
SlotView inspect_slot(format::Slot* s);

struct ReaderView {
  uint32_t index;
  Owner owner;
  bool alive;
  format::ReaderState state;
  uint64_t acquired_at;
};
// Reader records that hold or are joining/leaving `slot_index`.
std::vector<ReaderView> readers_of(TableFile& file, uint32_t slot_index);

}  // namespace locktable::detail
