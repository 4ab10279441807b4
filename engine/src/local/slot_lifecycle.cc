#include "slot_lifecycle.h"

#include <climits>
#include <cstring>

#include "crash_point.h"
#include "futex.h"
#include "history_ring.h"
#include "ofd_lock.h"
#include "posix_error.h"
#include "reader_records.h"
#include "slot_state.h"
#include "clock.h"
#include "system_info.h"

namespace locktable::detail {

using format::kAbandoned;
using format::kRetired;
using format::kWaiters;

namespace {

// TOKENS (lock_protocol.cc): a token is 1 more than the one before, and an
// acquisition takes far more than a nanosecond, so no slot's token ever
// passes the wall clock in ns. Raising a token to the clock therefore puts it
// above every token this slot, or any slot of any table on this machine,
// gave before (given a clock that does not step back across it).
// REQUIRES: nobody holds `s` exclusively (nobody else writes its token).
// The counters' base moves with the token, so that token - token_base stays
// the name's exclusive acquisitions.
void raise_token_floor(format::Slot* s) {
  const uint64_t floor = realtime_ns();
  const uint64_t token = __atomic_load_n(&s->token, __ATOMIC_RELAXED);
  if (token >= floor) return;
  __atomic_store_n(&s->token, floor, __ATOMIC_RELAXED);
  __atomic_fetch_add(&s->token_base, floor - token, __ATOMIC_RELAXED);
}

// A new name in the slot: its counters start from zero.
void reset_counters(format::Slot* s) {
  __atomic_store_n(&s->token_base, __atomic_load_n(&s->token, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
  __atomic_store_n(&s->contended, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&s->timeouts, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&s->abandoned, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&s->wait_max_us, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&s->wait_total_us, uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&s->shared_base, format::readers_ended(load_readers(s)) +
                                        __atomic_load_n(&s->shared_carry, __ATOMIC_RELAXED),
                   __ATOMIC_RELAXED);
}

// Frees the slot (abandoned if it was held, exclusive or shared). True if it was held.
// REQUIRES: no live process uses the table (the reboot ended them all).
bool reset_slot_after_reboot(format::Slot* s) {
  raise_token_floor(s);  // the file may have lost the last tokens' writes with the power
  // The readers the reboot ended: their holds end (as leaves: COUNTING).
  const uint64_t readers = load_readers(s);
  const uint32_t counted = format::reader_count(readers);
  if (counted != 0) {
    __atomic_store_n(&s->readers, readers + uint64_t{counted} * format::kReaderLeave, __ATOMIC_RELAXED);
    if (format::readers_ended(readers) + uint64_t{counted} > 0xffffffffu) carry_ended(s, +1);
  }
  for (;;) {
    Word128 cur = load128(&s->owner);
    uint32_t pw = pid_word(cur);
    const bool held = is_exclusive(pw) || counted != 0;
    const bool abandons = counted != 0 || (is_exclusive(pw) && (!(pw & format::kDraining) || (pw & kAbandoned)));
    Word128 desired = is_exclusive(pw) ? make_word(0, abandons ? kAbandoned : 0, 0, generation(cur) + 1)
                                       : make_word(0, (pw & (kRetired | kAbandoned)) | (abandons ? kAbandoned : 0),
                                                   0, generation(cur));
    if (!(desired == cur) && !cas128(&s->owner, cur, desired)) continue;
    if (is_exclusive(pw) && abandons) record_dead_owner(s, exclusive_owner(s, cur));
    if (!is_exclusive(pw) && counted != 0) record_dead_owner(s, Owner{});
    __atomic_store_n(&s->waiters, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->robust_prev, uint64_t{0}, __ATOMIC_RELAXED);
    __atomic_store_n(&s->robust_next, uint64_t{0}, __ATOMIC_RELAXED);
    return held;
  }
}

void reset_reader_after_reboot(format::ReaderRecord* r) {
  Word128 cur = load128(&r->ident);
  if (cur.lo == 0 && aux_word(cur) == 0 && load_op(r) == 0) return;
  while (!cas128(&r->ident, cur, make_word(0, 0, 0, generation(cur) + 1))) {
  }
  store_op(r, 0);
  __atomic_store_n(&r->robust_prev, uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&r->robust_next, uint64_t{0}, __ATOMIC_RELAXED);
}

}  // namespace

Code retire_slot(format::Slot* s, uint32_t incarnation, uint32_t* produced, uint32_t* ended) {
  for (;;) {
    Word128 cur = load128(&s->owner);
    if (load_incarnation(s) != incarnation) return Code::stale_handle;
    uint32_t pw = pid_word(cur);
    *produced = generation(cur);
    *ended = format::readers_ended(load_readers(s));
    if (pw & kRetired) return Code::ok;
    if (!is_free(pw) || format::reader_count(load_readers(s)) != 0) return Code::busy;
    Word128 desired = make_word(0, kRetired, 0, generation(cur) + 1);
    if (!cas128(&s->owner, cur, desired)) continue;
    // NAMES: a reader counted in now joined before the CAS, and saw no
    // RETIRED: it holds the lock (busy); one that joins after sees RETIRED.
    if (format::reader_count(load_readers(s)) != 0) {
      // Undone (only waiter bits can have changed: nobody acquires RETIRED).
      for (Word128 now = desired; !cas128(&s->owner, now, make_word(tid_word(now) & kWaiters, pid_word(now) & ~kRetired,
                                                                    0, generation(now) + 1));) {
      }
      return Code::busy;
    }
    *produced = generation(desired);
    if (tid_word(cur) & kWaiters) futex_wake(&s->owner.tid_word, INT_MAX);  // they fail with stale_handle
    return Code::ok;
  }
}

uint32_t prepare_slot_for_new_name(format::Slot* s, uint32_t* produced) {
  uint32_t inc = load_incarnation(s) + 1;
  if (inc == 0) inc = 1;  // incarnation 0 means "never named"
  std::atomic_ref<uint32_t>(s->incarnation).store(inc, std::memory_order_release);
  for (;;) {
    Word128 cur = load128(&s->owner);
    *produced = generation(cur);
    if (!is_free(pid_word(cur)) || cur.lo == 0) break;
    *produced = generation(cur) + 1;
    if (cas128(&s->owner, cur, make_word(0, 0, 0, generation(cur) + 1))) break;
  }
  record_dead_owner(s, Owner{});
  raise_token_floor(s);
  reset_counters(s);
  return inc;
}

bool unretire_slot(format::Slot* s, uint32_t incarnation) {
  for (;;) {
    Word128 cur = load128(&s->owner);
    if (load_incarnation(s) != incarnation || !(pid_word(cur) & kRetired)) return false;
    if (cas128(&s->owner, cur, make_word(0, 0, 0, generation(cur) + 1))) return true;
  }
}

bool slot_is_retired(format::Slot* s) { return (pid_word(load128(&s->owner)) & kRetired) != 0; }


Status reset_if_rebooted(TableFile& file, uint64_t* freed, bool* reset) {
  *freed = 0;
  *reset = false;
  BootId now{};
  Status s = read_boot_id(&now);
  if (!s.ok()) return s;
  format::Header* header = file.header();
  auto matches = [&] {
    uint8_t current[16];
    std::memcpy(current, header->boot_id, 16);
    std::atomic_thread_fence(std::memory_order_acquire);
    return std::memcmp(current, now.data(), 16) == 0;
  };
  if (matches()) return Status::OK();

  OfdGuard guard;
  if (s = file.take_grow_lock(&guard); !s.ok()) return s;
  if (matches()) return Status::OK();  // another process did it while we waited
  const uint64_t slots = file.slot_capacity();
  for (uint64_t i = 0; i < slots; ++i) {
    format::Slot* sl = file.slot(i);
    if (sl != nullptr && reset_slot_after_reboot(sl)) ++*freed;
  }
  for_each_reader(file, [](uint64_t, format::ReaderRecord* r) {
    reset_reader_after_reboot(r);
    return true;
  });
  reset_segments_after_reboot(file);
  crash_point("reset:before_boot_id");
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(header->boot_id, now.data(), 16);
  std::atomic_ref<uint32_t>(header->reset_count).fetch_add(1, std::memory_order_relaxed);
  *reset = true;
  return Status::OK();
}

}  // namespace locktable::detail
