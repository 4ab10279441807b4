// The calling thread's identity as it goes into an OwnerRecord, cached per
// thread. After fork() the child's cache is reset (pthread_atfork), so a child
// never takes itself for its parent and never owns its parent's locks.
#pragma once

#include <cstdint>

#include "proc_thread.h"
#include "robust_list.h"

namespace locktable::detail {

inline constexpr uint32_t kTrackedHolds = 32;

// An exclusive hold: the slot, and the owner record this thread wrote into it.
struct TrackedHold {
  void* slot;
  uint64_t lo;
  uint64_t hi;
};

struct ThreadSelf {
  uint32_t ready;     // 1 once filled in for this thread in this process
  uint32_t pid;
  uint32_t tid;
  uint32_t start;     // low 32 bits of the thread's start time (clock ticks since boot)
  RobustHead* robust; // the thread's robust list head, or nullptr (polling only)
  char comm[16];      // thread name, NUL-padded
  // Slots this thread holds exclusively (the first kTrackedHolds of them). A
  // release that finds its slot here knows, without reading the record, that
  // the thread owns it (and may unlink the slot from its robust list), and
  // knows the record it wrote: the expected value of its release CAS.
  uint32_t held_count;
  TrackedHold held[kTrackedHolds];
  // How many exclusive holds of this thread were taken abandoned and not yet
  // marked consistent (the slots themselves are in lock_protocol.cc).
  uint32_t abandoned_count;
};

extern thread_local constinit ThreadSelf tls_self __attribute__((tls_model("initial-exec")));

ThreadSelf& thread_self_slow();

inline ThreadSelf& thread_self() {
  if (__builtin_expect(tls_self.ready != 0, 1)) return tls_self;
  return thread_self_slow();
}

}  // namespace locktable::detail
