// The history ring: events in the mapped table file, so that an event
// survives the crash of the process that wrote it, appended without a lock, a
// system call or a cache line shared with other appenders.
//
// The ring is cut into segments (table_format.h). A thread claims one segment
// per open table the first time it appends there, and appends only to it. The
// open (this HistoryRing) remembers its claims and frees them when the table
// closes: no Lock of it is left then, so none of its claims is appending. A
// drainer frees a dead owner's segment once it has drained it; a thread that
// finds no free segment claims one whose owner is dead (the header keeps the
// previous claim's start and thread name for its events still to drain). A
// thread that finds neither counts its events in Header::unsegmented_lost.
//
// Segments are not on robust lists: a table may close while a thread that
// appended to it lives on, and a robust list must never point into an unmapped
// table. A segment's owner is dead when the liveness check says so (or the
// reboot reset marked it).
//
// Append (the owner only; event i of the segment):
//   1. stamp = 2i+1 (release)       -- "being written"
//   2. write the fields
//   3. stamp = 2i+2 (release)       -- "complete"
//   4. head = i+1 (release)         -- drainers read events below head only
// The entry lives at unit 2 + i mod capacity: a writer overwrites whatever
// was there, drained or not (the drainer counts what it missed as lost).
//
// Read (a drainer, for event i below head): stamp == 2i+2 -> copy the
// fields, re-read the stamp, keep the copy only if it is unchanged; any other
// stamp -> overwritten by a later lap of the segment: lost.
//
// Order. Each event carries its place in its lock's order (ORDER IN HISTORY
// in lock_protocol.cc: the owner generation and the readers word's `ended`;
// a takeover's `recovered` event what it saw, flagged to sort after it): the
// drainer merges segments so that every thread's events stay in program order
// (their segment's order) and every lock's in that order (history_store.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "clock.h"
#include "crash_point.h"
#include "table_file.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

struct RingEvent {
  uint8_t kind;
  uint8_t mode;
  uint16_t flags;        // kEventAbandoned | kEventAfterGeneration | kEventUnordered
  uint32_t slot;
  uint32_t incarnation;
  uint32_t aux32;
  uint64_t aux64;
  uint32_t generation;   // see RingEntry::generation; ignored with kEventUnordered
  uint64_t token = 0;    // see RingEntry::token
  uint32_t ended = 0;    // see RingEntry::ended
};

// An event in no lock's order (timeouts, growth, resets).
inline RingEvent unordered_event(uint8_t kind, uint8_t mode, uint32_t slot, uint32_t incarnation, uint64_t aux64) {
  return RingEvent{kind, mode, format::kEventUnordered, slot, incarnation, 0, aux64, 0};
}

enum class RingRead { complete, overwritten };

// Reads event i of a segment whose entries start at `entries`. On
// `complete`, *out holds a consistent copy.
RingRead ring_read(const format::RingEntry* entries, uint32_t capacity, uint64_t i, format::RingEntry* out);

// The ring of one mapped table, and its history level (a header field any
// process may change): appends happen only while the level is not off.
class HistoryRing {
 public:
  explicit HistoryRing(TableFile& file);
  ~HistoryRing();
  HistoryRing(const HistoryRing&) = delete;
  HistoryRing& operator=(const HistoryRing&) = delete;

  uint32_t level() const { return __atomic_load_n(&header_->history_level, __ATOMIC_RELAXED); }
  bool on() const { return level() != format::kHistoryOff; }
  const uint32_t* level_word() const { return &header_->history_level; }

  // Appends `ev`, stamped now, when history is on.
  void record(const RingEvent& ev) {
    if (on()) record_at(ev, realtime_coarse_ns());
  }
  // Appends `ev` stamped `time_ns`. REQUIRES: history is on (the caller checked).
  void record_at(const RingEvent& ev, uint64_t time_ns) {
    ThreadSelf& me = thread_self();
    SegmentRef* seg = find_segment(me);
    if (seg == nullptr && (seg = claim_segment(me)) == nullptr) {
      std::atomic_ref<uint64_t>(header_->unsegmented_lost).fetch_add(1, std::memory_order_relaxed);
      return;
    }
    append(*seg, me, ev, time_ns);
  }

  // Frees every segment a thread claimed through this open; their events stay
  // for the drainers. REQUIRES: the table is closing in the process that
  // opened it (no Lock of it is left, so nothing appends through it).
  void release_claims();

  // For drainers and readers.
  uint32_t segment_count() const { return segments_; }
  uint32_t capacity() const { return units_ - format::kSegmentHeaderUnits; }
  format::SegmentHeader* segment(uint32_t k) const {
    return reinterpret_cast<format::SegmentHeader*>(base_ + uint64_t{k} * units_);
  }
  const format::RingEntry* entries(uint32_t k) const {
    return base_ + uint64_t{k} * units_ + format::kSegmentHeaderUnits;
  }
  // The name of the thread that wrote event i of segment k, as the header
  // knows it (the current claim's, or the one before).
  std::string writer_name(uint32_t k, uint64_t i) const;
  // Frees segment k if its owner is dead and everything below `drained` is
  // all it ever appended (a drainer, after committing).
  void free_if_drained(uint32_t k, uint64_t drained);
  // Leaves the hint that segment k is drained up to `drained` (a drainer,
  // after committing), so that a claimer takes a free segment with nothing
  // left to drain before one whose events it would lap.
  void note_drained(uint32_t k, uint64_t drained) {
    std::atomic_ref<uint64_t>(segment(k)->drained_hint).store(drained, std::memory_order_relaxed);
  }
  uint64_t head(uint32_t k) const {
    return std::atomic_ref<const uint64_t>(segment(k)->head).load(std::memory_order_acquire);
  }

 private:
  SegmentRef* find_segment(ThreadSelf& me) const {
    for (uint32_t i = 0; i < me.segment_count; ++i) {
      if (me.segments[i].table == table_id_) return &me.segments[i];
    }
    return nullptr;
  }
  SegmentRef* claim_segment(ThreadSelf& me);
  // The free segment with the fewest events not drained yet, as the drainers'
  // hints say (0 when none is free).
  uint32_t least_undrained_free_segment() const;
  // Appends a ref to segment k, whose next event is `head`, to me.segments.
  // REQUIRES: the calling thread `me` claimed segment k; a ref slot is free.
  SegmentRef* add_ref(ThreadSelf& me, uint32_t k, uint64_t head);

  static void store_relaxed(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

 public:
  // Appends `ev` to segment `seg`, which the calling thread `me` claimed (the
  // inline paths call it directly when they find their segment first in
  // ThreadSelf::segments: hot_path.h).
  static void append(SegmentRef& seg, const ThreadSelf& me, const RingEvent& ev, uint64_t time_ns) {
    const uint64_t i = seg.next;
    format::RingEntry* e = &seg.entries[seg.position];  // i % capacity, without a division
    auto* words = reinterpret_cast<uint64_t*>(e);
    std::atomic_ref<uint64_t>(e->stamp).store(2 * i + 1, std::memory_order_release);
    store_relaxed(&words[1], time_ns);
    store_relaxed(&words[2], uint64_t{me.pid} | (uint64_t{me.tid} << 32));
    store_relaxed(&words[3], uint64_t{ev.slot} | (uint64_t{ev.incarnation} << 32));
    store_relaxed(&words[4], uint64_t{ev.kind} | (uint64_t{ev.mode} << 8) | (uint64_t{ev.flags} << 16) |
                                 (uint64_t{ev.aux32} << 32));
    store_relaxed(&words[5], ev.aux64);
    store_relaxed(&words[6], uint64_t{ev.generation} | (uint64_t{ev.ended} << 32));
    store_relaxed(&words[7], ev.token);
    crash_point("append:before_complete");  // test builds only
    std::atomic_ref<uint64_t>(e->stamp).store(2 * i + 2, std::memory_order_release);
    seg.next = i + 1;
    seg.position = seg.position + 1 == seg.capacity ? 0 : seg.position + 1;
    std::atomic_ref<uint64_t>(seg.header->head).store(i + 1, std::memory_order_release);
  }

 private:
  format::Header* header_;
  format::RingEntry* base_;  // unit 0 of segment 0
  uint64_t table_id_;
  uint32_t segments_;
  uint32_t units_;           // per segment, the header included

  std::mutex claims_mu_;     // a leaf lock (engine/README.md, lock order 8)
  std::vector<std::pair<format::SegmentHeader*, Word128>> claims_;  // as claimed
};

// After a reboot (REQUIRES: the grow lock held, as reset_if_rebooted does):
// marks every claimed segment's owner dead, so that a pid and start time that
// happen to repeat in the new boot do not keep a segment claimed.
void reset_segments_after_reboot(TableFile& file);

}  // namespace locktable::detail
