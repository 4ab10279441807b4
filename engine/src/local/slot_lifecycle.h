// The life of a slot outside locking: removal of its name (RETIRED), reuse
// for a new name (incarnation + 1), and the reset of every slot and reader
// record after a reboot. The rules are in lock_protocol.cc (NAMES) and
// engine/README.md (Reboot).
#pragma once

#include <cstdint>

#include "locktable/status.h"
#include "table_file.h"
#include "table_format.h"

namespace locktable::detail {

// FREE -> FREE|RETIRED, so no handle can acquire it any more.
// Errors: busy (held), stale_handle (the slot belongs to another incarnation).
// REQUIRES: the caller holds the LMDB write transaction of the removal.
// *generation, *ended: the removal's place in its lock's order (ORDER IN
// HISTORY in lock_protocol.cc).
Code retire_slot(format::Slot* s, uint32_t incarnation, uint32_t* generation, uint32_t* ended);
// Undoes retire_slot (a removal that did not commit). False if the slot is
// not retired or belongs to another incarnation.
// REQUIRES: the caller holds an LMDB write transaction, so no removal of the
// name is in progress (a retired slot whose name exists is then a removal
// that died before committing).
bool unretire_slot(format::Slot* s, uint32_t incarnation);
bool slot_is_retired(format::Slot* s);
// Gives the slot to a new name: bumps the incarnation (so old handles fail),
// then clears RETIRED and any leftover flag, and raises the token floor
// (TOKENS in lock_protocol.cc). Returns the new incarnation.
// REQUIRES: the caller holds the LMDB write transaction of the creation.
// *generation: the slot's generation after it (history order).
uint32_t prepare_slot_for_new_name(format::Slot* s, uint32_t* generation);

// If the header's boot id is not this boot's, frees every lock (held ones
// become FREE|ABANDONED with the dead owner recorded) and every reader
// record, then stores the new boot id. *reset tells whether this call did
// it; *freed counts the locks that were held. Takes the grow lock, so
// processes opening meanwhile wait, check again and find the work done.
// REQUIRES: no LMDB transaction is open (the caller reconciles the name map
// afterwards, in a write transaction of its own).
Status reset_if_rebooted(TableFile& file, uint64_t* freed, bool* reset);

}  // namespace locktable::detail
