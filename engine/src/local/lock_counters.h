// Per-lock counters in the slot's second line (table_format.h, Slot): the
// slow paths count contention, waits, timeouts and takeovers; exclusive
// acquisitions are the token's distance from token_base, and shared ones the
// holds the readers word counts as ended (COUNTING in lock_protocol.cc), so
// the uncontended paths pay nothing for either.
#pragma once

#include <sched.h>

#include <cstdint>

#include "atomic128.h"
#include "locktable/types.h"
#include "slot_state.h"
#include "table_format.h"

namespace locktable::detail {

inline void count_wait(format::Slot* s, uint64_t wait_ns) {
  const uint64_t us = wait_ns / 1000;
  __atomic_fetch_add(&s->wait_total_us, us, __ATOMIC_RELAXED);
  const uint32_t capped = us > UINT32_MAX ? UINT32_MAX : uint32_t(us);
  uint32_t max = __atomic_load_n(&s->wait_max_us, __ATOMIC_RELAXED);
  while (capped > max && !__atomic_compare_exchange_n(&s->wait_max_us, &max, capped, true, __ATOMIC_RELAXED,
                                                       __ATOMIC_RELAXED)) {
  }
}

// An acquisition by a slow path: it found the lock held (`contended`), took
// it over from a dead holder (`takeover`), after waiting `wait_ns`.
inline void count_acquisition(format::Slot* s, bool contended, bool abandoned, uint64_t wait_ns) {
  if (contended) __atomic_fetch_add(&s->contended, 1u, __ATOMIC_RELAXED);
  if (abandoned) __atomic_fetch_add(&s->abandoned, 1u, __ATOMIC_RELAXED);
  if (wait_ns != 0) count_wait(s, wait_ns);
}

inline void count_timeout(format::Slot* s, uint64_t wait_ns) {
  __atomic_fetch_add(&s->timeouts, 1u, __ATOMIC_RELAXED);
  count_wait(s, wait_ns);
}

inline LockCounters read_counters(const format::Slot* s) {
  LockCounters c;
  c.shared_acquisitions = read_shared_acquisitions(s);
  const uint64_t token = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
  const uint64_t base = __atomic_load_n(&s->token_base, __ATOMIC_RELAXED);
  c.exclusive_acquisitions = token >= base ? token - base : 0;
  c.contended = __atomic_load_n(&s->contended, __ATOMIC_RELAXED);
  c.timeouts = __atomic_load_n(&s->timeouts, __ATOMIC_RELAXED);
  c.abandoned = __atomic_load_n(&s->abandoned, __ATOMIC_RELAXED);
  c.wait_max_ns = uint64_t(__atomic_load_n(&s->wait_max_us, __ATOMIC_RELAXED)) * 1000;
  c.wait_total_ns = __atomic_load_n(&s->wait_total_us, __ATOMIC_RELAXED) * 1000;
  return c;
}

}  // namespace locktable::detail
