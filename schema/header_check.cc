#include "header_check.h"

#include <boost/crc.hpp>
#include <cstring>

#include <fmt/format.h>

namespace locktable::format {

namespace {

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

Status corrupt(const std::string& path, const std::string& what) {
  return Status(Code::corrupt, fmt::format("{}: corrupt table header: {}", path, what));
}

}  // namespace

uint32_t header_crc(const Header& h) {
  boost::crc_32_type crc;
  crc.process_bytes(&h, kHeaderCrcBytes);
  return crc.checksum();
}

uint64_t published_end(const Header& h, uint32_t extent_count) {
  if (extent_count == 0) return first_extent_offset(h.ring_entries);
  ExtentGeometry g = extent_geometry(h.ring_entries, h.initial_slots, extent_count - 1);
  return g.offset + g.bytes;
}

Status validate_header(const Header& h, uint64_t file_size, const std::string& path) {
  if (file_size < sizeof(Header)) {
    if (file_size >= sizeof(kMagic) && std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
      return Status(Code::corrupt, fmt::format("{}: not a locktable file (bad magic)", path));
    }
    return Status(Code::corrupt,
                  fmt::format("{}: truncated: {} bytes, the header alone needs {}", path, file_size, sizeof(Header)));
  }
  if (std::memcmp(h.magic, kMagic, 7) != 0) {
    return Status(Code::corrupt, fmt::format("{}: not a locktable file (bad magic)", path));
  }
  if (h.magic[7] != kMagic[7] || (h.format >> 32) != kVersion) {
    return Status(Code::version_mismatch,
                  fmt::format("{}: table format version {}, this build reads version {}", path,
                              uint32_t(h.format >> 32), kVersion));
  }
  if (h.format != kFormat) {
    return Status(Code::version_mismatch,
                  fmt::format("{}: table layout word {:#x} differs from this build's {:#x}", path, h.format, kFormat));
  }
  if (h.header_size != kHeaderSize || h.slot_size != kSlotSize || h.reader_size != kReaderSize ||
      h.ring_entry_size != kRingEntrySize) {
    return corrupt(path, "record sizes disagree with the format word");
  }
  if (header_crc(h) != h.header_crc) return corrupt(path, "checksum mismatch");
  if (h.ring_offset != kHeaderSize) return corrupt(path, fmt::format("ring offset {}", h.ring_offset));
  if (!is_power_of_two(h.ring_entries) || h.ring_entries < kMinRingEntries || h.ring_entries > kMaxRingEntries) {
    return corrupt(path, fmt::format("ring size {}", h.ring_entries));
  }
  if (!is_power_of_two(h.initial_slots) || h.initial_slots < kMinInitialSlots || h.initial_slots > h.max_slots) {
    return corrupt(path, fmt::format("initial slot count {}", h.initial_slots));
  }
  if (h.max_slots > kMaxSlotsLimit) return corrupt(path, fmt::format("slot limit {}", h.max_slots));
  if (h.history_level > kMaxHistoryLevel) {
    return corrupt(path, fmt::format("history level {}", h.history_level));
  }
  uint32_t count = h.extent_count;
  uint32_t limit = extents_for_max_slots(h.ring_entries, h.initial_slots, h.max_slots);
  if (count == 0 || count > limit) return corrupt(path, fmt::format("extent count {}", count));
  for (uint32_t k = 0; k < count; ++k) {
    ExtentGeometry g = extent_geometry(h.ring_entries, h.initial_slots, k);
    const ExtentDescriptor& d = h.extents[k];
    if (d.offset != g.offset || d.first_slot != g.first_slot || d.slot_count != g.slot_count ||
        d.first_reader != g.first_reader || d.reader_count != g.reader_count || d.bytes != g.bytes) {
      return corrupt(path, fmt::format("extent {} descriptor disagrees with the table geometry", k));
    }
  }
  uint64_t end = published_end(h, count);
  if (file_size < end) {
    return Status(Code::corrupt,
                  fmt::format("{}: truncated: {} bytes, the header describes {} bytes", path, file_size, end));
  }
  return Status::OK();
}

void init_header(Header* h, uint32_t ring_entries, uint32_t initial_slots, uint64_t max_slots,
                 uint64_t pid_namespace, const uint8_t boot_id[16], uint64_t created_ns, uint32_t uid,
                 uint32_t history_level) {
  std::memset(h, 0, sizeof *h);
  std::memcpy(h->magic, kMagic, sizeof kMagic);
  h->format = kFormat;
  h->header_size = kHeaderSize;
  h->slot_size = kSlotSize;
  h->reader_size = kReaderSize;
  h->ring_entry_size = kRingEntrySize;
  h->ring_offset = kHeaderSize;
  h->ring_entries = ring_entries;
  h->initial_slots = initial_slots;
  h->max_slots = max_slots;
  h->pid_namespace = pid_namespace;
  h->created_ns = created_ns;
  h->creator_uid = uid;
  h->header_crc = header_crc(*h);
  std::memcpy(h->boot_id, boot_id, 16);
  h->history_level = history_level;
  ExtentGeometry g = extent_geometry(ring_entries, initial_slots, 0);
  h->extents[0] = ExtentDescriptor{g.offset, uint32_t(g.first_slot), uint32_t(g.slot_count),
                                   uint32_t(g.first_reader), uint32_t(g.reader_count), g.bytes};
  h->extent_count = 1;
}

}  // namespace locktable::format
