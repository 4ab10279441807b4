// The history ring: a multi-producer ring of 64-byte events inside the mapped
// table file, so an event survives the crash of the process that wrote it.
//
// Append (any thread, never blocks, no syscall, no lock):
//   1. t = fetch_add(header.ring_head, 1)            -- the event's sequence number
//   2. write pid/tid, then stamp = 2t+1 (release)     -- "being written by tid"
//   3. write the other fields
//   4. stamp = 2t+2 (release)                         -- "complete"
// The entry lives at ring[t mod size]; a writer overwrites whatever was there,
// drained or not (the drainer counts what it missed as lost).
//
// Read (a drainer, for ticket t): stamp == 2t+2 -> copy the fields, re-read the
// stamp, and keep the copy only if it is unchanged. stamp > 2t+2 -> the entry
// was overwritten by a later ticket: lost. stamp == 2t+1 -> being written; if
// its writer is dead it never will be: lost. stamp < 2t+1 -> the writer took
// the ticket but has not started: wait, and after a grace period count it lost.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#include "clock.h"
#include "table_format.h"
#include "thread_self.h"

namespace locktable::detail {

struct RingEvent {
  uint8_t kind;
  uint8_t mode;
  uint16_t flags;
  uint32_t slot;
  uint32_t incarnation;
  uint32_t aux32;
  uint64_t aux64;
};

inline void store_relaxed(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
inline void store_relaxed(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

inline uint64_t ring_append(format::Header* header, format::RingEntry* ring, uint32_t mask, const ThreadSelf& me,
                            const RingEvent& ev, uint64_t time_ns) {
  uint64_t t = std::atomic_ref<uint64_t>(header->ring_head).fetch_add(1, std::memory_order_relaxed);
  format::RingEntry* e = &ring[t & mask];
  store_relaxed(&e->pid, me.pid);
  store_relaxed(&e->tid, me.tid);
  std::atomic_ref<uint64_t>(e->stamp).store(2 * t + 1, std::memory_order_release);
  store_relaxed(&e->time_ns, time_ns);
  store_relaxed(&e->slot, ev.slot);
  store_relaxed(&e->incarnation, ev.incarnation);
  // kind, mode and flags share one 32-bit word; aux32 its own.
  store_relaxed(reinterpret_cast<uint32_t*>(&e->kind),
                uint32_t(ev.kind) | (uint32_t(ev.mode) << 8) | (uint32_t(ev.flags) << 16));
  store_relaxed(&e->aux32, ev.aux32);
  store_relaxed(&e->aux64, ev.aux64);
  uint64_t comm[2];
  std::memcpy(comm, me.comm, 16);
  store_relaxed(reinterpret_cast<uint64_t*>(e->comm), comm[0]);
  store_relaxed(reinterpret_cast<uint64_t*>(e->comm) + 1, comm[1]);
  std::atomic_ref<uint64_t>(e->stamp).store(2 * t + 2, std::memory_order_release);
  return t;
}

// The ring of one mapped table, and its history level (a header field any
// process may change): appends happen only while the level is not off.
class HistoryRing {
 public:
  HistoryRing(format::Header* header, format::RingEntry* ring, uint32_t mask)
      : header_(header), ring_(ring), mask_(mask) {}

  uint32_t level() const { return __atomic_load_n(&header_->history_level, __ATOMIC_RELAXED); }
  bool on() const { return level() != format::kHistoryOff; }
  const uint32_t* level_word() const { return &header_->history_level; }

  // Appends `ev`, stamped now, when history is on.
  void record(const RingEvent& ev) {
    if (on()) record_at(ev, realtime_coarse_ns());
  }
  // Appends `ev` stamped `time_ns`. REQUIRES: history is on (the caller checked).
  void record_at(const RingEvent& ev, uint64_t time_ns) { ring_append(header_, ring_, mask_, thread_self(), ev, time_ns); }

 private:
  format::Header* header_;
  format::RingEntry* ring_;
  uint32_t mask_;
};

enum class RingRead { complete, overwritten, writing, not_started };

// Reads ticket t. On `complete`, *out holds a consistent copy. On `writing`,
// *writer_pid / *writer_tid name the writer.
RingRead ring_read(const format::RingEntry* ring, uint32_t mask, uint64_t t, format::RingEntry* out,
                   uint32_t* writer_pid, uint32_t* writer_tid);

}  // namespace locktable::detail
