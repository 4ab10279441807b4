#include "local_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>

#include <fmt/format.h>

#include "clock.h"
#include "hot_path.h"
#include "lock_counters.h"
#include "lock_protocol.h"
#include "locktable/names.h"
#include "maintenance.h"
#include "posix_error.h"
#include "reader_records.h"
#include "slot_lifecycle.h"
#include "slot_state.h"
#include "slot_views.h"
#include "system_info.h"

namespace locktable::detail {

namespace {

uint32_t round_up_pow2(uint64_t v) {
  uint64_t p = format::kMinInitialSlots;
  while (p < v && p < (uint64_t{1} << 30)) p <<= 1;
  return uint32_t(p);
}

// Checks the options that decide what a new table looks like, so a bad one
// is refused before the folder or any file is created.
Status check_options(const std::string& dir, const Options& o) {
  if (dir.empty()) return Status(Code::invalid_argument, "empty table folder name");
  if (o.initial_slots == 0 || o.initial_slots > format::kMaxSlotsLimit) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: initial_slots {}: must be from 1 to 2^30", dir, o.initial_slots));
  }
  if (o.max_slots == 0 || o.max_slots > format::kMaxSlotsLimit) {
    return Status(Code::invalid_argument, fmt::format("{}: max_slots {}: must be from 1 to 2^30", dir, o.max_slots));
  }
  if (o.ring_entries < format::kMinRingEntries || o.ring_entries > format::kMaxRingEntries ||
      (o.ring_entries & (o.ring_entries - 1)) != 0) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: ring_entries {}: must be a power of two from {} to 2^24", dir, o.ring_entries,
                              format::kMinRingEntries));
  }
  if (uint32_t(o.history) > format::kMaxHistoryLevel) {
    return Status(Code::invalid_argument, fmt::format("{}: bad history level {}", dir, uint32_t(o.history)));
  }
  if (o.deadlock_timeout.count() < 0) {
    return Status(Code::invalid_argument, fmt::format("{}: negative deadlock_timeout", dir));
  }
  if (o.lmdb_map_size < (size_t{1} << 20) || o.lmdb_map_size > kMaxLmdbMapSize) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: lmdb_map_size {}: must be from 1 MiB to 64 TiB", dir, o.lmdb_map_size));
  }
  return Status::OK();
}

// Table files kept mapped after their table closed, because this process still
// holds locks in them. Reachable (and never destroyed: static destruction
// could unmap under a running thread) until the process exits.
void keep_until_exit(std::unique_ptr<TableFile> file) {
  static std::mutex mu;
  static auto* kept = new std::vector<std::unique_ptr<TableFile>>();
  std::lock_guard<std::mutex> guard(mu);
  kept->push_back(std::move(file));
}

Status open_folder(const std::string& dir, bool create, int* dirfd) {
  if (create && ::mkdir(dir.c_str(), 0770) != 0 && errno != EEXIST) {
    return posix_error(dir, "cannot create folder", errno);
  }
  *dirfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (*dirfd >= 0) return Status::OK();
  int err = errno;
  if (err == ENOENT) return Status(Code::not_found, fmt::format("{}: no such folder", dir));
  if (err == ENOTDIR) return Status(Code::invalid_argument, fmt::format("{}: not a folder", dir));
  if (err == EACCES) return Status(Code::permission_denied, fmt::format("{}: permission denied", dir));
  return posix_error(dir, "", err);
}

}  // namespace

Status open_local_table(const std::string& dir, const std::string& location, const Options& options,
                        std::shared_ptr<Backend>* out) {
  if (Status s = check_options(dir, options); !s.ok()) return s;
  std::shared_ptr<LocalTable> t(new LocalTable());
  t->dir_ = dir;
  t->location_ = location;
  if (Status s = t->open(options); !s.ok()) return s;
  *out = std::move(t);
  return Status::OK();
}

LocalTable::LocalTable() : Backend(BackendKind::local), open_pid_(::getpid()) {}

Status LocalTable::open(const Options& options) {
  Status s = open_folder(dir_, options.create_if_missing, &dirfd_);
  if (!s.ok()) return s;
  if (s = check_local_filesystem(dir_, options.allow_network_fs); !s.ok()) return s;
  ThreadSelf& me = thread_self();
  uint64_t start = 0;
  char state = 0;
  if (!read_thread_stat(me.pid, me.tid, &start, &state)) {
    return Status(Code::unsupported, fmt::format("{}: /proc is not mounted or not readable: thread identities "
                                                 "cannot be checked", dir_));
  }

  CreateParams params{round_up_pow2(options.initial_slots), std::max<uint64_t>(options.max_slots, 8),
                      options.ring_entries, uint32_t(options.history)};
  params.max_slots = std::max<uint64_t>(params.max_slots, params.initial_slots);
  bool created = false;
  if (s = TableFile::open(dirfd_, dir_, options.create_if_missing, params, &file_, &created); !s.ok()) return s;
  s = LmdbEnv::open(dir_, options.lmdb_map_size, options.create_if_missing || created, dirfd_, kTableFileName,
                    &lmdb_);
  if (!s.ok()) return s;
  if (created) {
    Txn txn(*lmdb_, true);
    if (s = txn.begin(); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaRetentionCount, options.retention_count); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaRetentionAge, uint64_t(options.retention_age.count())); !s.ok()) return s;
    if (s = txn.commit(); !s.ok()) return s;
  }
  policy_.deadlock_timeout_ns = uint64_t(std::chrono::nanoseconds(options.deadlock_timeout).count());
  ring_ = std::make_unique<HistoryRing>(*file_);
  hot_ = LocalHot{ring_->level_word(), file_->id()};
  names_ = std::make_unique<NameMap>(dir_, *file_, *lmdb_, *ring_);
  history_ = std::make_unique<HistoryStore>(*file_, *lmdb_, *ring_);

  HistoryRing* ring = ring_.get();
  file_->set_grow_observer([ring](uint64_t capacity) {
    ring->record(unordered_event(format::kEventGrown, 0, 0, 0, capacity));
  });
  uint64_t freed = 0;
  bool reset = false;
  if (s = reset_if_rebooted(*file_, &freed, &reset); !s.ok()) return s;
  if (freed > 0) ring_->record(unordered_event(format::kEventReset, 0, 0, 0, freed));
  if (reset) {
    if (s = names_->reconcile_after_reboot(); !s.ok()) return s;
  }
  if (options.drain_interval.count() > 0) history_->start_background(options.drain_interval);
  return Status::OK();
}

LocalTable::~LocalTable() {
  if (::getpid() != open_pid_) {
    // A copy in a child after fork(): the drainer thread is not ours, and
    // mdb_env_close would clear the parent's LMDB reader slots. Leave both,
    // and the parent's history segments.
    if (history_) history_->abandon_background();
    (void)history_.release();
    (void)lmdb_.release();
  }
  history_.reset();
  names_.reset();
  lmdb_.reset();
  if (ring_ && ::getpid() == open_pid_) ring_->release_claims();
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

bool LocalTable::process_holds_locks() {
  const uint32_t pid = uint32_t(::getpid());
  // Reader records of this process's other threads are on their robust lists
  // too: the kernel walks those lists when the threads end, so the mapping
  // must outlive them. (History segments are on no robust list.)
  const uint64_t slots = file_->slot_capacity();
  for (uint64_t i = 0; i < slots; ++i) {
    format::Slot* s = file_->slot(i);
    if (s == nullptr) break;
    Word128 w = guess128(&s->owner);
    if (is_exclusive(pid_word(w)) && (pid_word(w) & format::kPidMask) == pid) return true;
  }
  return process_has_readers(*file_, pid);
}

Status LocalTable::check_same_process() const {
  return ::getpid() == open_pid_ ? Status::OK() : used_after_fork(dir_, open_pid_);
}

// ---------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------
Status LocalTable::make_handle(const std::shared_ptr<Backend>& self, std::string_view name,
                               const format::NameRecord& rec, Lock* out) {
  format::Slot* slot = file_->slot(rec.slot);
  if (slot == nullptr) {
    return Status(Code::corrupt, fmt::format("{}: lock {} points at slot {}, beyond the table's {} slots",
                                             lmdb_->path(), quote_name(name), rec.slot, file_->slot_capacity()));
  }
  if (load_incarnation(slot) == rec.incarnation && slot_is_retired(slot)) {
    if (Status s = names_->repair_interrupted_removal(name, rec); !s.ok()) return s;
  }
  LockAccess::fill(out, LockAccess::Fields{self, slot, &hot_, rec.slot, rec.incarnation,
                                           std::string(name)});
  return Status::OK();
}

Status LocalTable::lookup(const std::shared_ptr<Backend>& self, std::string_view name, Lookup mode, Lock* out) {
  Status s = validate_name(name);
  if (!s.ok()) return s;
  if (s = check_same_process(); !s.ok()) return s;
  bool found = false;
  format::NameRecord rec;
  if (s = names_->find(name, &found, &rec); !s.ok()) return s;
  if (!found) {
    if (mode == Lookup::existing) {
      return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quote_name(name)));
    }
    std::vector<format::NameRecord> recs;
    if (s = names_->create({name}, &recs); !s.ok()) return s;
    rec = recs[0];
  }
  return make_handle(self, name, rec, out);
}

Status LocalTable::lookup_many(const std::shared_ptr<Backend>& self, const std::vector<std::string>& names,
                               Lookup mode, std::vector<Lock>* out) {
  out->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  for (const std::string& n : names) {
    if (s = validate_name(n); !s.ok()) return with_context(quote_name(n), s);
  }
  std::vector<format::NameRecord> recs;
  std::vector<size_t> missing;
  if (s = names_->find_many(names, &recs, &missing); !s.ok()) return s;
  if (!missing.empty()) {
    if (mode == Lookup::existing) {
      return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quote_name(names[missing[0]])));
    }
    std::vector<std::string_view> to_create;
    for (size_t i : missing) to_create.push_back(names[i]);
    std::vector<format::NameRecord> created;
    if (s = names_->create(to_create, &created); !s.ok()) return s;
    for (size_t m = 0; m < missing.size(); ++m) recs[missing[m]] = created[m];
  }
  out->resize(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    if (s = make_handle(self, names[i], recs[i], &(*out)[i]); !s.ok()) return s;
  }
  return Status::OK();
}

Status LocalTable::remove(std::string_view name) {
  Status s = validate_name(name);
  if (!s.ok()) return s;
  if (s = check_same_process(); !s.ok()) return s;
  return names_->remove(name);
}

// ---------------------------------------------------------------------------
// Locks: what the inline paths (hot_path.h) did not finish.
// ---------------------------------------------------------------------------
void local_record(Backend* backend, RingEvent ev, uint64_t time_ns) {
  static_cast<LocalTable*>(backend)->ring().record_at(ev, time_ns);
}

void finish_fast_acquire_recorded(Lock& lock, uint64_t token, uint64_t readers) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint64_t now = realtime_coarse_ns();
  set_acquired_at(s, now);
  ThreadSelf& me = tls_self;
  record_event(me, lock,
               RingEvent{format::kEventAcquired, format::kModeExclusive, 0, LockAccess::index(lock),
                         LockAccess::incarnation(lock), 0, 0, generation(me.last_value), token,
                         format::readers_ended(readers)},
               now);
}

void finish_join_recorded(Lock& lock, format::ReaderRecord* record, uint64_t before, const Word128& owner,
                          uint64_t token) {
  const uint64_t now = realtime_coarse_ns();
  __atomic_store_n(&record->acquired_at, now, __ATOMIC_RELAXED);
  // aux32: the count it added to, so that joins between two leaves keep their order.
  record_event(tls_self, lock,
               RingEvent{format::kEventAcquired, format::kModeShared, 0, LockAccess::index(lock),
                         LockAccess::incarnation(lock), format::reader_count(before) + 1, 0, generation(owner), token,
                         format::readers_ended(before)},
               now);
}

void finish_leave_recorded(Lock& lock, format::ReaderRecord* record, uint64_t before, const Word128& owner,
                           uint64_t token) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint64_t now = realtime_coarse_ns();
  const uint64_t since = __atomic_load_n(&record->acquired_at, __ATOMIC_RELAXED);
  const bool abandoned = is_free(pid_word(owner)) && (pid_word(owner) & format::kAbandoned);
  record_event(tls_self, lock,
               RingEvent{format::kEventReleased, format::kModeShared, uint16_t(abandoned ? format::kEventAbandoned : 0),
                         LockAccess::index(lock), LockAccess::incarnation(lock), 0, now > since ? now - since : 0,
                         reader_epoch(owner), token, format::readers_ended(before) + 1},
               now);
  after_reader_out(s, before);
}

AcquireResult drain_after_fast_acquire(Lock& lock, const Deadline& deadline) {
  return static_cast<LocalTable*>(LockAccess::backend(lock))->drain(lock, deadline, tls_self.last_value);
}

bool release_exclusive_fast_recorded(Lock& lock) {
  auto* s = static_cast<format::Slot*>(LockAccess::state(lock));
  // The hold's time stamp, token and place, read while this thread still
  // holds it (try_release_exclusive_fast checks that it does, before
  // changing anything; no reader's hold ends while it does).
  const uint64_t acquired_at = __atomic_load_n(&s->acquired_at, __ATOMIC_RELAXED);
  const uint64_t token = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
  const uint32_t ended = format::readers_ended(load_readers(s));
  Word128 old;
  if (!try_release_exclusive_fast(s, LockAccess::incarnation(lock), &old)) return false;
  if (history_on(hot_of(lock))) {
    const uint64_t now = realtime_coarse_ns();
    record_event(thread_self(), lock,
                 RingEvent{format::kEventReleased, format::kModeExclusive, 0, LockAccess::index(lock),
                           LockAccess::incarnation(lock), 0, now > acquired_at ? now - acquired_at : 0,
                           generation(old) + 1, token, ended},
                 now);
  }
  // After the event (PendingWake).
  if (tid_word(old) & format::kWaiters) wake_waiters(s, old);
  return true;
}

void wake_after_release(format::Slot* s, Word128 old) { wake_waiters(s, old); }

void LocalTable::dead_found(uint32_t slot_index, const Owner& dead, Mode mode, uint32_t seen_generation,
                            uint32_t seen_ended) {
  if (!ring_->on()) return;
  format::Slot* s = file_->slot(slot_index);
  ring_->record(RingEvent{format::kEventRecovered, uint8_t(mode), format::kEventAfterGeneration, slot_index,
                          s ? load_incarnation(s) : 0, dead.tid, (uint64_t{dead.pid} << 32) | dead.start_time,
                          seen_generation, 0, seen_ended});
}

AcquireResult LocalTable::acquire(Lock& lock, Mode mode, const Deadline& deadline) {
  auto* slot = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint32_t index = LockAccess::index(lock), inc = LockAccess::incarnation(lock);
  return finish_acquire(lock, mode,
                        mode == Mode::exclusive ? acquire_exclusive(*file_, slot, index, inc, deadline, *this, policy_)
                                                : acquire_shared(*file_, slot, index, inc, deadline, *this, policy_));
}

AcquireResult LocalTable::drain(Lock& lock, const Deadline& deadline, const Word128& mine) {
  auto* slot = static_cast<format::Slot*>(LockAccess::state(lock));
  return finish_acquire(lock, Mode::exclusive,
                        drain_exclusive(*file_, slot, LockAccess::index(lock), LockAccess::incarnation(lock),
                                        deadline, *this, policy_, mine));
}

AcquireResult LocalTable::finish_acquire(Lock& lock, Mode mode, Acquired a) {
  auto* slot = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint32_t index = LockAccess::index(lock), inc = LockAccess::incarnation(lock);
  const std::string& name = lock.name();
  const uint8_t m = uint8_t(mode);
  // A wait given up sorts after the place it saw; anything else is at the place its own change made.
  const uint16_t after = a.saw_only ? format::kEventAfterGeneration : 0;
  switch (a.code) {
    case Code::ok:
    case Code::abandoned: {
      const bool abandoned = a.code == Code::abandoned;
      count_acquisition(slot, a.contended, abandoned, a.wait_ns);
      // (A takeover's `recovered` event was recorded before its CAS: dead_found.)
      ring_->record(RingEvent{format::kEventAcquired, m, uint16_t(abandoned ? format::kEventAbandoned : 0), index,
                              inc, a.rank, a.wait_ns, a.generation, a.token, a.ended});
      a.wake.run();
      if (!abandoned) return AcquireResult{Status::OK(), {}, a.token};
      return AcquireResult{Status(Code::abandoned,
                                  fmt::format("lock {}: previous holder (pid {}, tid {}) died holding it; repair, "
                                              "then mark_consistent()",
                                              quote_name(name), a.dead_owner.pid, a.dead_owner.tid)),
                           a.dead_owner, a.token};
    }
    case Code::timed_out:
    case Code::interrupted:  // a wait given up early: counted and recorded as a timeout
      count_timeout(slot, a.wait_ns);
      ring_->record(RingEvent{format::kEventTimeout, m, after, index, inc, 0, a.wait_ns, a.generation, 0, a.ended});
      return AcquireResult{Status(a.code, fmt::format("lock {}: {}", quote_name(name),
                                                      a.code == Code::timed_out ? "timed out" : "wait interrupted")),
                           {}};
    case Code::deadlock:
      ring_->record(RingEvent{format::kEventDeadlock, m, after, index, inc, 0, a.wait_ns, a.generation, 0, a.ended});
      return AcquireResult{Status(Code::deadlock, describe_cycle(a.cycle)), {}};
    case Code::already_held:
      return AcquireResult{Status(Code::already_held, fmt::format("lock {}: already held by this thread{}",
                                                                  quote_name(name),
                                                                  mode == Mode::shared ? ""
                                                                                       : " (no recursion, no upgrade)")),
                           {}};
    case Code::stale_handle:
      return AcquireResult{Status(Code::stale_handle,
                                  fmt::format("lock {}: removed (or re-created) since this handle was made; look "
                                              "it up again",
                                              quote_name(name))),
                           {}};
    case Code::capacity:
      return AcquireResult{Status(Code::capacity, fmt::format("{}: no free reader record for lock {} (table at "
                                                              "max_slots)",
                                                              dir_, quote_name(name))),
                           {}};
    default:
      return AcquireResult{Status(a.code, fmt::format("lock {}: {}", quote_name(name), code_name(a.code))), {}};
  }
}

Status LocalTable::release(Lock& lock, Mode mode) {
  auto* slot = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint32_t index = LockAccess::index(lock), inc = LockAccess::incarnation(lock);
  bool left_abandoned = false;
  uint64_t acquired_at = 0;
  uint32_t gen = 0, ended = 0;
  PendingWake wake;
  const uint64_t token = held_token(slot);  // before the release: the next holder takes a new one
  Code c;
  if (mode == Mode::exclusive) {
    acquired_at = __atomic_load_n(&slot->acquired_at, __ATOMIC_RELAXED);
    c = release_exclusive(slot, inc, &left_abandoned, &gen, &ended, &wake);
  } else {
    c = release_shared(*file_, slot, index, inc, &left_abandoned, &acquired_at, &gen, &ended, &wake);
  }
  if (c == Code::stale_handle) {
    return Status(Code::stale_handle,
                  fmt::format("lock {}: removed (or re-created) since this handle was made", quote_name(lock.name())));
  }
  if (c == Code::not_owner) {
    return Status(Code::not_owner, fmt::format("lock {}: not held {}by this thread", quote_name(lock.name()),
                                               mode == Mode::shared ? "shared " : ""));
  }
  if (ring_->on()) {
    uint64_t now = realtime_coarse_ns();
    ring_->record_at(RingEvent{format::kEventReleased, uint8_t(mode),
                               uint16_t(left_abandoned ? format::kEventAbandoned : 0), index, inc, 0,
                               now > acquired_at ? now - acquired_at : 0, gen, token, ended},
                     now);
  }
  wake.run();
  return Status::OK();
}

Status LocalTable::downgrade(Lock& lock) {
  auto* slot = static_cast<format::Slot*>(LockAccess::state(lock));
  const uint32_t index = LockAccess::index(lock), inc = LockAccess::incarnation(lock);
  uint32_t gen = 0, ended = 0;
  PendingWake wake;
  switch (downgrade_exclusive(*file_, slot, index, inc, &gen, &ended, &wake)) {
    case Code::ok:
      break;
    case Code::stale_handle:
      return Status(Code::stale_handle,
                    fmt::format("lock {}: removed (or re-created) since this handle was made", quote_name(lock.name())));
    case Code::capacity:
      return Status(Code::capacity,
                    fmt::format("{}: no free reader record to downgrade lock {}", dir_, quote_name(lock.name())));
    default:
      return Status(Code::not_owner,
                    fmt::format("lock {}: not held exclusive by this thread", quote_name(lock.name())));
  }
  ring_->record(RingEvent{format::kEventDowngraded, format::kModeShared, 0, index, inc, 0, 0, gen,
                          __atomic_load_n(&slot->token, __ATOMIC_RELAXED), ended});
  wake.run();
  return Status::OK();
}

uint64_t LocalTable::token(const Lock& lock) {
  return held_token(static_cast<format::Slot*>(LockAccess::state(lock)));
}

bool LocalTable::holds_abandoned(const Lock& lock) {
  return detail::holds_abandoned(static_cast<format::Slot*>(LockAccess::state(lock)));
}

Status LocalTable::mark_consistent(Lock& lock) {
  if (detail::mark_consistent(static_cast<format::Slot*>(LockAccess::state(lock))) != Code::ok) {
    return Status(Code::not_owner, fmt::format("lock {}: not held by this thread", quote_name(lock.name())));
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Inspection and maintenance.
// ---------------------------------------------------------------------------
std::string LocalTable::describe_cycle(const WaitCycle& cycle) {
  // Names from LMDB where this process may use it (not in a child after fork()).
  std::optional<Txn> txn;
  if (check_same_process().ok()) {
    txn.emplace(*lmdb_, false);
    if (!txn->begin().ok()) txn.reset();
  }
  auto lock_name = [&](const WaitEdge& e) {
    std::string name;
    if (txn && name_of_slot(*txn, e.slot, e.incarnation, &name).ok() && !name.empty()) return quote_name(name);
    return fmt::format("slot {}", e.slot);
  };
  std::string out = cycle.empty() ? "deadlock"
                                  : fmt::format("deadlock: this thread (pid {} tid {})", cycle[0].waiter.pid,
                                                cycle[0].waiter.tid);
  for (size_t i = 0; i < cycle.size(); ++i) {
    const WaitEdge& e = cycle[i];
    const WaitEdge& next = cycle[(i + 1) % cycle.size()];
    const std::string holder =
        i + 1 == cycle.size() ? "this thread" : fmt::format("pid {} tid {}", next.waiter.pid, next.waiter.tid);
    out += fmt::format("{} waits for lock {} ({}), held by {}", i == 0 ? "" : ", which", lock_name(e),
                       e.mode == Mode::shared ? "shared" : "exclusive", holder);
  }
  return out + "; this thread was picked to give up: release what it holds and try again";
}

LockInfo LocalTable::describe(std::string_view name, const format::NameRecord& rec, uint64_t now,
                              const std::vector<WaitView>& waits) {
  LockInfo info;
  info.name = std::string(name);
  info.slot = rec.slot;
  info.incarnation = rec.incarnation;
  format::Slot* slot = file_->slot(rec.slot);
  if (slot == nullptr) return info;
  SlotView view = inspect_slot(slot);
  info.state = view.state;
  info.mode = view.mode;
  info.waiters = view.waiters;
  info.abandoned = view.abandoned;
  info.counters = read_counters(slot);
  const uint64_t token = __atomic_load_n(&slot->token, __ATOMIC_RELAXED);
  const uint64_t wall_now = realtime_ns();
  for (const WaitView& w : waits) {
    if (w.slot != rec.slot || w.incarnation != rec.incarnation) continue;
    WaiterInfo wi;
    wi.owner = w.waiter;
    wi.mode = w.mode;
    wi.waiting_ms = wall_now > w.since_ns ? (wall_now - w.since_ns) / 1'000'000 : 0;
    char comm[16];
    if (read_thread_comm(w.waiter.pid, w.waiter.tid, comm)) wi.comm = comm;
    info.waiting.push_back(std::move(wi));
  }
  std::sort(info.waiting.begin(), info.waiting.end(),
            [](const WaiterInfo& a, const WaiterInfo& b) { return a.waiting_ms > b.waiting_ms; });
  auto held_ms = [&](uint64_t since) -> std::optional<uint64_t> {
    if (since == 0) return std::nullopt;
    return now > since ? (now - since) / 1'000'000 : 0;
  };
  auto holder = [&](const Owner& owner, bool alive, uint64_t since) {
    HolderInfo h;
    h.owner = owner;
    h.alive = alive;
    h.held_for_ms = held_ms(since);
    h.token = token;
    char comm[16];
    if (h.alive && read_thread_comm(h.owner.pid, h.owner.tid, comm)) h.comm = comm;
    info.holders.push_back(std::move(h));
  };
  if (view.state == LockState::held || view.state == LockState::dead_owner) {
    holder(view.owner, view.owner_alive, view.acquired_at);
  } else if (view.state == LockState::shared) {
    bool any_dead = false;
    for (const ReaderView& r : readers_of(*file_, rec.slot)) {
      if (r.state == format::ReaderState::joining) continue;
      holder(r.owner, r.alive, r.acquired_at);
      any_dead |= !r.alive;
    }
    if (any_dead) info.state = LockState::dead_owner;
  }
  return info;
}

Status LocalTable::list_each(const LockVisitor& visit, ListScope scope, std::string_view prefix) {
  Status s = check_same_process();
  if (!s.ok()) return s;
  Txn txn(*lmdb_, false);
  if (s = txn.begin(); !s.ok()) return s;
  const uint64_t now = realtime_coarse_ns();
  const std::vector<WaitView> waits = published_waits(*file_);
  if (scope == ListScope::busy) {
    // From the slots: a slot whose record is not plain FREE (held, waiter
    // bits, abandoned) or that counts readers, or that a published wait
    // names, and that has a live name; only those are named (one LMDB read
    // each) and described.
    std::vector<uint32_t> waited;
    for (const WaitView& w : waits) waited.push_back(w.slot);
    std::sort(waited.begin(), waited.end());
    const uint64_t capacity = file_->slot_capacity();
    std::string name;
    for (uint64_t i = 0; i < capacity; ++i) {
      const format::Slot* slot = file_->slot(uint32_t(i));
      if (slot == nullptr) continue;
      const uint32_t incarnation = load_incarnation(slot);
      const Word128 w = guess128(&slot->owner);
      if (incarnation == 0 || (pid_word(w) & format::kRetired)) continue;
      if (w.lo == 0 && format::reader_count(load_readers(slot)) == 0 &&
          !std::binary_search(waited.begin(), waited.end(), uint32_t(i))) {
        continue;
      }
      if (s = name_of_slot(txn, uint32_t(i), incarnation, &name); !s.ok()) return s;
      if (name.empty() || !name.starts_with(prefix)) continue;  // empty: being created or removed right now
      format::NameRecord rec;
      rec.slot = uint32_t(i);
      rec.incarnation = incarnation;
      const LockInfo info = describe(name, rec, now, waits);
      if (!info.busy()) continue;
      if (s = visit(info); !s.ok()) return s;
    }
    return Status::OK();
  }
  Status stopped;
  s = names_->for_each(txn, [&](std::string_view name, const format::NameRecord& rec) {
    stopped = visit(describe(name, rec, now, waits));
    return stopped.ok();
  }, prefix);
  return s.ok() ? stopped : s;
}

Status LocalTable::stats(TableStats* st) {
  Status s = check_same_process();
  if (!s.ok()) return s;
  const format::Header* h = file_->header();
  *st = TableStats{};
  st->dir = location_;
  st->backend = "local";
  timespec res{};
  if (clock_getres(CLOCK_REALTIME_COARSE, &res) == 0) {
    st->time_resolution_ns = uint64_t(res.tv_sec) * 1'000'000'000u + uint64_t(res.tv_nsec);
  }
  st->format_version = uint32_t(h->format >> 32);
  st->slot_capacity = file_->slot_capacity();
  // Every named lock's counters (a slot that has a name: given one, not retired).
  for (uint64_t i = 0; i < st->slot_capacity; ++i) {
    const format::Slot* slot = file_->slot(uint32_t(i));
    if (slot == nullptr || load_incarnation(slot) == 0 || (pid_word(guess128(&slot->owner)) & format::kRetired)) continue;
    const LockCounters c = read_counters(slot);
    st->counters.exclusive_acquisitions += c.exclusive_acquisitions;
    st->counters.shared_acquisitions += c.shared_acquisitions;
    st->counters.contended += c.contended;
    st->counters.timeouts += c.timeouts;
    st->counters.abandoned += c.abandoned;
    st->counters.wait_total_ns += c.wait_total_ns;
    st->counters.wait_max_ns = std::max(st->counters.wait_max_ns, c.wait_max_ns);
  }
  st->max_slots = h->max_slots;
  st->reader_capacity = file_->reader_capacity();
  for_each_reader(*file_, [&](uint64_t, format::ReaderRecord* r) {
    if (guess128(&r->ident).lo != 0) ++st->readers_used;
    return true;
  });
  st->extents = file_->published_extents();
  st->table_file_bytes = file_->file_size();
  struct stat sb;
  if (::stat(lmdb_->path().c_str(), &sb) == 0) st->lmdb_file_bytes = uint64_t(sb.st_size);
  BootId boot;
  std::memcpy(boot.data(), h->boot_id, 16);
  st->boot_id = boot_id_string(boot);
  st->reset_count = __atomic_load_n(&h->reset_count, __ATOMIC_RELAXED);
  st->history_level = HistoryLevel(ring_->level());
  st->ring_entries = h->ring_entries;
  st->ring_segments = ring_->segment_count();
  HistoryCounts hc;
  if (s = history_->counts(&hc); !s.ok()) return s;
  st->ring_appended = hc.appended;
  st->ring_accounted = hc.accounted;
  st->ring_segments_in_use = hc.segments_in_use;
  st->history_lost = hc.lost;

  Txn txn(*lmdb_, false);
  if (s = txn.begin(); !s.ok()) return s;
  if (s = txn.entries(lmdb_->dbi().names, &st->slots_used); !s.ok()) return s;
  if (s = txn.entries(lmdb_->dbi().history, &st->history_records); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaRetentionCount, &st->retention_count, 0); !s.ok()) return s;
  return txn.get_u64(format::kMetaRetentionAge, &st->retention_age_s, 0);
}

Status LocalTable::recover(bool dry_run, std::vector<Recovery>* actions) {
  if (Status s = check_same_process(); !s.ok()) return s;
  return recover_table(TableParts{dir_, dirfd_, *file_, *lmdb_, *names_, *this}, dry_run, actions);
}

Status LocalTable::check(std::vector<std::string>* problems) {
  if (Status s = check_same_process(); !s.ok()) return s;
  return check_table(TableParts{dir_, dirfd_, *file_, *lmdb_, *names_, *this}, problems);
}

// ---------------------------------------------------------------------------
// History.
// ---------------------------------------------------------------------------
Status LocalTable::drain_history(uint64_t* drained) {
  if (Status s = check_same_process(); !s.ok()) return s;
  return history_->drain(drained);
}

Status LocalTable::history(const HistoryQuery& query, std::vector<Event>* events) {
  if (Status s = check_same_process(); !s.ok()) return s;
  return history_->query(query, events);
}

Status LocalTable::set_history_level(HistoryLevel level) { return history_->set_level(level); }

Status LocalTable::set_retention(uint64_t count, std::chrono::seconds age) {
  if (Status s = check_same_process(); !s.ok()) return s;
  return history_->set_retention(count, uint64_t(age.count()));
}

}  // namespace locktable::detail
