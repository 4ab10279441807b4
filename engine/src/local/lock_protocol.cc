// THE LOCKTABLE LOCK PROTOCOL
// ===========================
//
// This file implements what happens to one slot of the mapped table file when
// threads of any number of processes acquire and release it, die holding it,
// and when names are removed and slots reused. Everything below rests on one
// rule:
//
//   The OwnerRecord (16 bytes at the start of the slot) is read with a 16-byte
//   atomic load and changed only with `lock cmpxchg16b` from a value just read
//   to a new one. Who holds the lock, in which mode, and the generation change
//   together or not at all.
//
// The one exception is the kernel: when a thread dies with the slot on its
// robust list (robust_list.h), the kernel rewrites tid_word in place to
// OWNER_DIED|(WAITERS) and wakes one waiter. Our CAS then simply fails and the
// new value is seen.
//
// STATES (table_format.h has the bit layout)
//
//   FREE       pid bits 0, not SHARED. Flags: ABANDONED (the next acquirer is
//              told the data may be half-written), RETIRED (the name was
//              removed). aux may name the reader operation that last changed
//              the count (see SHARED MODE).
//   EXCLUSIVE  pid, tid, start time of the owning thread, generation.
//   SHARED     SHARED flag, count of readers in the pid bits, flags
//              WRITER_WAITING and ABANDONED, aux = last reader operation.
//
// The generation changes on every change of ownership (acquire, release,
// takeover, reader join/leave, removal). Setting the waiter bits does not
// change it. A CAS from a value that named a dead owner can therefore only
// succeed once: exactly one contender takes a dead holder's lock over.
//
//   FREE ----acquire----> EXCLUSIVE ----release-----> FREE
//     |                      |  owner dead (kernel bit or /proc check)
//     |                      +----takeover (one CAS)--> EXCLUSIVE (new owner, told "abandoned")
//     |                      +----recover------------> FREE|ABANDONED
//     +----join-----> SHARED(n) --join/leave--> SHARED(n±1) --last leave--> FREE
//     +----remove---> FREE|RETIRED ----new name (incarnation+1)----> FREE
//
// WHO WRITES WHAT
//
//   owner record        the CAS above, by whoever makes the transition; the
//                       kernel (tid_word only) when an owner dies
//   robust_prev/next    only the owning thread (its robust list links)
//   owner_shadow        the exclusive owner, right after its CAS: its tid, so
//                       the dead owner can still be named after the kernel has
//                       cleared tid_word. Valid only if its generation matches.
//   acquired_at         the exclusive owner, after its CAS (informational)
//   dead_pid/dead_tid   whoever frees or takes over a dead holder, after its
//                       CAS (informational: the "abandoned" report's subject)
//   claimer_tid         (reader record) the claiming thread, after its claim
//                       CAS; zeroed by that thread before it frees its record
//   waiters             sleepers, around their futex wait (informational)
//   incarnation         the name map, inside its LMDB write transaction
//
// ACQUIRE (exclusive). Read the record; if FREE with no flags, CAS it to
// (me, generation+1). Before the CAS the thread names the slot in its robust
// list's list_op_pending, after it links the slot into the list: if the thread
// dies between the CAS and the link, the kernel still finds the slot through
// list_op_pending and marks it. A thread already holding the slot gets
// already_held; there is no recursion count (seed 001 shows what silent
// recursion plus ignored abandonment does).
//
// WAITING. A waiter sets WAITERS in tid_word (a CAS that keeps the generation),
// then sleeps on tid_word with FUTEX_WAIT, which returns at once if tid_word
// has changed since it was read: no wake-up can be lost between the check and
// the sleep. A release that sees WAITERS wakes one sleeper, or all when
// SHARED_WAITERS says readers sleep (they may all get in). A woken waiter that
// acquires sets WAITERS again, since others may still sleep; at worst one
// futile wake-up ends a contended period. A waiter that dies or times out
// leaves at most that one futile wake-up behind: the bit heals itself, where a
// counter would be wrong for ever.
//
// DEATH. A holder is dead when (a) the kernel has set OWNER_DIED in tid_word
// (thread exit, SIGKILL, exec: immediate, and it wakes a waiter), or (b) its
// thread no longer exists with the recorded start time (liveness.h), checked
// by waiters 1 ms after they start waiting, then at doubling intervals up to
// 50 ms, so a waiter never burns CPU. (b) covers threads whose robust list
// could not be used. A reboot is handled when the table is opened: the
// header's boot id differs, and every lock is freed (table_file.h).
//
// TAKEOVER. A waiter that finds the holder dead CASes the exact dead record
// (generation included) to itself. One contender wins and is told
// "abandoned", with the dead owner's pid/tid/start. A live holder is never
// taken over: liveness says "dead" only when the thread is gone or is another
// thread, and a record that changed since it was judged fails the CAS.
//
// ABANDONMENT IS NEVER SWALLOWED. The thread that got a lock abandoned owes a
// repair. Until it calls mark_consistent(), its release leaves the lock
// FREE|ABANDONED, and the next acquirer is told "abandoned" again (as POSIX
// robust mutexes do with EOWNERDEAD, without ever making the lock unusable).
// The debt is tracked per thread (the holder is the only one who knows it
// made the repair), so no stale write to the slot can create or cancel it.
//
// RELEASE. Only the owner may release (not_owner otherwise, nothing changes).
// The owner first names the slot in list_op_pending and unlinks it from its
// robust list, then CASes the record to FREE (generation+1). The unlink must
// come first: once the record is FREE, a new owner links the same slot into
// its own list. Dying between unlink and CAS leaves list_op_pending set and
// tid_word still ours, so the kernel still marks the record; dying after the
// CAS leaves tid_word 0 and the kernel at most wakes a waiter.
//
// SHARED MODE. The record counts readers; each reader also owns a
// ReaderRecord (identity + robust list node, so the kernel marks it on death)
// that names the slot. Count and reader record are two places, and a process
// can die between changing one and the other. To make the count recoverable
// every join or leave is a small transaction:
//   1. the reader writes op = (slot, JOINING or LEAVING, ticket) into its
//      record, where ticket = the generation its CAS will produce;
//   2. it CASes the slot: count±1, aux = its record index+1, generation =
//      ticket;
//   3. it finalises op to IN or IDLE.
// Anyone who is about to CAS a slot whose aux names a record whose op still
// says (this slot, JOINING/LEAVING, ticket == the slot's generation) first
// finalises that op for it. Hence, for a dead reader whose op is still
// JOINING/LEAVING with ticket t: its CAS happened if and only if the slot's aux
// names it and its generation is t (any later CAS would have finalised it
// first). A cleaner finishes or undoes the operation accordingly, then, for a
// reader that was in, performs its leave (same three steps, on its behalf) and
// sets ABANDONED. Several cleaners may finish one dead reader at once, and
// once one has freed the record a new reader may claim it; so a cleaner acts
// only on an op it read while the record was still the dead reader's claim
// (the claim generation is checked after the op is read), writes the record
// only by CAS from that exact op, and frees it only by CAS on its identity,
// once the op is idle. A record is reused across slots, so a cleaner working
// for one slot leaves alone a record whose op names another: that pending
// join or leave is the other slot's to finish (freeing the record there lost
// a dead reader's leave, and the lock stayed shared for ever).
// One op value could recur: a JOINING op whose CAS never happened names the
// ticket the slot's next change would produce, which a new claimer of the
// record could write too. A cleaner that marks such an op idle therefore
// first uses the ticket up (a CAS that only advances the slot's generation;
// never on an exclusive slot, whose owner's release expects its generation:
// that record waits until the slot moves on).
//
// A waiting writer sets WRITER_WAITING, which keeps new readers out until the
// count drops to 0; it, waiting readers, and `recover` look for dead readers
// at the same growing intervals.
//
// READER RECORD CACHE. A thread keeps up to 4 idle reader records claimed
// (and on its robust list) for its next shared acquires, keyed by TableFile
// id, which is never reused. A record of a thread that died idle is marked by
// the kernel and may be claimed by anyone. The thread that closes a table
// frees its own cached records; other threads' keep the mapping alive
// (LocalTable keeps it until the process exits) and are never touched again.
// The pool and the cleanup of dead readers are in reader_records.cc.
//
// TAKEOVER IN HISTORY. Whoever is about to take a dead holder out (exclusive
// takeover, a reader joining over a dead writer, a dead reader's leave done on
// its behalf, recovery) tells the DeathLog first, then CASes. The event is in
// the ring even if the taker dies right after its CAS; repeats are dropped by
// the drainer.
//
// NAMES. A handle caches (slot, incarnation). Acquire reads the record, then
// the incarnation, then CASes. Removal CASes FREE -> FREE|RETIRED; reuse for a
// new name first bumps the incarnation, then CASes RETIRED away. A handle that
// read the record before the removal fails its CAS; one that reads it after
// the reuse sees the new incarnation. A stale handle can never lock a
// stranger's slot. A removal that died before its LMDB commit leaves RETIRED on
// a slot whose name still exists; the next writer of the name map clears it.
#include "lock_protocol.h"

#include <pthread.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <optional>
#include <vector>

#include "clock.h"
#include "crash_point.h"
#include "futex.h"
#include "hot_path.h"
#include "reader_records.h"
#include "slot_state.h"
#include "wait_clock.h"

namespace locktable::detail {

using format::kAbandoned;
using format::kOwnerDied;
using format::kPidMask;
using format::kRetired;
using format::kSharedMode;
using format::kSharedWaiters;
using format::kTidMask;
using format::kWaiters;
using format::kWriterWaiting;
using format::ReaderState;

namespace {

// ---------------------------------------------------------------------------
// Per-thread state beyond ThreadSelf (touched only off the fast path).
// ---------------------------------------------------------------------------
struct SharedHold {
  format::Slot* slot;
  uint32_t reader_index;
  format::ReaderRecord* reader;
};
thread_local std::vector<SharedHold> tls_shared;
thread_local std::vector<format::Slot*> tls_abandoned;

void forget_holds_after_fork() {
  tls_shared.clear();
  tls_abandoned.clear();
}

void register_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, forget_holds_after_fork); });
}

SharedHold* find_shared_hold(format::Slot* s) {
  for (SharedHold& h : tls_shared) {
    if (h.slot == s) return &h;
  }
  return nullptr;
}

void note_abandoned(ThreadSelf& me, format::Slot* s) {
  register_fork_handler();
  tls_abandoned.push_back(s);
  me.abandoned_count = uint32_t(tls_abandoned.size());
}

bool forget_abandoned(ThreadSelf& me, format::Slot* s) {
  auto it = std::find(tls_abandoned.begin(), tls_abandoned.end(), s);
  if (it == tls_abandoned.end()) return false;
  tls_abandoned.erase(it);
  me.abandoned_count = uint32_t(tls_abandoned.size());
  return true;
}

bool owes_repair(format::Slot* s) {
  return std::find(tls_abandoned.begin(), tls_abandoned.end(), s) != tls_abandoned.end();
}

// Bounded spinning before a futex sleep: kSpinRounds re-checks, each after up
// to kSpinPauses `pause` instructions while the record stays the same.
constexpr int kSpinRounds = 4;
constexpr int kSpinPauses = 64;

uint64_t holder_key(const Word128& w) { return w.lo ^ (uint64_t{aux_word(w)} << 1); }
constexpr uint64_t kReadersKey = 0x5EADE25;

// Sets `bits` in the record (no generation change). False if it changed.
bool set_flags(format::Slot* s, Word128& cur, uint32_t tid_bits, uint32_t pid_bits) {
  if ((tid_word(cur) & tid_bits) == tid_bits && (pid_word(cur) & pid_bits) == pid_bits) return true;
  Word128 desired{cur.lo | tid_bits | (uint64_t{pid_bits} << 32), cur.hi};
  if (!cas128(&s->owner, cur, desired)) return false;
  cur = desired;
  return true;
}

void sleep_on(format::Slot* s, uint32_t seen_tid_word, int64_t max_ns) {
  std::atomic_ref<uint32_t> waiters(s->waiters);
  waiters.fetch_add(1, std::memory_order_relaxed);
  futex_wait(&s->owner.tid_word, seen_tid_word, max_ns);
  waiters.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace

void wake_waiters(format::Slot* s, const Word128& old) {
  futex_wake(&s->owner.tid_word, (pid_word(old) & kSharedWaiters) ? INT_MAX : 1);
}

// ---------------------------------------------------------------------------
// Exclusive mode.
// ---------------------------------------------------------------------------
Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline, DeathLog& log) {
  ThreadSelf& me = thread_self();
  // The clock is read only once the thread actually has to wait: on this VM a
  // CLOCK_MONOTONIC read costs more than the whole uncontended acquire.
  std::optional<WaitClock> waiting;
  auto clock = [&]() -> WaitClock& {
    if (!waiting) waiting.emplace(deadline);
    return *waiting;
  };
  bool slept = false;
  int spins = 0;
  Owner noted;  // the dead holder last told to the DeathLog
  auto done = [&](Code code, Owner dead = {}) {
    return Acquired{code, dead, slept && waiting ? waiting->waited_ns() : 0};
  };
  // `cur` is a two-load guess, never trusted alone: every action below is
  // validated by a CAS on the exact value, or by FUTEX_WAIT on the exact word.
  // (A 16-byte atomic load is a locked write: it would fight for the line.)
  for (;;) {
    Word128 cur = guess128(&s->owner);
    if (load_incarnation(s) != incarnation) return done(Code::stale_handle);
    uint32_t tw = tid_word(cur);
    uint32_t pw = pid_word(cur);
    if (pw & kRetired) return done(Code::stale_handle);

    if (is_free(pw)) {
      help_reader_op(file, slot_index, cur);
      Word128 desired = make_word(me.tid | (slept ? kWaiters : 0), me.pid, me.start, generation(cur) + 1);
      if (me.robust != nullptr) robust_pending(me.robust, &s->robust_next);
      if (!cas128(&s->owner, cur, desired)) {
        if (me.robust != nullptr) robust_clear_pending(me.robust);
        continue;
      }
      after_exclusive_acquire(s, me, desired);
      set_acquired_at(s, realtime_coarse_ns());
      if (pw & kAbandoned) {
        note_abandoned(me, s);
        return done(Code::abandoned, last_dead_owner(s));
      }
      return done(Code::ok);
    }

    if (is_exclusive(pw)) {
      if (owned_by(cur, me)) return done(Code::already_held);
      bool dead = (tw & kOwnerDied) != 0;
      clock().tick();
      if (!dead && clock().check_due(holder_key(cur))) dead = holder_dead(s, cur);
      if (dead) {
        Owner gone = exclusive_owner(s, cur);
        if (!(gone == noted)) {
          log.dead_found(slot_index, gone, Mode::exclusive);
          noted = gone;
        }
        Word128 desired = make_word(me.tid | (tw & kWaiters) | (slept ? kWaiters : 0), me.pid | (pw & kSharedWaiters),
                                    me.start, generation(cur) + 1);
        if (me.robust != nullptr) robust_pending(me.robust, &s->robust_next);
        if (!cas128(&s->owner, cur, desired)) {
          if (me.robust != nullptr) robust_clear_pending(me.robust);
          continue;
        }
        after_exclusive_acquire(s, me, desired);
        crash_point("takeover:after_cas");
        set_acquired_at(s, realtime_coarse_ns());
        record_dead_owner(s, gone);
        note_abandoned(me, s);
        return done(Code::abandoned, gone);
      }
      if (clock().expired()) return done(Code::timed_out);
      // Spin briefly before sleeping: a holder on another CPU often lets go
      // within a microsecond, and a futex sleep and wake cost more than that.
      if (spins < kSpinRounds) {
        ++spins;
        for (int i = 0; i < kSpinPauses && guess128(&s->owner) == cur; ++i) __builtin_ia32_pause();
        continue;
      }
      spins = 0;
      if (!set_flags(s, cur, kWaiters, 0)) continue;
      sleep_on(s, tid_word(cur), clock().sleep_ns());
      slept = true;
      continue;
    }

    // SHARED: wait for the readers to leave, keeping new ones out.
    if (find_shared_hold(s) != nullptr) return done(Code::already_held);
    clock().tick();
    if (clock().check_due(kReadersKey) && reap_dead_readers(file, s, slot_index, false, nullptr, log) > 0) continue;
    if (clock().expired()) {
      // Withdraw WRITER_WAITING, so readers are not kept out by a writer that
      // gave up; a writer still waiting wakes and sets it again.
      if (slept) {
        while (is_shared(pid_word(cur)) && (pid_word(cur) & kWriterWaiting)) {
          Word128 desired{cur.lo & ~(uint64_t{kWriterWaiting} << 32), cur.hi};
          if (cas128(&s->owner, cur, desired)) {
            futex_wake(&s->owner.tid_word, INT_MAX);
            break;
          }
        }
      }
      return done(Code::timed_out);
    }
    if (!set_flags(s, cur, kWaiters, kWriterWaiting)) continue;
    sleep_on(s, tid_word(cur), clock().sleep_ns());
    slept = true;
  }
}

Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  // A tracked hold is ours (see try_release_exclusive_fast): the record written
  // at acquire will do, the CAS loop below corrects it. Otherwise read the
  // record atomically.
  Word128 cur;
  if (!untrack_hold(me, s, &cur)) {
    cur = load128(&s->owner);
    if (!owned_by(cur, me)) return Code::not_owner;
  }
  bool abandoned = forget_abandoned(me, s);
  Word128 desired = make_word(0, abandoned ? kAbandoned : 0, 0, generation(cur) + 1);
  if (me.robust != nullptr) {
    robust_pending(me.robust, &s->robust_next);
    robust_dequeue(me.robust, &s->robust_next);
  }
  while (!cas128(&s->owner, cur, desired)) {
  }
  if (me.robust != nullptr) robust_clear_pending(me.robust);
  if (tid_word(cur) & kWaiters) wake_waiters(s, cur);
  *left_abandoned = abandoned;
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Shared mode.
// ---------------------------------------------------------------------------
Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline, uint64_t now_ns, DeathLog& log) {
  ThreadSelf& me = thread_self();
  register_fork_handler();
  if (find_shared_hold(s) != nullptr) return Acquired{Code::already_held, {}, 0};

  uint32_t ri = 0;
  format::ReaderRecord* r = nullptr;
  if (Code c = claim_reader(file, me, &ri, &r); c != Code::ok) return Acquired{c, {}, 0};
  __atomic_store_n(&r->incarnation, incarnation, __ATOMIC_RELAXED);

  std::optional<WaitClock> waiting;  // only once we have to wait (reading the clock costs)
  bool slept = false;
  auto waited = [&]() -> uint64_t { return slept && waiting ? waiting->waited_ns() : 0; };
  Owner noted;  // the dead holder last told to the DeathLog
  auto fail = [&](Code code) {
    free_own_reader(me, file, r, ri);
    return Acquired{code, {}, waited()};
  };
  auto joined = [&](Code code, Owner dead) {
    __atomic_store_n(&r->acquired_at, slept ? realtime_coarse_ns() : now_ns, __ATOMIC_RELAXED);
    tls_shared.push_back(SharedHold{s, ri, r});
    return Acquired{code, dead, waited()};
  };

  // One join attempt from `cur`: the transaction of SHARED MODE above. False
  // when the CAS failed (cur is then the current value).
  auto try_join = [&](Word128& cur, Code* code) {
    uint32_t tw = tid_word(cur);
    uint32_t pw = pid_word(cur);
    help_reader_op(file, slot_index, cur, ri);
    uint32_t count = is_shared(pw) ? (pw & kPidMask) : 0;
    if (count + 1 > kPidMask) {
      *code = Code::capacity;
      return true;
    }
    uint32_t ticket = generation(cur) + 1;
    store_op(r, format::make_reader_op(slot_index, ReaderState::joining, ticket));
    crash_point("join:after_intent");
    uint32_t flags = pw & (kAbandoned | (is_shared(pw) ? kSharedWaiters : 0));
    Word128 desired = make_word(tw & kWaiters, kSharedMode | flags | (count + 1), ri + 1, ticket);
    if (!cas128(&s->owner, cur, desired)) return false;
    crash_point("join:after_cas");
    // Only helpers (with the same value) can write op meanwhile: a store does.
    store_op(r, format::make_reader_op(slot_index, ReaderState::in, ticket));
    *code = (pw & kAbandoned) ? Code::abandoned : Code::ok;
    return true;
  };
  auto joinable = [](uint32_t pw) {
    return !(pw & kRetired) && (is_free(pw) || (is_shared(pw) && !(pw & kWriterWaiting)));
  };

  // The uncontended case: a guess of the record (two plain loads), validated
  // by the join CAS itself.
  {
    Word128 cur = guess128(&s->owner);
    Code code = Code::ok;
    if (load_incarnation(s) == incarnation && joinable(pid_word(cur)) && try_join(cur, &code)) {
      if (code == Code::capacity) return fail(code);
      return joined(code, code == Code::abandoned ? last_dead_owner(s) : Owner{});
    }
  }

  waiting.emplace(deadline);
  WaitClock& clock = *waiting;
  for (;;) {
    Word128 cur = guess128(&s->owner);  // validated by every CAS / futex wait below
    if (load_incarnation(s) != incarnation) return fail(Code::stale_handle);
    uint32_t tw = tid_word(cur);
    uint32_t pw = pid_word(cur);
    if (pw & kRetired) return fail(Code::stale_handle);

    if (joinable(pw)) {
      Code code = Code::ok;
      if (!try_join(cur, &code)) continue;
      if (code == Code::capacity) return fail(code);
      return joined(code, code == Code::abandoned ? last_dead_owner(s) : Owner{});
    }

    if (is_exclusive(pw)) {
      if (owned_by(cur, me)) return fail(Code::already_held);
      bool dead = (tw & kOwnerDied) != 0;
      clock.tick();
      if (!dead && clock.check_due(holder_key(cur))) dead = holder_dead(s, cur);
      if (dead) {
        Owner gone = exclusive_owner(s, cur);
        if (!(gone == noted)) {
          log.dead_found(slot_index, gone, Mode::exclusive);
          noted = gone;
        }
        uint32_t ticket = generation(cur) + 1;
        store_op(r, format::make_reader_op(slot_index, ReaderState::joining, ticket));
        Word128 desired = make_word(tw & kWaiters, kSharedMode | kAbandoned | (pw & kSharedWaiters) | 1, ri + 1, ticket);
        if (!cas128(&s->owner, cur, desired)) continue;
        store_op(r, format::make_reader_op(slot_index, ReaderState::in, ticket));
        record_dead_owner(s, gone);
        if (pw & kSharedWaiters) futex_wake(&s->owner.tid_word, INT_MAX);  // other readers may join now
        return joined(Code::abandoned, gone);
      }
      if (clock.expired()) return fail(Code::timed_out);
      if (!set_flags(s, cur, kWaiters, kSharedWaiters)) continue;
      sleep_on(s, tid_word(cur), clock.sleep_ns());
      slept = true;
      continue;
    }

    // SHARED with a writer waiting: stay out until the readers are gone.
    clock.tick();
    if (clock.check_due(kReadersKey) && reap_dead_readers(file, s, slot_index, false, nullptr, log) > 0) continue;
    if (clock.expired()) return fail(Code::timed_out);
    if (!set_flags(s, cur, kWaiters, kSharedWaiters)) continue;
    sleep_on(s, tid_word(cur), clock.sleep_ns());
    slept = true;
  }
}

Code release_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation, bool* left_abandoned,
                    uint64_t* acquired_at) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  SharedHold* hold = find_shared_hold(s);
  if (hold == nullptr) return Code::not_owner;
  format::ReaderRecord* r = hold->reader;
  *acquired_at = __atomic_load_n(&r->acquired_at, __ATOMIC_RELAXED);
  uint32_t ri = hold->reader_index;
  Word128 cur;
  Word128 desired;
  uint32_t count = 0;
  cur = guess128(&s->owner);  // a guess: the CAS below validates it
  for (;;) {
    uint32_t pw = pid_word(cur);
    count = pw & kPidMask;
    if (!is_shared(pw) || count == 0) {
      cur = load128(&s->owner);  // was it a torn guess?
      pw = pid_word(cur);
      count = pw & kPidMask;
      if (!is_shared(pw) || count == 0) break;
    }  // we were taken out (recover after a false death?)
    help_reader_op(file, slot_index, cur, ri);
    uint32_t ticket = generation(cur) + 1;
    store_op(r, format::make_reader_op(slot_index, ReaderState::leaving, ticket));
    crash_point("leave:after_intent");
    desired = count == 1 ? make_word(0, pw & kAbandoned, ri + 1, ticket)
                         : make_word(tid_word(cur), pw - 1, ri + 1, ticket);
    if (cas128(&s->owner, cur, desired)) {
      crash_point("leave:after_cas");
      store_op(r, format::make_reader_op(slot_index, ReaderState::idle, ticket));
      *left_abandoned = (pw & kAbandoned) != 0;
      break;
    }
  }
  tls_shared.erase(tls_shared.begin() + (hold - tls_shared.data()));
  crash_point("leave:before_free");
  free_own_reader(me, file, r, ri);
  if (count == 1 && (tid_word(cur) & kWaiters)) wake_waiters(s, cur);
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Holding, abandonment.
// ---------------------------------------------------------------------------
bool holds(format::Slot* s, Mode mode) {
  if (mode == Mode::shared) return find_shared_hold(s) != nullptr;
  return owned_by(load128(&s->owner), thread_self());
}

bool holds_abandoned(format::Slot* s) {
  if (find_shared_hold(s) != nullptr) return (pid_word(load128(&s->owner)) & kAbandoned) != 0;
  return owned_by(load128(&s->owner), thread_self()) && owes_repair(s);
}

Code mark_consistent(format::Slot* s) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(s) != nullptr) {
    Word128 cur = load128(&s->owner);
    while (pid_word(cur) & kAbandoned) {
      Word128 desired{cur.lo & ~(uint64_t{kAbandoned} << 32), cur.hi};
      if (cas128(&s->owner, cur, desired)) break;
    }
    return Code::ok;
  }
  if (!owned_by(load128(&s->owner), me)) return Code::not_owner;
  forget_abandoned(me, s);
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Recovery, names, reboot.
// ---------------------------------------------------------------------------
void recover_slot(format::Slot* s, uint32_t slot_index, bool dry_run, std::vector<Freed>* freed, DeathLog& log) {
  for (;;) {
    Word128 cur = guess128(&s->owner);
    if (!is_exclusive(pid_word(cur))) return;
    cur = load128(&s->owner);
    if (!is_exclusive(pid_word(cur)) || !holder_dead(s, cur)) return;
    Owner gone = exclusive_owner(s, cur);
    if (dry_run) {
      freed->push_back({slot_index, Mode::exclusive, gone});
      return;
    }
    log.dead_found(slot_index, gone, Mode::exclusive);
    if (!cas128(&s->owner, cur, make_word(0, kAbandoned, 0, generation(cur) + 1))) continue;
    record_dead_owner(s, gone);
    freed->push_back({slot_index, Mode::exclusive, gone});
    if (tid_word(cur) & kWaiters) futex_wake(&s->owner.tid_word, INT_MAX);
    return;
  }
}

}  // namespace locktable::detail
