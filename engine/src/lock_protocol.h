// The lock protocol on one slot: acquire, release, takeover, shared mode,
// removal and repair. lock_protocol.cc opens with the full description of the
// protocol; this header holds the two uncontended paths inline, because they
// are the hot path of every embedding program.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "atomic128.h"
#include "locktable/types.h"
#include "robust_list.h"
#include "system_info.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

class TableFile;

struct Acquired {
  Code code = Code::ok;       // ok, abandoned, timed_out, already_held, stale_handle, capacity, io_error
  Owner dead_owner;           // abandoned: the holder that died
  uint64_t wait_ns = 0;       // time spent waiting (0 when it never slept)
  bool took_over = false;     // this acquire took the lock from a dead holder itself
};

inline uint32_t load_incarnation(const format::Slot* s) {
  return std::atomic_ref<const uint32_t>(s->incarnation).load(std::memory_order_acquire);
}

inline void track_hold(ThreadSelf& me, format::Slot* s) {
  if (me.held_count < kTrackedHolds) me.held[me.held_count++] = s;
}

inline bool untrack_hold(ThreadSelf& me, format::Slot* s) {
  for (uint32_t i = me.held_count; i-- > 0;) {
    if (me.held[i] == s) {
      me.held[i] = me.held[--me.held_count];
      return true;
    }
  }
  return false;
}

// Bookkeeping an exclusive owner does right after its CAS: put the slot on the
// thread's robust list, record its tid for after the kernel clears it.
inline void after_exclusive_acquire(format::Slot* s, ThreadSelf& me, uint32_t gen) {
  if (me.robust != nullptr) {
    robust_enqueue(me.robust, &s->robust_next);
    robust_clear_pending(me.robust);
  }
  __atomic_store_n(&s->owner_shadow, uint64_t{me.tid} | (uint64_t{gen} << 32), __ATOMIC_RELAXED);
  __atomic_store_n(&s->acquired_at, realtime_coarse_ns(), __ATOMIC_RELAXED);
  track_hold(me, s);
}

// Uncontended exclusive acquire: the record is FREE with no flags and no
// pending reader operation. One 16-byte CAS.
inline bool try_acquire_exclusive_fast(format::Slot* s, uint32_t incarnation, ThreadSelf& me) {
  Word128 cur = guess128(&s->owner);
  if (cur.lo != 0 || aux_word(cur) != 0) return false;
  if (load_incarnation(s) != incarnation) return false;  // after reading the record (see protocol)
  Word128 desired = make_word(me.tid, me.pid, me.start, generation(cur) + 1);
  if (me.robust != nullptr) robust_pending(me.robust, &s->robust_next);
  if (!cas128(&s->owner, cur, desired)) {
    if (me.robust != nullptr) robust_clear_pending(me.robust);
    return false;
  }
  after_exclusive_acquire(s, me, generation(desired));
  return true;
}

// Wakes the threads asleep on the slot after a change away from `old`: all of
// them when readers wait (they may all get in), otherwise one.
void wake_waiters(format::Slot* s, const Word128& old);

// Exclusive release by a thread that tracked the hold and owes no repair (the
// common case). Returns false, having changed nothing, otherwise.
inline bool try_release_exclusive_fast(format::Slot* s, uint32_t incarnation, ThreadSelf& me) {
  Word128 cur = guess128(&s->owner);
  if (cur.lo != (uint64_t{me.tid} | (uint64_t{me.pid} << 32)) || aux_word(cur) != me.start) return false;
  if (me.abandoned_count != 0) return false;  // a release may have to pass "abandoned" on
  if (load_incarnation(s) != incarnation) return false;  // a stale handle (slow path says so)
  // Tracked means this thread acquired it and has not released it: it owns it
  // (a live owner is never taken over), so unlinking its list node is safe.
  if (!untrack_hold(me, s)) return false;
  if (me.robust != nullptr) {
    robust_pending(me.robust, &s->robust_next);
    robust_dequeue(me.robust, &s->robust_next);
  }
  // Only the WAITERS / SHARED_WAITERS bits can change under an owner; the CAS
  // fails at most until it has seen them.
  Word128 desired = make_word(0, 0, 0, generation(cur) + 1);
  while (!cas128(&s->owner, cur, desired)) {
  }
  if (me.robust != nullptr) robust_clear_pending(me.robust);
  if (tid_word(cur) & format::kWaiters) wake_waiters(s, cur);
  return true;
}

// --- slow paths (lock_protocol.cc) ---

Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline);
// Both check the handle's incarnation: a stale handle never releases the
// hold of the name that now owns the slot (stale_handle).
Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned);

Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline);
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
struct Freed {
  uint32_t slot;
  Mode mode;
  Owner dead_owner;
};
void recover_slot(format::Slot* s, uint32_t slot_index, bool dry_run, std::vector<Freed>* freed);
void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed);

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
