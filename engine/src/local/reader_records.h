// Reader records: one per thread holding one lock in shared mode (the shared
// join/leave transaction is specified in lock_protocol.cc, SHARED MODE).
//
// This file owns the pool: claiming and freeing records, each thread's small
// cache of idle claimed records, finishing an operation a reader left pending
// (helping), and taking dead readers out of the locks they held or were
// joining or leaving. Every scan of the pool goes through for_each_reader.
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

// Calls fn(index, record) for each published reader record, from `start`
// (wrapping around), until fn returns false.
template <class Fn>
void for_each_reader(TableFile& file, Fn fn, uint64_t start = 0) {
  const uint64_t cap = file.reader_capacity();
  for (uint64_t i = 0; i < cap; ++i) {
    uint64_t idx = cap ? (start + i) % cap : 0;
    format::ReaderRecord* r = file.reader(idx);
    if (r == nullptr || !fn(idx, r)) return;
  }
}

// The op word (slot, state, ticket) of a record.
inline uint64_t load_op(const format::ReaderRecord* r) {
  return std::atomic_ref<const uint64_t>(r->op).load(std::memory_order_seq_cst);
}
// A plain (release) store suffices: every store of a pending op is followed by
// the slot's lock cmpxchg16b, a full barrier, before anyone can need to see it.
inline void store_op(format::ReaderRecord* r, uint64_t op) {
  std::atomic_ref<uint64_t>(r->op).store(op, std::memory_order_release);
}
inline bool cas_op(format::ReaderRecord* r, uint64_t expected, uint64_t desired) {
  return std::atomic_ref<uint64_t>(r->op).compare_exchange_strong(expected, desired, std::memory_order_seq_cst);
}

// Finalises the reader operation named by the slot record `cur`, if it is
// still pending (step 3 of the join/leave transaction, done on its behalf).
// `mine`: the caller's own record index (its op is never pending here).
// REQUIRES: called before a CAS that changes the slot away from `cur`.
void help_reader_op(TableFile& file, uint32_t slot_index, const Word128& cur, uint32_t mine = UINT32_MAX);

// A record for the calling thread: from its cache, or claimed from the pool
// (growing the table when none is free: takes the grow lock). Errors: capacity.
// REQUIRES: the calling thread holds no LMDB transaction and no map_mu_.
Code claim_reader(TableFile& file, ThreadSelf& me, uint32_t* index, format::ReaderRecord** out);
// Gives back a record this thread claimed: into its cache, or freed.
// REQUIRES: its op is idle (the thread is not joining, in, or leaving).
void free_own_reader(ThreadSelf& me, TableFile& file, format::ReaderRecord* r, uint32_t index);
// Frees the records the calling thread keeps cached for `file` (as the table
// closes). Other threads' cached records stay claimed: they keep the mapping
// alive (LocalTable::process_holds_locks) and are freed, or marked by the
// kernel, when those threads end. Cache entries are keyed by TableFile::id(),
// never reused, so a closed table's entry is never touched.
void drop_cached_readers(TableFile& file);

// The thread a record belongs to (after its death, the tid from claimer_tid).
Owner reader_owner(const format::ReaderRecord* r, const Word128& ident);
bool reader_dead(const Word128& ident);

// Finds the dead readers of a slot and takes them out (each told to `log`
// before its CAS). Returns how many had been counted in.
uint32_t reap_dead_readers(TableFile& file, format::Slot* s, uint32_t slot_index, bool dry_run,
                           std::vector<Freed>* freed, DeathLog& log);
// The same over the whole pool, for `recover`: every dead reader of any slot.
void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed, DeathLog& log);

// Counted readers of a shared slot according to the reader records, for
// `check`; false when the slot changed while counting.
bool count_readers(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t* record_count,
                   uint32_t* counted);

// Records claimed by a thread of process `pid` (closing a table: are its locks still held?).
bool process_has_readers(TableFile& file, uint32_t pid);

}  // namespace locktable::detail
