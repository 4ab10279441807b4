// Crash points for the crash tests: crash_point("grow:after_allocate") kills
// the process with SIGKILL when the point is armed, by the environment
// variable LOCKTABLE_CRASH_AT (read once) or by arm_crash_point() (tests, in a
// forked child). Placed only off the uncontended paths: the hot paths are
// crash-tested by killing processes at random.
#pragma once

namespace locktable::detail {

void crash_point(const char* name);
void arm_crash_point(const char* name);

}  // namespace locktable::detail
