// Is the thread named by an owner record still the one that took the lock?
//
// A holder is dead when its thread no longer exists (tgkill(pid, tid, 0) says
// ESRCH), is a zombie, or exists with another start time (the pid or tid was
// reused by a different thread). A holder is never declared dead on doubt: if
// the thread exists but /proc does not show it (hidepid), it counts as alive.
#pragma once

#include <cstdint>

namespace locktable::detail {

enum class Liveness { alive, dead };

Liveness thread_liveness(uint32_t pid, uint32_t tid, uint32_t start_low32);

}  // namespace locktable::detail
