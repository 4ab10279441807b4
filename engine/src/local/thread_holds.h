// The calling thread's holds beyond ThreadSelf's inline ones (touched only
// off the fast path): shared holds past the inline 16, and the exclusive holds
// taken abandoned and not yet marked consistent. Reset in a child after fork().
#pragma once

#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

SharedHold* find_shared_hold(ThreadSelf& me, const format::Slot* s);
void add_shared_hold(ThreadSelf& me, const SharedHold& hold);
// REQUIRES: `hold` came from find_shared_hold of the same thread.
void remove_shared_hold(ThreadSelf& me, SharedHold* hold);

void note_abandoned(ThreadSelf& me, format::Slot* s);
// True (and forgotten) when the thread held `s` abandoned, not yet repaired.
bool forget_abandoned(ThreadSelf& me, format::Slot* s);
bool owes_repair(format::Slot* s);

}  // namespace locktable::detail
