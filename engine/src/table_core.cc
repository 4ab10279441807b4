#include "table_core.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "crash_point.h"
#include "lock_protocol.h"
#include "system_info.h"
#include "thread_self.h"

namespace locktable::detail {

namespace {

uint32_t round_up_pow2(uint64_t v) {
  uint64_t p = format::kMinInitialSlots;
  while (p < v && p < (uint64_t{1} << 30)) p <<= 1;
  return uint32_t(p);
}

std::string quoted(std::string_view name) {
  std::string s = "'";
  for (char c : name.substr(0, 80)) s += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (name.size() > 80) s += "...";
  return s + "'";
}

}  // namespace

Status TableCore::open(const std::string& dir, const Options& options, std::shared_ptr<TableCore>* out) {
  if (dir.empty()) return Status(Code::invalid_argument, "empty table folder name");
  std::shared_ptr<TableCore> core(new TableCore());
  core->dir_ = dir;
  core->options_ = options;
  core->open_pid_ = ::getpid();

  if (options.create_if_missing && ::mkdir(dir.c_str(), 0770) != 0 && errno != EEXIST) {
    int err = errno;
    return Status(err == EACCES ? Code::permission_denied : (err == ENOENT ? Code::not_found : Code::io_error),
                  fmt::format("{}: cannot create folder: {}", dir, std::strerror(err)));
  }
  core->dirfd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (core->dirfd_ < 0) {
    int err = errno;
    if (err == ENOENT) return Status(Code::not_found, fmt::format("{}: no such folder", dir));
    if (err == ENOTDIR) return Status(Code::invalid_argument, fmt::format("{}: not a folder", dir));
    if (err == EACCES) return Status(Code::permission_denied, fmt::format("{}: permission denied", dir));
    return Status(Code::io_error, fmt::format("{}: {}", dir, std::strerror(err)));
  }
  Status s = check_local_filesystem(dir, options.allow_network_fs);
  if (!s.ok()) return s;

  ThreadSelf& me = thread_self();
  uint64_t start = 0;
  char state = 0;
  if (!read_thread_stat(me.pid, me.tid, &start, &state)) {
    return Status(Code::unsupported, fmt::format("{}: /proc is not mounted or not readable: thread identities "
                                                 "cannot be checked", dir));
  }

  if (options.initial_slots == 0 || options.max_slots == 0 || options.max_slots > format::kMaxSlotsLimit ||
      options.ring_entries < format::kMinRingEntries || options.ring_entries > format::kMaxRingEntries ||
      (options.ring_entries & (options.ring_entries - 1)) != 0) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: bad creation options (slots 1..2^30, ring a power of two in 64..2^24)", dir));
  }
  CreateParams params{round_up_pow2(options.initial_slots), std::max<uint64_t>(options.max_slots, 8),
                      options.ring_entries, options.history};
  params.max_slots = std::max<uint64_t>(params.max_slots, params.initial_slots);
  bool created = false;
  s = TableFile::open(core->dirfd_, dir, options.create_if_missing, params, &core->file_, &created);
  if (!s.ok()) return s;
  s = LmdbEnv::open(dir, options.lmdb_map_size, options.create_if_missing || created, core->dirfd_, kTableFileName,
                    &core->lmdb_);
  if (!s.ok()) return s;
  if (created) {
    Txn txn(*core->lmdb_, true);
    if (s = txn.begin(); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaRetentionCount, options.retention_count); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaRetentionAge, uint64_t(options.retention_age.count())); !s.ok()) return s;
    if (s = txn.commit(); !s.ok()) return s;
  }

  TableCore* raw = core.get();
  core->file_->set_grow_observer([raw](uint64_t capacity) {
    raw->record(RingEvent{uint8_t(EventKind::grown), 0, 0, 0, 0, 0, capacity});
  });
  uint64_t freed = 0;
  bool reset = false;
  s = core->file_->reset_if_rebooted(&freed, &reset);
  if (!s.ok()) return s;
  if (freed > 0) core->record(RingEvent{uint8_t(EventKind::reset), 0, 0, 0, 0, 0, freed});
  if (reset) {
    if (s = core->reconcile_after_reboot(); !s.ok()) return s;
  }

  if (options.drain_interval.count() > 0) core->start_drainer(options.drain_interval);
  *out = std::move(core);
  return Status::OK();
}

namespace {

// Table files kept mapped after their table closed, because this process still
// holds locks in them. Reachable (and never destroyed: static destruction
// could unmap under a running thread) until the process exits.
void keep_until_exit(std::unique_ptr<TableFile> file) {
  static std::mutex mu;
  static auto* kept = new std::vector<std::unique_ptr<TableFile>>();
  std::lock_guard<std::mutex> guard(mu);
  kept->push_back(std::move(file));
}

}  // namespace

TableCore::~TableCore() {
  if (::getpid() != open_pid_) {
    // A copy in a child after fork(): the drainer thread is not ours, and
    // mdb_env_close would clear the parent's LMDB reader slots. Leave both.
    (void)drainer_.release();
    (void)lmdb_.release();
  }
  stop_drainer();
  lmdb_.reset();
  if (file_) drop_cached_readers(*file_);
  if (file_ && process_holds_locks()) {
    // Unmapping would leave this process's robust lists pointing at unmapped
    // memory. Keep the mapping (and the attach lock) until the process exits;
    // the locks stay held and are taken over when their threads end. (Reader
    // records other threads keep cached for reuse count as held here.)
    keep_until_exit(std::move(file_));
  }
  file_.reset();
  if (dirfd_ >= 0) ::close(dirfd_);
}

bool TableCore::process_holds_locks() {
  uint32_t pid = uint32_t(::getpid());
  uint64_t slots = file_->slot_capacity();
  for (uint64_t i = 0; i < slots; ++i) {
    format::Slot* s = file_->slot(i);
    if (s == nullptr) break;
    Word128 w = guess128(&s->owner);
    if ((pid_word(w) & format::kSharedMode) == 0 && (pid_word(w) & format::kPidMask) == pid) return true;
  }
  uint64_t readers = file_->reader_capacity();
  for (uint64_t i = 0; i < readers; ++i) {
    format::ReaderRecord* r = file_->reader(i);
    if (r == nullptr) break;
    if ((pid_word(guess128(&r->ident)) & format::kPidMask) == pid) return true;
  }
  return false;
}

Status TableCore::check_same_process() const {
  if (::getpid() != open_pid_) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: table opened in process {} used in process {} after fork(); open it again in "
                              "the child", dir_, open_pid_, ::getpid()));
  }
  return Status::OK();
}

Status TableCore::grow_for(uint64_t min_slots, uint64_t min_readers) {
  uint32_t added = 0;
  return file_->grow(min_slots, min_readers, &added);
}

// ---------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------
Status TableCore::lookup_existing(std::string_view name, bool* found, format::NameRecord* rec) {
  Txn txn(*lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;
  std::string_view v;
  s = txn.get(lmdb_->dbi().names, name, &v, found);
  if (!s.ok() || !*found) return s;
  s = format::decode_name_record(v, rec, name);
  if (!s.ok()) return Status(s.code(), lmdb_->path() + ": " + s.message());
  return Status::OK();
}

Status TableCore::make_handle(const std::shared_ptr<TableCore>& self, std::string_view name,
                              const format::NameRecord& rec, Lock* out) {
  format::Slot* slot = file_->slot(rec.slot);
  if (slot == nullptr) {
    return Status(Code::corrupt, fmt::format("{}: lock {} points at slot {}, beyond the table's {} slots",
                                             lmdb_->path(), quoted(name), rec.slot, file_->slot_capacity()));
  }
  if (load_incarnation(slot) == rec.incarnation && slot_is_retired(slot)) {
    if (Status s = repair_interrupted_removal(name, rec); !s.ok()) return s;
  }
  out->core_ = self;
  out->slot_ = slot;
  out->index_ = rec.slot;
  out->incarnation_ = rec.incarnation;
  out->history_level_ = &file_->header()->history_level;
  out->name_ = std::string(name);
  return Status::OK();
}

Status TableCore::lookup(const std::shared_ptr<TableCore>& self, std::string_view name, Lookup mode, Lock* out) {
  Status s = validate_name(name);
  if (!s.ok()) return s;
  if (s = check_same_process(); !s.ok()) return s;
  bool found = false;
  format::NameRecord rec;
  if (s = lookup_existing(name, &found, &rec); !s.ok()) return s;
  if (!found) {
    if (mode == Lookup::existing) {
      return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quoted(name)));
    }
    std::vector<format::NameRecord> recs;
    if (s = create_names({name}, &recs); !s.ok()) return s;
    rec = recs[0];
  }
  return make_handle(self, name, rec, out);
}

Status TableCore::lookup_many(const std::shared_ptr<TableCore>& self, const std::vector<std::string>& names,
                              Lookup mode, std::vector<Lock>* out) {
  out->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  for (const std::string& n : names) {
    if (s = validate_name(n); !s.ok()) return Status(s.code(), fmt::format("{}: {}", quoted(n), s.message()));
  }
  std::vector<format::NameRecord> recs(names.size());
  std::vector<std::string_view> missing;
  {
    Txn txn(*lmdb_, false);
    if (s = txn.begin(); !s.ok()) return s;
    for (size_t i = 0; i < names.size(); ++i) {
      std::string_view v;
      bool found = false;
      if (s = txn.get(lmdb_->dbi().names, names[i], &v, &found); !s.ok()) return s;
      if (!found) {
        if (mode == Lookup::existing) {
          return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quoted(names[i])));
        }
        missing.push_back(names[i]);
        continue;
      }
      if (s = format::decode_name_record(v, &recs[i], names[i]); !s.ok()) {
        return Status(s.code(), lmdb_->path() + ": " + s.message());
      }
    }
  }
  if (!missing.empty()) {
    std::vector<format::NameRecord> created;
    if (s = create_names(missing, &created); !s.ok()) return s;
    size_t m = 0;
    for (size_t i = 0; i < names.size() && m < missing.size(); ++i) {
      if (missing[m].data() == names[i].data()) recs[i] = created[m++];
    }
  }
  out->resize(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    if (s = make_handle(self, names[i], recs[i], &(*out)[i]); !s.ok()) return s;
  }
  return Status::OK();
}

Status TableCore::create_names(const std::vector<std::string_view>& names, std::vector<format::NameRecord>* recs) {
  const Dbis& db = lmdb_->dbi();
  recs->assign(names.size(), format::NameRecord{});
  Txn txn(*lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  uint64_t next = 0;
  if (s = txn.get_u64(format::kMetaNextSlot, &next, 0); !s.ok()) return s;
  const uint64_t next_before = next;
  std::vector<std::pair<uint32_t, uint32_t>> created;  // (slot, incarnation) for the events
  const uint64_t now = realtime_ns();
  for (size_t i = 0; i < names.size(); ++i) {
    std::string_view name = names[i];
    format::NameRecord& rec = (*recs)[i];
    std::string_view v;
    bool found = false;
    if (s = txn.get(db.names, name, &v, &found); !s.ok()) return s;
    if (found) {  // created by someone else meanwhile, or twice in this batch
      s = format::decode_name_record(v, &rec, name);
      if (!s.ok()) return Status(s.code(), lmdb_->path() + ": " + s.message());
      continue;
    }
    uint32_t index = 0;
    bool reused = false;
    {
      Cursor cur(txn, db.free);
      if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
      MDB_val k, d;
      int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST);
      if (rc == 0) {
        if (!format::decode_u32_key(from_val(k), &index)) {
          return Status(Code::corrupt, fmt::format("{}: malformed free-slot record", lmdb_->path()));
        }
        reused = true;
      } else if (rc != MDB_NOTFOUND) {
        return lmdb_->error(rc, "read free slots");
      }
    }
    if (reused) {
      if (s = txn.del(db.free, format::encode_u32_key(index)); !s.ok()) return s;
    } else {
      if (next >= file_->header()->max_slots) {
        return Status(Code::capacity, fmt::format("{}: table full: all {} slots are named", dir_,
                                                  file_->header()->max_slots));
      }
      index = uint32_t(next++);
    }
    if (index >= file_->slot_capacity()) {
      // Grow for the rest of the batch at once (never past max_slots).
      uint64_t want = std::min<uint64_t>(std::max<uint64_t>(index + 1, next + (names.size() - i)),
                                         file_->header()->max_slots);
      if (s = grow_for(want, 0); !s.ok()) return s;
    }
    format::Slot* slot = file_->slot(index);
    if (slot == nullptr) return Status(Code::io_error, fmt::format("{}: slot {} not mapped", dir_, index));
    crash_point("create:before_prepare");
    rec.slot = index;
    rec.incarnation = prepare_slot_for_new_name(slot);
    rec.created_ns = now;
    if (s = txn.put(db.names, name, format::encode_name_record(rec)); !s.ok()) return s;
    if (s = txn.put(db.slots, format::encode_u32_key(index),
                    format::encode_slot_record({rec.incarnation, std::string(name)}));
        !s.ok()) {
      return s;
    }
    created.emplace_back(index, rec.incarnation);
  }
  if (next != next_before) {
    if (s = txn.put_u64(format::kMetaNextSlot, next); !s.ok()) return s;
  }
  crash_point("create:before_commit");
  if (s = txn.commit(); !s.ok()) return s;
  for (const auto& [index, inc] : created) {
    record(RingEvent{uint8_t(EventKind::created), 0, 0, index, inc, 0, 0});
  }
  return Status::OK();
}

Status TableCore::reconcile_after_reboot() {
  Txn txn(*lmdb_, true);  // excludes name changes while we compare
  Status s = txn.begin();
  if (!s.ok()) return s;
  Cursor cur(txn, lmdb_->dbi().names);
  if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
  MDB_val k, d;
  for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
    format::NameRecord rec;
    if (!format::decode_name_record(from_val(d), &rec, from_val(k)).ok()) continue;
    format::Slot* slot = file_->slot(rec.slot);
    if (slot == nullptr) continue;
    if (load_incarnation(slot) != rec.incarnation) {
      std::atomic_ref<uint32_t>(slot->incarnation).store(rec.incarnation, std::memory_order_release);
    }
    unretire_slot(slot, rec.incarnation);
  }
  return Status::OK();
}

Status TableCore::repair_interrupted_removal(std::string_view name, const format::NameRecord& rec) {
  // Holding the LMDB write lock means no removal is in progress: a removal
  // retires the slot inside its write transaction. A retired slot whose name
  // is still there is a removal that died before committing.
  Txn txn(*lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  std::string_view v;
  bool found = false;
  if (s = txn.get(lmdb_->dbi().names, name, &v, &found); !s.ok()) return s;
  format::NameRecord now;
  if (found && format::decode_name_record(v, &now, name).ok() && now.slot == rec.slot &&
      now.incarnation == rec.incarnation) {
    if (format::Slot* slot = file_->slot(rec.slot)) unretire_slot(slot, rec.incarnation);
  }
  return Status::OK();
}

Status TableCore::remove(std::string_view name) {
  Status s = validate_name(name);
  if (!s.ok()) return s;
  if (s = check_same_process(); !s.ok()) return s;
  const Dbis& db = lmdb_->dbi();
  Txn txn(*lmdb_, true);
  if (s = txn.begin(); !s.ok()) return s;
  std::string_view v;
  bool found = false;
  if (s = txn.get(db.names, name, &v, &found); !s.ok()) return s;
  if (!found) return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quoted(name)));
  format::NameRecord rec;
  if (s = format::decode_name_record(v, &rec, name); !s.ok()) return Status(s.code(), lmdb_->path() + ": " + s.message());
  format::Slot* slot = file_->slot(rec.slot);
  if (slot == nullptr) {
    return Status(Code::corrupt, fmt::format("{}: lock {} points at slot {} beyond the table", lmdb_->path(),
                                             quoted(name), rec.slot));
  }
  Code c = retire_slot(*file_, slot, rec.slot, rec.incarnation);
  if (c == Code::busy) {
    return Status(Code::busy, fmt::format("{}: lock {} is held; release it before removing it", dir_, quoted(name)));
  }
  if (c == Code::stale_handle) {
    return Status(Code::corrupt, fmt::format("{}: lock {} has incarnation {} in the name map but {} in slot {}",
                                             dir_, quoted(name), rec.incarnation, load_incarnation(slot), rec.slot));
  }
  crash_point("remove:after_retire");
  uint64_t seq = std::atomic_ref<uint64_t>(file_->header()->ring_head).load(std::memory_order_relaxed);
  auto undo = [&](Status err) {
    txn.abort();
    unretire_slot(slot, rec.incarnation);
    return err;
  };
  if (s = txn.del(db.names, name); !s.ok()) return undo(s);
  if (s = txn.del(db.slots, format::encode_u32_key(rec.slot)); !s.ok()) return undo(s);
  if (s = txn.put(db.free, format::encode_u32_key(rec.slot), ""); !s.ok()) return undo(s);
  if (s = txn.put(db.graveyard, format::encode_grave_key(rec.slot, rec.incarnation),
                  format::encode_grave_record({seq, std::string(name)}));
      !s.ok()) {
    return undo(s);
  }
  crash_point("remove:before_commit");
  if (s = txn.commit(); !s.ok()) return undo(s);
  record(RingEvent{uint8_t(EventKind::removed), 0, 0, rec.slot, rec.incarnation, 0, 0});
  return Status::OK();
}

Status TableCore::list(std::vector<LockInfo>* locks) {
  locks->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  Txn txn(*lmdb_, false);
  if (s = txn.begin(); !s.ok()) return s;
  Cursor cur(txn, lmdb_->dbi().names);
  if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
  uint64_t now = realtime_coarse_ns();
  MDB_val k, d;
  for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
    LockInfo info;
    info.name = std::string(from_val(k));
    format::NameRecord rec;
    if (s = format::decode_name_record(from_val(d), &rec, info.name); !s.ok()) {
      return Status(s.code(), lmdb_->path() + ": " + s.message());
    }
    info.slot = rec.slot;
    info.incarnation = rec.incarnation;
    format::Slot* slot = file_->slot(rec.slot);
    if (slot == nullptr) continue;
    SlotView view = inspect_slot(slot);
    info.state = view.state;
    info.mode = view.mode;
    info.waiters = view.waiters;
    info.abandoned = view.abandoned;
    auto held_ms = [&](uint64_t since) -> std::optional<uint64_t> {
      if (since == 0) return std::nullopt;
      return now > since ? (now - since) / 1'000'000 : 0;
    };
    if (view.state == LockState::held || view.state == LockState::dead_owner) {
      HolderInfo h;
      h.owner = view.owner;
      h.alive = view.owner_alive;
      h.held_for_ms = held_ms(view.acquired_at);
      char comm[16];
      if (h.alive && read_thread_comm(h.owner.pid, h.owner.tid, comm)) h.comm = comm;
      info.holders.push_back(h);
    } else if (view.state == LockState::shared) {
      bool any_dead = false;
      for (const ReaderView& r : readers_of(*file_, rec.slot)) {
        if (r.state == format::ReaderState::joining) continue;
        HolderInfo h;
        h.owner = r.owner;
        h.alive = r.alive;
        h.held_for_ms = held_ms(r.acquired_at);
        char comm[16];
        if (h.alive && read_thread_comm(h.owner.pid, h.owner.tid, comm)) h.comm = comm;
        any_dead |= !h.alive;
        info.holders.push_back(h);
      }
      if (any_dead) info.state = LockState::dead_owner;
    }
    locks->push_back(std::move(info));
  }
  return Status::OK();
}

Status TableCore::stats(TableStats* st) {
  Status s = check_same_process();
  if (!s.ok()) return s;
  const format::Header* h = file_->header();
  *st = TableStats{};
  st->dir = dir_;
  st->format_version = uint32_t(h->format >> 32);
  st->slot_capacity = file_->slot_capacity();
  st->max_slots = h->max_slots;
  st->reader_capacity = file_->reader_capacity();
  for (uint64_t i = 0; i < st->reader_capacity; ++i) {
    format::ReaderRecord* r = file_->reader(i);
    if (r != nullptr && guess128(&r->ident).lo != 0) ++st->readers_used;
  }
  st->extents = file_->published_extents();
  st->table_file_bytes = file_->file_size();
  struct stat sb;
  if (::stat(lmdb_->path().c_str(), &sb) == 0) st->lmdb_file_bytes = uint64_t(sb.st_size);
  BootId boot;
  std::memcpy(boot.data(), h->boot_id, 16);
  st->boot_id = boot_id_string(boot);
  st->reset_count = __atomic_load_n(&h->reset_count, __ATOMIC_RELAXED);
  st->history_level = HistoryLevel(__atomic_load_n(&h->history_level, __ATOMIC_RELAXED));
  st->ring_entries = h->ring_entries;
  st->ring_head = std::atomic_ref<const uint64_t>(h->ring_head).load(std::memory_order_relaxed);

  Txn txn(*lmdb_, false);
  if (s = txn.begin(); !s.ok()) return s;
  MDB_stat ms;
  if (int rc = mdb_stat(txn.get(), lmdb_->dbi().names, &ms); rc == 0) st->slots_used = ms.ms_entries;
  if (int rc = mdb_stat(txn.get(), lmdb_->dbi().history, &ms); rc == 0) st->history_records = ms.ms_entries;
  if (s = txn.get_u64(format::kMetaDrained, &st->ring_drained, 1); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaLostTotal, &st->history_lost, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaRetentionCount, &st->retention_count, 0); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaRetentionAge, &st->retention_age_s, 0); !s.ok()) return s;
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Background drainer.
// ---------------------------------------------------------------------------
void TableCore::start_drainer(std::chrono::milliseconds interval) {
  drainer_ = std::make_unique<std::thread>([this, interval] {
    std::unique_lock<std::mutex> lock(drainer_mu_);
    while (!drainer_stop_) {
      drainer_cv_.wait_for(lock, interval, [this] { return drainer_stop_; });
      if (drainer_stop_) break;
      lock.unlock();
      uint64_t n = 0;
      (void)drain(&n, false);
      lock.lock();
    }
  });
}

void TableCore::stop_drainer() {
  if (!drainer_ || !drainer_->joinable()) return;
  {
    std::lock_guard<std::mutex> lock(drainer_mu_);
    drainer_stop_ = true;
  }
  drainer_cv_.notify_all();
  drainer_->join();
  drainer_.reset();
  uint64_t n = 0;
  (void)drain(&n, false);  // what the last period left in the ring
}

}  // namespace locktable::detail
