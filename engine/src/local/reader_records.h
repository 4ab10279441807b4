// Reader records: one per thread holding one lock in shared mode (the shared
// join/leave and the recount of dead readers are specified in
// lock_protocol.cc, SHARED MODE).
//
// This file owns the pool: claiming and freeing records (first fit, so the
// claimed ones stay together below the header's reader high-water mark and
// scans stop there), each thread's cache of idle claimed records, and the
// recount that takes dead readers out of a lock. Every scan of the pool goes
// through for_each_reader.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "atomic128.h"
#include "death_log.h"
#include "table_file.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

// Records [0, hwm) have ever been claimed; the rest are untouched zeroes.
inline uint64_t reader_high_water(TableFile& file) {
  uint64_t hwm = std::atomic_ref<uint32_t>(file.header()->reader_hwm).load(std::memory_order_acquire);
  uint64_t cap = file.reader_capacity();
  return hwm < cap ? hwm : cap;
}

// Calls fn(index, record) for each reader record below the high-water mark,
// in order, until fn returns false.
template <class Fn>
void for_each_reader(TableFile& file, Fn fn) {
  const uint64_t end = reader_high_water(file);
  for (uint64_t i = 0; i < end; ++i) {
    format::ReaderRecord* r = file.reader(i);
    if (r == nullptr || !fn(i, r)) return;
  }
}

// The op word (slot, state, incarnation) of a record. A plain release store
// suffices: every store of a pending op is followed by the slot's lock
// cmpxchg16b, a full barrier, before anyone can need to see it.
inline uint64_t load_op(const format::ReaderRecord* r) {
  return std::atomic_ref<const uint64_t>(r->op).load(std::memory_order_seq_cst);
}
inline void store_op(format::ReaderRecord* r, uint64_t op) {
  std::atomic_ref<uint64_t>(r->op).store(op, std::memory_order_release);
}

// A record for the calling thread: from its cache, or claimed from the pool
// (growing the table when none is free: takes the grow lock). Errors: capacity.
// REQUIRES: the calling thread holds no LMDB transaction and no map_mu_.
Code claim_reader(TableFile& file, ThreadSelf& me, CachedReader* out);
// Gives back a record this thread claimed: into its cache, or freed.
// REQUIRES: its op is idle (the thread is not joining, in, or leaving).
void free_own_reader(ThreadSelf& me, const CachedReader& record);
// Frees the records the calling thread keeps cached for `file` (as the table
// closes). Other threads' cached records stay claimed: they keep the mapping
// alive (LocalTable::process_holds_locks) and are freed, or marked by the
// kernel, when those threads end. Cache entries are keyed by TableFile::id(),
// never reused, so a closed table's entry is never touched.
void drop_cached_readers(TableFile& file);

// The thread a record belongs to (after its death, the tid from claimer_tid).
Owner reader_owner(const format::ReaderRecord* r, const Word128& ident);
bool reader_dead(const Word128& ident);

// What a recount found.
struct Reaped {
  uint32_t dead = 0;        // dead readers found (0: none, and nothing changed)
  bool counted_in = false;  // one of them may have been in: the next exclusive holder is told abandoned
  Owner first;              // the first of those, for that report
};

// Takes the dead readers of one slot out of its readers word: the recount of
// RECOUNT in lock_protocol.cc. Each dead reader that may have been counted in
// is told to `log` before the CAS. `for_owner`: the caller holds the slot
// exclusively and drains it (a reader that may have been in makes it
// abandoned: Reaped::counted_in). Otherwise (`recover`) the owner record must
// be FREE: such a reader sets ABANDONED on it first; a slot with an
// exclusive owner is left to that owner. With dry_run, only reports.
// REQUIRES: the calling thread is not joining or leaving `s` itself.
Reaped reap_dead_readers(TableFile& file, format::Slot* s, uint32_t slot_index, bool dry_run, bool for_owner,
                         std::vector<Freed>* freed, DeathLog& log);
// The same for every slot a dead reader names, for `recover`.
void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed, DeathLog& log);

// For `check`: the readers of a slot according to the records, as a range
// (live ones in the middle of joining or leaving may or may not be counted),
// and the slot's own count. False when the slot changed while counting.
bool count_readers(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t* at_least, uint32_t* at_most,
                   uint32_t* counted);

// Records claimed by a thread of process `pid` (closing a table: are its locks still held?).
bool process_has_readers(TableFile& file, uint32_t pid);

}  // namespace locktable::detail
