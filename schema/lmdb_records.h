// Records stored in the table folder's LMDB environment.
//
// schema/README.md specifies them in prose. Keys that are numbers are
// big-endian (so LMDB's byte order is numeric order); values are little-endian
// and start with a 2-byte version and a 2-byte size of the fixed part, so a
// later version can append fields and an older reader can still decode what it
// knows. Every decoder checks lengths before reading and returns a corrupt
// Status naming the record; none can crash on any input (fuzzed in tests/fuzz).
//
// Named databases:
//   meta             ASCII key -> u64 (little-endian)       counters and settings
//   names            lock name -> NameRecord
//   slots            u32 slot (BE) -> SlotRecord            reverse map: who owns a slot
//   free             u32 slot (BE) -> ""                     slots freed by removal, reusable
//   graveyard        u32 slot, u32 incarnation (BE) -> GraveRecord   names of removed slots,
//                                                            to name their events still in the ring
//   history          u64 seq (BE) -> HistoryRecord
//   history_by_name  lock name -> u64 seq (BE), sorted duplicates (secondary index)
//
// The numbers stored in history records (kinds, modes, flags) are in
// stored_codes.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "locktable/status.h"

namespace locktable::format {

inline constexpr uint16_t kRecordVersion = 1;

// meta keys
inline constexpr std::string_view kMetaFormat = "format";              // kLmdbFormat
inline constexpr std::string_view kMetaNextSlot = "next_slot";         // first never-used slot
inline constexpr std::string_view kMetaNextSeq = "next_seq";          // the next history sequence number
inline constexpr std::string_view kMetaAccounted = "accounted";        // ring events stored or counted lost
inline constexpr std::string_view kMetaLostTotal = "lost_total";       // events counted lost so far
inline constexpr std::string_view kMetaRetentionCount = "retention_count";
inline constexpr std::string_view kMetaRetentionAge = "retention_age_s";
// Header::unsegmented_lost as last turned into a `lost` event.
inline constexpr std::string_view kMetaUnsegmentedSeen = "unsegmented_seen";
// 2: recovered/<slot> records carry a prologue. 3: per-segment drain
// positions and per-slot order; graves keep the removal time.
inline constexpr uint64_t kLmdbFormat = 3;

// meta "segment/<k>" (decimal segment index): how far the drainers got in
// ring segment k: its events below `drained` are in LMDB or counted lost.
// (Every ring entry names its own pid and tid, so events of a claim that
// ended are drained like the others, whoever owns the segment since.)
struct SegmentState {
  uint64_t drained = 0;
};
std::string segment_state_key(uint32_t segment);

// meta "order/<slot>" (decimal slot): the last ownership change of the slot's
// lock (incarnation) stored in history. An ownership change of the same lock
// that reaches a drainer with a lower generation (its thread was descheduled
// between its CAS and its append, across a drain) is counted lost, never
// stored out of order.
struct SlotOrder {
  uint32_t incarnation = 0;
  uint32_t generation = 0;
  uint64_t time_ns = 0;  // of that event: a place far older in time is a wrapped one, not late
  uint32_t ended = 0;    // with generation, its place in the lock's order (RingEntry::ended); 0 in records of size 20
};
std::string slot_order_key(uint32_t slot);

// meta "recovered/<slot>" (decimal slot): the dead owners last recovered from
// the slot, oldest first, each `dead pid << 32 | dead tid`. A takeover is
// appended to history before its CAS, so one death can be appended twice; the
// drainer keeps the first and drops a dead owner it finds here.
inline constexpr size_t kMaxRecentRecoveries = 32;
struct RecentRecoveries {
  std::vector<uint64_t> dead;  // at most kMaxRecentRecoveries
};
std::string recent_recoveries_key(uint32_t slot);

struct NameRecord {
  uint32_t slot = 0;
  uint32_t incarnation = 0;
  uint64_t created_ns = 0;
};
inline constexpr size_t kNameRecordSize = 4 + 4 + 4 + 4 + 8;  // version, size, slot, incarnation, flags, created

struct SlotRecord {
  uint32_t incarnation = 0;
  std::string name;
};

struct GraveRecord {
  uint64_t removed_ns = 0;  // when the name was removed (ns since the epoch)
  std::string name;
};

struct HistoryRecord {
  uint8_t kind = 0;
  uint8_t mode = 0;
  uint16_t flags = 0;
  uint32_t pid = 0;
  uint32_t tid = 0;
  uint32_t slot = 0;
  uint32_t incarnation = 0;
  uint64_t time_ns = 0;
  uint64_t aux64 = 0;
  uint32_t aux32 = 0;
  std::string comm;
  std::string name;
  uint64_t token = 0;  // acquired, released, downgraded: the hold's fencing token (0 in older records)
};
// The fixed part as first written (without token), and as written now.
inline constexpr size_t kHistoryFixedSizeV1 = 2 + 2 + 1 + 1 + 2 + 4 * 4 + 8 + 8 + 4 + 4 + 16;
inline constexpr size_t kHistoryFixedSize = kHistoryFixedSizeV1 + 8;

std::string encode_u32_key(uint32_t v);
std::string encode_u64_key(uint64_t v);
std::string encode_grave_key(uint32_t slot, uint32_t incarnation);
bool decode_u32_key(std::string_view key, uint32_t* v);
bool decode_u64_key(std::string_view key, uint64_t* v);

std::string encode_u64(uint64_t v);
Status decode_u64(std::string_view value, uint64_t* v, std::string_view what);

std::string encode_name_record(const NameRecord& r);
Status decode_name_record(std::string_view value, NameRecord* r, std::string_view name);

std::string encode_slot_record(const SlotRecord& r);
Status decode_slot_record(std::string_view value, SlotRecord* r, uint32_t slot);

std::string encode_grave_record(const GraveRecord& r);
Status decode_grave_record(std::string_view value, GraveRecord* r);

std::string encode_history_record(const HistoryRecord& r);
Status decode_history_record(std::string_view value, HistoryRecord* r, uint64_t seq);

std::string encode_recent_recoveries(const RecentRecoveries& r);
Status decode_recent_recoveries(std::string_view value, RecentRecoveries* r, uint32_t slot);

std::string encode_segment_state(const SegmentState& r);
Status decode_segment_state(std::string_view value, SegmentState* r, uint32_t segment);

std::string encode_slot_order(const SlotOrder& r);
Status decode_slot_order(std::string_view value, SlotOrder* r, uint32_t slot);

}  // namespace locktable::format
