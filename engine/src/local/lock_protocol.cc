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
//   FREE       pid bits 0, not SHARED, aux: shared joins. Flags: ABANDONED
//              (the next acquirer is told the data may be half-written),
//              RETIRED (the name was removed), WRITER_WAITING (only a writer
//              may take it: see WRITER PREFERENCE).
//   EXCLUSIVE  pid, tid, start time of the owning thread, generation.
//   SHARED     SHARED flag, count of readers in the pid bits, aux: shared
//              joins, flags WRITER_WAITING and ABANDONED.
//
// Shared joins: every join CAS adds 1 to aux and every leave and recount
// keeps it, so the record itself counts shared acquisitions; the CAS that
// makes it EXCLUSIVE overwrites aux with the owner's start time, and that
// owner adds the joins to Slot::shared_moved before it writes owner_shadow
// (table_format.h; lock_counters.h reads the sum).
//
// The generation changes on every change of ownership (acquire, release,
// takeover, reader join/leave, recount, removal). Setting the waiter bits does
// not change it. A CAS from a value that named a dead owner can therefore only
// succeed once: exactly one contender takes a dead holder's lock over.
//
//   FREE ----acquire----> EXCLUSIVE ----release-----> FREE
//     |                      |  owner dead (kernel bit or /proc check)
//     |                      +----takeover (one CAS)--> EXCLUSIVE (new owner, told "abandoned")
//     |                      +----recover------------> FREE|ABANDONED
//     +----join-----> SHARED(n) --join/leave--> SHARED(n±1) --last leave--> FREE
//     |                   +----recount (dead readers out)--> SHARED(live)|ABANDONED or FREE|ABANDONED
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
//   token               the exclusive owner, right after its CAS: +1 (it is
//                       the only writer while it holds; see TOKENS)
//   acquired_at         the exclusive owner, after its CAS (informational)
//   dead_pid/dead_tid/  whoever frees or takes over a dead holder, after its
//   dead_start          CAS (informational: the "abandoned" report's subject)
//   writer_*            a writer about to sleep behind WRITER_WAITING
//   reader record       its owner thread: op, acquired_at, claimer_tid; a
//                       cleaner only frees a dead one (a CAS on its ident)
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
// SHARED_WAITERS says readers sleep (they may all get in). An acquirer keeps
// the waiter bits it finds, and one that slept sets WAITERS again, since others
// may still sleep; at worst one futile wake-up ends a contended period. A
// waiter that dies or times out leaves at most that one futile wake-up behind:
// the bit heals itself, where a counter would be wrong for ever. A waiter
// gives up at its deadline, or when its deadline's WaitInterrupt says so
// (asked in WaitClock::tick; a sleep with one is at most 50 ms, and a signal
// ends it at once with EINTR): both leave the same way, Code::timed_out or
// Code::interrupted, having withdrawn WRITER_WAITING and its published wait.
//
// DEATH. A holder is dead when (a) the kernel has set OWNER_DIED in tid_word
// (thread exit, SIGKILL, exec: immediate, and it wakes a waiter), or (b) its
// thread no longer exists with the recorded start time (liveness.h), checked
// by waiters 1 ms after they start waiting, then at doubling intervals up to
// 50 ms, so a waiter never burns CPU. (b) covers threads whose robust list
// could not be used. A reboot is handled when the table is opened: the
// header's boot id differs, and every lock is freed (slot_lifecycle.h).
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
// The owner reads the record and checks it names itself (a live owner is
// never taken over, so the check cannot go stale), names the slot in
// list_op_pending and unlinks it from its robust list, then CASes the record
// to FREE (generation+1). The unlink must come first: once the record is
// FREE, a new owner links the same slot into its own list. Dying between
// unlink and CAS leaves list_op_pending set and tid_word still ours, so the
// kernel still marks the record; dying after the CAS leaves tid_word 0 and the
// kernel at most wakes a waiter.
//
// TOKENS. The slot's token is the fencing token of the last exclusive
// acquisition. The new exclusive owner adds 1 right after its CAS, while no
// one else can write it, and returns the new value. A holder that dies between
// its CAS and that store never learned a token; the next one adds 1 to the
// same value. A name gets a token floor when it is created (and every slot
// one when the table is reset after a reboot), above every token the slot or
// the table ever gave (slot_lifecycle.h), so a token never goes back. A shared
// holder gets the token of the exclusive epoch it reads in: greater than every
// earlier writer's, smaller than every later one's.
//
// SHARED MODE. The record counts readers; each reader also owns a
// ReaderRecord (identity + robust list node, so the kernel marks it on death)
// that names the slot. Count and reader record are two places, and a process
// can die between changing one and the other. Every join or leave is three
// steps, each reader writing only its own record:
//   1. op = (slot, JOINING or LEAVING, claim) in its record;
//   2. CAS the slot: count±1, generation+1;
//   3. op = (slot, IN) or (idle).
// `claim` is the generation of the record's own identity at its claim, so an
// op left in a record by an earlier claim is recognised as meaningless.
// Nothing else in the slot names the reader, so no reader ever reads another
// reader's record on the way in or out: the only line readers share is the
// slot's.
//
// RECOUNT. A dead reader is taken out by a recount of the slot (a waiting
// writer does it at its liveness checks; `recover` for every slot a dead
// reader names). It reads the slot, reads every record that names the slot,
// and reads the slot again:
//   - if a live reader is JOINING or LEAVING, its CAS may or may not have
//     happened: wait (it finishes within nanoseconds) and start again;
//   - if the slot changed in between, a join or leave completed during the
//     scan: start again;
//   - otherwise every live reader the slot counts was IN, because a counted
//     reader's op says JOINING, IN or LEAVING from before its join CAS to
//     after its leave CAS, and a reader that joined or left during the scan
//     would have changed the slot. The live count is exact.
// The recount CASes the slot from the value it read twice to (live count,
// generation+1, ABANDONED if any dead reader may have been in: one that was
// IN, or any when the count exceeded the live readers), and only then frees
// the dead readers' records. A live reader whose join or leave CAS raced the
// recount fails its CAS and tries again from the new value. A recount that
// dies after its CAS leaves dead records naming the slot behind; the next
// recount finds the count already right and frees them. No dead reader's
// state is ambiguous for it: whatever the dead reader did, the new count
// is the live readers. Dead readers the kernel did not report are found by
// the liveness check, like dead writers. A SIGSTOPped reader in the middle of
// a join or leave keeps a recount waiting until it runs again.
//
// WRITER PREFERENCE. A waiting writer sets WRITER_WAITING, which keeps new
// readers out; readers already in finish. The last reader's leave keeps the
// flag: FREE|WRITER_WAITING may be taken only by a writer, so the waiting
// writer is not raced by readers that queued behind it (such a race starved
// writers behind chains of overlapping readers). A writer that gives up
// clears the flag; one still waiting sets it again when it wakes. Before it
// sleeps a waiting writer writes its identity into the slot (writer_*); a
// reader that finds FREE|WRITER_WAITING unchanged for kStaleWriterNs checks
// that writer and clears the flag if it is dead. A live writer, even a stopped
// one, keeps readers out, as a stopped holder would.
//
// READER RECORD CACHE. A thread keeps up to 4 idle reader records claimed
// (and on its robust list) for its next shared acquires, keyed by TableFile
// id, which is never reused. A record of a thread that died idle is marked by
// the kernel and may be claimed by anyone. The thread that closes a table
// frees its own cached records; other threads' keep the mapping alive
// (LocalTable keeps it until the process exits) and are never touched again.
// The pool and the recount are in reader_records.cc.
//
// TAKEOVER IN HISTORY. Whoever is about to take a dead holder out (exclusive
// takeover, a reader joining over a dead writer, a recount, recovery) tells
// the DeathLog first, then CASes. The event is in the ring even if the taker
// dies right after its CAS; repeats are dropped by the drainer.
//
// DEADLOCKS. A waiter that is about to sleep (it has spun and yielded)
// publishes what it waits for in a reader record of its own (the shared
// waiter's joining record; an exclusive waiter claims one): slot, mode,
// incarnation, start time and a per-thread serial, in waits_for. It clears
// the word when its acquire ends, however it ends. Once it has waited
// Options::deadlock_timeout, and every kWalkIntervalNs after, it walks the
// waits-for graph (wait_graph.h): if it closes a cycle, confirmed by a second
// read over unchanged generations, and it is the cycle's victim (the last to
// begin waiting among the members that detect), it gives up with `deadlock`
// (a writer withdraws WRITER_WAITING, as on a timeout). The other members see
// the same cycle and the same victim, and go on waiting: exactly one member
// of a cycle is told, and the others acquire once it releases what it holds.
// Nothing of this is on the uncontended paths; a waiter that is not in a
// cycle pays one walk per interval after the timeout.
//
// DOWNGRADE. An exclusive owner turns its hold into a shared one: it claims a
// reader record, marks it joining for the slot, takes the slot off its
// robust list (pending set, as a release does), and CASes EXCLUSIVE(me) ->
// SHARED count 1 (the waiter bits kept; ABANDONED set if it owed a repair),
// then marks the record in and wakes every sleeper. No state in between is
// FREE, so no writer can get in; a death before the CAS leaves an exclusive
// hold the kernel marks, a death after it a reader the recount takes out,
// exactly as for a join. The token stays: the shared holders read in the
// epoch the exclusive hold began.
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
#include <sched.h>

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
#include "thread_holds.h"
#include "waiting.h"
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
// Waiting (exclusive).
// ---------------------------------------------------------------------------
// Before an exclusive waiter sleeps on the futex, it waits in two steps:
//  1. up to kSpinPauses `pause`s, re-reading the record after each and
//     stopping as soon as it changes: a holder on another CPU often lets go
//     within a few hundred ns, and this catches the hand-off;
//  2. up to kSpinYields sched_yield()s, re-checking after each: the waiter
//     leaves the slot's line alone for a system call's time, so a holder that
//     keeps re-taking the lock runs undisturbed (reading the line on every
//     pause halves its speed), and on a busy machine the holder may get the CPU.
// Only then WAITERS and a futex sleep (a sleep and a wake-up cost microseconds).
// Measured on 2 cores against a robust mutex (contended / hand-off ratios):
// pauses only, 4 rounds: 1.3x / 0.6x; pauses without re-reading: 0.5x / 5x;
// yields only: 0.6-1.2x / 0.5-2x; this: 0.8x / 0.85x.
constexpr int kSpinPauses = 16;
constexpr int kSpinYields = 16;

// An exclusive waiter's published wait (DEADLOCKS): a reader record claimed
// at its first sleep, given back (to the thread's cache) when the acquire ends.
class PublishedWait {
 public:
  PublishedWait(TableFile& file, ThreadSelf& me) : file_(file), me_(me) {}
  ~PublishedWait() { clear(); }
  PublishedWait(const PublishedWait&) = delete;
  PublishedWait& operator=(const PublishedWait&) = delete;

  // Publishes once; a waiter that finds no record waits unpublished.
  void publish(uint32_t slot, uint32_t incarnation, Mode mode, bool detects) {
    if (claimed_ || unavailable_) return;
    if (claim_reader(file_, me_, &rec_) != Code::ok) {
      unavailable_ = true;
      return;
    }
    claimed_ = true;
    publish_wait(rec_.record, slot, incarnation, mode, detects);
  }
  bool victim(WaitCycle* cycle) { return claimed_ && deadlock_victim(file_, me_, rec_.record, cycle); }
  void clear() {
    if (!claimed_) return;
    clear_wait(rec_.record);
    free_own_reader(me_, rec_);
    claimed_ = false;
  }

 private:
  TableFile& file_;
  ThreadSelf& me_;
  CachedReader rec_{};
  bool claimed_ = false;
  bool unavailable_ = false;
};

// A new exclusive owner's record from `cur`: the waiter bits it finds are
// kept (others may sleep), WAITERS is set if it slept itself.
Word128 exclusive_record(const ThreadSelf& me, const Word128& cur, bool slept) {
  return make_word(me.tid | (tid_word(cur) & kWaiters) | (slept ? kWaiters : 0),
                   me.pid | (pid_word(cur) & kSharedWaiters), me.start, generation(cur) + 1);
}

}  // namespace

// ---------------------------------------------------------------------------
// Exclusive mode.
// ---------------------------------------------------------------------------
Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline, DeathLog& log, const WaitPolicy& policy) {
  ThreadSelf& me = thread_self();
  // The clock is read only once the thread actually has to wait: on this VM a
  // CLOCK_MONOTONIC read costs more than the whole uncontended acquire.
  std::optional<WaitClock> waiting;
  auto clock = [&]() -> WaitClock& {
    if (!waiting) {
      waiting.emplace(deadline);
      waiting->schedule_walks(policy.deadlock_timeout_ns);
    }
    return *waiting;
  };
  bool slept = false;
  bool asked_readers_out = false;  // this writer set WRITER_WAITING
  PublishedWait published(file, me);  // DEADLOCKS
  // A writer that gives up withdraws WRITER_WAITING, so readers are not kept
  // out by it; a writer still waiting wakes and sets it again.
  auto withdraw_writer_waiting = [&] {
    if (!asked_readers_out) return;
    for (Word128 w = guess128(&s->owner); (pid_word(w) & kWriterWaiting) && !is_exclusive(pid_word(w));) {
      if (clear_writer_waiting(s, w)) break;
    }
  };
  int spins = 0;
  Owner noted;  // the dead holder last told to the DeathLog
  uint32_t produced = 0;  // the generation of the acquiring CAS
  auto done = [&](Code code, Owner dead = {}) {
    published.clear();
    Acquired a{code, dead, slept && waiting ? waiting->waited_ns() : 0, 0, produced, {}, {}};
    a.contended = waiting.has_value();  // the clock is made only when the thread must wait
    if (code == Code::ok || code == Code::abandoned) a.token = take_token(s);
    return a;
  };
  // Before a sleep: publish the wait; once due, look for a cycle to break.
  auto deadlocked = [&](WaitCycle* cycle) {
    published.publish(slot_index, incarnation, Mode::exclusive, policy.deadlock_timeout_ns != 0);
    return clock().walk_due() && published.victim(cycle);
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

    if (is_free(pw)) {  // with WRITER_WAITING too: writers may take it, readers may not
      Word128 desired = exclusive_record(me, cur, slept);
      robust_pending(me.robust, &s->robust_next);
      if (!cas128(&s->owner, cur, desired)) {
        robust_clear_pending(me.robust);
        continue;
      }
      after_exclusive_acquire(s, me, aux_word(cur), desired);  // cur was FREE
      produced = generation(desired);
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
          log.dead_found(slot_index, gone, Mode::exclusive, generation(cur));
          noted = gone;
        }
        Word128 desired = exclusive_record(me, cur, slept);
        robust_pending(me.robust, &s->robust_next);
        if (!cas128(&s->owner, cur, desired)) {
          robust_clear_pending(me.robust);
          continue;
        }
        after_exclusive_acquire(s, me, 0, desired);  // cur was EXCLUSIVE: no joins
        produced = generation(desired);
        crash_point("takeover:after_cas");
        set_acquired_at(s, realtime_coarse_ns());
        record_dead_owner(s, gone);
        note_abandoned(me, s);
        return done(Code::abandoned, gone);
      }
      if (clock().expired()) {
        produced = generation(cur);  // a timeout sorts after the generation it gave up at
        return done(clock().expiry());
      }
      // Wait a little before sleeping (kSpinPauses, kSpinYields above).
      if (spins == 0) {
        ++spins;
        for (int i = 0; i < kSpinPauses && guess128(&s->owner) == cur; ++i) __builtin_ia32_pause();
        continue;
      }
      if (spins <= kSpinYields) {
        ++spins;
        sched_yield();
        continue;
      }
      spins = 0;
      if (WaitCycle cycle; deadlocked(&cycle)) {
        produced = generation(cur);
        Acquired a = done(Code::deadlock);
        a.cycle = std::move(cycle);
        return a;
      }
      if (!set_flags(s, cur, kWaiters, 0)) continue;
      sleep_on(s, tid_word(cur), clock().sleep_ns());
      slept = true;
      continue;
    }

    // SHARED: wait for the readers to leave, keeping new ones out.
    if (find_shared_hold(me, s) != nullptr) return done(Code::already_held);
    clock().tick();
    if (clock().check_due(kReadersKey) && reap_dead_readers(file, s, slot_index, false, nullptr, log) > 0) continue;
    if (clock().expired()) {
      produced = generation(cur);  // a timeout sorts after the generation it gave up at
      withdraw_writer_waiting();
      return done(clock().expiry());
    }
    if (WaitCycle cycle; deadlocked(&cycle)) {
      produced = generation(cur);
      withdraw_writer_waiting();
      Acquired a = done(Code::deadlock);
      a.cycle = std::move(cycle);
      return a;
    }
    note_waiting_writer(s, me);
    if (!set_flags(s, cur, kWaiters, kWriterWaiting)) continue;
    asked_readers_out = true;
    sleep_on(s, tid_word(cur), clock().sleep_ns());
    slept = true;
  }
}

Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned, uint32_t* produced,
                       PendingWake* wake) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  Word128 cur = load128(&s->owner);
  if (!owned_by(cur, me)) return Code::not_owner;
  const bool abandoned = forget_abandoned(me, s);
  const Word128 desired = make_word(0, abandoned ? kAbandoned : 0, 0, generation(cur) + 1);
  robust_pending(me.robust, &s->robust_next);
  robust_dequeue(me.robust, &s->robust_next);
  // Only the WAITERS / SHARED_WAITERS bits can change under an owner.
  while (!cas128(&s->owner, cur, desired)) {
  }
  robust_clear_pending(me.robust);
  if (tid_word(cur) & kWaiters) *wake = PendingWake{s, cur, false};
  *left_abandoned = abandoned;
  *produced = generation(desired);
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Holding, abandonment.
// ---------------------------------------------------------------------------
bool holds(format::Slot* s, Mode mode) {
  ThreadSelf& me = thread_self();
  if (mode == Mode::shared) return find_shared_hold(me, s) != nullptr;
  return owned_by(load128(&s->owner), me);
}

bool holds_abandoned(format::Slot* s) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(me, s) != nullptr) return (pid_word(load128(&s->owner)) & kAbandoned) != 0;
  return owned_by(load128(&s->owner), me) && owes_repair(s);
}

Code mark_consistent(format::Slot* s) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(me, s) != nullptr) {
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

uint64_t held_token(format::Slot* s) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(me, s) == nullptr && !owned_by(load128(&s->owner), me)) return 0;
  return __atomic_load_n(&s->token, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------
// Recovery.
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
    log.dead_found(slot_index, gone, Mode::exclusive, generation(cur));
    if (!cas128(&s->owner, cur, make_word(0, kAbandoned, 0, generation(cur) + 1))) continue;
    record_dead_owner(s, gone);
    freed->push_back({slot_index, Mode::exclusive, gone});
    if (tid_word(cur) & kWaiters) futex_wake(&s->owner.tid_word, INT_MAX);
    return;
  }
}

}  // namespace locktable::detail
