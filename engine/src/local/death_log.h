// DeathLog: how the lock protocol reports the dead holders it takes out.
#pragma once

#include <cstdint>

#include "locktable/types.h"

namespace locktable::detail {

// Told about each dead holder a lock operation is about to take out, BEFORE
// the CAS that takes it out, so that the takeover is in the history even when
// the caller dies right after its CAS. It may be told twice about one dead
// holder (a CAS that failed and was retried, two waiters racing, a recovery):
// the history drainer keeps the first (history_store.cc, first_recovery).
// A dead holder taken out of a lock (by recovery, or by a waiter).
struct Freed {
  uint32_t slot;
  Mode mode;
  Owner dead_owner;
};

class DeathLog {
 public:
  // `seen_generation`, `seen_ended`: the owner record's generation and the
  // readers word's `ended` at which the holder was found dead (ORDER IN
  // HISTORY: its event sorts after the events at that place, before the next).
  virtual void dead_found(uint32_t slot_index, const Owner& dead, Mode mode, uint32_t seen_generation,
                          uint32_t seen_ended) = 0;

 protected:
  ~DeathLog() = default;
};

}  // namespace locktable::detail
