// TableCore: one open table folder: its mapped table file, its LMDB
// environment and its history. Shared (std::shared_ptr) by the Table and
// every Lock handle made from it, so a handle keeps the mapping alive.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "death_log.h"
#include "history_ring.h"
#include "lmdb_env.h"
#include "lmdb_records.h"
#include "locktable/lock.h"
#include "locktable/table.h"
#include "table_file.h"

namespace locktable::detail {

class TableCore final : public DeathLog {
 public:
  static Status open(const std::string& dir, const Options& options, std::shared_ptr<TableCore>* out);
  ~TableCore();

  const std::string& dir() const { return dir_; }
  TableFile& file() { return *file_; }
  LmdbEnv& lmdb() { return *lmdb_; }

  // --- history, hot path ---
  bool history_on() const {
    return __atomic_load_n(&file_->header()->history_level, __ATOMIC_RELAXED) != uint32_t(HistoryLevel::off);
  }
  void record(const RingEvent& ev) {
    if (history_on()) record_at(ev, realtime_coarse_ns());
  }
  void record_at(const RingEvent& ev, uint64_t time_ns) {
    ring_append(file_->header(), file_->ring(), file_->ring_mask(), thread_self(), ev, time_ns);
  }

  // --- lock operations that did not finish on the fast path (lock.cc) ---
  // DeathLog: a `recovered` event, appended before the takeover's CAS.
  void dead_found(uint32_t slot_index, const Owner& dead, Mode mode) override;
  AcquireResult acquire_slow(Lock& lock, Mode mode, const Deadline& deadline);
  Status release_slow(Lock& lock, Mode mode);

  // --- names (table_core.cc) ---
  Status lookup(const std::shared_ptr<TableCore>& self, std::string_view name, Lookup mode, Lock* out);
  Status lookup_many(const std::shared_ptr<TableCore>& self, const std::vector<std::string>& names, Lookup mode,
                     std::vector<Lock>* out);
  Status remove(std::string_view name);
  Status list(std::vector<LockInfo>* locks);
  Status stats(TableStats* stats);

  // --- maintenance (maintenance.cc) ---
  Status recover(bool dry_run, std::vector<Recovery>* actions);
  Status check(std::vector<std::string>* problems);

  // --- history (history_store.cc) ---
  // Drains the ring into LMDB. With `patient`, waits (briefly) for events
  // still being written, and counts as lost those whose writer is gone.
  Status drain(uint64_t* drained, bool patient);
  Status history(const HistoryQuery& query, std::vector<Event>* events);
  Status set_history_level(HistoryLevel level);
  Status set_retention(uint64_t count, uint64_t age_s);

  // LMDB environments cannot be used across fork(): errors in a child.
  Status check_same_process() const;

  // Grows the table to hold `min_slots`, recording `grown` events.
  Status grow_for(uint64_t min_slots, uint64_t min_readers);

 private:
  TableCore() = default;
  Status lookup_existing(std::string_view name, bool* found, format::NameRecord* rec);
  // Creates the names that do not exist yet, in one write transaction, and
  // fills recs[i] for every names[i].
  Status create_names(const std::vector<std::string_view>& names, std::vector<format::NameRecord>* recs);
  Status make_handle(const std::shared_ptr<TableCore>& self, std::string_view name, const format::NameRecord& rec,
                     Lock* out);
  // After a reboot reset: make slot incarnations agree with the name map again
  // (a power loss may have kept one and lost the other's last write).
  Status reconcile_after_reboot();
  Status repair_interrupted_removal(std::string_view name, const format::NameRecord& rec);
  Status name_of_slot(Txn& txn, uint32_t slot, uint32_t incarnation, std::string* name);
  void start_drainer(std::chrono::milliseconds interval);
  void stop_drainer();
  bool process_holds_locks();

  std::string dir_;
  int dirfd_ = -1;
  pid_t open_pid_ = 0;
  Options options_;
  std::unique_ptr<TableFile> file_;
  std::unique_ptr<LmdbEnv> lmdb_;

  std::mutex drain_mu_;  // one drainer per process at a time
  std::unique_ptr<std::thread> drainer_;
  std::mutex drainer_mu_;
  std::condition_variable drainer_cv_;
  bool drainer_stop_ = false;
};

}  // namespace locktable::detail
