// Shared (not private) futex calls on words inside the mapped table file.
// Shared futexes are keyed by (inode, offset), so every process mapping the
// file waits on and wakes the same word.
#pragma once

#include <cstdint>
#include <ctime>

namespace locktable::detail {

// Sleeps while *word == expected, at most `timeout_ns` (negative: no limit).
// Returns 0 when woken, or an errno value: EAGAIN (value differed), ETIMEDOUT,
// EINTR.
int futex_wait(uint32_t* word, uint32_t expected, int64_t timeout_ns);

// Wakes up to `count` threads asleep on `word`. Returns how many woke.
int futex_wake(uint32_t* word, int count);

}  // namespace locktable::detail
