// Crash points for the crash tests: crash_point("grow:after_allocate") kills
// the process with SIGKILL when the environment variable LOCKTABLE_CRASH_AT
// names that point. Placed only on slow paths (create, grow, remove, drain,
// reset); the hot paths are crash-tested by killing processes at random.
#pragma once

namespace locktable::detail {

void crash_point(const char* name);

}  // namespace locktable::detail
