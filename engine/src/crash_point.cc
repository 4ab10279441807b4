// Compiled only into test builds (see crash_point.h).
#include "crash_point.h"

#if defined(LOCKTABLE_CRASH_POINTS)

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>

namespace locktable::detail {

namespace {

std::atomic<const char*>& armed() {
  static std::atomic<const char*> point{std::getenv("LOCKTABLE_CRASH_AT")};
  return point;
}

}  // namespace

void crash_point(const char* name) {
  const char* target = armed().load(std::memory_order_relaxed);
  if (target != nullptr && std::strcmp(target, name) == 0) std::raise(SIGKILL);
}

void arm_crash_point(const char* name) { armed().store(name, std::memory_order_relaxed); }

}  // namespace locktable::detail

#endif
