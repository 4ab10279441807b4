// What an owner record says: its state, its owner, whether that owner is dead.
// Shared by the lock protocol (lock_protocol.cc), the reader records
// (reader_records.cc), the slot lifecycle and the read-only views.
#pragma once

#include <atomic>
#include <cstdint>

#include "atomic128.h"
#include "liveness.h"
#include "locktable/types.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

inline bool is_shared(uint32_t pid_word) { return (pid_word & format::kSharedMode) != 0; }
inline bool is_free(uint32_t pid_word) { return !is_shared(pid_word) && (pid_word & format::kPidMask) == 0; }
inline bool is_exclusive(uint32_t pid_word) { return !is_shared(pid_word) && (pid_word & format::kPidMask) != 0; }

// The shared joins n a FREE or SHARED record counts (table_format.h,
// OwnerRecord); 0 for an EXCLUSIVE one, whose aux is its owner's start time.
inline uint32_t shared_joins(const Word128& w) { return is_exclusive(pid_word(w)) ? 0 : aux_word(w); }

// Adds `joins` shared acquisitions that leave the owner record to shared_moved.
inline void move_shared_joins(format::Slot* s, uint64_t joins) {
  if (__builtin_expect(joins != 0, 0)) __atomic_fetch_add(&s->shared_moved, joins, __ATOMIC_RELAXED);
}

// After a join CAS that wrote `written`: a count that wrapped to 0 moves 2^32.
inline void after_shared_join(format::Slot* s, const Word128& written) {
  if (__builtin_expect(aux_word(written) == 0, 0)) move_shared_joins(s, uint64_t{1} << 32);
}

inline uint32_t load_incarnation(const format::Slot* s) {
  return std::atomic_ref<const uint32_t>(s->incarnation).load(std::memory_order_acquire);
}

// True when `w` names the calling thread as its live exclusive owner: tid and
// pid are its own, no flag but the waiter bits is set, and the start time is
// its own. (Any other flag makes it false: the caller's slow path decides.)
inline bool owned_by_fast(const Word128& w, const ThreadSelf& me) {
  constexpr uint64_t kWaiterBits = uint64_t{format::kWaiters} | (uint64_t{format::kSharedWaiters} << 32);
  return (w.lo & ~kWaiterBits) == me.owner_lo && aux_word(w) == me.start;
}

// True when `w` names the calling thread as its live exclusive owner.
inline bool owned_by(const Word128& w, const ThreadSelf& me) {
  return is_exclusive(pid_word(w)) && (tid_word(w) & format::kOwnerDied) == 0 &&
         (tid_word(w) & format::kTidMask) == me.tid && (pid_word(w) & format::kPidMask) == me.pid &&
         aux_word(w) == me.start;
}

// The tid of an exclusive owner, even after the kernel cleared it from
// tid_word (owner_shadow, valid only while its generation matches).
inline uint32_t owner_tid(const format::Slot* s, const Word128& w) {
  uint32_t tid = tid_word(w) & format::kTidMask;
  if (tid != 0) return tid;
  uint64_t shadow = __atomic_load_n(&s->owner_shadow, __ATOMIC_RELAXED);
  return uint32_t(shadow >> 32) == generation(w) ? uint32_t(shadow) : 0;
}

inline Owner exclusive_owner(const format::Slot* s, const Word128& w) {
  return Owner{pid_word(w) & format::kPidMask, owner_tid(s, w), aux_word(w)};
}

// REQUIRES: `w` is EXCLUSIVE. Dead: the kernel marked it, or its thread is
// gone or is another thread now (never on doubt: see liveness.h).
inline bool holder_dead(const format::Slot* s, const Word128& w) {
  if (tid_word(w) & format::kOwnerDied) return true;
  Owner o = exclusive_owner(s, w);
  return thread_liveness(o.pid, o.tid, o.start_time) == Liveness::dead;
}

// The holder found dead, for the next holder's "abandoned" report
// (informational: written after the CAS that took it out).
inline void record_dead_owner(format::Slot* s, const Owner& dead) {
  __atomic_store_n(&s->dead_pid, dead.pid, __ATOMIC_RELAXED);
  __atomic_store_n(&s->dead_tid, dead.tid, __ATOMIC_RELAXED);
  __atomic_store_n(&s->dead_start, dead.start_time, __ATOMIC_RELAXED);
}

inline Owner last_dead_owner(const format::Slot* s) {
  return Owner{__atomic_load_n(&s->dead_pid, __ATOMIC_RELAXED), __atomic_load_n(&s->dead_tid, __ATOMIC_RELAXED),
               __atomic_load_n(&s->dead_start, __ATOMIC_RELAXED)};
}

}  // namespace locktable::detail
