// The locktable table file: byte layout.
//
// schema/README.md specifies this format in prose; this header is the same
// specification as C++ structs. Every size and offset is pinned by a
// static_assert below, so a change to either document without the other fails
// to compile. All integers are little-endian (the format is x86-64 only).
//
// File = [Header: 4096 bytes][Ring: ring_entries * 64 bytes][Extent 0][Extent 1]...
// Extent k = [Slot * slot_count(k)][ReaderRecord * reader_count(k)], padded to 4096.
// Extent geometry is a pure function of initial_slots (see ExtentGeometry), so the
// extent table in the header is redundant by design: it is checked, never trusted.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stored_codes.h"

namespace locktable::format {

// Version 2: 128-byte slots (a second, slow-path line), reader ops carry
// their claim, the header keeps the reader high-water mark. Version 3: the
// ring is cut into per-thread segments. Version 4: a FREE or SHARED owner
// record counts shared acquisitions in aux. Version 5: readers count
// themselves in the slot's readers word with an add (Slot::readers); the
// owner record is FREE or EXCLUSIVE only.
inline constexpr char kMagic[8] = {'L', 'O', 'C', 'K', 'T', 'B', 'L', '5'};
inline constexpr uint32_t kVersion = 5;
inline constexpr uint32_t kHeaderSize = 4096;
inline constexpr uint32_t kSlotSize = 128;
inline constexpr uint32_t kReaderSize = 64;
inline constexpr uint32_t kRingEntrySize = 64;
inline constexpr uint32_t kPageSize = 4096;
inline constexpr uint32_t kMaxExtents = 32;
inline constexpr uint32_t kMinInitialSlots = 8;
inline constexpr uint64_t kMaxSlotsLimit = uint64_t{1} << 30;  // slot index fits ReaderOp's 30 bits
inline constexpr uint32_t kMinRingEntries = 64;
inline constexpr uint32_t kMaxRingEntries = uint32_t{1} << 24;

// The format word (as LMDB's MDB_LOCK_FORMAT): the version and every layout size
// in one value, so a build with a different layout refuses to attach.
inline constexpr uint64_t kFormat = (uint64_t{kVersion} << 32) | (uint64_t{kHeaderSize / 64} << 24) |
                                    (uint64_t{kSlotSize} << 16) | (uint64_t{kReaderSize} << 8) |
                                    uint64_t{kRingEntrySize};

// Byte-range (OFD) lock offsets, far beyond any real end of file (seed 003).
// kGrowLockByte: exclusive while growing the table or resetting it after a reboot.
// kAttachLockByte: shared by every attached process; exclusive means "table to myself".
// kWriterLockByte: exclusive around every LMDB write transaction (see lmdb_env.h).
// kReaderMutexByte: exclusive around every use of LMDB's reader-table mutex (see lmdb_env.h).
inline constexpr int64_t kGrowLockByte = int64_t{1} << 62;
inline constexpr int64_t kAttachLockByte = (int64_t{1} << 62) + 1;
inline constexpr int64_t kWriterLockByte = (int64_t{1} << 62) + 2;
inline constexpr int64_t kReaderMutexByte = (int64_t{1} << 62) + 3;

// ---------------------------------------------------------------------------
// OwnerRecord: the 128-bit word that says which thread holds a lock
// exclusively. Read and changed only as a whole (16-byte atomic load, lock
// cmpxchg16b), except that the kernel may set bits 30/31 of tid_word on its
// own (robust futex protocol). Readers are not in it: they count themselves
// in Slot::readers (ReaderWord, below).
//
//   state      tid_word              pid_word                aux                    generation
//   FREE       WAITERS?              flags                   0                      g
//   EXCLUSIVE  tid|WAITERS?|DIED?    pid | flags             owner start time       g
//
// An EXCLUSIVE owner is in once the readers word counts no reader; until then
// it drains them (DRAINING), and new readers stay out.
// ---------------------------------------------------------------------------
struct OwnerRecord {
  uint32_t tid_word;    // robust futex word: owner tid (bits 0..29), OWNER_DIED (30), WAITERS (31)
  uint32_t pid_word;    // owner pid (bits 0..21), flags (22..31)
  uint32_t aux;         // EXCLUSIVE: low 32 bits of the owner thread's start time (clock ticks
                        // since boot); FREE: 0
  uint32_t generation;  // +1 on every change of exclusive ownership; never on flag-only changes
};
static_assert(sizeof(OwnerRecord) == 16);
static_assert(offsetof(OwnerRecord, tid_word) == 0);
static_assert(offsetof(OwnerRecord, pid_word) == 4);
static_assert(offsetof(OwnerRecord, aux) == 8);
static_assert(offsetof(OwnerRecord, generation) == 12);

// tid_word bits (the kernel's robust futex bits, linux/futex.h).
inline constexpr uint32_t kTidMask = 0x3fffffffu;
inline constexpr uint32_t kOwnerDied = 0x40000000u;
inline constexpr uint32_t kWaiters = 0x80000000u;

// pid_word bits. Bit 31 (SHARED up to version 4) is always 0.
inline constexpr uint32_t kPidMask = 0x003fffffu;          // PID_MAX_LIMIT is 2^22 on 64-bit Linux
inline constexpr uint32_t kRetired = 1u << 27;              // FREE only: name removed, slot not reusable yet
inline constexpr uint32_t kSharedWaiters = 1u << 28;        // a thread waits to take it shared
inline constexpr uint32_t kDraining = 1u << 29;             // EXCLUSIVE: the owner waits for readers to leave
                                                            // (it is not in; it may sleep on Slot::readers)
inline constexpr uint32_t kAbandoned = 1u << 30;            // the next acquirer is told "abandoned" (FREE; and an
                                                            // EXCLUSIVE owner that took it so, while DRAINING)
inline constexpr uint32_t kPidWordFlags = kRetired | kSharedWaiters | kDraining | kAbandoned;

// ---------------------------------------------------------------------------
// ReaderWord (Slot::readers): the readers of a lock, changed by lock xadd
// (and, to take dead readers out, by an 8-byte CAS).
//
//   bits 0..21   count     readers counted in: holding, or joining or backing
//                          out (a join adds first and looks at the owner after)
//   bits 22..53  ended     shared holds that ended (a leave, a dead reader taken
//                          out), mod 2^32: the lock's shared acquisitions (its
//                          wraps are added up in Slot::shared_carry)
//   bits 54..63  backouts  joins undone, mod 2^10: with it every change of the
//                          word changes its value (a recount compares values)
// ---------------------------------------------------------------------------
inline constexpr uint64_t kReaderCountMask = (uint64_t{1} << 22) - 1;
inline constexpr uint32_t kReaderEndedShift = 22;
inline constexpr uint64_t kReaderJoin = 1;                                    // count + 1
inline constexpr uint64_t kReaderLeave = (uint64_t{1} << 22) - 1;             // count - 1, ended + 1
inline constexpr uint64_t kReaderBackout = (uint64_t{1} << 54) - 1;           // count - 1, backouts + 1
constexpr uint32_t reader_count(uint64_t w) { return uint32_t(w & kReaderCountMask); }
constexpr uint32_t readers_ended(uint64_t w) { return uint32_t(w >> kReaderEndedShift); }
constexpr uint64_t make_readers_word(uint32_t count, uint32_t ended, uint32_t backouts) {
  return uint64_t{count} | (uint64_t{ended} << kReaderEndedShift) | (uint64_t{backouts & 0x3ffu} << 54);
}
constexpr uint32_t readers_backouts(uint64_t w) { return uint32_t(w >> 54); }
// The deltas do what they say (with count >= 1 where they take one away).
static_assert(make_readers_word(3, 7, 1) + kReaderJoin == make_readers_word(4, 7, 1));
static_assert(make_readers_word(3, 7, 1) + kReaderLeave == make_readers_word(2, 8, 1));
static_assert(make_readers_word(3, 7, 1) + kReaderBackout == make_readers_word(2, 7, 2));
static_assert(make_readers_word(1, 0xffffffffu, 5) + kReaderLeave == make_readers_word(0, 0, 6));  // carry into backouts
static_assert(make_readers_word(1, 5, 0x3ff) + kReaderBackout == make_readers_word(0, 5, 0));      // carry lost

// owner_shadow: the exclusive owner's tid (bits 0..21) and the low 10 bits
// of the generation its CAS produced (22..31), written by the owner after it.
inline constexpr uint32_t kShadowTidMask = kPidMask;
constexpr uint32_t make_owner_shadow(uint32_t tid, uint32_t generation) {
  return (tid & kShadowTidMask) | (generation << 22);
}

// ---------------------------------------------------------------------------
// Slot: one named lock, two cache lines. Line 0 is all the uncontended paths
// touch; line 1 only waiting, takeover and the slow paths do.
// ---------------------------------------------------------------------------
struct alignas(64) Slot {
  // --- line 0 ---
  OwnerRecord owner;      // see above
  uint32_t incarnation;   // +1 each time the slot is given to a name; handles carry it
  uint32_t owner_shadow;  // make_owner_shadow(tid, generation) by the exclusive owner after acquiring:
                          // names the dead owner's tid after the kernel has cleared it from tid_word
  uint64_t robust_prev;   // robust-list back link; meaningful only inside the owning process
  uint64_t robust_next;   // robust-list link; kernel finds the futex word at robust_next - 32
  uint64_t readers;       // ReaderWord (above)
  uint64_t token;         // fencing token of the last exclusive acquisition (+1 by each exclusive
                          // holder once it is in; never decreases)
  uint64_t acquired_at;   // CLOCK_REALTIME_COARSE ns of the current exclusive acquisition
  // --- line 1 ---
  uint32_t dead_pid;      // the last holder found dead (informational, for the next holder's
  uint32_t dead_tid;      //   "abandoned" report); tid 0 if unknown
  uint32_t waiters;       // threads asleep on the lock (informational, may over-count after a crash)
  uint32_t dead_start;    // start time of dead_pid's thread, 0 if unknown
  // Counters of the name the slot has now (zeroed when a name takes the
  // slot). Exclusive acquisitions are token - token_base, shared ones
  // ended + shared_carry - shared_base (the hot paths pay nothing for
  // either); the rest are counted by the slow paths.
  uint64_t token_base;    // the token when the name took the slot (moved with it at a reboot reset)
  uint32_t contended;     // acquisitions that found the lock held and waited (atomic add)
  uint32_t timeouts;      // acquires that gave up at their deadline (atomic add)
  uint32_t abandoned;     // acquisitions told abandoned (a takeover, or not yet marked consistent; atomic add)
  uint32_t wait_max_us;   // the longest wait of an acquisition, µs (atomic max)
  uint64_t wait_total_us; // the waits of all acquisitions and timeouts, µs (atomic add)
  uint64_t shared_carry;  // 2^32 for each wrap of the readers word's `ended` (atomic add, by the change that wraps it)
  uint64_t shared_base;   // ended + shared_carry when the name took the slot
};
static_assert(sizeof(Slot) == kSlotSize);
static_assert(offsetof(Slot, owner) == 0);
static_assert(offsetof(Slot, incarnation) == 16);
static_assert(offsetof(Slot, owner_shadow) == 20);
static_assert(offsetof(Slot, robust_prev) == 24);
static_assert(offsetof(Slot, robust_next) == 32);
static_assert(offsetof(Slot, readers) == 40);
static_assert(offsetof(Slot, token) == 48);
static_assert(offsetof(Slot, acquired_at) == 56);
static_assert(offsetof(Slot, dead_pid) == 64);
static_assert(offsetof(Slot, dead_tid) == 68);
static_assert(offsetof(Slot, waiters) == 72);
static_assert(offsetof(Slot, dead_start) == 76);
static_assert(offsetof(Slot, token_base) == 80);
static_assert(offsetof(Slot, contended) == 88);
static_assert(offsetof(Slot, timeouts) == 92);
static_assert(offsetof(Slot, abandoned) == 96);
static_assert(offsetof(Slot, wait_max_us) == 100);
static_assert(offsetof(Slot, wait_total_us) == 104);
static_assert(offsetof(Slot, shared_carry) == 112);
static_assert(offsetof(Slot, shared_base) == 120);
static_assert(offsetof(Slot, robust_next) - offsetof(Slot, owner) - offsetof(OwnerRecord, tid_word) == 32,
              "robust futex offset must be -32, as glibc's robust list uses");

// ---------------------------------------------------------------------------
// ReaderRecord: one thread holding (or joining, or leaving) one lock in shared
// mode. Lives in the reader pool of an extent.
// ---------------------------------------------------------------------------
struct alignas(64) ReaderRecord {
  OwnerRecord ident;      // tid_word/pid_word(pid)/aux(start time)/generation of the reader thread;
                          // all zero but generation when the record is free
  uint64_t op;            // ReaderOp: slot (bits 0..29) | state (30..31) | claim (32..63): the
                          // ident generation of the claim it belongs to (an op of an
                          // earlier claim is stale and means nothing)
  uint64_t robust_prev;
  uint64_t robust_next;   // kernel finds ident.tid_word at robust_next - 32
  uint64_t acquired_at;   // CLOCK_REALTIME_COARSE ns when it joined
  uint32_t incarnation;   // slot incarnation when it joined
  uint32_t claimer_tid;   // tid of the claiming thread (the kernel clears ident's tid bits at its death)
  uint64_t waits_for;     // WaitWord: what the claiming thread waits for, 0 when it does not wait. While
                          // it waits, acquired_at is when the wait began and incarnation the lock's
};
static_assert(sizeof(ReaderRecord) == kReaderSize);
static_assert(offsetof(ReaderRecord, ident) == 0);
static_assert(offsetof(ReaderRecord, op) == 16);
static_assert(offsetof(ReaderRecord, robust_prev) == 24);
static_assert(offsetof(ReaderRecord, robust_next) == 32);
static_assert(offsetof(ReaderRecord, acquired_at) == 40);
static_assert(offsetof(ReaderRecord, incarnation) == 48);
static_assert(offsetof(ReaderRecord, claimer_tid) == 52);
static_assert(offsetof(ReaderRecord, waits_for) == 56);
static_assert(offsetof(ReaderRecord, robust_next) - offsetof(ReaderRecord, ident) == 32);

// ReaderRecord::ident.pid_word flag: the dead reader this record names has
// been reported (told to the history) by a recount, so the next recount that
// finds it before it is freed does not report it again.
inline constexpr uint32_t kReaderReported = 1u << 31;

// ReaderOp states.
enum class ReaderState : uint32_t { idle = 0, joining = 1, in = 2, leaving = 3 };
inline constexpr uint64_t kReaderSlotMask = (uint64_t{1} << 30) - 1;

constexpr uint64_t make_reader_op(uint32_t slot, ReaderState state, uint32_t claim) {
  return (uint64_t{slot} & kReaderSlotMask) | (uint64_t(state) << 30) | (uint64_t{claim} << 32);
}
// The op of the same slot and claim in another state. REQUIRES: `op` is idle.
constexpr uint64_t reader_op_in_state(uint64_t op, ReaderState state) { return op | (uint64_t(state) << 30); }
constexpr uint32_t reader_op_slot(uint64_t op) { return uint32_t(op & kReaderSlotMask); }
constexpr ReaderState reader_op_state(uint64_t op) { return ReaderState((op >> 30) & 3); }
constexpr uint32_t reader_op_claim(uint64_t op) { return uint32_t(op >> 32); }

// WaitWord (ReaderRecord::waits_for): a waiter's published wait, for
// deadlock detection and listings. slot (bits 0..29) | shared (30) |
// waiting (31) | detects (32: the waiter itself looks for cycles) | serial
// (33..63: a per-thread count of waits, so two waits never look alike).
inline constexpr uint64_t kWaitShared = uint64_t{1} << 30;
inline constexpr uint64_t kWaitWaiting = uint64_t{1} << 31;
inline constexpr uint64_t kWaitDetects = uint64_t{1} << 32;
constexpr uint64_t make_wait_word(uint32_t slot, bool shared, bool detects, uint32_t serial) {
  return (uint64_t{slot} & kReaderSlotMask) | (shared ? kWaitShared : 0) | kWaitWaiting |
         (detects ? kWaitDetects : 0) | (uint64_t{serial & 0x7fffffffu} << 33);
}
constexpr uint32_t wait_word_slot(uint64_t w) { return uint32_t(w & kReaderSlotMask); }

// ---------------------------------------------------------------------------
// The history ring: ring_entries 64-byte units cut into ring_segments()
// segments of segment_units() units. A thread claims a segment for its events
// (only its owner writes it, so appends share no cache line). Units 0 and 1
// are the SegmentHeader, units 2.. hold RingEntry events, a ring of
// segment_capacity() entries: event i of the segment lives in unit
// 2 + i mod segment_capacity().
// ---------------------------------------------------------------------------
struct alignas(64) SegmentHeader {
  // --- unit 0 ---
  OwnerRecord ident;      // the owner thread {tid_word, pid, start time, claim generation}; zero but the
                          // generation when free; OWNER_DIED set in tid_word by the reset after a reboot.
                          // Not on a robust list (the table may close while the owner thread lives on):
                          // an owner is dead when the liveness check says so
  uint64_t head;          // events ever appended to this segment (all claims); the owner release-stores
                          // it after an event is complete
  uint64_t drained_hint;  // events below it are drained (stored in LMDB or counted lost), as the last
                          // drainer committed it: only ever a hint, for choosing a segment to claim
  uint64_t reserved0;
  uint64_t base;          // head when the current claim began: its events are [base, head)
  char comm[16];          // the owner thread's name, NUL-padded
  // --- unit 1 ---
  uint64_t prev_base;     // the claim before: its events are [prev_base, base)
  char prev_comm[16];     // and its thread's name
  uint8_t reserved[40];
};
static_assert(sizeof(SegmentHeader) == 128);
static_assert(offsetof(SegmentHeader, ident) == 0);
static_assert(offsetof(SegmentHeader, head) == 16);
static_assert(offsetof(SegmentHeader, drained_hint) == 24);
static_assert(offsetof(SegmentHeader, reserved0) == 32);
static_assert(offsetof(SegmentHeader, base) == 40);
static_assert(offsetof(SegmentHeader, comm) == 48);
static_assert(offsetof(SegmentHeader, prev_base) == 64);
static_assert(offsetof(SegmentHeader, prev_comm) == 72);
inline constexpr uint32_t kSegmentHeaderUnits = sizeof(SegmentHeader) / kRingEntrySize;

struct alignas(64) RingEntry {
  uint64_t stamp;        // 2i+1 while event i of its segment is being written, 2i+2 once complete
  uint64_t time_ns;      // CLOCK_REALTIME_COARSE, ns since the epoch
  uint32_t pid;
  uint32_t tid;
  uint32_t slot;
  uint32_t incarnation;
  uint8_t kind;          // kEvent* (stored_codes.h)
  uint8_t mode;          // kModeExclusive, kModeShared
  uint16_t flags;        // kEventAbandoned, kEventAfterGeneration, kEventUnordered
  uint32_t aux32;        // recovered: dead owner's tid
  uint64_t aux64;        // acquired: wait ns; released: hold ns; recovered: dead pid << 32 | start;
                         // grown: new slot capacity; reset: locks freed
  uint32_t generation;   // the owner record's generation at the event (see below)
  uint32_t ended;        // the readers word's `ended` at the event: with generation, the event's place
                         // in its lock's order (history_store.cc)
  uint64_t token;        // acquired, released, downgraded: the hold's fencing token (0: none)
};
static_assert(sizeof(RingEntry) == kRingEntrySize);
static_assert(offsetof(RingEntry, stamp) == 0);
static_assert(offsetof(RingEntry, time_ns) == 8);
static_assert(offsetof(RingEntry, pid) == 16);
static_assert(offsetof(RingEntry, tid) == 20);
static_assert(offsetof(RingEntry, slot) == 24);
static_assert(offsetof(RingEntry, incarnation) == 28);
static_assert(offsetof(RingEntry, kind) == 32);
static_assert(offsetof(RingEntry, mode) == 33);
static_assert(offsetof(RingEntry, flags) == 34);
static_assert(offsetof(RingEntry, aux32) == 36);
static_assert(offsetof(RingEntry, aux64) == 40);
static_assert(offsetof(RingEntry, generation) == 48);
static_assert(offsetof(RingEntry, ended) == 52);
static_assert(offsetof(RingEntry, token) == 56);

// The segments of a ring of `ring_entries` units: 4 to 256, about 2048 units
// each (the most threads that append history to one table at once).
constexpr uint32_t ring_segments(uint32_t ring_entries) {
  uint32_t n = ring_entries / 2048;
  return n < 4 ? 4 : (n > 256 ? 256 : n);
}
constexpr uint32_t segment_units(uint32_t ring_entries) { return ring_entries / ring_segments(ring_entries); }
constexpr uint32_t segment_capacity(uint32_t ring_entries) { return segment_units(ring_entries) - kSegmentHeaderUnits; }
static_assert(ring_segments(1u << 17) == 64 && segment_capacity(1u << 17) == 2046);
static_assert(ring_segments(64) == 4 && segment_capacity(64) == 14);
static_assert(ring_segments(1u << 24) == 256 && segment_capacity(1u << 24) == 65534);

// ---------------------------------------------------------------------------
// Header: page 0 of the file.
// Bytes [0, 76) never change after creation and are covered by header_crc.
// ---------------------------------------------------------------------------
struct ExtentDescriptor {
  uint64_t offset;        // file offset of the extent (page aligned)
  uint32_t first_slot;
  uint32_t slot_count;
  uint32_t first_reader;
  uint32_t reader_count;
  uint64_t bytes;         // extent size in the file (page aligned)
};
static_assert(sizeof(ExtentDescriptor) == 32);
static_assert(offsetof(ExtentDescriptor, offset) == 0);
static_assert(offsetof(ExtentDescriptor, first_slot) == 8);
static_assert(offsetof(ExtentDescriptor, slot_count) == 12);
static_assert(offsetof(ExtentDescriptor, first_reader) == 16);
static_assert(offsetof(ExtentDescriptor, reader_count) == 20);
static_assert(offsetof(ExtentDescriptor, bytes) == 24);

struct Header {
  // --- immutable after creation, covered by header_crc ---
  char magic[8];              // kMagic
  uint64_t format;            // kFormat
  uint32_t header_size;       // kHeaderSize
  uint32_t slot_size;         // kSlotSize
  uint32_t reader_size;       // kReaderSize
  uint32_t ring_entry_size;   // kRingEntrySize
  uint64_t ring_offset;       // kHeaderSize
  uint32_t ring_entries;      // power of two
  uint32_t initial_slots;     // slots in extent 0, power of two
  uint64_t max_slots;         // growth stops here
  uint64_t pid_namespace;     // inode of the creator's /proc/self/ns/pid
  uint64_t created_ns;        // CLOCK_REALTIME at creation
  uint32_t creator_uid;
  uint32_t header_crc;        // CRC-32 of bytes [0, 76)
  // --- mutable ---
  uint8_t boot_id[16];        // /proc/sys/kernel/random/boot_id of the boot the locks belong to
  uint32_t extent_count;      // published extents (atomic; release on publish)
  uint32_t history_level;     // kHistoryOff, kHistoryRing, kHistoryPersisted (atomic)
  uint32_t reset_count;       // reboot resets so far
  uint32_t reader_hwm;        // reader records [0, reader_hwm) have ever been claimed (atomic max):
                              // scans of the pool stop there
  uint64_t reserved1[2];
  ExtentDescriptor extents[kMaxExtents];
  alignas(64) uint64_t unsegmented_lost;  // events of threads that found no free ring segment
                                          // (atomic add); alone on its cache line
  uint8_t reserved2[kHeaderSize - 1152 - 8];
};
static_assert(sizeof(Header) == kHeaderSize);
static_assert(offsetof(Header, magic) == 0);
static_assert(offsetof(Header, format) == 8);
static_assert(offsetof(Header, header_size) == 16);
static_assert(offsetof(Header, slot_size) == 20);
static_assert(offsetof(Header, reader_size) == 24);
static_assert(offsetof(Header, ring_entry_size) == 28);
static_assert(offsetof(Header, ring_offset) == 32);
static_assert(offsetof(Header, ring_entries) == 40);
static_assert(offsetof(Header, initial_slots) == 44);
static_assert(offsetof(Header, max_slots) == 48);
static_assert(offsetof(Header, pid_namespace) == 56);
static_assert(offsetof(Header, created_ns) == 64);
static_assert(offsetof(Header, creator_uid) == 72);
static_assert(offsetof(Header, header_crc) == 76);
static_assert(offsetof(Header, boot_id) == 80);
static_assert(offsetof(Header, extent_count) == 96);
static_assert(offsetof(Header, history_level) == 100);
static_assert(offsetof(Header, reset_count) == 104);
static_assert(offsetof(Header, reader_hwm) == 108);
static_assert(offsetof(Header, extents) == 128);
static_assert(offsetof(Header, unsegmented_lost) == 1152);
inline constexpr size_t kHeaderCrcBytes = offsetof(Header, header_crc);

// ---------------------------------------------------------------------------
// Extent geometry: extent k holds initial_slots << k slots and a quarter as many
// reader records (at least 64), padded to a page.
// ---------------------------------------------------------------------------
struct ExtentGeometry {
  uint64_t offset;
  uint64_t first_slot;
  uint64_t slot_count;
  uint64_t first_reader;
  uint64_t reader_count;
  uint64_t bytes;
};

constexpr uint64_t round_up_page(uint64_t n) { return (n + kPageSize - 1) / kPageSize * kPageSize; }
constexpr uint64_t readers_for_slots(uint64_t slots) { return slots / 4 < 64 ? 64 : slots / 4; }
constexpr uint64_t ring_bytes(uint32_t ring_entries) { return uint64_t{ring_entries} * kRingEntrySize; }
constexpr uint64_t first_extent_offset(uint32_t ring_entries) {
  return round_up_page(kHeaderSize + ring_bytes(ring_entries));
}

constexpr ExtentGeometry extent_geometry(uint32_t ring_entries, uint32_t initial_slots, uint32_t k) {
  ExtentGeometry g{first_extent_offset(ring_entries), 0, initial_slots, 0, readers_for_slots(initial_slots), 0};
  g.bytes = round_up_page(g.slot_count * kSlotSize + g.reader_count * kReaderSize);
  for (uint32_t i = 0; i < k; ++i) {
    g.offset += g.bytes;
    g.first_slot += g.slot_count;
    g.first_reader += g.reader_count;
    g.slot_count *= 2;
    g.reader_count = readers_for_slots(g.slot_count);
    g.bytes = round_up_page(g.slot_count * kSlotSize + g.reader_count * kReaderSize);
  }
  return g;
}

// Number of extents needed to hold max_slots, and the file size at that point.
constexpr uint32_t extents_for_max_slots(uint32_t ring_entries, uint32_t initial_slots, uint64_t max_slots) {
  uint32_t k = 0;
  while (k + 1 < kMaxExtents) {
    ExtentGeometry g = extent_geometry(ring_entries, initial_slots, k);
    if (g.first_slot + g.slot_count >= max_slots) break;
    ++k;
  }
  return k + 1;
}

static_assert(extent_geometry(64, 8, 0).offset == 8192);
static_assert(extent_geometry(64, 8, 1).first_slot == 8);
static_assert(extent_geometry(64, 8, 2).first_slot == 24);
static_assert(extent_geometry(64, 8, 2).slot_count == 32);

}  // namespace locktable::format
