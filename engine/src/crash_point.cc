#include "crash_point.h"

#include <csignal>
#include <cstdlib>
#include <cstring>

namespace locktable::detail {

void crash_point(const char* name) {
  static const char* target = std::getenv("LOCKTABLE_CRASH_AT");
  if (target != nullptr && std::strcmp(target, name) == 0) std::raise(SIGKILL);
}

}  // namespace locktable::detail
