// The waits-for graph: what waiting threads publish, and the walk that finds
// a deadlock (DEADLOCKS in lock_protocol.cc).
//
// A thread that is about to sleep on a lock publishes the wait in a reader
// record it has claimed (ReaderRecord::waits_for, acquired_at, incarnation),
// so any process can see who waits for what. Holders are what the table says
// already: the exclusive owner in the slot's record (in, or draining: either
// way it keeps the others out), the shared holders in reader records whose op
// is `in` for the slot; a draining owner waits for those.
//
// A walk reads all that twice. A cycle counts only when both reads agree on
// every edge: each member's wait word and start time unchanged (a wait has a
// serial of its own), each lock's owner generation and readers word unchanged
// (they change with every change of ownership, exclusive or shared), every
// member alive. Then, over the whole time between the two reads, every member
// waited for a lock held by the next: a deadlock, not a holder that has just
// released, died or gone.
//
// The victim is chosen from the cycle alone, so that every member that walks
// names the same one: the member that began waiting last among those that
// detect (ties: the larger pid, then tid). Only the victim acts; the others
// find the same cycle and go on waiting. One walk costs a scan of the reader
// records below the high-water mark and a read of each lock in the cycle.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "locktable/types.h"
#include "table_file.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

// One member of a cycle: `waiter` waits for the lock in `slot` (in `mode`),
// held by the waiter of the next member (the last one's by the first's).
struct WaitEdge {
  Owner waiter;
  uint32_t slot = 0;
  uint32_t incarnation = 0;
  Mode mode = Mode::exclusive;
};
using WaitCycle = std::vector<WaitEdge>;

// A published wait as read from a record.
struct WaitView {
  Owner waiter;
  uint32_t slot = 0;
  uint32_t incarnation = 0;
  Mode mode = Mode::exclusive;
  bool detects = false;
  uint64_t since_ns = 0;  // CLOCK_REALTIME ns when the wait began
  uint64_t word = 0;      // the WaitWord (with its serial)
};

// Publishes the calling thread's wait in its record `r` (claimed by it, idle
// or joining). REQUIRES: not already published.
void publish_wait(format::ReaderRecord* r, uint32_t slot, uint32_t incarnation, Mode mode, bool detects);
void clear_wait(format::ReaderRecord* r);

// The waits published by live threads, in record order.
std::vector<WaitView> published_waits(TableFile& file);

// Walks the graph from the calling thread, whose wait is published in `r`.
// True when it closes a cycle, confirmed by a second read, in which it is the
// victim; *cycle then lists the members, starting with the calling thread.
bool deadlock_victim(TableFile& file, const ThreadSelf& me, const format::ReaderRecord* r, WaitCycle* cycle);

}  // namespace locktable::detail
