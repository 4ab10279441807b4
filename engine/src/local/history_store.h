// HistoryStore: moving events from the ring (history_ring.h) into LMDB,
// retention, reading history back, and the optional background drainer.
//
// A drain pass reads the ring head once, then drains up to it in batches.
// Each batch is one LMDB write transaction: it reads the drain position
// ("drained", the first ticket not yet in LMDB), turns up to kBatch ring
// entries from there into history records (key: big-endian sequence number,
// appended), counts the ones it can no longer read as `lost` events, stores
// the new position, applies retention, and commits. LMDB admits one writer at
// a time and the position moves inside the same transaction as the records,
// so two drainers never store an event twice or skip one, and a drainer killed
// mid-transaction changes nothing (the ring still holds its entries).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lmdb_env.h"
#include "locktable/types.h"
#include "table_file.h"

namespace locktable::detail {

class HistoryStore {
 public:
  HistoryStore(TableFile& file, LmdbEnv& lmdb) : file_(file), lmdb_(lmdb) {}
  ~HistoryStore() { stop_background(); }

  // Drains what was appended before the call (a no-op unless the level is
  // persisted). Takes drain_mu_, then one LMDB write transaction per batch.
  // REQUIRES: the calling thread holds no LMDB transaction. With `patient`, waits (briefly) for events still being
  // written, and counts as lost those whose writer is gone.
  Status drain(uint64_t* drained, bool patient);
  // Drains (persisted), then reads: LMDB, and the ring itself at level ring.
  Status query(const HistoryQuery& query, std::vector<Event>* events);

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
  // One batch: one write transaction. REQUIRES: drain_mu_ held. *done when nothing below `head` is
  // left; *stuck when a ticket is still being written.
  Status drain_batch(uint64_t head, uint64_t* drained, bool* done, bool* stuck);

  TableFile& file_;
  LmdbEnv& lmdb_;
  std::mutex drain_mu_;  // one drainer per process at a time

  std::unique_ptr<std::thread> drainer_;
  std::mutex drainer_mu_;
  std::condition_variable drainer_cv_;
  bool drainer_stop_ = false;
};

}  // namespace locktable::detail
