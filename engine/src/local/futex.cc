#include "futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace locktable::detail {

int futex_wait(uint32_t* word, uint32_t expected, int64_t timeout_ns) {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1'000'000'000;
    ts.tv_nsec = timeout_ns % 1'000'000'000;
    tsp = &ts;
  }
  long rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, nullptr, 0);
  return rc == 0 ? 0 : errno;
}

int futex_wake(uint32_t* word, int count) {
  long rc = syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : int(rc);
}

}  // namespace locktable::detail
