// HistoryStore: moving events from the ring (history_ring.h) into LMDB,
// retention, reading history back, and the optional background drainer.
//
// A drain pass reads every segment's head once, then drains up to those heads
// in batches. A batch is one LMDB write transaction: it reads each segment's
// drain position (SegmentState), reads the events from there, merges them
// (below), stores them as history records under the next sequence numbers,
// counts what it could no longer read as one `lost` event, stores the new
// positions, applies retention, and commits. LMDB admits one writer at a time
// and the positions move inside the same transaction as the records, so two
// drainers never store an event twice or skip one, and a drainer killed
// mid-transaction changes nothing (the ring still holds its events).
//
// The merge. A segment holds one thread's events in program order. Events of
// one lock carry the generation their CAS produced, which orders them. The
// batch repeatedly takes, among the segments' next events, one that no event
// still waiting in the batch must precede (none of its lock with a lower
// generation), oldest first. The two orders never conflict: both follow the
// real order of the CASes. An event reaching a drainer after a later event of
// its lock was stored (its thread was descheduled between its CAS and its
// append, across a drain) is counted lost, never stored out of order
// (SlotOrder in lmdb_records.h).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "history_ring.h"
#include "lmdb_env.h"
#include "locktable/types.h"
#include "table_file.h"

namespace locktable::detail {

// The history counts `stats` and `check` report.
struct HistoryCounts {
  uint64_t appended = 0;   // events appended (or counted lost for want of a segment) so far
  uint64_t accounted = 0;  // of those, stored in LMDB or counted lost
  uint64_t lost = 0;       // counted lost so far, and lost but not yet drained (lost_undrained)
  uint32_t segments_in_use = 0;
};

class HistoryStore {
 public:
  HistoryStore(TableFile& file, LmdbEnv& lmdb, HistoryRing& ring) : file_(file), lmdb_(lmdb), ring_(ring) {}
  ~HistoryStore() { stop_background(); }

  // Drains what was appended before the call (a no-op unless the level is
  // persisted). Takes drain_mu_, then one LMDB write transaction per batch.
  // REQUIRES: the calling thread holds no LMDB transaction.
  Status drain(uint64_t* drained);
  // Drains (persisted), then reads: LMDB, and the ring itself at level ring.
  Status query(const HistoryQuery& query, std::vector<Event>* events);
  Status counts(HistoryCounts* counts);

  Status set_level(HistoryLevel level);
  Status set_retention(uint64_t count, uint64_t age_s);

  // A thread of this process that drains every `interval` until stopped.
  void start_background(std::chrono::milliseconds interval);
  // Stops it (if running), then drains what its last period left.
  void stop_background();
  // Forgets the background thread without stopping it (a child after fork:
  // the thread is the parent's).
  void abandon_background() { (void)drainer_.release(); }

 private:
  // One batch up to `heads`: one write transaction. *done when nothing below
  // the heads is left; *stuck when events are left but none could be taken.
  // With `force`, a batch that could take none takes the oldest anyway.
  // REQUIRES: drain_mu_ held.
  Status drain_batch(const std::vector<uint64_t>& heads, bool force, uint64_t* drained, bool* done, bool* stuck);

  // The events no drain has taken that no drain can: lapped in their segment,
  // or appended by a thread without a segment since the last drain.
  Status lost_undrained(const Txn& txn, uint64_t* lost);

  TableFile& file_;
  LmdbEnv& lmdb_;
  HistoryRing& ring_;
  std::mutex drain_mu_;  // one drainer per process at a time

  std::unique_ptr<std::thread> drainer_;
  std::mutex drainer_mu_;
  std::condition_variable drainer_cv_;
  bool drainer_stop_ = false;
};

}  // namespace locktable::detail
