// Validation of a table file header against the file it came from.
//
// A pure function of the header bytes and the file size, so that it can be
// fuzzed (tests/fuzz/fuzz_header.cc): whatever the bytes, it returns a Status
// and never reads outside the header.
#pragma once

#include <cstdint>
#include <string>

#include "locktable/status.h"
#include "table_format.h"

namespace locktable::format {

// CRC-32 of the immutable part of the header (bytes [0, kHeaderCrcBytes)).
uint32_t header_crc(const Header& h);

// Checks magic, format word, sizes, checksum, ring and extent geometry, and that
// the file is long enough for every published extent. `path` goes into messages.
Status validate_header(const Header& h, uint64_t file_size, const std::string& path);

// Builds a fresh header (extent_count = 1) for the given parameters.
void init_header(Header* h, uint32_t ring_entries, uint32_t initial_slots, uint64_t max_slots,
                 uint64_t pid_namespace, const uint8_t boot_id[16], uint64_t created_ns, uint32_t uid,
                 uint32_t history_level);

// End of the last published extent (the minimum file size).
uint64_t published_end(const Header& h, uint32_t extent_count);

}  // namespace locktable::format
