// Event and mode names, and the pin between the public enums and the numbers
// stored on disk.
#include <iterator>

#include "locktable/types.h"
#include "stored_codes.h"

namespace locktable {

namespace f = format;
static_assert(uint8_t(Mode::exclusive) == f::kModeExclusive && uint8_t(Mode::shared) == f::kModeShared);
static_assert(uint32_t(HistoryLevel::off) == f::kHistoryOff && uint32_t(HistoryLevel::ring) == f::kHistoryRing &&
              uint32_t(HistoryLevel::persisted) == f::kHistoryPersisted);
static_assert(uint8_t(EventKind::created) == f::kEventCreated && uint8_t(EventKind::removed) == f::kEventRemoved &&
              uint8_t(EventKind::acquired) == f::kEventAcquired && uint8_t(EventKind::released) == f::kEventReleased &&
              uint8_t(EventKind::recovered) == f::kEventRecovered && uint8_t(EventKind::timeout) == f::kEventTimeout &&
              uint8_t(EventKind::grown) == f::kEventGrown && uint8_t(EventKind::reset) == f::kEventReset &&
              uint8_t(EventKind::lost) == f::kEventLost && uint8_t(EventKind::deadlock) == f::kEventDeadlock &&
              uint8_t(EventKind::downgraded) == f::kEventDowngraded && f::kMaxEventKind == f::kEventDowngraded);

namespace {
// Indexed by the stored number.
constexpr const char* kEventNames[] = {"",          "created", "removed", "acquired", "released",
                                       "recovered", "timeout", "grown",   "reset",    "lost",
                                       "deadlock",  "downgraded"};
static_assert(std::size(kEventNames) == f::kMaxEventKind + 1);
}  // namespace

const char* event_kind_name(EventKind kind) {
  auto i = size_t(kind);
  return i > 0 && i < std::size(kEventNames) ? kEventNames[i] : "unknown";
}

std::optional<EventKind> event_kind_from_name(std::string_view name) {
  for (size_t i = 1; i < std::size(kEventNames); ++i) {
    if (name == kEventNames[i]) return EventKind(i);
  }
  return std::nullopt;
}

}  // namespace locktable
