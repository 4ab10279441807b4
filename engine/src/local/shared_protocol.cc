// The shared-mode protocol (SHARED MODE and WRITER PREFERENCE in
// lock_protocol.cc): a reader's join and leave, and the downgrade of an
// exclusive hold (DOWNGRADE).
#include "lock_protocol.h"

#include <algorithm>
#include <optional>

#include "clock.h"
#include "crash_point.h"
#include "reader_records.h"
#include "slot_state.h"
#include "thread_holds.h"
#include "wait_clock.h"
#include "waiting.h"

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


// ---------------------------------------------------------------------------
// Shared mode.
// ---------------------------------------------------------------------------
Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline, DeathLog& log, const WaitPolicy& policy) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(me, s) != nullptr) return Acquired{Code::already_held, {}, 0, 0, 0, {}, {}};

  CachedReader rec;
  if (Code c = claim_reader(file, me, &rec); c != Code::ok) return Acquired{c, {}, 0, 0, 0, {}, {}};
  format::ReaderRecord* r = rec.record;
  __atomic_store_n(&r->incarnation, incarnation, __ATOMIC_RELAXED);

  std::optional<WaitClock> waiting;  // read the clock only once the thread has to wait
  auto clock_now = [&]() -> WaitClock& {
    if (!waiting) {
      waiting.emplace(deadline);
      waiting->schedule_walks(policy.deadlock_timeout_ns);
    }
    return *waiting;
  };
  bool published = false;  // this thread's wait is in r (DEADLOCKS)
  bool slept = false;
  Owner noted;        // the dead holder last told to the DeathLog
  Word128 stale{0, 0};  // FREE|WRITER_WAITING as first seen unchanged, and since when
  uint64_t stale_since = 0;
  auto waited = [&]() -> uint64_t { return slept && waiting ? waiting->waited_ns() : 0; };
  auto op = [&](ReaderState st) { return format::make_reader_op(slot_index, st, rec.claim); };
  Word128 last_seen{0, 0};  // for a timeout: the record it gave up at
  auto fail = [&](Code code) {
    if (published) clear_wait(r);
    free_own_reader(me, rec);
    Acquired a{code, {}, waited(), 0, generation(last_seen), {}, {}};
    a.contended = waiting.has_value();
    return a;
  };
  // Before a sleep: publish the wait; once due, look for a cycle to break.
  auto deadlocked = [&](WaitCycle* cycle) {
    if (!published) {
      publish_wait(r, slot_index, incarnation, Mode::shared, policy.deadlock_timeout_ns != 0);
      published = true;
    }
    return clock_now().walk_due() && deadlock_victim(file, me, r, cycle);
  };
  auto broken = [&](WaitCycle&& cycle) {
    Acquired a = fail(Code::deadlock);
    a.cycle = std::move(cycle);
    return a;
  };
  uint32_t produced = 0;  // the generation of the joining CAS
  auto joined = [&](Code code, Owner dead) {
    if (published) clear_wait(r);
    __atomic_store_n(&r->acquired_at, realtime_coarse_ns(), __ATOMIC_RELAXED);
    add_shared_hold(me, SharedHold{s, r, rec.index, rec.claim});
    Acquired a{code, dead, waited(), __atomic_load_n(&s->token, __ATOMIC_RELAXED), produced, {}, {}};
    a.contended = waiting.has_value();
    return a;
  };
  // One join from `cur` (SHARED MODE, steps 1-3). False when the CAS failed
  // (cur is then the current value).
  auto try_join = [&](Word128& cur, Code* code) {
    const uint32_t pw = pid_word(cur);
    const uint32_t count = is_shared(pw) ? (pw & kPidMask) : 0;
    if (count + 1 > kPidMask) {
      *code = Code::capacity;
      return true;
    }
    store_op(r, op(ReaderState::joining));
    crash_point("join:after_intent");
    const uint32_t flags = pw & (kAbandoned | kSharedWaiters);
    // cur is FREE or SHARED: its aux counts the joins, one more now.
    const Word128 desired = make_word(tid_word(cur) & kWaiters, kSharedMode | flags | (count + 1), aux_word(cur) + 1,
                                      generation(cur) + 1);
    if (!cas128(&s->owner, cur, desired)) {
      store_op(r, op(ReaderState::idle));
      return false;
    }
    produced = generation(desired);
    crash_point("join:after_cas");
    after_shared_join(s, desired);
    store_op(r, op(ReaderState::in));
    *code = (pw & kAbandoned) ? Code::abandoned : Code::ok;
    return true;
  };

  for (;;) {
    Word128 cur = guess128(&s->owner);  // validated by every CAS / futex wait below
    last_seen = cur;
    if (load_incarnation(s) != incarnation) return fail(Code::stale_handle);
    const uint32_t tw = tid_word(cur);
    const uint32_t pw = pid_word(cur);
    if (pw & kRetired) return fail(Code::stale_handle);

    if (!is_exclusive(pw) && !(pw & kWriterWaiting)) {  // FREE or SHARED, no writer waiting
      Code code = Code::ok;
      if (!try_join(cur, &code)) continue;
      if (code == Code::capacity) return fail(code);
      return joined(code, code == Code::abandoned ? last_dead_owner(s) : Owner{});
    }

    if (is_exclusive(pw)) {
      if (owned_by(cur, me)) return fail(Code::already_held);
      bool dead = (tw & kOwnerDied) != 0;
      clock_now().tick();
      if (!dead && clock_now().check_due(holder_key(cur))) dead = holder_dead(s, cur);
      if (dead) {
        Owner gone = exclusive_owner(s, cur);
        if (!(gone == noted)) {
          log.dead_found(slot_index, gone, Mode::exclusive, generation(cur));
          noted = gone;
        }
        store_op(r, op(ReaderState::joining));
        // The dead writer's record counts no joins: this one is the first.
        Word128 desired = make_word(tw & kWaiters, kSharedMode | kAbandoned | (pw & kSharedWaiters) | 1, 1,
                                    generation(cur) + 1);
        if (!cas128(&s->owner, cur, desired)) {
          store_op(r, op(ReaderState::idle));
          continue;
        }
        store_op(r, op(ReaderState::in));
        produced = generation(desired);
        record_dead_owner(s, gone);
        Acquired a = joined(Code::abandoned, gone);
        if (pw & kSharedWaiters) a.wake = PendingWake{s, cur, true};  // other readers may join now
        return a;
      }
      if (clock_now().expired()) return fail(clock_now().expiry());
      if (WaitCycle cycle; deadlocked(&cycle)) return broken(std::move(cycle));
      if (!set_flags(s, cur, kWaiters, kSharedWaiters)) continue;
      sleep_on(s, tid_word(cur), clock_now().sleep_ns());
      slept = true;
      continue;
    }

    // A writer waits: stay out until it has had the lock. A FREE lock left
    // with the flag for long by a writer that is gone is cleared.
    clock_now().tick();
    if (is_free(pw)) {
      if (!(stale == cur)) {
        stale = cur;
        stale_since = monotonic_ns();
      } else if (monotonic_ns() - stale_since >= kStaleWriterNs) {
        if (waiting_writer_dead(s)) {
          (void)clear_writer_waiting(s, cur);
          continue;
        }
        stale_since = monotonic_ns();
      }
    }
    if (clock_now().expired()) return fail(clock_now().expiry());
    if (WaitCycle cycle; deadlocked(&cycle)) return broken(std::move(cycle));
    if (!set_flags(s, cur, kWaiters, kSharedWaiters)) continue;
    sleep_on(s, tid_word(cur), std::min<int64_t>(clock_now().sleep_ns(), int64_t(kStaleWriterNs)));
    slept = true;
  }
}

Code release_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                    bool* left_abandoned, uint64_t* acquired_at, uint32_t* produced, PendingWake* wake) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  SharedHold* hold = find_shared_hold(me, s);
  if (hold == nullptr) return Code::not_owner;
  const SharedHold h = *hold;
  format::ReaderRecord* r = h.record;
  *acquired_at = __atomic_load_n(&r->acquired_at, __ATOMIC_RELAXED);
  store_op(r, format::make_reader_op(slot_index, ReaderState::leaving, h.claim));
  crash_point("leave:after_intent");
  Word128 cur = guess128(&s->owner);  // a guess: the CAS below validates it
  uint32_t count = 0;
  for (;;) {
    const uint32_t pw = pid_word(cur);
    count = is_shared(pw) ? pw & kPidMask : 0;
    if (count == 0) {
      cur = load128(&s->owner);  // a torn guess?
      if (!is_shared(pid_word(cur)) || (pid_word(cur) & kPidMask) == 0) break;  // never: a live reader stays counted
      continue;
    }
    // The last reader keeps WRITER_WAITING (WRITER PREFERENCE) and ABANDONED.
    const Word128 desired = count == 1 ? make_word(0, pw & (kAbandoned | kWriterWaiting), aux_word(cur), generation(cur) + 1)
                                       : make_word(tid_word(cur), pw - 1, aux_word(cur), generation(cur) + 1);
    if (cas128(&s->owner, cur, desired)) {
      crash_point("leave:after_cas");
      *left_abandoned = (pw & kAbandoned) != 0;
      *produced = generation(desired);
      break;
    }
  }
  store_op(r, format::make_reader_op(slot_index, ReaderState::idle, h.claim));
  remove_shared_hold(me, hold);
  crash_point("leave:before_free");
  free_own_reader(me, CachedReader{file.id(), r, h.record_index, h.claim});
  if (count == 1 && (tid_word(cur) & kWaiters)) *wake = PendingWake{s, cur, false};
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Downgrade.
// ---------------------------------------------------------------------------
Code downgrade_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                         uint32_t* produced, PendingWake* wake) {
  ThreadSelf& me = thread_self();
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  Word128 cur = load128(&s->owner);
  if (!owned_by(cur, me)) return Code::not_owner;
  CachedReader rec;
  if (Code c = claim_reader(file, me, &rec); c != Code::ok) return c;
  format::ReaderRecord* r = rec.record;
  __atomic_store_n(&r->incarnation, incarnation, __ATOMIC_RELAXED);
  __atomic_store_n(&r->acquired_at, __atomic_load_n(&s->acquired_at, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
  const bool abandoned = forget_abandoned(me, s);
  store_op(r, format::make_reader_op(slot_index, ReaderState::joining, rec.claim));
  crash_point("downgrade:after_intent");
  robust_pending(me.robust, &s->robust_next);
  robust_dequeue(me.robust, &s->robust_next);
  // Only the waiter bits can change under an owner: the CAS keeps them.
  Word128 desired;
  do {
    desired = make_word(tid_word(cur) & kWaiters,
                        kSharedMode | (abandoned ? kAbandoned : 0) | (pid_word(cur) & kSharedWaiters) | 1, 0,
                        generation(cur) + 1);
  } while (!cas128(&s->owner, cur, desired));
  robust_clear_pending(me.robust);
  crash_point("downgrade:after_cas");
  store_op(r, format::make_reader_op(slot_index, ReaderState::in, rec.claim));
  remember_value(me, s, desired);
  add_shared_hold(me, SharedHold{s, r, rec.index, rec.claim});
  *produced = generation(desired);
  // Readers asleep may join now; a writer asleep wakes and waits again.
  if (tid_word(cur) & kWaiters) *wake = PendingWake{s, cur, true};
  return Code::ok;
}

}  // namespace locktable::detail
