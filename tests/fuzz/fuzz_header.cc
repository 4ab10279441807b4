// Fuzzes validate_header: whatever the header bytes and the file size, it must
// return a Status without reading outside the header, and a header it accepts
// must describe a table the engine can map safely.
//
// Input: [flags byte][8 bytes file size][header bytes...]. Flag bits repair the
// magic and format word (bit 0) and the checksum (bit 1), so that the fuzzer
// gets past them to the ring and extent geometry.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "header_check.h"

using namespace locktable::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const uint8_t flags = data[0];
  uint64_t file_size;
  std::memcpy(&file_size, data + 1, 8);
  data += 9;
  size -= 9;

  Header h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(&h, data, size < sizeof h ? size : sizeof h);
  if (flags & 1) {
    std::memcpy(h.magic, kMagic, sizeof h.magic);
    h.format = kFormat;
  }
  if (flags & 2) h.header_crc = header_crc(h);

  if (!validate_header(h, file_size, "fuzz").ok()) return 0;
  // Accepted: what the engine relies on before it maps anything.
  if (h.extent_count == 0 || h.extent_count > kMaxExtents) std::abort();
  if (h.ring_entries == 0 || (h.ring_entries & (h.ring_entries - 1)) != 0) std::abort();
  if (published_end(h, h.extent_count) > file_size) std::abort();
  return 0;
}
