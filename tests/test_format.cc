// The on-disk formats: header validation, geometry, record packing, LMDB codecs.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "atomic128.h"
#include "header_check.h"
#include "lmdb_records.h"
#include "table_format.h"

using namespace locktable;
using namespace locktable::format;

namespace {

Header fresh_header() {
  Header h;
  uint8_t boot[16] = {1, 2, 3};
  init_header(&h, 1024, 64, 1u << 20, 4026531836u, boot, 123, 0, kHistoryPersisted);
  return h;
}

uint64_t size_of(const Header& h) { return published_end(h, h.extent_count); }

}  // namespace

TEST_CASE("owner record packs pid, tid, start time and generation into 128 bits") {
  detail::Word128 w = detail::make_word(0x1234 | kWaiters, 777 | kSharedWaiters, 0xdeadbeef, 42);
  OwnerRecord r = detail::to_record(w);
  CHECK(r.tid_word == (0x1234 | kWaiters));
  CHECK((r.pid_word & kPidMask) == 777);
  CHECK(r.aux == 0xdeadbeef);
  CHECK(r.generation == 42);
  // The same bytes in memory as the struct (little-endian x86-64).
  OwnerRecord mem;
  std::memcpy(&mem, &w, sizeof w);
  CHECK(std::memcmp(&mem, &r, sizeof r) == 0);
}

TEST_CASE("cas128 swaps all 16 bytes or none") {
  alignas(16) detail::Word128 cell = detail::make_word(1, 2, 3, 4);
  detail::Word128 expected = detail::make_word(1, 2, 3, 5);  // wrong generation
  CHECK_FALSE(detail::cas128(&cell, expected, detail::make_word(9, 9, 9, 9)));
  CHECK(expected == detail::make_word(1, 2, 3, 4));  // got the current value
  CHECK(detail::cas128(&cell, expected, detail::make_word(9, 9, 9, 9)));
  CHECK(detail::load128(&cell) == detail::make_word(9, 9, 9, 9));
}

TEST_CASE("reader op word round-trips") {
  uint64_t op = make_reader_op((1u << 30) - 1, ReaderState::leaving, 0xfedcba98u);
  CHECK(reader_op_slot(op) == (1u << 30) - 1);
  CHECK(reader_op_state(op) == ReaderState::leaving);
  CHECK(reader_op_claim(op) == 0xfedcba98u);
}

TEST_CASE("extent geometry doubles and never overlaps") {
  for (uint32_t k = 1; k < 20; ++k) {
    ExtentGeometry prev = extent_geometry(1024, 8, k - 1), cur = extent_geometry(1024, 8, k);
    CHECK(cur.offset == prev.offset + prev.bytes);
    CHECK(cur.first_slot == prev.first_slot + prev.slot_count);
    CHECK(cur.slot_count == prev.slot_count * 2);
    CHECK(cur.offset % kPageSize == 0);
    CHECK(cur.bytes >= cur.slot_count * kSlotSize + cur.reader_count * kReaderSize);
  }
  uint32_t n = extents_for_max_slots(1024, 8, 1'000'000);
  ExtentGeometry last = extent_geometry(1024, 8, n - 1);
  CHECK(last.first_slot + last.slot_count >= 1'000'000);
  CHECK(extent_geometry(1024, 8, n - 2).first_slot + extent_geometry(1024, 8, n - 2).slot_count < 1'000'000);
}

TEST_CASE("a fresh header validates") {
  Header h = fresh_header();
  Status s = validate_header(h, size_of(h), "/x/table");
  INFO(s.to_string());
  CHECK(s.ok());
}

TEST_CASE("header validation names the file and the problem") {
  Header h = fresh_header();
  SECTION("bad magic") {
    std::memcpy(h.magic, "NOTATABL", 8);
    Status s = validate_header(h, size_of(h), "/x/table");
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message() == "/x/table: not a locktable file (bad magic)");
  }
  SECTION("newer version") {
    h.magic[7] = char('0' + kVersion + 1);
    h.format = (uint64_t{kVersion + 1} << 32) | (kFormat & 0xffffffffu);
    Status s = validate_header(h, size_of(h), "/x/table");
    CHECK(s.code() == Code::version_mismatch);
    CHECK(s.message().find(fmt::format("version {}, this build reads version {}", kVersion + 1, kVersion)) != std::string::npos);
  }
  SECTION("different layout word") {
    h.format ^= 1;
    CHECK(validate_header(h, size_of(h), "/x/table").code() == Code::version_mismatch);
  }
  SECTION("truncated below the header") {
    Status s = validate_header(h, 100, "/x/table");
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message().find("truncated") != std::string::npos);
  }
  SECTION("truncated below the published extents") {
    Status s = validate_header(h, size_of(h) - 1, "/x/table");
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message().find("truncated") != std::string::npos);
  }
  SECTION("checksum catches a changed immutable field") {
    h.pid_namespace ^= 0x100;
    Status s = validate_header(h, size_of(h), "/x/table");
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message().find("checksum") != std::string::npos);
  }
  SECTION("extent count beyond the limit") {
    h.extent_count = 31;
    CHECK(validate_header(h, 1ull << 40, "/x/table").code() == Code::corrupt);
  }
  SECTION("extent descriptor disagreeing with the geometry") {
    h.extents[0].slot_count = 1000;
    Status s = validate_header(h, size_of(h), "/x/table");
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message().find("extent 0") != std::string::npos);
  }
  SECTION("history level") {
    h.history_level = 7;
    CHECK(validate_header(h, size_of(h), "/x/table").code() == Code::corrupt);
  }
}

TEST_CASE("every single-byte corruption of the immutable header is caught") {
  Header good = fresh_header();
  for (size_t i = 0; i < kHeaderCrcBytes + 4; ++i) {
    Header h = good;
    reinterpret_cast<uint8_t*>(&h)[i] ^= 0x5a;
    Status s = validate_header(h, size_of(good), "/x/table");
    INFO("byte " << i);
    CHECK_FALSE(s.ok());
  }
}

TEST_CASE("LMDB records round-trip") {
  NameRecord n{7, 3, 99};
  NameRecord n2;
  REQUIRE(decode_name_record(encode_name_record(n), &n2, "x").ok());
  CHECK(n2.slot == 7);
  CHECK(n2.incarnation == 3);
  CHECK(n2.created_ns == 99);

  SlotRecord s{5, "orders"}, s2;
  REQUIRE(decode_slot_record(encode_slot_record(s), &s2, 1).ok());
  CHECK(s2.incarnation == 5);
  CHECK(s2.name == "orders");

  HistoryRecord h;
  h.kind = 5;
  h.mode = 1;
  h.flags = 1;
  h.pid = 10;
  h.tid = 11;
  h.slot = 12;
  h.incarnation = 13;
  h.time_ns = 14;
  h.aux64 = 15;
  h.aux32 = 16;
  h.comm = "worker";
  h.name = "orders";
  h.token = 17;
  HistoryRecord h2;
  REQUIRE(decode_history_record(encode_history_record(h), &h2, 1).ok());
  CHECK(h2.kind == 5);
  CHECK(h2.mode == 1);
  CHECK(h2.pid == 10);
  CHECK(h2.aux64 == 15);
  CHECK(h2.aux32 == 16);
  CHECK(h2.comm == "worker");
  CHECK(h2.name == "orders");
  CHECK(h2.token == 17);
  // A record written before tokens (a fixed part 8 bytes shorter) still
  // decodes, with token 0.
  std::string v1 = encode_history_record(h);
  v1.erase(kHistoryFixedSizeV1, 8);
  v1[2] = char(kHistoryFixedSizeV1);
  HistoryRecord h3;
  REQUIRE(decode_history_record(v1, &h3, 1).ok());
  CHECK(h3.token == 0);
  CHECK(h3.name == "orders");

  RecentRecoveries r{{(uint64_t{4688} << 32) | 4688, (uint64_t{812} << 32) | 813}}, r2;
  REQUIRE(decode_recent_recoveries(encode_recent_recoveries(r), &r2, 3).ok());
  CHECK(r2.dead == r.dead);
  CHECK(recent_recoveries_key(3) == "recovered/3");

  GraveRecord g{1733000000123456789ull, "old-cache"}, g2;
  REQUIRE(decode_grave_record(encode_grave_record(g), &g2).ok());
  CHECK(g2.removed_ns == g.removed_ns);
  CHECK(g2.name == "old-cache");

  SegmentState seg{4093}, seg2;
  REQUIRE(decode_segment_state(encode_segment_state(seg), &seg2, 2).ok());
  CHECK(seg2.drained == 4093);
  CHECK(segment_state_key(2) == "segment/2");

  SlotOrder o{3, 41, 1733000000123456789ull}, o2;
  REQUIRE(decode_slot_order(encode_slot_order(o), &o2, 5).ok());
  CHECK(o2.incarnation == 3);
  CHECK(o2.generation == 41);
  CHECK(o2.time_ns == o.time_ns);
  CHECK(slot_order_key(5) == "order/5");

  CHECK(encode_u64_key(1) < encode_u64_key(256));  // big-endian keys sort numerically
  uint64_t v = 0;
  CHECK(decode_u64_key(encode_u64_key(0x0102030405060708ull), &v));
  CHECK(v == 0x0102030405060708ull);
}

TEST_CASE("corrupt LMDB records give an error naming the record") {
  HistoryRecord h;
  h.kind = 3;
  h.name = "orders";
  std::string good = encode_history_record(h);
  HistoryRecord out;
  for (size_t cut = 0; cut < good.size(); ++cut) {
    Status s = decode_history_record(good.substr(0, cut), &out, 77);
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message().find("history record 77") != std::string::npos);
  }
  std::string bad_kind = good;
  bad_kind[4] = char(200);
  CHECK(decode_history_record(bad_kind, &out, 78).code() == Code::corrupt);
  std::string max_kind = good;
  max_kind[4] = char(kMaxEventKind);
  CHECK(decode_history_record(max_kind, &out, 79).ok());
  max_kind[4] = char(kMaxEventKind + 1);
  CHECK(decode_history_record(max_kind, &out, 79).code() == Code::corrupt);
  NameRecord n;
  CHECK(decode_name_record("abc", &n, "orders").message().find("'orders'") != std::string::npos);

  // Recent recoveries: every cut, too many, and the native-order form of LMDB format 1.
  std::string rec = encode_recent_recoveries(RecentRecoveries{{1, 2, 3}});
  RecentRecoveries rr;
  for (size_t cut = 0; cut < rec.size(); ++cut) {
    Status st = decode_recent_recoveries(rec.substr(0, cut), &rr, 9);
    CHECK(st.code() == Code::corrupt);
    CHECK(st.message().find("recovered record of slot 9") != std::string::npos);
  }
  RecentRecoveries too_many;
  too_many.dead.assign(kMaxRecentRecoveries + 1, 7);
  CHECK(decode_recent_recoveries(encode_recent_recoveries(too_many), &rr, 9).code() == Code::corrupt);
  uint64_t old_form[2] = {(uint64_t{4688} << 32) | 4688, 7};
  CHECK(decode_recent_recoveries(std::string(reinterpret_cast<const char*>(old_form), 16), &rr, 9).code() ==
        Code::corrupt);
}

// Seeds written by an older format would only teach the fuzzers to hit the
// first version check; this keeps them current.
TEST_CASE("the fuzz corpus seeds are records of the current format") {
  const char* dir = std::getenv("LOCKTABLE_FUZZ_CORPUS");
  if (dir == nullptr) FAIL("LOCKTABLE_FUZZ_CORPUS is not set (meson test sets it)");
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  size_t seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(dir) / "records")) {
    std::string bytes = read(e.path());
    INFO(e.path().string());
    REQUIRE(bytes.size() >= 1);
    std::string_view value(bytes.data() + 1, bytes.size() - 1);
    Status s;
    switch (uint8_t(bytes[0]) % 9) {  // the selectors of fuzz_records.cc
      case 0: { NameRecord r; s = decode_name_record(value, &r, "seed"); break; }
      case 1: { SlotRecord r; s = decode_slot_record(value, &r, 1); break; }
      case 2: { GraveRecord r; s = decode_grave_record(value, &r); break; }
      case 3: { HistoryRecord r; s = decode_history_record(value, &r, 1); break; }
      case 4: { uint64_t v; s = decode_u64(value, &v, "seed"); break; }
      case 6: { RecentRecoveries r; s = decode_recent_recoveries(value, &r, 1); break; }
      case 7: { SegmentState r; s = decode_segment_state(value, &r, 1); break; }
      case 8: { SlotOrder r; s = decode_slot_order(value, &r, 1); break; }
      default: { uint64_t k; if (!decode_u64_key(value, &k)) s = Status(Code::corrupt, "not a u64 key"); break; }
    }
    INFO(s.to_string());
    CHECK(s.ok());
    ++seen;
  }
  CHECK(seen >= 9);
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(dir) / "header")) {
    std::string bytes = read(e.path());
    INFO(e.path().string());
    REQUIRE(bytes.size() == 9 + sizeof(Header));
    uint64_t file_size;
    std::memcpy(&file_size, bytes.data() + 1, 8);
    Header h;
    std::memcpy(&h, bytes.data() + 9, sizeof h);
    Status s = validate_header(h, file_size, "seed");
    INFO(s.to_string());
    CHECK(s.ok());  // unrepaired: the seed is a valid header as written
  }
}
