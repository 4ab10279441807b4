// Clocks.
#pragma once

#include <cstdint>

namespace locktable::detail {

// Nanoseconds since the epoch, coarse (vDSO, a few ns; resolution one tick).
uint64_t realtime_coarse_ns();
// Nanoseconds since the epoch, as precise as the system clock.
uint64_t realtime_ns();
// Nanoseconds on the monotonic clock.
uint64_t monotonic_ns();

}  // namespace locktable::detail
