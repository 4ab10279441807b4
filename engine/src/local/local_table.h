// LocalTable: the mapped-table backend. One open table folder: its mapped
// table file, its LMDB environment, its names and its history. Shared
// (std::shared_ptr) by the Table and every Lock handle made from it, so a
// handle keeps the mapping alive.
//
// Rooms: table_file (the mapping, growth), lock_protocol + hot_path (locking),
// reader_records (shared-mode records), slot_lifecycle (names and reboot),
// slot_views (listing), name_map (LMDB names), history_ring + history_store
// (events), recover + check (maintenance), lmdb_env (LMDB). This class only
// puts them together and answers the Backend interface (backend.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend.h"
#include "death_log.h"
#include "history_ring.h"
#include "history_store.h"
#include "hot_path.h"
#include "lmdb_env.h"
#include "lock_protocol.h"
#include "wait_graph.h"
#include "name_map.h"
#include "table_file.h"

namespace locktable::detail {

// Opens (creating when allowed) the table in folder `dir`; `location` is what
// the caller wrote (a path or a file:// URL), for Table::dir().
Status open_local_table(const std::string& dir, const std::string& location, const Options& options,
                        std::shared_ptr<Backend>* out);

class LocalTable final : public Backend, public DeathLog {
 public:
  ~LocalTable() override;

  const std::string& location() const override { return location_; }

  Status lookup(const std::shared_ptr<Backend>& self, std::string_view name, Lookup mode, Lock* out) override;
  Status lookup_many(const std::shared_ptr<Backend>& self, const std::vector<std::string>& names, Lookup mode,
                     std::vector<Lock>* out) override;
  Status remove(std::string_view name) override;

  AcquireResult acquire(Lock& lock, Mode mode, const Deadline& deadline) override;
  // An uncontended exclusive acquire that took the lock (its CAS wrote
  // `mine`) and found readers counted in: drains them (hot_path.h).
  AcquireResult drain(Lock& lock, const Deadline& deadline, const Word128& mine);
  Status release(Lock& lock, Mode mode) override;
  bool holds_abandoned(const Lock& lock) override;
  Status mark_consistent(Lock& lock) override;
  Status downgrade(Lock& lock) override;
  uint64_t token(const Lock& lock) override;

  Status list_each(const LockVisitor& visit, ListScope scope, std::string_view prefix) override;
  Status stats(TableStats* stats) override;
  Status recover(bool dry_run, std::vector<Recovery>* actions) override;
  Status check(std::vector<std::string>* problems) override;

  Status drain_history(uint64_t* drained) override;
  Status history(const HistoryQuery& query, std::vector<Event>* events) override;
  Status set_history_level(HistoryLevel level) override;
  Status set_retention(uint64_t count, std::chrono::seconds age) override;

  // DeathLog: a `recovered` event, appended before the takeover's CAS.
  void dead_found(uint32_t slot_index, const Owner& dead, Mode mode, uint32_t seen_generation,
                  uint32_t seen_ended) override;

  HistoryRing& ring() { return *ring_; }

 private:
  friend Status open_local_table(const std::string&, const std::string&, const Options&,
                                 std::shared_ptr<Backend>*);
  LocalTable();

  // Opening, after the options were checked: the folder, the file, LMDB.
  Status open(const Options& options);
  Status make_handle(const std::shared_ptr<Backend>& self, std::string_view name, const format::NameRecord& rec,
                     Lock* out);
  // LMDB environments cannot be used across fork(): an error in a child.
  Status check_same_process() const;
  bool process_holds_locks();
  // What an acquire of the slow paths ends with: counters, event, status.
  AcquireResult finish_acquire(Lock& lock, Mode mode, Acquired a);
  LockInfo describe(std::string_view name, const format::NameRecord& rec, uint64_t now,
                    const std::vector<WaitView>& waits);
  // The message of a `deadlock`: the cycle's locks (by name) and threads.
  std::string describe_cycle(const WaitCycle& cycle);

  std::string dir_;
  std::string location_;
  int dirfd_ = -1;
  pid_t open_pid_ = 0;
  std::unique_ptr<TableFile> file_;
  std::unique_ptr<LmdbEnv> lmdb_;
  std::unique_ptr<HistoryRing> ring_;
  std::unique_ptr<NameMap> names_;
  std::unique_ptr<HistoryStore> history_;
  LocalHot hot_{nullptr, 0};  // what handles' inline paths read
  WaitPolicy policy_;         // Options::deadlock_timeout
};

}  // namespace locktable::detail
