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

// Who the calling thread is, read from /proc once per thread (and again in a
// child after fork(), whose pid differs): what a backend writes as an owner.
// The name is the one the thread had at its first call, as the local
// backend's slots record it.
struct ThreadIdentity {
  uint32_t pid = 0;
  uint32_t tid = 0;
  uint32_t start = 0;  // low 32 bits of the start time in clock ticks since boot
  char comm[16] = {};
};
const ThreadIdentity& calling_thread();

}  // namespace locktable::detail
