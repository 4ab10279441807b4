#include "reader_records.h"

#include <sched.h>

#include <algorithm>
#include <climits>
#include <thread>

#include "crash_point.h"
#include "hot_path.h"
#include "futex.h"
#include "liveness.h"
#include "slot_state.h"

namespace locktable::detail {

using format::kAbandoned;
using format::kOwnerDied;
using format::kPidMask;
using format::kSharedWaiters;
using format::kTidMask;
using format::kWaiters;
using format::ReaderState;

namespace {

// A record a dead thread left claimed, with no operation of that claim
// pending: free to take over.
bool dead_idle_reader(format::ReaderRecord* r, const Word128& id) {
  if ((tid_word(id) & kOwnerDied) == 0) return false;
  uint64_t op = load_op(r);
  return format::reader_op_claim(op) != generation(id) || format::reader_op_state(op) == ReaderState::idle;
}

// Raises the high-water mark to cover record `index`.
void cover(TableFile& file, uint64_t index) {
  std::atomic_ref<uint32_t> hwm(file.header()->reader_hwm);
  uint32_t cur = hwm.load(std::memory_order_relaxed);
  while (cur <= index && !hwm.compare_exchange_weak(cur, uint32_t(index + 1), std::memory_order_release)) {
  }
}

// Frees a reader record this thread owns.
void release_own_reader(ThreadSelf& me, format::ReaderRecord* r) {
  store_op(r, 0);
  __atomic_store_n(&r->waits_for, uint64_t{0}, __ATOMIC_RELEASE);
  __atomic_store_n(&r->claimer_tid, 0u, __ATOMIC_RELAXED);
  robust_pending(me.robust, &r->robust_next);
  robust_dequeue(me.robust, &r->robust_next);
  Word128 cur = load128(&r->ident);
  while (!cas128(&r->ident, cur, make_word(0, 0, 0, generation(cur) + 1))) {
  }
  robust_clear_pending(me.robust);
}

// Frees the record of a dead reader, if it is still the same claim. Only the
// CAS writes: another cleaner may have freed the record already and a new
// reader claimed it, whose fields a store here would overwrite. The op stays
// as it was: it names the old claim, so it means nothing any more.
// `now` is the record's ident as just read: it is freed only if it is still
// the claim `dead_ident` names (the reported flag aside).
void free_dead_reader(format::ReaderRecord* r, Word128 now, const Word128& dead_ident) {
  const uint64_t reported = uint64_t{format::kReaderReported} << 32;
  if ((now.lo & ~reported) != (dead_ident.lo & ~reported) || now.hi != dead_ident.hi) return;
  (void)cas128(&r->ident, now, make_word(0, 0, 0, generation(dead_ident) + 1));
}

// One record as a recount sees it.
struct ReaderSeen {
  enum Kind { other, live_in, live_pending, dead } kind = other;
  Word128 ident{0, 0};
  ReaderState state = ReaderState::idle;
};

// What record `r` says about slot `slot_index`, for its current claim.
ReaderSeen look_at(format::ReaderRecord* r, uint32_t slot_index) {
  ReaderSeen seen;
  uint64_t op = load_op(r);
  if (format::reader_op_slot(op) != slot_index || format::reader_op_state(op) == ReaderState::idle) return seen;
  if (guess128(&r->ident).lo == 0) return seen;
  Word128 id = load128(&r->ident);
  // The op belongs to this claim only if it carries its generation (a freed
  // record keeps its last op until its next claimer writes one).
  if (id.lo == 0 || format::reader_op_claim(op) != generation(id)) return seen;
  seen.ident = id;
  seen.state = format::reader_op_state(op);
  if (reader_dead(id)) {
    seen.kind = ReaderSeen::dead;
  } else {
    seen.kind = seen.state == ReaderState::in ? ReaderSeen::live_in : ReaderSeen::live_pending;
  }
  return seen;
}

struct DeadReader {
  uint32_t index;
  format::ReaderRecord* record;
  Word128 ident;
  ReaderState state;
};

// Waits a little for live readers in the middle of a join or leave: they
// finish within nanoseconds unless descheduled.
void wait_for_pending(int attempt) {
  if (attempt < 64) {
    for (int i = 0; i < 64; ++i) __builtin_ia32_pause();
  } else if (attempt < 256) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

Code claim_reader(TableFile& file, ThreadSelf& me, CachedReader* out) {
  if (take_cached_reader(me, file.id(), out)) return Code::ok;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const uint64_t cap = file.reader_capacity();
    // First fit from the start: claimed records stay together below the
    // high-water mark, and scans of the pool stop there.
    for (uint64_t idx = 0; idx < cap; ++idx) {
      format::ReaderRecord* r = file.reader(idx);
      if (r == nullptr) break;
      Word128 id = guess128(&r->ident);
      if ((id.lo != 0 || aux_word(id) != 0) && !dead_idle_reader(r, id)) continue;
      Word128 desired = make_word(me.tid, me.pid, me.start, generation(id) + 1);
      robust_pending(me.robust, &r->robust_next);
      if (!cas128(&r->ident, id, desired)) {
        robust_clear_pending(me.robust);
        continue;
      }
      __atomic_store_n(&r->claimer_tid, me.tid, __ATOMIC_RELAXED);
      __atomic_store_n(&r->waits_for, uint64_t{0}, __ATOMIC_RELEASE);  // a dead claimer's wait
      robust_enqueue(me.robust, &r->robust_next);
      robust_clear_pending(me.robust);
      store_op(r, format::make_reader_op(0, ReaderState::idle, generation(desired)));
      cover(file, idx);
      *out = CachedReader{file.id(), r, uint32_t(idx), generation(desired)};
      return Code::ok;
    }
    uint32_t added = 0;
    if (!file.grow(0, cap + 1, &added).ok()) return Code::capacity;
  }
  return Code::capacity;
}

void free_own_reader(ThreadSelf& me, const CachedReader& record) {
  store_op(record.record, format::make_reader_op(0, ReaderState::idle, record.claim));
  if (me.cached_count < kReaderCacheSize) {
    me.cache[me.cached_count++] = record;
    return;
  }
  release_own_reader(me, record.record);
}

void drop_cached_readers(TableFile& file) {
  ThreadSelf& me = thread_self();
  for (uint32_t i = me.cached_count; i-- > 0;) {
    if (me.cache[i].table != file.id()) continue;
    release_own_reader(me, me.cache[i].record);
    me.cache[i] = me.cache[--me.cached_count];
  }
}

// The thread a reader record belongs to. Once the kernel has marked the record
// (its thread died), the tid comes from claimer_tid.
Owner reader_owner(const format::ReaderRecord* r, const Word128& id) {
  uint32_t tid = tid_word(id) & kTidMask;
  if (tid == 0) tid = __atomic_load_n(&r->claimer_tid, __ATOMIC_RELAXED);
  return Owner{pid_word(id) & kPidMask, tid, aux_word(id)};
}

bool reader_dead(const Word128& id) {
  if (id.lo == 0) return false;
  if (tid_word(id) & kOwnerDied) return true;
  return thread_liveness(pid_word(id) & kPidMask, tid_word(id) & kTidMask, aux_word(id)) == Liveness::dead;
}

Reaped reap_dead_readers(TableFile& file, format::Slot* s, uint32_t slot_index, bool dry_run, bool for_owner,
                         std::vector<Freed>* freed, DeathLog& log) {
  for (int attempt = 0;; ++attempt) {
    const Word128 owner = load128(&s->owner);
    const uint64_t before = load_readers(s);
    uint32_t live_in = 0;
    bool pending = false;
    std::vector<DeadReader> dead;
    for_each_reader(file, [&](uint64_t i, format::ReaderRecord* r) {
      ReaderSeen seen = look_at(r, slot_index);
      if (seen.kind == ReaderSeen::live_in) ++live_in;
      if (seen.kind == ReaderSeen::live_pending) pending = true;
      if (seen.kind == ReaderSeen::dead) dead.push_back(DeadReader{uint32_t(i), r, seen.ident, seen.state});
      return true;
    });
    if (dead.empty()) return {};
    if (!for_owner && is_exclusive(pid_word(owner))) return {};  // its owner drains, and recounts itself
    const uint32_t counted = format::reader_count(before);
    if (counted == 0) {
      // Nothing is counted: these records are leftovers (a join that backed
      // out, or a recount that died before freeing them).
      if (!dry_run) {
        for (const DeadReader& d : dead) free_dead_reader(d.record, load128(&d.record->ident), d.ident);
      }
      return Reaped{uint32_t(dead.size()), false, {}};
    }
    if (pending) {
      wait_for_pending(attempt);
      continue;
    }
    // A join, backout or leave completed during the scan (every one changes
    // the word), or the owner record changed: again.
    if (load_readers(s) != before || !(load128(&s->owner) == owner)) continue;
    // Every live counted reader was IN above: the count is live_in. A dead
    // one was counted in if it was IN, or if the count says more than live_in.
    const bool dead_counted = counted > live_in;
    std::vector<const DeadReader*> was_in;
    for (const DeadReader& d : dead) {
      if (d.state == ReaderState::in || dead_counted) was_in.push_back(&d);
    }
    for (const DeadReader* d : was_in) {
      if (freed) freed->push_back({slot_index, Mode::shared, reader_owner(d->record, d->ident)});
    }
    if (dry_run) return Reaped{uint32_t(dead.size()), !was_in.empty(), {}};
    // The next exclusive holder must learn it: a drainer is told below; a
    // FREE owner record keeps ABANDONED for whoever comes (set before the
    // count changes, so that a death in between loses nothing).
    if (!was_in.empty() && !for_owner && !(pid_word(owner) & kAbandoned)) {
      Word128 expected = owner;
      if (!cas128(&s->owner, expected, Word128{owner.lo | (uint64_t{kAbandoned} << 32), owner.hi})) continue;
    }
    // Each dead reader is reported once: before the CAS (TAKEOVER IN HISTORY),
    // then marked, so a recount that finds it again does not repeat it.
    // Two recounts racing over the same dead readers may both report one
    // before either marks it; the drainer drops such a repeat.
    for (const DeadReader* d : was_in) {
      Word128 now = load128(&d->record->ident);
      if ((pid_word(now) & format::kReaderReported) || now.hi != d->ident.hi) continue;
      log.dead_found(slot_index, reader_owner(d->record, d->ident), Mode::shared, reader_epoch(owner),
                     format::readers_ended(before));
      (void)cas128(&d->record->ident, now, Word128{now.lo | (uint64_t{format::kReaderReported} << 32), now.hi});
    }
    // The dead readers' holds end: as many leaves (count - n, ended + n).
    const uint32_t n = counted - live_in;
    uint64_t expected = before;
    if (!__atomic_compare_exchange_n(&s->readers, &expected, before + uint64_t{n} * format::kReaderLeave, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
      continue;
    }
    crash_point("recount:after_cas");
    if (format::readers_ended(before) + uint64_t{n} > 0xffffffffu) carry_ended(s, +1);
    Owner first;
    if (!was_in.empty()) {
      first = reader_owner(was_in.front()->record, was_in.front()->ident);
      record_dead_owner(s, first);
    }
    for (const DeadReader& d : dead) free_dead_reader(d.record, load128(&d.record->ident), d.ident);
    if (live_in == 0 && !for_owner && (pid_word(load128(&s->owner)) & format::kDraining)) {
      futex_wake(readers_futex(s), INT_MAX);
    }
    return Reaped{uint32_t(dead.size()), !was_in.empty(), first};
  }
}

void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed, DeathLog& log) {
  std::vector<uint32_t> slots;
  for_each_reader(file, [&](uint64_t, format::ReaderRecord* r) {
    uint64_t op = load_op(r);
    if (format::reader_op_state(op) == ReaderState::idle) return true;
    Word128 id = guess128(&r->ident);
    if (id.lo != 0 && format::reader_op_claim(op) == generation(id) && reader_dead(load128(&r->ident))) {
      slots.push_back(format::reader_op_slot(op));
    }
    return true;
  });
  std::sort(slots.begin(), slots.end());
  slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
  for (uint32_t slot_index : slots) {
    if (format::Slot* s = file.slot(slot_index)) reap_dead_readers(file, s, slot_index, dry_run, false, freed, log);
  }
}

bool count_readers(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t* at_least, uint32_t* at_most,
                   uint32_t* counted) {
  const uint64_t before = load_readers(s);
  uint32_t in = 0, pending = 0;
  for_each_reader(file, [&](uint64_t, format::ReaderRecord* r) {
    // A dead reader may or may not still be counted (a recount may have
    // taken it out and died before freeing its record).
    ReaderSeen seen = look_at(r, slot_index);
    if (seen.kind == ReaderSeen::live_in) ++in;
    if (seen.kind == ReaderSeen::live_pending || seen.kind == ReaderSeen::dead) ++pending;
    return true;
  });
  if (load_readers(s) != before) return false;
  *at_least = in;
  *at_most = in + pending;
  *counted = format::reader_count(before);
  return true;
}

bool process_has_readers(TableFile& file, uint32_t pid) {
  bool found = false;
  for_each_reader(file, [&](uint64_t, format::ReaderRecord* r) {
    found = (pid_word(guess128(&r->ident)) & kPidMask) == pid;
    return !found;
  });
  return found;
}

}  // namespace locktable::detail
