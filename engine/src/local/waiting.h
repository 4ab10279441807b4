// Waiting on a slot: what the waiters of both modes share (the exclusive
// protocol in lock_protocol.cc, the shared one in shared_protocol.cc).
#pragma once

#include <cstdint>

#include "atomic128.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

// Identifies the holder a waiter watches (WaitClock::check_due): a new
// holder restarts the liveness-check schedule.
inline uint64_t holder_key(const Word128& w) { return w.lo ^ (uint64_t{aux_word(w)} << 1); }
inline constexpr uint64_t kReadersKey = 0x5EADE25;  // a draining owner watching the readers

// Sets `bits` in the record (no generation change). False if it changed.
bool set_flags(format::Slot* s, Word128& cur, uint32_t tid_bits, uint32_t pid_bits);
// A futex sleep on the slot's record while it is `seen_tid_word`, counted in
// the slot's (informational) sleeper count.
void sleep_on(format::Slot* s, uint32_t seen_tid_word, int64_t max_ns);

}  // namespace locktable::detail
