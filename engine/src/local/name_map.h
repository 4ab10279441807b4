// NameMap: lock names and the slots they own, kept in LMDB (databases names,
// slots, free, graveyard; schema/README.md).
//
// A name is created in one write transaction: take a slot from `free` or
// `next_slot` (growing the table when needed), bump the slot's incarnation,
// put `names` and `slots`. A removal is one write transaction too: RETIRE the
// slot (refused while held), delete `names` and `slots`, put `free` and
// `graveyard`. Both change the slot before they commit; what a crash between
// the two leaves is repaired by the next writer (lock_protocol.cc, NAMES).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "history_ring.h"
#include "lmdb_env.h"
#include "lmdb_records.h"
#include "table_file.h"

namespace locktable::detail {

class NameMap {
 public:
  // `dir` names the table in messages; events go to `ring`.
  NameMap(const std::string& dir, TableFile& file, LmdbEnv& lmdb, HistoryRing& ring)
      : dir_(dir), file_(file), lmdb_(lmdb), ring_(ring) {}

  // One LMDB read transaction. *found false (and ok) when the name is missing.
  Status find(std::string_view name, bool* found, format::NameRecord* rec);
  // The same for many names; missing[i] names the names not found, in order.
  Status find_many(const std::vector<std::string>& names, std::vector<format::NameRecord>* recs,
                   std::vector<size_t>* missing);

  // Creates the names that do not exist yet, in one write transaction, and
  // fills (*recs)[i] for every names[i] (created meanwhile by another process:
  // its record). Errors: capacity (the table is at max_slots). Grows the
  // table inside the transaction when it must (LMDB writer, then grow lock).
  // REQUIRES: the calling thread holds no LMDB transaction.
  Status create(const std::vector<std::string_view>& names, std::vector<format::NameRecord>* recs);

  // Errors: not_found, busy (held in either mode), corrupt.
  // REQUIRES: the calling thread holds no LMDB transaction.
  Status remove(std::string_view name);

  // A retired slot whose name still exists is a removal that died before its
  // commit: un-retire it (under the write transaction, so no removal is in
  // progress). Called when a lookup finds one.
  Status repair_interrupted_removal(std::string_view name, const format::NameRecord& rec);

  // After a reboot reset: make the slots' incarnations agree with the name map
  // again (a power loss may have kept one and lost the other's last write).
  Status reconcile_after_reboot();

  // Calls visit(name, record) for each name that begins with `prefix` (every
  // name: empty), in name order, until it returns false. A record that does
  // not decode is an error naming it.
  // REQUIRES: `txn` is open (read or write).
  using Visit = std::function<bool(std::string_view name, const format::NameRecord& rec)>;
  Status for_each(const Txn& txn, const Visit& visit, std::string_view prefix = {});

 private:
  // Takes a slot for a new name: a freed one, or the next never-used one.
  // REQUIRES: `txn` is the creation's write transaction.
  Status take_slot(Txn& txn, uint64_t* next_slot, uint32_t* index);

  const std::string& dir_;
  TableFile& file_;
  LmdbEnv& lmdb_;
  HistoryRing& ring_;
};

// The name slot `slot` had at `incarnation`: from the slot map, or from the
// graveyard for a name removed since. "" when neither knows it.
Status name_of_slot(const Txn& txn, uint32_t slot, uint32_t incarnation, std::string* name);

}  // namespace locktable::detail
