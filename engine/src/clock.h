// Clocks.
#pragma once

#include <cstdint>
#include <ctime>

namespace locktable::detail {

// Nanoseconds since the epoch, coarse (vDSO, a few ns; resolution one tick).
// Inline: the uncontended paths stamp acquisitions with it.
inline uint64_t realtime_coarse_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}
// Nanoseconds since the epoch, as precise as the system clock.
uint64_t realtime_ns();
// Nanoseconds on the monotonic clock.
uint64_t monotonic_ns();

}  // namespace locktable::detail
