// Crash points: test hooks that SIGKILL the process at a named step of a
// multi-step protocol, so tests can check that whatever a crash there leaves
// behind is repaired.
//
// They exist only in test builds (Meson option -Dcrash_points=true, which
// `./dev test` and `./dev torture` set). In every other build crash_point()
// is an empty inline function and nothing reads LOCKTABLE_CRASH_AT: a shipped
// library holds no test hook.
//
// A point is armed by the environment variable LOCKTABLE_CRASH_AT (read once)
// or by arm_crash_point() (tests, in a forked child). Points sit only off the
// uncontended paths: the hot paths are crash-tested by killing processes at
// random (tests/torture.cc).
#pragma once

namespace locktable::detail {

// Every crash point, so tests can visit each one.
inline constexpr const char* kCrashSites[] = {
    "create:before_link",     // table file written under its temporary name, not yet linked
    "create:before_prepare",  // name creation: slot chosen, incarnation not yet bumped
    "create:before_commit",   // name creation: slot prepared, LMDB not yet committed
    "remove:after_retire",    // removal: slot marked RETIRED, LMDB not yet changed
    "remove:before_commit",   // removal: LMDB changed, not yet committed
    "grow:before_allocate",   // growth: grow lock held, file not yet extended
    "grow:after_allocate",    // growth: file extended, descriptor not yet written
    "grow:after_descriptor",  // growth: descriptor written, extent count not yet published
    "grow:after_publish",     // growth: extent published, `grown` event not yet appended
    "reset:before_boot_id",   // reboot reset: locks freed, new boot id not yet stored
    "join:after_intent",      // shared join: intent written, slot not yet changed
    "join:after_cas",         // shared join: counted, intent not yet finalised
    "leave:after_intent",     // shared leave: intent written, slot not yet changed
    "leave:after_cas",        // shared leave: uncounted, intent not yet finalised
    "leave:before_free",      // shared leave: finished, reader record not yet given back
    "takeover:after_cas",     // exclusive takeover: CAS done, time stamp and report not yet
    "downgrade:after_intent", // downgrade: reader record joining, slot still exclusive
    "downgrade:after_cas",    // downgrade: slot shared, reader record not yet in
    "recount:after_cas",      // dead readers taken out of the count, their records not yet freed
    "drain:before_commit",    // history drain: batch written, not yet committed
    "append:before_complete", // history append: fields written, the event not yet marked complete
};

#if defined(LOCKTABLE_CRASH_POINTS)
void crash_point(const char* name);
void arm_crash_point(const char* name);
#else
inline void crash_point(const char*) {}
#endif

}  // namespace locktable::detail
