// The shared-mode protocol (SHARED MODE in lock_protocol.cc): a reader's join
// and leave, and the downgrade of an exclusive hold (DOWNGRADE).
#include "lock_protocol.h"

#include <climits>
#include <optional>

#include "clock.h"
#include "crash_point.h"
#include "futex.h"
#include "reader_records.h"
#include "slot_state.h"
#include "thread_holds.h"
#include "wait_clock.h"
#include "waiting.h"

namespace locktable::detail {

using format::kAbandoned;
using format::kDraining;
using format::kOwnerDied;
using format::kRetired;
using format::kSharedWaiters;
using format::kWaiters;
using format::ReaderState;

// ---------------------------------------------------------------------------
// Shared mode.
// ---------------------------------------------------------------------------
Acquired acquire_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                        const Deadline& deadline, DeathLog& log, const WaitPolicy& policy) {
  ThreadSelf& me = thread_self();
  if (find_shared_hold(me, s) != nullptr) return Acquired{.code = Code::already_held};

  CachedReader rec;
  if (Code c = claim_reader(file, me, &rec); c != Code::ok) return Acquired{.code = c};
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
  Owner noted;  // the dead holder last told to the DeathLog
  auto waited = [&]() -> uint64_t { return slept && waiting ? waiting->waited_ns() : 0; };
  auto op = [&](ReaderState st) { return format::make_reader_op(slot_index, st, rec.claim); };
  // A wait given up: its event sorts after the place it saw (the owner record `seen`).
  auto fail = [&](Code code, const Word128& seen = Word128{0, 0}) {
    if (published) clear_wait(r);
    free_own_reader(me, rec);
    return Acquired{.code = code,
                    .wait_ns = waited(),
                    .generation = generation(seen),
                    .ended = format::readers_ended(load_readers(s)),
                    .saw_only = true,
                    .contended = waiting.has_value()};
  };
  // Before a sleep: publish the wait; once due, look for a cycle to break.
  auto deadlocked = [&](WaitCycle* cycle) {
    if (!published) {
      publish_wait(r, slot_index, incarnation, Mode::shared, policy.deadlock_timeout_ns != 0);
      published = true;
    }
    return clock_now().walk_due() && deadlock_victim(file, me, r, cycle);
  };

  for (;;) {
    Word128 cur = guess128(&s->owner);  // validated by the add and the read after it, or by a CAS
    if (load_incarnation(s) != incarnation) return fail(Code::stale_handle, cur);
    const uint32_t pw = pid_word(cur);
    if (pw & kRetired) return fail(Code::stale_handle, cur);

    if (is_free(pw)) {
      // SHARED MODE, join: counted in first, then a look at the owner.
      store_op(r, op(ReaderState::joining));
      crash_point("join:after_intent");
      const uint64_t before = add_readers(s, format::kReaderJoin);
      crash_point("join:after_add");
      const Word128 now = guess128(&s->owner);
      const uint32_t npw = pid_word(now);
      if (is_free(npw) && !(npw & kRetired) && load_incarnation(s) == incarnation &&
          format::reader_count(before) < kReaderCountLimit) {
        store_op(r, op(ReaderState::in));
        if (published) clear_wait(r);
        __atomic_store_n(&r->acquired_at, realtime_coarse_ns(), __ATOMIC_RELAXED);
        add_shared_hold(me, SharedHold{s, r, rec.index, rec.claim});
        const bool abandoned = (npw & kAbandoned) != 0;
        return Acquired{.code = abandoned ? Code::abandoned : Code::ok,
                        .dead_owner = abandoned ? last_dead_owner(s) : Owner{},
                        .wait_ns = waited(),
                        .token = __atomic_load_n(&s->token, __ATOMIC_RELAXED),
                        .generation = generation(now),
                        .ended = format::readers_ended(before),
                        .rank = format::reader_count(before) + 1,
                        .contended = waiting.has_value()};
      }
      back_out(s);
      store_op(r, op(ReaderState::idle));
      if (format::reader_count(before) >= kReaderCountLimit) return fail(Code::capacity, now);
      continue;  // the owner record changed: look again
    }

    // EXCLUSIVE: wait for the writer (in, or draining the readers before it).
    if (owned_by(cur, me)) return fail(Code::already_held, cur);
    bool dead = (tid_word(cur) & kOwnerDied) != 0;
    clock_now().tick();
    if (!dead && clock_now().check_due(holder_key(cur))) dead = holder_dead(s, cur);
    if (dead) {
      // TAKEOVER by a reader: the dead writer's record to FREE (ABANDONED
      // unless it died draining), then join as any reader.
      const Owner gone = exclusive_owner(s, cur);
      const bool abandons = !(pw & kDraining) || (pw & kAbandoned);
      if (abandons && !(gone == noted)) {
        log.dead_found(slot_index, gone, Mode::exclusive, generation(cur), format::readers_ended(load_readers(s)));
        noted = gone;
      }
      const Word128 desired = make_word(tid_word(cur) & kWaiters, (pw & kSharedWaiters) | (abandons ? kAbandoned : 0),
                                        0, generation(cur) + 1);
      if (!cas128(&s->owner, cur, desired)) continue;
      if (abandons) record_dead_owner(s, gone);
      if (tid_word(cur) & kWaiters) futex_wake(&s->owner.tid_word, INT_MAX);  // the others may get in now
      continue;
    }
    if (clock_now().expired()) return fail(clock_now().expiry(), cur);
    if (WaitCycle cycle; deadlocked(&cycle)) {
      Acquired a = fail(Code::deadlock, cur);
      a.cycle = std::move(cycle);
      return a;
    }
    if (!set_flags(s, cur, kWaiters, kSharedWaiters)) continue;
    sleep_on(s, tid_word(cur), clock_now().sleep_ns());
    slept = true;
  }
}

Code release_shared(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                    bool* left_abandoned, uint64_t* acquired_at, uint32_t* produced, uint32_t* ended,
                    PendingWake* wake) {
  ThreadSelf& me = thread_self();
  *left_abandoned = false;
  if (load_incarnation(s) != incarnation) return Code::stale_handle;
  SharedHold* hold = find_shared_hold(me, s);
  if (hold == nullptr) return Code::not_owner;
  const SharedHold h = *hold;
  format::ReaderRecord* r = h.record;
  *acquired_at = __atomic_load_n(&r->acquired_at, __ATOMIC_RELAXED);
  // SHARED MODE, leave. Its epoch is read while it is still counted (reader_epoch).
  *produced = reader_epoch(guess128(&s->owner));
  store_op(r, format::make_reader_op(slot_index, ReaderState::leaving, h.claim));
  crash_point("leave:after_intent");
  const uint64_t before = add_readers(s, format::kReaderLeave);  // counted: the count is at least 1
  crash_point("leave:after_add");
  after_ended_step(s, before, +1);
  const Word128 owner = guess128(&s->owner);
  *left_abandoned = is_free(pid_word(owner)) && (pid_word(owner) & kAbandoned);
  *ended = format::readers_ended(before) + 1;
  // The leave that empties the count wakes a draining owner, once its event is in.
  if (format::reader_count(before) == 1 && (pid_word(owner) & kDraining)) *wake = PendingWake{s, owner, false, true};
  store_op(r, format::make_reader_op(slot_index, ReaderState::idle, h.claim));
  remove_shared_hold(me, hold);
  crash_point("leave:before_free");
  free_own_reader(me, CachedReader{file.id(), r, h.record_index, h.claim});
  return Code::ok;
}

// ---------------------------------------------------------------------------
// Downgrade.
// ---------------------------------------------------------------------------
Code downgrade_exclusive(TableFile& file, format::Slot* s, uint32_t slot_index, uint32_t incarnation,
                         uint32_t* produced, uint32_t* ended, PendingWake* wake) {
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
  // Counted in as a reader while still the owner: no writer can get in between.
  store_op(r, format::make_reader_op(slot_index, ReaderState::joining, rec.claim));
  crash_point("downgrade:after_intent");
  const uint64_t before = add_readers(s, format::kReaderJoin);
  store_op(r, format::make_reader_op(slot_index, ReaderState::in, rec.claim));
  robust_pending(me.robust, &s->robust_next);
  robust_dequeue(me.robust, &s->robust_next);
  // Only the waiter bits can change under an owner: the CAS keeps them.
  Word128 desired;
  do {
    desired = make_word(tid_word(cur) & kWaiters, (pid_word(cur) & kSharedWaiters) | (abandoned ? kAbandoned : 0), 0,
                        generation(cur) + 1);
  } while (!cas128(&s->owner, cur, desired));
  robust_clear_pending(me.robust);
  crash_point("downgrade:after_cas");
  remember_value(me, s, desired);
  add_shared_hold(me, SharedHold{s, r, rec.index, rec.claim});
  *produced = generation(desired);
  *ended = format::readers_ended(before);
  // Readers asleep may join now; a writer asleep wakes and waits again.
  if (tid_word(cur) & kWaiters) *wake = PendingWake{s, cur, true};
  return Code::ok;
}

}  // namespace locktable::detail
