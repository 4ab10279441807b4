#include "waiting.h"

#include <atomic>
#include <climits>

#include "futex.h"
#include "hot_path.h"
#include "liveness.h"
#include "slot_state.h"

namespace locktable::detail {

using format::kSharedWaiters;

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

void wake_waiters(format::Slot* s, const Word128& old) {
  futex_wake(&s->owner.tid_word, (pid_word(old) & kSharedWaiters) ? INT_MAX : 1);
}

void wake_drainer(format::Slot* s) { futex_wake(readers_futex(s), INT_MAX); }

void PendingWake::run() const {
  if (slot == nullptr) return;
  if (drainer) {
    wake_drainer(slot);
  } else if (all) {
    futex_wake(&slot->owner.tid_word, INT_MAX);
  } else {
    wake_waiters(slot, old);
  }
}

}  // namespace locktable::detail
