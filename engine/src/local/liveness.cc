#include "liveness.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "proc_thread.h"

namespace locktable::detail {

namespace {

enum class Exists { yes, no };

Exists thread_exists(uint32_t pid, uint32_t tid) {
  if (syscall(SYS_tgkill, pid, tid, 0) == 0) return Exists::yes;
  return errno == ESRCH ? Exists::no : Exists::yes;  // EPERM: exists, another user's
}

}  // namespace

Liveness thread_liveness(uint32_t pid, uint32_t tid, uint32_t start_low32) {
  if (pid == 0 || tid == 0) return Liveness::alive;  // nothing to check: never guess "dead"
  if (thread_exists(pid, tid) == Exists::no) return Liveness::dead;
  uint64_t start = 0;
  char state = 0;
  if (!read_thread_stat(pid, tid, &start, &state)) {
    // It existed a moment ago. Gone now, or hidden from us (hidepid)?
    return thread_exists(pid, tid) == Exists::no ? Liveness::dead : Liveness::alive;
  }
  if (state == 'Z' || state == 'X') return Liveness::dead;
  // A recorded start of 0 means the owner could not read its own start time:
  // then only existence counts.
  if (start_low32 != 0 && uint32_t(start) != start_low32) return Liveness::dead;  // pid/tid reused
  return Liveness::alive;
}

}  // namespace locktable::detail
