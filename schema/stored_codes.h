// The numbers locktable writes to disk for event kinds, lock modes, event
// flags and history levels. They appear in ring entries (table_format.h),
// history records (lmdb_records.h) and the header's history_level field, and
// never change meaning: a new kind gets a new number. The public enums
// (locktable/types.h) use the same numbers; engine/src/stored_codes_check.cc
// pins each one with a static_assert.
#pragma once

#include <cstdint>

namespace locktable::format {

// RingEntry::kind and HistoryRecord::kind.
inline constexpr uint8_t kEventCreated = 1;
inline constexpr uint8_t kEventRemoved = 2;
inline constexpr uint8_t kEventAcquired = 3;
inline constexpr uint8_t kEventReleased = 4;
inline constexpr uint8_t kEventRecovered = 5;
inline constexpr uint8_t kEventTimeout = 6;
inline constexpr uint8_t kEventGrown = 7;
inline constexpr uint8_t kEventReset = 8;
inline constexpr uint8_t kEventLost = 9;
inline constexpr uint8_t kEventDeadlock = 10;    // a waiter broke a cycle of waits (gave up)
inline constexpr uint8_t kEventDowngraded = 11;  // an exclusive hold became a shared one
inline constexpr uint8_t kMaxEventKind = kEventDowngraded;  // decoders refuse anything above

// RingEntry::mode and HistoryRecord::mode.
inline constexpr uint8_t kModeExclusive = 0;
inline constexpr uint8_t kModeShared = 1;
inline constexpr uint8_t kMaxMode = kModeShared;

// RingEntry::flags and HistoryRecord::flags.
inline constexpr uint16_t kEventAbandoned = 1;  // acquired: taken over from a dead holder;
                                                // released: still abandoned (not marked consistent)
// Ring entries only (the drainer's order; not stored in history records):
inline constexpr uint16_t kEventAfterGeneration = 2;  // recovered, timeout: sorts after the events at its
                                                      // generation (the one it saw), before the next one's
inline constexpr uint16_t kEventUnordered = 4;        // in no lock's order (timeout, grown, reset, ...)

// Header::history_level.
inline constexpr uint32_t kHistoryOff = 0;        // no events
inline constexpr uint32_t kHistoryRing = 1;       // appended to the ring, never drained
inline constexpr uint32_t kHistoryPersisted = 2;  // drained into LMDB
inline constexpr uint32_t kMaxHistoryLevel = kHistoryPersisted;

}  // namespace locktable::format
