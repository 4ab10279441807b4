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

// History retention by age: records older than the result go. 0 (nothing
// goes) when age_s is 0 (no age limit) or reaches back before the epoch:
// age_s * 10^9 is not computed where it would wrap (2^55 s wrapped to 0,
// and every record went).
constexpr uint64_t retention_cutoff_ns(uint64_t now_ns, uint64_t age_s) {
  return age_s == 0 || age_s >= now_ns / 1'000'000'000u ? 0 : now_ns - age_s * 1'000'000'000u;
}
static_assert(retention_cutoff_ns(10'000'000'000u, uint64_t{1} << 55) == 0 &&
              retention_cutoff_ns(10'000'000'000u, 3) == 7'000'000'000u && retention_cutoff_ns(5, 0) == 0);

}  // namespace locktable::detail
