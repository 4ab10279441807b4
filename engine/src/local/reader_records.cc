#include "reader_records.h"

#include <pthread.h>

#include <climits>
#include <mutex>

#include "futex.h"
#include "hot_path.h"
#include "liveness.h"
#include "slot_state.h"

namespace locktable::detail {

using format::kAbandoned;
using format::kOwnerDied;
using format::kPidMask;
using format::kSharedMode;
using format::kTidMask;
using format::kWaiters;
using format::ReaderState;

namespace {

struct CachedReader {
  uint64_t table;  // TableFile::id()
  uint32_t index;
  format::ReaderRecord* record;
};
// Reader records this thread has claimed and keeps (idle) for its next shared
// acquire, saving a claim and a free each time. They stay on the thread's
// robust list: if it dies the kernel marks them, and anyone may reclaim them.
thread_local std::vector<CachedReader> tls_reader_cache;
constexpr size_t kReaderCacheSize = 4;  // per thread, all tables together

void forget_cache_after_fork() { tls_reader_cache.clear(); }  // the parent's thread owns them

void register_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, forget_cache_after_fork); });
}

// A record a dead thread left claimed but idle: free to take over.
bool dead_idle_reader(format::ReaderRecord* r, const Word128& id) {
  return (tid_word(id) & kOwnerDied) != 0 && format::reader_op_state(load_op(r)) == ReaderState::idle;
}

// Frees a reader record this thread owns.
void release_own_reader(ThreadSelf& me, format::ReaderRecord* r) {
  store_op(r, 0);
  __atomic_store_n(&r->claimer_tid, 0u, __ATOMIC_RELAXED);
  if (me.robust != nullptr) {
    robust_pending(me.robust, &r->robust_next);
    robust_dequeue(me.robust, &r->robust_next);
  }
  Word128 cur = load128(&r->ident);
  while (!cas128(&r->ident, cur, make_word(0, 0, 0, generation(cur) + 1))) {
  }
  if (me.robust != nullptr) robust_clear_pending(me.robust);
}

// Frees the record of a dead reader, if it is still the same claim. Only the
// CAS writes: another cleaner may have freed the record already and a new
// reader claimed it, whose op and claimer_tid a store here would overwrite
// (its join then counted with no record naming it: a lock no writer ever gets
// again). The op of a freed record is idle; its next claimer resets it.
void free_dead_reader(format::ReaderRecord* r, uint32_t claim_generation) {
  for (;;) {
    Word128 cur = load128(&r->ident);
    if (cur.lo == 0 || generation(cur) != claim_generation) return;
    if (cas128(&r->ident, cur, make_word(0, 0, 0, claim_generation + 1))) return;
  }
}


// Takes a dead reader out of the slot it holds or was joining/leaving, on its
// behalf (see SHARED MODE above). Returns true if this call took it out of
// the count (it had been counted in, and had not finished leaving).
bool finish_dead_reader(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t ri,
                        format::ReaderRecord* r, uint32_t claim_generation, const Owner& dead, DeathLog& log) {
  bool was_in = false;
  bool noted = false;
  for (;;) {
    uint64_t op = load_op(r);
    // Another cleaner may have finished this reader and freed the record, and
    // a new reader claimed it: then `op` is that live reader's. The claim
    // generation is read after the op, so an op read under it is the dead
    // reader's; every action below is a CAS from that exact op or slot value.
    if (generation(load128(&r->ident)) != claim_generation) return was_in;
    // The reader may have moved on to another slot before it died (a record
    // is reused): its pending op there is that slot's to finish. Only an idle
    // record is freed here.
    if (format::reader_op_slot(op) != slot_index) return was_in;
    ReaderState st = format::reader_op_state(op);
    uint32_t t = format::reader_op_ticket(op);
    Word128 cur = load128(&s->owner);
    bool last_is_this = aux_word(cur) == ri + 1 && generation(cur) == t;
    if (st == ReaderState::idle) break;
    if (st == ReaderState::joining) {
      // Counted iff its CAS is the last change of the slot.
      if (last_is_this) {
        cas_op(r, op, format::make_reader_op(slot_index, ReaderState::in, t));
        continue;
      }
      // Not counted. While the slot's next generation is still t, the next
      // claimer of this record could write this very op (JOINING t) and join
      // with it, and a cleaner that read it here would mark that join idle.
      // So ticket t is used up first: the generation moves on, nothing else
      // changes. Not on an exclusive slot (its owner's release CAS expects its
      // generation): the record stays claimed until the slot has moved on.
      if (generation(cur) + 1 == t) {
        if (is_exclusive(pid_word(cur))) return was_in;
        help_reader_op(file, slot_index, cur);
        if (!cas128(&s->owner, cur, make_word(tid_word(cur), pid_word(cur), 0, t))) continue;
      }
      cas_op(r, op, format::make_reader_op(slot_index, ReaderState::idle, t));
      continue;
    }
    if (st == ReaderState::in) {
      cas_op(r, op, format::make_reader_op(slot_index, ReaderState::leaving, generation(cur) + 1));
      continue;
    }
    // LEAVING with ticket t.
    if (last_is_this) {
      cas_op(r, op, format::make_reader_op(slot_index, ReaderState::idle, t));
      continue;
    }
    if (generation(cur) + 1 != t) {
      cas_op(r, op, format::make_reader_op(slot_index, ReaderState::leaving, generation(cur) + 1));
      continue;
    }
    uint32_t pw = pid_word(cur);
    uint32_t count = pw & kPidMask;
    if (!is_shared(pw) || count == 0) {  // nothing to take it out of
      cas_op(r, op, format::make_reader_op(slot_index, ReaderState::idle, t));
      continue;
    }
    help_reader_op(file, slot_index, cur);
    Word128 desired = count == 1 ? make_word(0, kAbandoned | (pw & kAbandoned), ri + 1, t)
                                 : make_word(tid_word(cur), (pw - 1) | kAbandoned, ri + 1, t);
    if (!noted) {
      log.dead_found(slot_index, dead, Mode::shared);
      noted = true;
    }
    if (cas128(&s->owner, cur, desired)) {
      was_in = true;
      record_dead_owner(s, dead);
      if (count == 1 && (tid_word(cur) & kWaiters)) wake_waiters(s, cur);
    }
  }
  free_dead_reader(r, claim_generation);
  return was_in;
}

}  // namespace

// Finalises the reader operation named by the slot record `cur`, if it is
// still pending (step 3 of the join/leave transaction, done on its behalf).
void help_reader_op(TableFile& file, uint32_t slot_index, const Word128& cur, uint32_t mine) {
  uint32_t a = aux_word(cur);
  if (a == 0 || a - 1 == mine) return;  // nothing pending, or our own (finished) op
  format::ReaderRecord* r = file.reader(a - 1);
  if (r == nullptr) return;
  uint64_t op = load_op(r);
  if (format::reader_op_slot(op) != slot_index || format::reader_op_ticket(op) != generation(cur)) return;
  ReaderState st = format::reader_op_state(op);
  if (st == ReaderState::joining) {
    cas_op(r, op, format::make_reader_op(slot_index, ReaderState::in, generation(cur)));
  } else if (st == ReaderState::leaving) {
    cas_op(r, op, format::make_reader_op(slot_index, ReaderState::idle, generation(cur)));
  }
}


Code claim_reader(TableFile& file, ThreadSelf& me, uint32_t* index, format::ReaderRecord** out) {
  for (size_t i = tls_reader_cache.size(); i-- > 0;) {
    if (tls_reader_cache[i].table != file.id()) continue;
    *index = tls_reader_cache[i].index;
    *out = tls_reader_cache[i].record;
    tls_reader_cache.erase(tls_reader_cache.begin() + ptrdiff_t(i));
    return Code::ok;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    const uint64_t cap = file.reader_capacity();
    bool claimed = false;
    // Threads start their search at different places, so they rarely race for one record.
    for_each_reader(
        file,
        [&](uint64_t idx, format::ReaderRecord* r) {
          Word128 id = guess128(&r->ident);
          if ((id.lo != 0 || aux_word(id) != 0) && !dead_idle_reader(r, id)) return true;
          Word128 desired = make_word(me.tid, me.pid, me.start, generation(id) + 1);
          if (me.robust != nullptr) robust_pending(me.robust, &r->robust_next);
          if (!cas128(&r->ident, id, desired)) {
            if (me.robust != nullptr) robust_clear_pending(me.robust);
            return true;
          }
          __atomic_store_n(&r->claimer_tid, me.tid, __ATOMIC_RELAXED);
          if (me.robust != nullptr) {
            robust_enqueue(me.robust, &r->robust_next);
            robust_clear_pending(me.robust);
          }
          store_op(r, 0);
          *index = uint32_t(idx);
          *out = r;
          claimed = true;
          return false;
        },
        uint64_t{me.tid} * 2654435761u);
    if (claimed) return Code::ok;
    uint32_t added = 0;
    if (!file.grow(0, cap + 1, &added).ok()) return Code::capacity;
  }
  return Code::capacity;
}

// Gives back a reader record this thread owns: into its cache, or freed.
void free_own_reader(ThreadSelf& me, TableFile& file, format::ReaderRecord* r, uint32_t index) {
  store_op(r, 0);
  if (tls_reader_cache.size() < kReaderCacheSize) {
    register_fork_handler();
    tls_reader_cache.push_back(CachedReader{file.id(), index, r});
    return;
  }
  release_own_reader(me, r);
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

uint32_t reap_dead_readers(TableFile& file, format::Slot* s, uint32_t slot_index, bool dry_run,
                           std::vector<Freed>* freed, DeathLog& log) {
  uint32_t reaped = 0;
  for_each_reader(file, [&](uint64_t i, format::ReaderRecord* r) {
    uint64_t op = load_op(r);
    if (format::reader_op_slot(op) != slot_index || guess128(&r->ident).lo == 0) return true;
    Word128 id = load128(&r->ident);
    if (!reader_dead(id)) return true;
    Owner dead = reader_owner(r, id);
    bool was_in = dry_run ? format::reader_op_state(op) != ReaderState::idle
                          : finish_dead_reader(file, s, slot_index, uint32_t(i), r, generation(id), dead, log);
    if (was_in) {
      ++reaped;
      if (freed) freed->push_back({slot_index, Mode::shared, dead});
    }
    return true;
  });
  return reaped;
}

void drop_cached_readers(TableFile& file) {
  ThreadSelf& me = thread_self();
  for (size_t i = tls_reader_cache.size(); i-- > 0;) {
    if (tls_reader_cache[i].table != file.id()) continue;
    release_own_reader(me, tls_reader_cache[i].record);
    tls_reader_cache.erase(tls_reader_cache.begin() + ptrdiff_t(i));
  }
}

void recover_readers(TableFile& file, bool dry_run, std::vector<Freed>* freed, DeathLog& log) {
  for_each_reader(file, [&](uint64_t i, format::ReaderRecord* r) {
    if (guess128(&r->ident).lo == 0) return true;
    Word128 id = load128(&r->ident);
    if (!reader_dead(id)) return true;
    uint64_t op = load_op(r);
    uint32_t slot_index = format::reader_op_slot(op);
    Owner dead = reader_owner(r, id);
    format::Slot* s = file.slot(slot_index);
    if (format::reader_op_state(op) == ReaderState::idle || s == nullptr) {
      if (!dry_run) free_dead_reader(r, generation(id));
    } else if (dry_run) {
      freed->push_back({slot_index, Mode::shared, dead});
    } else if (finish_dead_reader(file, s, slot_index, uint32_t(i), r, generation(id), dead, log)) {
      freed->push_back({slot_index, Mode::shared, dead});
    }
    return true;
  });
}

bool count_readers(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t* record_count,
                   uint32_t* counted) {
  Word128 before = load128(&s->owner);
  uint32_t n = 0;
  for_each_reader(file, [&](uint64_t i, format::ReaderRecord* r) {
    uint64_t op = load_op(r);
    if (format::reader_op_slot(op) != slot_index || guess128(&r->ident).lo == 0) return true;
    bool last = aux_word(before) == i + 1 && generation(before) == format::reader_op_ticket(op);
    switch (format::reader_op_state(op)) {
      case ReaderState::in: ++n; break;
      case ReaderState::joining: n += last ? 1 : 0; break;
      case ReaderState::leaving: n += last ? 0 : 1; break;
      case ReaderState::idle: break;
    }
    return true;
  });
  Word128 after = load128(&s->owner);
  if (!(before == after)) return false;
  *record_count = n;
  *counted = is_shared(pid_word(before)) ? (pid_word(before) & kPidMask) : 0;
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
