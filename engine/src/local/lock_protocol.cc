// THE LOCKTABLE LOCK PROTOCOL
// ===========================
//
// This file implements what happens to one slot of the mapped table file when
// threads of any number of processes acquire and release it, die holding it,
// and when names are removed and slots reused. Two words of the slot's first
// cache line carry it:
//
//   The OwnerRecord (16 bytes at the start of the slot) says which thread
//   holds the lock exclusively. It is read with a 16-byte atomic load and
//   changed only with `lock cmpxchg16b` from a value just read to a new one:
//   the owner, its flags and the generation change together or not at all.
//
//   The readers word (Slot::readers, 8 bytes) counts the threads that hold
//   the lock shared, and the shared holds that ended. Readers change it with
//   `lock xadd`, which cannot fail (a CAS fails whenever another reader got
//   there first); only a recount of dead readers CASes it.
//
// The one exception is the kernel: when a thread dies with the slot on its
// robust list (robust_list.h), the kernel rewrites tid_word in place to
// OWNER_DIED|(WAITERS) and wakes one waiter. Our CAS then simply fails and the
// new value is seen.
//
// STATES (table_format.h has the bit layouts)
//
//   owner FREE       pid bits 0. Flags: ABANDONED (the next acquirer is told
//                    the data may be half-written), RETIRED (the name was
//                    removed).
//   owner EXCLUSIVE  pid, tid, start time of the owning thread, generation.
//                    The owner is IN once the readers word counts nobody;
//                    until then it is DRAINING: readers already in finish,
//                    new ones stay out.
//   readers count n  threads counted in: holding shared, or in the middle of
//                    a join or a backout. The lock is held shared while a
//                    counted reader is in (its reader record says IN).
//
// The generation changes on every change of exclusive ownership (acquire,
// release, takeover, recovery, downgrade, removal). Setting flags does not
// change it. A CAS from a value that named a dead owner can therefore only
// succeed once: exactly one contender takes a dead holder's lock over.
//
//   FREE ----acquire----> EXCLUSIVE ----release-----> FREE
//     |                      |  owner dead (kernel bit or /proc check)
//     |                      +----takeover (one CAS)--> EXCLUSIVE (new owner, told "abandoned")
//     |                      +----recover------------> FREE|ABANDONED
//     +----remove---> FREE|RETIRED ----new name (incarnation+1)----> FREE
//   readers: n --join (add)--> n+1 --leave (add)--> n;  n --recount--> live readers
//
// WHO WRITES WHAT
//
//   owner record        the CAS above, by whoever makes the transition; the
//                       kernel (tid_word only) when an owner dies
//   readers word        readers (xadd) as they join, back out and leave; a
//                       recount (CAS) taking dead readers out
//   robust_prev/next    only the owning thread (its robust list links)
//   owner_shadow        the exclusive owner, right after its CAS: its tid and
//                       the low bits of its generation, so the dead owner can
//                       still be named after the kernel has cleared tid_word
//   token               the exclusive owner once it is in: +1 (it is the only
//                       writer while it holds; see TOKENS)
//   acquired_at         the exclusive owner, once it is in (informational)
//   dead_pid/dead_tid/  whoever frees or takes over a dead holder, after its
//   dead_start          CAS (informational: the "abandoned" report's subject)
//   reader record       its owner thread: op, acquired_at, claimer_tid; a
//                       cleaner only frees a dead one (a CAS on its ident)
//   waiters             sleepers, around their futex wait (informational)
//   incarnation         the name map, inside its LMDB write transaction
//
// ACQUIRE (exclusive). Read the record; if FREE with no flags, CAS it to
// (me, generation+1). Before the CAS the thread names the slot in its robust
// list's list_op_pending, after it links the slot into the list: if the thread
// dies between the CAS and the link, the kernel still finds the slot through
// list_op_pending and marks it. Then it reads the readers word: a count of 0
// means it is in. Otherwise it DRAINS (see SHARED MODE). A thread already
// holding the slot gets already_held; there is no recursion count (seed 001
// shows what silent recursion plus ignored abandonment does).
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
// Code::interrupted, having withdrawn its published wait (and a draining
// owner its hold).
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
// (generation included): a writer to itself, a reader to FREE|ABANDONED (then
// joins). One contender wins, and the next holder is told "abandoned", with
// the dead owner's pid/tid/start. A live holder is never taken over: liveness
// says "dead" only when the thread is gone or is another thread, and a record
// that changed since it was judged fails the CAS. An owner that died while
// DRAINING never got in: its lock is freed, abandoned only if it was already
// (the record kept ABANDONED while it drained).
//
// ABANDONMENT IS NEVER SWALLOWED. The thread that got a lock abandoned owes a
// repair. Until it calls mark_consistent(), its release leaves the lock
// FREE|ABANDONED, and the next acquirer is told "abandoned" again (as POSIX
// robust mutexes do with EOWNERDEAD, without ever making the lock unusable).
// The debt is tracked per thread (the holder is the only one who knows it
// made the repair), so no stale write to the slot can create or cancel it.
// Readers that join FREE|ABANDONED are told so; one of them that marks it
// consistent clears the flag.
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
// acquisition. The new exclusive owner adds 1 once it is in (no reader
// counted), while no one else can write it, and returns the new value. A
// holder that dies before that store never learned a token; the next one adds
// 1 to the same value. A name gets a token floor when it is created (and
// every slot one when the table is reset after a reboot), above every token
// the slot or the table ever gave (slot_lifecycle.h), so a token never goes
// back. A shared holder gets the token of the exclusive epoch it reads in:
// greater than every earlier writer's, smaller than every later one's.
//
// SHARED MODE. Each reader owns a ReaderRecord (identity + robust list node,
// so the kernel marks it on death) that names the slot it joins, and counts
// itself in the readers word. Count and record are two places, and a process
// can die between changing one and the other, so every step is ordered,
// each reader writing only its own record:
//   join:    1. op = (slot, JOINING, claim);  2. xadd readers +1;
//            3. read the owner record (and the incarnation):
//               FREE and not RETIRED: 4. op = (slot, IN): it is in;
//               otherwise it backs out: 4'. xadd readers (count -1,
//               backouts +1), op = idle, and waits (or fails: stale_handle).
//   leave:   1. op = (slot, LEAVING);  2. xadd readers (count -1, ended +1);
//            3. if it left the count at 0 and the owner is DRAINING, wake
//               it (futex on the readers word);  4. op = idle.
// A writer and a joiner each make a locked change and then read the other's
// word (Dekker): either the writer sees the reader counted and drains, or the
// reader sees the writer and backs out, or both; never neither. A DRAINING
// owner waits for the count to reach 0: it spins, then sets DRAINING and
// sleeps on the readers word; the leave that empties the count wakes it.
// New readers back out while an owner drains, so it is never starved, and a
// waiting writer that wins the CAS keeps readers out from then on.
// `claim` is the generation of the record's own identity at its claim, so an
// op left in a record by an earlier claim is recognised as meaningless.
// No reader reads another reader's record on the way in or out: the only line
// readers share is the slot's.
//
// RECOUNT. A dead reader is taken out by a recount of the slot (a draining
// owner does it at its liveness checks; `recover` for every slot a dead
// reader names). It reads the owner's generation and the readers word, reads
// every record that names the slot, and reads both again:
//   - if a live reader is JOINING or LEAVING, its add may or may not have
//     happened: wait (it finishes within nanoseconds) and start again;
//   - if either word changed in between, a join, backout or leave completed
//     during the scan: start again (every change of the readers word changes
//     its value: a join raises the count, a leave `ended`, a backout
//     `backouts`; none goes back within a scan);
//   - otherwise every live reader the word counts was IN, because a counted
//     reader's op says JOINING, IN or LEAVING from before its join add to
//     after its leave add, and a reader that joined or left during the scan
//     would have changed the word. The live count is exact.
// The recount CASes the readers word from the value it read twice to (count =
// live readers, ended + the dead ones), and only then frees the dead readers'
// records. A dead reader may have been in if it was IN, or when the count
// exceeded the live readers: then the next exclusive holder is told
// abandoned (a draining owner is told so itself; `recover` sets ABANDONED on
// the FREE owner record first). A live reader's add that raced the recount
// makes its CAS fail; it starts again. A recount that dies after its CAS
// leaves dead records naming the slot behind; the next recount finds the
// count already right and frees them. Dead readers the kernel did not report
// are found by the liveness check, like dead writers. A SIGSTOPped reader in
// the middle of a join or leave keeps a recount waiting until it runs again.
//
// READER RECORD CACHE. A thread keeps up to 4 idle reader records claimed
// (and on its robust list) for its next shared acquires, keyed by TableFile
// id, which is never reused. A record of a thread that died idle is marked by
// the kernel and may be claimed by anyone. The thread that closes a table
// frees its own cached records; other threads' keep the mapping alive
// (LocalTable keeps it until the process exits) and are never touched again.
// The pool and the recount are in reader_records.cc.
//
// COUNTING. A lock's exclusive acquisitions are its token's distance from
// token_base; its shared ones are the readers word's `ended` (a leave, and a
// dead reader's removal, end a hold), plus shared_carry for its wraps, minus
// shared_base: a shared hold counts when it ends, so a join that backs out
// counts nothing, and the counts only grow. A downgraded hold is one exclusive
// acquisition and, once it ends, one shared hold.
//
// TAKEOVER IN HISTORY. Whoever is about to take a dead holder out (exclusive
// takeover, a reader freeing a dead writer, a recount, recovery) tells the
// DeathLog first, then CASes. The event is in the ring even if the taker dies
// right after its CAS; repeats are dropped by the drainer.
//
// ORDER IN HISTORY. Each event carries its place in its lock's order: the
// owner generation of the exclusive epoch it belongs to and the readers
// word's `ended` at the event (history_store.cc sorts by them, then puts a
// join after the leave whose `ended` it saw, and joins between the same two
// leaves by the count they added to). A join belongs to the FREE record it
// joined under; a leave to the last FREE one (one generation before a
// DRAINING owner's); an exclusive change to the generation its CAS produced.
//
// DEADLOCKS. A waiter that is about to sleep (it has spun and yielded)
// publishes what it waits for in a reader record of its own (the shared
// waiter's joining record; an exclusive waiter or draining owner claims one):
// slot, mode, incarnation, start time and a per-thread serial, in waits_for.
// It clears the word when its acquire ends, however it ends. Once it has
// waited Options::deadlock_timeout, and every kWalkIntervalNs after, it walks
// the waits-for graph (wait_graph.h): if it closes a cycle, confirmed by a
// second read over unchanged owner records and readers words, and it is the
// cycle's victim (the last to begin waiting among the members that detect),
// it gives up with `deadlock` (a draining owner lets go of its hold, as on a
// timeout). The other members see the same cycle and the same victim, and go
// on waiting: exactly one member of a cycle is told, and the others acquire
// once it releases what it holds. Nothing of this is on the uncontended
// paths; a waiter that is not in a cycle pays one walk per interval after the
// timeout.
//
// DOWNGRADE. An exclusive owner (in) turns its hold into a shared one: it
// claims a reader record, marks it joining for the slot, counts itself in
// the readers word, marks the record in, takes the slot off its robust list (pending set, as a release
// does), and CASes EXCLUSIVE(me) -> FREE (ABANDONED set if it owed a repair),
// then wakes every sleeper. It was counted as a reader before the owner
// record became FREE, so no writer gets in between; a death before the CAS
// leaves an exclusive hold the kernel marks and a dead reader a recount takes
// out, a death after it a dead reader. The token stays: the shared holders
// read in the epoch the exclusive hold began.
//
// NAMES. A handle caches (slot, incarnation). Acquire reads the record, then
// the incarnation, then CASes; a join reads the incarnation after its add.
// Removal CASes FREE -> FREE|RETIRED and then reads the readers word: a
// reader counted in makes it undo the CAS (busy), and a joiner that reads
// RETIRED backs out (Dekker again). Reuse for a new name first bumps the
// incarnation, then CASes RETIRED away. A handle that read the record before
// the removal fails its CAS; one that reads it after the reuse sees the new
// incarnation. A stale handle can never lock a stranger's slot. A removal
// that died before its LMDB commit leaves RETIRED on a slot whose name still
// exists; the next writer of the name map clears it.
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
using format::kDraining;
using format::kOwnerDied;
using format::kPidMask;
using format::kRetired;
using format::kSharedWaiters;
using format::kTidMask;
using format::kWaiters;
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
// yields only: 0.6-1.2x / 0.5-2x; this: 0.8x / 0.85x. A draining owner waits
// for the readers the same way, on the readers word.
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

// Whether the takeover of a dead exclusive owner's record `cur` abandons
// anything: an owner that died DRAINING never got in, so only if it had kept
// ABANDONED (it took the lock abandoned).
bool takeover_abandons(uint32_t cur_pid_word) {
  return !(cur_pid_word & kDraining) || (cur_pid_word & kAbandoned);
}

// Sets or clears owner flags `bits` on a record this thread owns: only the
// waiter bits change under it, so the CAS loop ends. Returns the new record.
Word128 change_own_flags(format::Slot* s, uint32_t set, uint32_t clear) {
  Word128 cur = guess128(&s->owner);
  for (;;) {
    const Word128 desired{(cur.lo | (uint64_t{set} << 32)) & ~(uint64_t{clear} << 32), cur.hi};
    if (desired == cur || cas128(&s->owner, cur, desired)) return desired;
  }
}

// Lets go of an exclusive hold this thread took but will not keep (a
// draining owner that times out, is the deadlock victim, or is a reader of
// the lock itself): as a release, FREE (ABANDONED kept for the next holder
// when it took the lock abandoned), and the sleepers woken. Returns the
// generation its CAS produced.
uint32_t let_go(format::Slot* s, ThreadSelf& me, bool abandoned) {
  robust_pending(me.robust, &s->robust_next);
  robust_dequeue(me.robust, &s->robust_next);
  Word128 cur = guess128(&s->owner);
  Word128 desired;
  do {
    desired = make_word(0, abandoned ? kAbandoned : 0, 0, generation(cur) + 1);
  } while (!cas128(&s->owner, cur, desired));
  robust_clear_pending(me.robust);
  remember_value(me, s, desired);
  if (tid_word(cur) & kWaiters) wake_waiters(s, cur);
  return generation(desired);
}

// An exclusive acquire that has to wait: its clock (made only once it does:
// on this VM a clock read costs more than the whole uncontended acquire),
// its published wait, and how it ends.
class ExclusiveWait {
 public:
  ExclusiveWait(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation, const Deadline& deadline,
                DeathLog& log, const WaitPolicy& policy)
      : file_(file), s_(s), slot_index_(slot_index), incarnation_(incarnation), deadline_(deadline), log_(log),
        policy_(policy), me_(thread_self()), published_(file, me_) {}

  // The waiting loop for the owner record: until this thread holds it
  // (then it drains), gives up, or finds it may not wait.
  Acquired acquire();
  // Holding the lock (its CAS wrote `mine`), until no reader is counted in.
  // `abandoned`, `dead`: it took the lock abandoned, from `dead`.
  Acquired drain(Word128 mine, bool abandoned, Owner dead);

 private:
  WaitClock& clock() {
    if (!waiting_) {
      waiting_.emplace(deadline_);
      waiting_->schedule_walks(policy_.deadlock_timeout_ns);
    }
    return *waiting_;
  }
  // Before a sleep: publish the wait; once due, look for a cycle to break.
  bool deadlocked(WaitCycle* cycle) {
    published_.publish(slot_index_, incarnation_, Mode::exclusive, policy_.deadlock_timeout_ns != 0);
    return clock().walk_due() && published_.victim(cycle);
  }
  // `generation`, `ended`: the place its own CAS made, or (saw_only) the one
  // it gave up at.
  Acquired done(Code code, uint32_t generation, uint32_t ended, Owner dead = {}, bool saw_only = false) {
    published_.clear();
    return Acquired{.code = code,
                    .dead_owner = dead,
                    .wait_ns = slept_ && waiting_ ? waiting_->waited_ns() : 0,
                    .generation = generation,
                    .ended = ended,
                    .saw_only = saw_only,
                    .contended = waiting_.has_value()};  // the clock is made only when the thread must wait
  }
  // Spins, then yields, before a sleep (kSpinPauses, kSpinYields): false
  // when it is time to sleep. `changed` says whether what it waits for changed.
  template <class Changed>
  bool spin(Changed changed) {
    if (spins_ == 0) {
      ++spins_;
      for (int i = 0; i < kSpinPauses && !changed(); ++i) __builtin_ia32_pause();
      return true;
    }
    if (spins_ <= kSpinYields) {
      ++spins_;
      sched_yield();
      return true;
    }
    spins_ = 0;
    return false;
  }

  TableFile& file_;
  format::Slot* s_;
  const uint32_t slot_index_, incarnation_;
  const Deadline& deadline_;
  DeathLog& log_;
  const WaitPolicy& policy_;
  ThreadSelf& me_;
  std::optional<WaitClock> waiting_;
  PublishedWait published_;  // DEADLOCKS
  bool slept_ = false;
  int spins_ = 0;
};

Acquired ExclusiveWait::acquire() {
  format::Slot* s = s_;
  // A reader of the lock cannot become its writer (no upgrade, no deadlock with itself).
  if (find_shared_hold(me_, s) != nullptr) return done(Code::already_held, 0, 0);
  Owner noted;  // the dead holder last told to the DeathLog
  // `cur` is a two-load guess, never trusted alone: every action below is
  // validated by a CAS on the exact value, or by FUTEX_WAIT on the exact word.
  // (A 16-byte atomic load is a locked write: it would fight for the line.)
  for (;;) {
    Word128 cur = guess128(&s->owner);
    if (load_incarnation(s) != incarnation_) return done(Code::stale_handle, generation(cur), 0);
    const uint32_t tw = tid_word(cur);
    const uint32_t pw = pid_word(cur);
    if (pw & kRetired) return done(Code::stale_handle, generation(cur), 0);

    if (is_free(pw)) {  // readers may be in: the new owner drains them
      Word128 desired = exclusive_record(me_, cur, slept_);
      robust_pending(me_.robust, &s->robust_next);
      if (!cas128(&s->owner, cur, desired)) {
        robust_clear_pending(me_.robust);
        continue;
      }
      after_exclusive_acquire(s, me_, desired);
      remember_value(me_, s, desired);
      const bool abandoned = (pw & kAbandoned) != 0;
      return drain(desired, abandoned, abandoned ? last_dead_owner(s) : Owner{});
    }

    if (owned_by(cur, me_)) return done(Code::already_held, generation(cur), 0);
    bool dead = (tw & kOwnerDied) != 0;
    clock().tick();
    if (!dead && clock().check_due(holder_key(cur))) dead = holder_dead(s, cur);
    if (dead) {
      Owner gone = exclusive_owner(s, cur);
      const bool abandons = takeover_abandons(pw);
      if (abandons && !(gone == noted)) {
        log_.dead_found(slot_index_, gone, Mode::exclusive, generation(cur), format::readers_ended(load_readers(s)));
        noted = gone;
      }
      Word128 desired = exclusive_record(me_, cur, slept_);
      robust_pending(me_.robust, &s->robust_next);
      if (!cas128(&s->owner, cur, desired)) {
        robust_clear_pending(me_.robust);
        continue;
      }
      after_exclusive_acquire(s, me_, desired);
      remember_value(me_, s, desired);
      crash_point("takeover:after_cas");
      if (!abandons) return drain(desired, false, {});  // it never got in
      record_dead_owner(s, gone);
      return drain(desired, true, gone);
    }
    if (clock().expired()) {
      // A timeout sorts after the place it gave up at.
      return done(clock().expiry(), generation(cur), format::readers_ended(load_readers(s)), {}, true);
    }
    if (spin([&] { return !(guess128(&s->owner) == cur); })) continue;
    if (WaitCycle cycle; deadlocked(&cycle)) {
      Acquired a = done(Code::deadlock, generation(cur), format::readers_ended(load_readers(s)), {}, true);
      a.cycle = std::move(cycle);
      return a;
    }
    if (!set_flags(s, cur, kWaiters, 0)) continue;
    sleep_on(s, tid_word(cur), clock().sleep_ns());
    slept_ = true;
  }
}

Acquired ExclusiveWait::drain(Word128 mine, bool abandoned, Owner dead) {
  format::Slot* s = s_;
  bool draining = false;  // this owner has set DRAINING
  for (;;) {
    const uint64_t readers = load_readers(s);
    if (format::reader_count(readers) == 0) {  // in
      if (draining) change_own_flags(s, 0, kDraining | kAbandoned);
      if (abandoned) note_abandoned(me_, s);
      Acquired a = done(abandoned ? Code::abandoned : Code::ok, generation(mine), format::readers_ended(readers), dead);
      a.token = take_token(s);
      set_acquired_at(s, realtime_coarse_ns());
      return a;
    }
    // Readers are counted in. This thread may be one of them (the uncontended
    // path took the lock before it could tell).
    if (find_shared_hold(me_, s) != nullptr) {
      return done(Code::already_held, let_go(s, me_, abandoned), format::readers_ended(readers));
    }
    clock().tick();
    if (clock().check_due(kReadersKey)) {
      const Reaped r = reap_dead_readers(file_, s, slot_index_, false, true, nullptr, log_);
      if (r.counted_in && !abandoned) {
        abandoned = true;
        dead = r.first;
        if (draining) change_own_flags(s, kAbandoned, 0);  // its own death would abandon it too now
      }
      if (r.dead > 0) continue;
    }
    if (clock().expired()) {
      const uint32_t gen = let_go(s, me_, abandoned);
      return done(clock().expiry(), gen, format::readers_ended(load_readers(s)));
    }
    if (spin([&] { return load_readers(s) != readers; })) continue;
    if (WaitCycle cycle; deadlocked(&cycle)) {
      const uint32_t gen = let_go(s, me_, abandoned);
      Acquired a = done(Code::deadlock, gen, format::readers_ended(load_readers(s)));
      a.cycle = std::move(cycle);
      return a;
    }
    if (!draining) {
      // DRAINING before the sleep, then the count read again (Dekker with the
      // leave that empties it: it reads the owner record after its add).
      change_own_flags(s, kDraining | (abandoned ? kAbandoned : 0), 0);
      draining = true;
      continue;
    }
    futex_wait(readers_futex(s), uint32_t(readers), clock().sleep_ns());
    slept_ = true;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Exclusive mode.
// ---------------------------------------------------------------------------
Acquired acquire_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                           const Deadline& deadline, DeathLog& log, const WaitPolicy& policy) {
  return ExclusiveWait(file, s, slot_index, incarnation, deadline, log, policy).acquire();
}

Acquired drain_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                         const Deadline& deadline, DeathLog& log, const WaitPolicy& policy, const Word128& mine) {
  return ExclusiveWait(file, s, slot_index, incarnation, deadline, log, policy).drain(mine, false, {});
}

Code release_exclusive(format::Slot* s, uint32_t incarnation, bool* left_abandoned, uint32_t* produced,
                       uint32_t* ended, PendingWake* wake) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  Word128 cur = load128(&s->owner);
  if (!owned_by(cur, me)) return Code::not_owner;
  const bool abandoned = forget_abandoned(me, s);
  const Word128 desired = make_word(0, abandoned ? kAbandoned : 0, 0, generation(cur) + 1);
  *ended = format::readers_ended(load_readers(s));  // no reader joins while it holds
  robust_pending(me.robust, &s->robust_next);
  robust_dequeue(me.robust, &s->robust_next);
  // Only the WAITERS / SHARED_WAITERS bits can change under an owner.
  while (!cas128(&s->owner, cur, desired)) {
  }
  robust_clear_pending(me.robust);
  remember_value(me, s, desired);
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
    while (is_free(pid_word(cur)) && (pid_word(cur) & kAbandoned)) {
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
    const bool abandons = takeover_abandons(pid_word(cur));
    if (dry_run) {
      freed->push_back({slot_index, Mode::exclusive, gone});
      return;
    }
    if (abandons) log.dead_found(slot_index, gone, Mode::exclusive, generation(cur), format::readers_ended(load_readers(s)));
    const uint32_t flags = (pid_word(cur) & kSharedWaiters) | (abandons ? kAbandoned : 0);
    if (!cas128(&s->owner, cur, make_word(tid_word(cur) & kWaiters, flags, 0, generation(cur) + 1))) continue;
    if (abandons) record_dead_owner(s, gone);
    freed->push_back({slot_index, Mode::exclusive, gone});
    if (tid_word(cur) & kWaiters) futex_wake(&s->owner.tid_word, INT_MAX);
    return;
  }
}

}  // namespace locktable::detail
