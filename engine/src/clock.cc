#include "clock.h"

#include <ctime>

namespace locktable::detail {

namespace {
uint64_t read(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}
}  // namespace

uint64_t realtime_ns() { return read(CLOCK_REALTIME); }
uint64_t monotonic_ns() { return read(CLOCK_MONOTONIC); }

}  // namespace locktable::detail
