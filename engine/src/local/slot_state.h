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

inline bool is_free(uint32_t pid_word) { return (pid_word & format::kPidMask) == 0; }
inline bool is_exclusive(uint32_t pid_word) { return (pid_word & format::kPidMask) != 0; }
// An EXCLUSIVE owner that is not in yet: it waits for the readers to leave.
inline bool is_draining(uint32_t pid_word) { return is_exclusive(pid_word) && (pid_word & format::kDraining); }

// --- the readers word (Slot::readers; table_format.h, ReaderWord) ---
inline uint64_t load_readers(const format::Slot* s) { return __atomic_load_n(&s->readers, __ATOMIC_ACQUIRE); }
// One xadd (a full barrier): returns the word before it.
inline uint64_t add_readers(format::Slot* s, uint64_t delta) {
  return __atomic_fetch_add(&s->readers, delta, __ATOMIC_SEQ_CST);
}
// A join adds first and looks after (SHARED MODE): far below the count's
// limit, so that all the threads there are could add at once without
// carrying into `ended`.
inline constexpr uint32_t kReaderCountLimit = uint32_t(format::kReaderCountMask / 2);

// The futex word of a draining owner: the readers word's low 32 bits (the
// count is in them, so every join, backout and leave changes it).
inline uint32_t* readers_futex(format::Slot* s) { return reinterpret_cast<uint32_t*>(&s->readers); }

// Adds `wraps` (+1 or -1) wraps of the readers word's `ended` to
// shared_carry, so that the shared acquisitions (COUNTING) go on past 2^32.
inline void carry_ended(format::Slot* s, int wraps) {
  __atomic_fetch_add(&s->shared_carry, wraps > 0 ? uint64_t{1} << 32 : uint64_t(0) - (uint64_t{1} << 32),
                     __ATOMIC_RELAXED);
}

// After a change of the readers word from `before` that moved `ended` by
// `step` (+1 or -1): a wrap carries.
inline void after_ended_step(format::Slot* s, uint64_t before, int step) {
  const uint32_t ended = format::readers_ended(before);
  if (__builtin_expect(step > 0 ? ended == 0xffffffffu : ended == 0, 0)) carry_ended(s, step);
}

// The shared acquisitions of the name in the slot (COUNTING): the holds
// that ended, read together with shared_carry.
inline uint64_t read_shared_acquisitions(const format::Slot* s) {
  for (;;) {
    const uint64_t carry = __atomic_load_n(&s->shared_carry, __ATOMIC_ACQUIRE);
    const uint64_t w = load_readers(s);
    if (__atomic_load_n(&s->shared_carry, __ATOMIC_ACQUIRE) != carry) continue;
    return format::readers_ended(w) + carry - __atomic_load_n(&s->shared_base, __ATOMIC_RELAXED);
  }
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
// tid_word (owner_shadow, valid only while its generation bits match: a
// shadow left 1024 generations back would have needed 512 owners in a row
// to die before writing theirs).
inline uint32_t owner_tid(const format::Slot* s, const Word128& w) {
  uint32_t tid = tid_word(w) & format::kTidMask;
  if (tid != 0) return tid;
  const uint32_t shadow = __atomic_load_n(&s->owner_shadow, __ATOMIC_RELAXED);
  return (shadow >> 22) == (generation(w) & 0x3ffu) ? (shadow & format::kShadowTidMask) : 0;
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
