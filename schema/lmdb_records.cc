#include "lmdb_records.h"

#include <cstring>

#include <fmt/format.h>

#include "locktable/names.h"
#include "stored_codes.h"

namespace locktable::format {

namespace {

// Little-endian writer/reader over a byte string (the format is x86-64 only,
// but the encoding is explicit so the on-disk bytes never depend on it).
class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(char(v)); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(std::string_view s) { out_.append(s); }
  void fixed(std::string_view s, size_t n) {
    std::string t(s.substr(0, n));
    t.resize(n, '\0');
    out_.append(t);
  }
  std::string take() { return std::move(out_); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(char((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u8(uint8_t* v) { return get(v, 1); }
  bool u16(uint16_t* v) { return get(v, 2); }
  bool u32(uint32_t* v) { return get(v, 4); }
  bool u64(uint64_t* v) { return get(v, 8); }
  bool bytes(std::string* s, size_t n) {
    if (in_.size() - pos_ < n) return false;
    s->assign(in_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool skip_to(size_t pos) {
    if (pos > in_.size() || pos < pos_) return false;
    pos_ = pos;
    return true;
  }
  size_t pos() const { return pos_; }
  size_t left() const { return in_.size() - pos_; }

 private:
  template <class T>
  bool get(T* v, int n) {
    if (in_.size() - pos_ < size_t(n)) return false;
    uint64_t r = 0;
    for (int i = 0; i < n; ++i) r |= uint64_t(uint8_t(in_[pos_ + size_t(i)])) << (8 * i);
    pos_ += size_t(n);
    *v = T(r);
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

Status corrupt(std::string what) { return Status(Code::corrupt, std::move(what)); }

// Reads the version/size prologue; `fixed` is the fixed-part size this build writes.
bool read_prologue(Reader& r, size_t fixed, uint16_t* version, uint16_t* size) {
  if (!r.u16(version) || !r.u16(size)) return false;
  if (*version == 0 || *size < fixed || *size > r.left() + 4) return false;
  return true;
}

}  // namespace

std::string encode_u32_key(uint32_t v) {
  std::string k(4, '\0');
  for (int i = 0; i < 4; ++i) k[size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
  return k;
}

std::string encode_u64_key(uint64_t v) {
  std::string k(8, '\0');
  for (int i = 0; i < 8; ++i) k[size_t(i)] = char((v >> (56 - 8 * i)) & 0xff);
  return k;
}

std::string encode_grave_key(uint32_t slot, uint32_t incarnation) {
  return encode_u32_key(slot) + encode_u32_key(incarnation);
}

bool decode_u32_key(std::string_view key, uint32_t* v) {
  if (key.size() != 4) return false;
  uint32_t r = 0;
  for (char c : key) r = (r << 8) | uint8_t(c);
  *v = r;
  return true;
}

bool decode_u64_key(std::string_view key, uint64_t* v) {
  if (key.size() != 8) return false;
  uint64_t r = 0;
  for (char c : key) r = (r << 8) | uint8_t(c);
  *v = r;
  return true;
}

std::string encode_u64(uint64_t v) {
  Writer w;
  w.u64(v);
  return w.take();
}

Status decode_u64(std::string_view value, uint64_t* v, std::string_view what) {
  Reader r(value);
  if (value.size() != 8 || !r.u64(v)) {
    return corrupt(fmt::format("meta record '{}': {} bytes, expected 8", what, value.size()));
  }
  return Status::OK();
}

std::string encode_name_record(const NameRecord& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(uint16_t(kNameRecordSize));
  w.u32(rec.slot);
  w.u32(rec.incarnation);
  w.u32(0);
  w.u64(rec.created_ns);
  return w.take();
}

Status decode_name_record(std::string_view value, NameRecord* rec, std::string_view name) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  uint32_t flags = 0;
  if (!read_prologue(r, kNameRecordSize, &version, &size) || !r.u32(&rec->slot) || !r.u32(&rec->incarnation) ||
      !r.u32(&flags) || !r.u64(&rec->created_ns)) {
    return corrupt(fmt::format("name record of {} is malformed ({} bytes)", quote_name(name), value.size()));
  }
  return Status::OK();
}

std::string encode_slot_record(const SlotRecord& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(8);
  w.u32(rec.incarnation);
  w.bytes(rec.name);
  return w.take();
}

Status decode_slot_record(std::string_view value, SlotRecord* rec, uint32_t slot) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  if (!read_prologue(r, 8, &version, &size) || !r.u32(&rec->incarnation) || !r.skip_to(size) ||
      !r.bytes(&rec->name, r.left()) || rec->name.empty() || rec->name.size() > 255) {
    return corrupt(fmt::format("slot record {} is malformed ({} bytes)", slot, value.size()));
  }
  return Status::OK();
}

std::string encode_grave_record(const GraveRecord& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(12);
  w.u64(rec.removed_ns);
  w.bytes(rec.name);
  return w.take();
}

Status decode_grave_record(std::string_view value, GraveRecord* rec) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  if (!read_prologue(r, 12, &version, &size) || !r.u64(&rec->removed_ns) || !r.skip_to(size) ||
      !r.bytes(&rec->name, r.left()) || rec->name.size() > 255) {
    return corrupt(fmt::format("graveyard record is malformed ({} bytes)", value.size()));
  }
  return Status::OK();
}

std::string encode_history_record(const HistoryRecord& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(uint16_t(kHistoryFixedSize));
  w.u8(rec.kind);
  w.u8(rec.mode);
  w.u16(rec.flags);
  w.u32(rec.pid);
  w.u32(rec.tid);
  w.u32(rec.slot);
  w.u32(rec.incarnation);
  w.u64(rec.time_ns);
  w.u64(rec.aux64);
  w.u32(rec.aux32);
  w.u32(uint32_t(rec.name.size()));
  w.fixed(rec.comm, 16);
  w.u64(rec.token);
  w.bytes(rec.name);
  return w.take();
}

Status decode_history_record(std::string_view value, HistoryRecord* rec, uint64_t seq) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  uint32_t name_len = 0;
  std::string comm;
  rec->token = 0;
  bool ok = read_prologue(r, kHistoryFixedSizeV1, &version, &size) && r.u8(&rec->kind) && r.u8(&rec->mode) &&
            r.u16(&rec->flags) && r.u32(&rec->pid) && r.u32(&rec->tid) && r.u32(&rec->slot) &&
            r.u32(&rec->incarnation) && r.u64(&rec->time_ns) && r.u64(&rec->aux64) && r.u32(&rec->aux32) &&
            r.u32(&name_len) && r.bytes(&comm, 16) && (size < kHistoryFixedSize || r.u64(&rec->token)) &&
            r.skip_to(size) && name_len <= 255 && r.left() == name_len && r.bytes(&rec->name, name_len);
  if (!ok) return corrupt(fmt::format("history record {} is malformed ({} bytes)", seq, value.size()));
  if (rec->kind == 0 || rec->kind > kMaxEventKind || rec->mode > kMaxMode) {
    return corrupt(fmt::format("history record {} has unknown kind {} / mode {}", seq, rec->kind, rec->mode));
  }
  comm.resize(strnlen(comm.data(), comm.size()));
  rec->comm = std::move(comm);
  return Status::OK();
}

std::string recent_recoveries_key(uint32_t slot) { return fmt::format("recovered/{}", slot); }

std::string encode_recent_recoveries(const RecentRecoveries& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(8);
  w.u32(uint32_t(rec.dead.size()));
  for (uint64_t d : rec.dead) w.u64(d);
  return w.take();
}

Status decode_recent_recoveries(std::string_view value, RecentRecoveries* rec, uint32_t slot) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  uint32_t count = 0;
  bool ok = read_prologue(r, 8, &version, &size) && r.u32(&count) && r.skip_to(size) &&
            count <= kMaxRecentRecoveries && r.left() == size_t{count} * 8;
  rec->dead.clear();
  for (uint32_t i = 0; ok && i < count; ++i) {
    uint64_t d = 0;
    ok = r.u64(&d);
    rec->dead.push_back(d);
  }
  if (!ok) return corrupt(fmt::format("recovered record of slot {} is malformed ({} bytes)", slot, value.size()));
  return Status::OK();
}

std::string segment_state_key(uint32_t segment) { return fmt::format("segment/{}", segment); }

std::string encode_segment_state(const SegmentState& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(12);
  w.u64(rec.drained);
  return w.take();
}

Status decode_segment_state(std::string_view value, SegmentState* rec, uint32_t segment) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  if (!read_prologue(r, 12, &version, &size) || !r.u64(&rec->drained) || !r.skip_to(size) || r.left() != 0) {
    return corrupt(fmt::format("state record of ring segment {} is malformed ({} bytes)", segment, value.size()));
  }
  return Status::OK();
}

std::string slot_order_key(uint32_t slot) { return fmt::format("order/{}", slot); }

std::string encode_slot_order(const SlotOrder& rec) {
  Writer w;
  w.u16(kRecordVersion);
  w.u16(24);
  w.u32(rec.incarnation);
  w.u32(rec.generation);
  w.u64(rec.time_ns);
  w.u32(rec.ended);
  return w.take();
}

Status decode_slot_order(std::string_view value, SlotOrder* rec, uint32_t slot) {
  Reader r(value);
  uint16_t version = 0, size = 0;
  rec->ended = 0;  // records of size 20 have none
  if (!read_prologue(r, 20, &version, &size) || !r.u32(&rec->incarnation) || !r.u32(&rec->generation) ||
      !r.u64(&rec->time_ns) || (size >= 24 && !r.u32(&rec->ended)) || !r.skip_to(size) || r.left() != 0) {
    return corrupt(fmt::format("order record of slot {} is malformed ({} bytes)", slot, value.size()));
  }
  return Status::OK();
}

}  // namespace locktable::format
