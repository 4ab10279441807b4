// What /proc says about a thread: its start time, state and name.
#pragma once

#include <cstdint>

namespace locktable::detail {

// Reads the start time of thread `tid` of process `pid` (clock ticks since
// boot) and its state letter. Returns false when the thread does not exist or
// /proc does not show it.
bool read_thread_stat(uint32_t pid, uint32_t tid, uint64_t* start_time, char* state);

// The thread name of `tid` in `pid` (NUL-padded); false (and "") if gone.
bool read_thread_comm(uint32_t pid, uint32_t tid, char comm[16]);

}  // namespace locktable::detail
