// The lock protocol on one slot: acquire (with waiting and takeover), release,
// shared mode, abandonment, and freeing a dead holder's lock. The protocol is
// specified in the opening comment of lock_protocol.cc; the uncontended paths
// are inline in hot_path.h, the reader-record pool in reader_records.h, the
// slot's life outside locking in slot_lifecycle.h.
#pragma once

#include <cstdint>
#include <vector>

#include "death_log.h"
#include "hot_path.h"
#include "locktable/types.h"
#include "table_file.h"
#include "table_format.h"
#include "wait_graph.h"

namespace locktable::detail {

struct Acquired {
  Code code = Code::ok;       // ok, abandoned, timed_out, interrupted, already_held, stale_handle, capacity, deadlock
  Owner dead_owner{};         // abandoned: the holder that died
  uint64_t wait_ns = 0;       // time spent waiting (0 when it never slept)
  uint64_t token = 0;         // held: the fencing token (TOKENS in lock_protocol.cc)
  uint32_t generation = 0;    // the event's place in its lock's order (ORDER IN HISTORY): the owner
  uint32_t ended = 0;         //   generation and the readers word's `ended` it is at,
  bool saw_only = false;      //   made by its own CAS, or only seen (a wait given up: sorts after it)
  uint32_t rank = 0;          // a shared acquisition: the reader count it added to
  PendingWake wake{};         // owed once the event is recorded
  WaitCycle cycle{};          // deadlock: the cycle, this thread first
  bool contended = false;     // it found the lock held (or kept out) and waited, if only by spinning
};

// How a waiter waits, beyond its deadline (DEADLOCKS in lock_protocol.cc).
struct WaitPolicy {
  uint64_t deadlock_timeout_ns = 0;  // walk the waits-for graph after waiting this long (0: never)
};

// Both acquires check the handle's incarnation (stale_handle), wait until
// `deadline`, tell `log` about each dead holder before taking it out, and
// publish their wait before they sleep (wait_graph.h); deadlock when the
// waiter is the victim of a cycle it found. An exclusive acquire that takes
// the lock while readers are counted in drains them first (DRAINING).
// REQUIRES: the calling thread holds no LMDB transaction and no map_mu_ (a
// waiter may claim a reader record, which may grow the table).
Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline, DeathLog& log, const WaitPolicy& policy);
// The rest of an uncontended exclusive acquire that took the lock (its CAS
// wrote `mine`) and found readers counted in: drains them, as the slow path
// does. REQUIRES: the calling thread holds `s` exclusively, as written.
Acquired drain_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                         const Deadline& deadline, DeathLog& log, const WaitPolicy& policy, const Word128& mine);
Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline, DeathLog& log, const WaitPolicy& policy);

// Both releases check the handle's incarnation: a stale handle never releases
// the hold of the name that now owns the slot (stale_handle). not_owner when
// the calling thread does not hold it (nothing changes). *left_abandoned:
// the lock stays abandoned for the next holder (not marked consistent).
// *generation, *ended: the release's place in its lock's order (ORDER IN
// HISTORY); *wake: the wake-up owed once its event is recorded (PendingWake).
Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned, uint32_t* generation,
                       uint32_t* ended, PendingWake* wake);
Code release_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation, bool* left_abandoned,
                    uint64_t* acquired_at, uint32_t* generation, uint32_t* ended, PendingWake* wake);

// Exclusive to shared, atomically (DOWNGRADE in lock_protocol.cc). Errors:
// not_owner, stale_handle, capacity (no reader record). *generation,
// *ended: its place in its lock's order; *wake: owed once its event is
// recorded. REQUIRES: the calling thread holds no LMDB transaction and no
// map_mu_.
Code downgrade_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                         uint32_t* generation, uint32_t* ended, PendingWake* wake);

// Whether the calling thread holds the slot (in `mode`), and whether it holds
// it abandoned (not yet marked consistent).
bool holds(format::Slot* s, Mode mode);
bool holds_abandoned(format::Slot* s);
// Errors: not_owner.
Code mark_consistent(format::Slot* s);
// The fencing token of the calling thread's hold of `s` (0: not held).
uint64_t held_token(format::Slot* s);

// Frees the slot of a dead exclusive owner (FREE|ABANDONED), for `recover`,
// recording it in *freed (or, with dry_run, only reporting it).
void recover_slot(format::Slot* s, uint32_t slot_index, bool dry_run, std::vector<Freed>* freed, DeathLog& log);

}  // namespace locktable::detail
