// Read-only views of a slot and of its readers, for listing and checking.
// They change nothing, and a view may be out of date by the time it is used.
#pragma once

#include <cstdint>
#include <vector>

#include "atomic128.h"
#include "locktable/types.h"
#include "table_file.h"
#include "table_format.h"

namespace locktable::detail {

// A snapshot of a slot.
struct SlotView {
  LockState state = LockState::free;
  Mode mode = Mode::exclusive;
  Owner owner;                 // exclusive holder
  bool owner_alive = true;
  uint32_t readers = 0;        // readers counted in (the readers word)
  bool draining = false;       // the exclusive owner waits for them (not in yet)
  uint32_t waiters = 0;
  bool abandoned = false;
  bool retired = false;
  uint64_t acquired_at = 0;
  Word128 raw{0, 0};
};
SlotView inspect_slot(format::Slot* s);

// A reader record that holds, or is joining or leaving, a slot.
struct ReaderView {
  uint32_t index;
  Owner owner;
  bool alive;
  format::ReaderState state;
  uint64_t acquired_at;
};
std::vector<ReaderView> readers_of(TableFile& file, uint32_t slot_index);

}  // namespace locktable::detail
