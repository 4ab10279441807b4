// recover and check: the operator's repair and verification passes.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "header_check.h"
#include "liveness.h"
#include "lock_protocol.h"
#include "table_core.h"

namespace locktable::detail {

namespace {

constexpr size_t kMaxProblems = 1000;

std::string printable(std::string_view name) {
  std::string s;
  for (char c : name.substr(0, 80)) s += (c >= 0x20 && c < 0x7f) ? c : '?';
  return s;
}

// Temporary files of table creators that died before linking the table.
void remove_dead_creators_files(int dirfd, bool dry_run, std::vector<Recovery>* actions) {
  int fd = ::dup(dirfd);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  std::string prefix = std::string(kTableFileName) + ".tmp.";
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) != 0) continue;
    unsigned pid = 0, tid = 0;
    if (std::sscanf(n.c_str() + prefix.size(), "%u.%u", &pid, &tid) != 2) continue;
    if (thread_liveness(pid, tid, 0) != Liveness::dead && ::kill(pid_t(pid), 0) == 0) continue;
    if (!dry_run) ::unlinkat(dirfd, n.c_str(), 0);
    actions->push_back(Recovery{"", 0, Mode::exclusive, Owner{pid, tid, 0},
                                fmt::format("{} leftover file {}", dry_run ? "would remove" : "removed", n)});
  }
  ::closedir(d);
}

}  // namespace

Status TableCore::recover(bool dry_run, std::vector<Recovery>* actions) {
  actions->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  if (s = lmdb_->reader_check(); !s.ok()) return s;

  std::vector<Freed> freed;
  uint64_t slots = file_->slot_capacity();
  for (uint64_t i = 0; i < slots; ++i) {
    if (format::Slot* sl = file_->slot(i)) recover_slot(sl, uint32_t(i), dry_run, &freed, *this);
  }
  recover_readers(*file_, dry_run, &freed, *this);  // each recorded as found (dead_found)

  // A write transaction excludes removals in progress, so a retired slot whose
  // name still exists is a removal that died before its commit.
  Txn txn(*lmdb_, true);
  if (s = txn.begin(); !s.ok()) return s;
  for (const Freed& f : freed) {
    format::Slot* sl = file_->slot(f.slot);
    uint32_t inc = sl ? load_incarnation(sl) : 0;
    std::string name;
    if (s = name_of_slot(txn, f.slot, inc, &name); !s.ok()) return s;
    actions->push_back(Recovery{name, f.slot, f.mode, f.dead_owner,
                                dry_run ? (f.mode == Mode::shared ? "would free reader" : "would free")
                                        : (f.mode == Mode::shared ? "freed reader" : "freed")});
  }
  {
    Cursor cur(txn, lmdb_->dbi().names);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      format::NameRecord rec;
      if (!format::decode_name_record(from_val(d), &rec, from_val(k)).ok()) continue;
      format::Slot* sl = file_->slot(rec.slot);
      if (sl == nullptr || load_incarnation(sl) != rec.incarnation || !slot_is_retired(sl)) continue;
      if (!dry_run) unretire_slot(sl, rec.incarnation);
      actions->push_back(Recovery{std::string(from_val(k)), rec.slot, Mode::exclusive, Owner{},
                                  dry_run ? "would restore (removal never committed)"
                                          : "restored (removal never committed)"});
    }
  }
  txn.abort();
  remove_dead_creators_files(dirfd_, dry_run, actions);
  return Status::OK();
}

Status TableCore::check(std::vector<std::string>* problems) {
  problems->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  auto problem = [&](std::string p) {
    if (problems->size() < kMaxProblems) problems->push_back(std::move(p));
  };
  const std::string& tpath = file_->path();
  const std::string& lpath = lmdb_->path();

  // Header and file.
  format::Header copy;
  std::memcpy(&copy, file_->header(), sizeof copy);
  if (Status hs = format::validate_header(copy, file_->file_size(), tpath); !hs.ok()) problem(hs.message());
  uint64_t capacity = file_->slot_capacity();

  // A write transaction: no name is created or removed while we compare.
  Txn txn(*lmdb_, true);
  if (s = txn.begin(); !s.ok()) return s;
  const Dbis& db = lmdb_->dbi();

  std::map<uint32_t, std::pair<std::string, uint32_t>> named;  // slot -> (name, incarnation)
  {
    Cursor cur(txn, db.names);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      std::string name(from_val(k));
      if (!validate_name(name).ok()) problem(fmt::format("{}: invalid lock name '{}'", lpath, printable(name)));
      format::NameRecord rec;
      if (Status ds = format::decode_name_record(from_val(d), &rec, name); !ds.ok()) {
        problem(fmt::format("{}: {}", lpath, ds.message()));
        continue;
      }
      if (rec.slot >= capacity) {
        problem(fmt::format("lock '{}': slot {} beyond the table's {} slots", printable(name), rec.slot, capacity));
        continue;
      }
      if (!named.emplace(rec.slot, std::make_pair(name, rec.incarnation)).second) {
        problem(fmt::format("lock '{}': slot {} also belongs to '{}'", printable(name), rec.slot,
                            printable(named[rec.slot].first)));
      }
      format::Slot* sl = file_->slot(rec.slot);
      if (sl == nullptr) continue;
      if (load_incarnation(sl) != rec.incarnation) {
        problem(fmt::format("lock '{}': incarnation {} in the name map, {} in slot {}", printable(name),
                            rec.incarnation, load_incarnation(sl), rec.slot));
      }
      if (slot_is_retired(sl)) {
        problem(fmt::format("lock '{}': slot {} is marked removed but the name exists (interrupted removal; run "
                            "recover)", printable(name), rec.slot));
      }
    }
  }
  {
    Cursor cur(txn, db.slots);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      uint32_t slot = 0;
      format::SlotRecord rec;
      if (!format::decode_u32_key(from_val(k), &slot)) {
        problem(fmt::format("{}: malformed key in the slot map", lpath));
        continue;
      }
      if (Status ds = format::decode_slot_record(from_val(d), &rec, slot); !ds.ok()) {
        problem(fmt::format("{}: {}", lpath, ds.message()));
        continue;
      }
      auto it = named.find(slot);
      if (it == named.end() || it->second.first != rec.name || it->second.second != rec.incarnation) {
        problem(fmt::format("slot {}: the slot map says '{}' (incarnation {}), the name map disagrees", slot,
                            printable(rec.name), rec.incarnation));
      }
    }
  }
  uint64_t next_slot = 0;
  if (s = txn.get_u64(format::kMetaNextSlot, &next_slot, 0); !s.ok()) {
    problem(s.message());
  } else if (next_slot > capacity) {
    problem(fmt::format("{}: next free slot {} beyond the table's {} slots", lpath, next_slot, capacity));
  }
  std::set<uint32_t> free_slots;
  {
    Cursor cur(txn, db.free);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      uint32_t slot = 0;
      if (!format::decode_u32_key(from_val(k), &slot)) {
        problem(fmt::format("{}: malformed key in the free-slot list", lpath));
        continue;
      }
      free_slots.insert(slot);
      if (named.count(slot)) problem(fmt::format("slot {}: in the free list but named '{}'", slot, printable(named[slot].first)));
      if (slot >= next_slot) problem(fmt::format("slot {}: in the free list but never handed out", slot));
    }
  }

  // Slot records against the name map and the reader records.
  for (uint64_t i = 0; i < capacity; ++i) {
    format::Slot* sl = file_->slot(i);
    if (sl == nullptr) break;
    SlotView v = inspect_slot(sl);
    bool is_named = named.count(uint32_t(i)) != 0;
    if (!is_named && (v.state != LockState::free)) {
      problem(fmt::format("slot {}: held but has no name", i));
    }
    if (v.state == LockState::shared || (is_named && v.state == LockState::free && aux_word(v.raw) != 0)) {
      uint32_t records = 0, counted = 0;
      for (int attempt = 0; attempt < 20; ++attempt) {
        if (count_readers(*file_, sl, uint32_t(i), &records, &counted)) {
          if (records != counted) {
            problem(fmt::format("slot {}: {} readers counted, {} reader records", i, counted, records));
          }
          break;
        }
      }
    }
  }

  // History records and their name index.
  {
    Cursor cur(txn, db.history);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      uint64_t seq = 0;
      if (!format::decode_u64_key(from_val(k), &seq)) {
        problem(fmt::format("{}: history key of {} bytes", lpath, k.mv_size));
        continue;
      }
      format::HistoryRecord r;
      if (Status ds = format::decode_history_record(from_val(d), &r, seq); !ds.ok()) {
        problem(fmt::format("{}: {}", lpath, ds.message()));
      }
    }
  }
  {
    Cursor cur(txn, db.history_by_name);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      uint64_t seq = 0;
      std::string_view v;
      bool found = false;
      if (!format::decode_u64_key(from_val(d), &seq) || !txn.get(db.history, from_val(d), &v, &found).ok() ||
          !found) {
        continue;  // retention may leave an index entry behind only on a corrupt record
      }
      format::HistoryRecord r;
      if (format::decode_history_record(v, &r, seq).ok() && r.name != from_val(k)) {
        problem(fmt::format("{}: history index says event {} is about '{}', the record says '{}'", lpath, seq,
                            printable(from_val(k)), printable(r.name)));
      }
    }
  }
  uint64_t drained = 1;
  if (txn.get_u64(format::kMetaDrained, &drained, 1).ok()) {
    uint64_t head = std::atomic_ref<uint64_t>(file_->header()->ring_head).load(std::memory_order_relaxed);
    if (drained > head) problem(fmt::format("{}: history drained up to {} but the ring has only reached {}", lpath, drained, head));
  }
  txn.abort();
  return Status::OK();
}

}  // namespace locktable::detail
