// Fuzzes the LMDB record decoders: any bytes give a Status, never a crash or an
// out-of-bounds read, and a record that decodes re-encodes to a value that
// decodes to the same fields.
//
// Input: [selector byte][value bytes...].
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lmdb_records.h"

using namespace locktable::format;

namespace {

[[noreturn]] void mismatch() { std::abort(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  std::string_view value(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (selector % 9) {
    case 0: {
      NameRecord r, again;
      if (!decode_name_record(value, &r, "fuzz").ok()) return 0;
      if (!decode_name_record(encode_name_record(r), &again, "fuzz").ok()) mismatch();
      if (again.slot != r.slot || again.incarnation != r.incarnation || again.created_ns != r.created_ns) mismatch();
      break;
    }
    case 1: {
      SlotRecord r, again;
      if (!decode_slot_record(value, &r, 7).ok()) return 0;
      if (!decode_slot_record(encode_slot_record(r), &again, 7).ok()) mismatch();
      if (again.incarnation != r.incarnation || again.name != r.name) mismatch();
      break;
    }
    case 2: {
      GraveRecord r, again;
      if (!decode_grave_record(value, &r).ok()) return 0;
      if (!decode_grave_record(encode_grave_record(r), &again).ok()) mismatch();
      if (again.removed_ns != r.removed_ns || again.name != r.name) mismatch();
      break;
    }
    case 3: {
      HistoryRecord r, again;
      if (!decode_history_record(value, &r, 1).ok()) return 0;
      if (!decode_history_record(encode_history_record(r), &again, 1).ok()) mismatch();
      if (again.kind != r.kind || again.mode != r.mode || again.flags != r.flags || again.pid != r.pid ||
          again.tid != r.tid || again.slot != r.slot || again.incarnation != r.incarnation ||
          again.time_ns != r.time_ns || again.aux64 != r.aux64 || again.aux32 != r.aux32 || again.comm != r.comm ||
          again.name != r.name) {
        mismatch();
      }
      break;
    }
    case 4: {
      uint64_t v = 0, again = 0;
      if (!decode_u64(value, &v, "fuzz").ok()) return 0;
      if (!decode_u64(encode_u64(v), &again, "fuzz").ok() || again != v) mismatch();
      break;
    }
    case 6: {
      RecentRecoveries r, again;
      if (!decode_recent_recoveries(value, &r, 7).ok()) return 0;
      if (r.dead.size() > kMaxRecentRecoveries) mismatch();
      if (!decode_recent_recoveries(encode_recent_recoveries(r), &again, 7).ok() || again.dead != r.dead) mismatch();
      break;
    }
    case 7: {
      SegmentState r, again;
      if (!decode_segment_state(value, &r, 7).ok()) return 0;
      if (!decode_segment_state(encode_segment_state(r), &again, 7).ok() || again.drained != r.drained) mismatch();
      break;
    }
    case 8: {
      SlotOrder r, again;
      if (!decode_slot_order(value, &r, 7).ok()) return 0;
      if (!decode_slot_order(encode_slot_order(r), &again, 7).ok() || again.incarnation != r.incarnation ||
          again.generation != r.generation || again.time_ns != r.time_ns) {
        mismatch();
      }
      break;
    }
    default: {
      uint32_t k32 = 0;
      uint64_t k64 = 0;
      if (decode_u32_key(value, &k32) && encode_u32_key(k32) != value) mismatch();
      if (decode_u64_key(value, &k64) && encode_u64_key(k64) != value) mismatch();
      break;
    }
  }
  return 0;
}
