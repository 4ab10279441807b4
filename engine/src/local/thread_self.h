// The calling thread's identity as it goes into an OwnerRecord, and the
// per-thread state the uncontended paths need, in one initial-exec TLS block.
// After fork() the child's block is reset (pthread_atfork), so a child never
// takes itself for its parent and never owns its parent's locks.
#pragma once

#include <cstdint>

#include "atomic128.h"
#include "proc_thread.h"
#include "robust_list.h"
#include "table_format.h"

namespace locktable::detail {

// A lock this thread holds shared: the slot and the reader record that names it.
struct SharedHold {
  format::Slot* slot;
  format::ReaderRecord* record;
  uint32_t record_index;
  uint32_t claim;  // the record's claim generation (its ops carry it)
};

// An idle reader record this thread keeps claimed (and on its robust list)
// for its next shared acquire in table `table` (TableFile::id(), never reused).
struct CachedReader {
  uint64_t table;
  format::ReaderRecord* record;
  uint32_t index;
  uint32_t claim;
};

// The history ring segment this thread appends to in table `table`.
struct SegmentRef {
  uint64_t table;                  // TableFile::id()
  format::SegmentHeader* header;
  format::RingEntry* entries;      // the segment's first entry
  uint64_t next;                   // the next event index (header->head, kept here)
  uint32_t capacity;               // entries in the segment
  uint32_t position;               // next % capacity, kept so that an append divides nothing
};

inline constexpr uint32_t kInlineSharedHolds = 16;  // more go to a vector (lock_protocol.cc)
inline constexpr uint32_t kReaderCacheSize = 4;     // per thread, all tables together
inline constexpr uint32_t kSegmentRefs = 4;         // segment refs kept (one forgotten is found again: history_ring.cc)

struct ThreadSelf {
  uint32_t ready;     // 1 once filled in for this thread in this process
  uint32_t pid;
  uint32_t tid;
  uint32_t start;     // low 32 bits of the thread's start time (clock ticks since boot)
  uint64_t owner_lo;  // tid | pid << 32: the low half of an owner record naming this thread
  RobustHead* robust; // the thread's robust list head; never null: where the kernel's list
                      // cannot be used, a private one it never walks (polling alone finds deaths)
  char comm[16];      // thread name, NUL-padded
  // How many exclusive holds of this thread were taken abandoned and not yet
  // marked consistent (the slots themselves are in lock_protocol.cc): while
  // any are, releases take the slow path, which passes "abandoned" on.
  uint32_t abandoned_count;
  uint32_t shared_count;              // entries of `shared` in use
  SharedHold shared[kInlineSharedHolds];
  uint32_t cached_count;              // entries of `cache` in use
  CachedReader cache[kReaderCacheSize];
  // The owner record this thread last wrote into `last_slot` with a
  // successful CAS: the likely current value when it comes back to the same
  // slot (a release after its acquire, the next acquire after a release). A
  // CAS from it saves the load before the CAS, a second transfer of the line
  // when another core has it. Only a guess: a CAS from it validates it.
  const format::Slot* last_slot;
  Word128 last_value;
  uint32_t segment_count;             // entries of `segments` in use
  SegmentRef segments[kSegmentRefs];
};

extern thread_local constinit ThreadSelf tls_self __attribute__((tls_model("initial-exec")));

ThreadSelf& thread_self_slow();

inline ThreadSelf& thread_self() {
  if (__builtin_expect(tls_self.ready != 0, 1)) return tls_self;
  return thread_self_slow();
}

// The inline shared hold of slot `s`, or nullptr.
inline SharedHold* find_inline_shared_hold(ThreadSelf& me, const format::Slot* s) {
  for (uint32_t i = 0; i < me.shared_count; ++i) {
    if (me.shared[i].slot == s) return &me.shared[i];
  }
  return nullptr;
}

// Takes a cached reader record of `table` out of the cache; false if none.
inline bool take_cached_reader(ThreadSelf& me, uint64_t table, CachedReader* out) {
  for (uint32_t i = me.cached_count; i-- > 0;) {
    if (me.cache[i].table != table) continue;
    *out = me.cache[i];
    me.cache[i] = me.cache[--me.cached_count];
    return true;
  }
  return false;
}

// The likely current owner record of `s`: what this thread last wrote there,
// else a two-load guess.
inline Word128 likely_value(const ThreadSelf& me, const format::Slot* s) {
  if (me.last_slot == s) return me.last_value;
  return guess128(&s->owner);
}

inline void remember_value(ThreadSelf& me, const format::Slot* s, const Word128& written) {
  me.last_slot = s;
  me.last_value = written;
}

}  // namespace locktable::detail
