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
inline constexpr std::string_view kMetaDrained = "drained";            // ring tickets below are in LMDB or lost
inline constexpr std::string_view kMetaLostTotal = "lost_total";       // events counted lost so far
inline constexpr std::string_view kMetaRetentionCount = "retention_count";
inline constexpr std::string_view kMetaRetentionAge = "retention_age_s";
// The ring ticket a drainer found not yet written, and since when (ns since
// the epoch): drainers share one grace period for a slow writer through them.
inline constexpr std::string_view kMetaStuckTicket = "stuck_ticket";
inline constexpr std::string_view kMetaStuckSince = "stuck_since_ns";
inline constexpr uint64_t kLmdbFormat = 2;  // 2: recovered/<slot> records carry a prologue

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
  uint64_t removed_seq = 0;
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
};
inline constexpr size_t kHistoryFixedSize = 2 + 2 + 1 + 1 + 2 + 4 * 4 + 8 + 8 + 4 + 4 + 16;

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

}  // namespace locktable::format
