// check: the operator's verification pass. Each step below checks one thing
// against the others and adds a line per problem; none changes anything.
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "header_check.h"
#include "locktable/names.h"
#include "maintenance.h"
#include "reader_records.h"
#include "slot_lifecycle.h"
#include "slot_state.h"
#include "slot_views.h"

namespace locktable::detail {

namespace {

constexpr size_t kMaxProblems = 1000;

class Problems {
 public:
  explicit Problems(std::vector<std::string>* out) : out_(out) {}
  template <class... Args>
  void add(fmt::format_string<Args...> f, Args&&... args) {
    if (out_->size() < kMaxProblems) out_->push_back(fmt::format(f, std::forward<Args>(args)...));
  }

 private:
  std::vector<std::string>* out_;
};

struct Named {
  std::string name;
  uint32_t incarnation;
};
using NamedSlots = std::map<uint32_t, Named>;  // slot -> its name

void check_header(const TableParts& t, Problems& p) {
  format::Header copy;
  std::memcpy(&copy, t.file.header(), sizeof copy);
  if (Status s = format::validate_header(copy, t.file.file_size(), t.file.path()); !s.ok()) p.add("{}", s.message());
}

// The name map against itself and the slots; fills *named.
Status check_names(const TableParts& t, const Txn& txn, Problems& p, NamedSlots* named) {
  const std::string& lpath = t.lmdb.path();
  const uint64_t capacity = t.file.slot_capacity();
  return txn.for_each(t.lmdb.dbi().names, [&](std::string_view key, std::string_view value) {
    std::string name(key);
    if (!validate_name(name).ok()) p.add("{}: invalid lock name {}", lpath, quote_name(name));
    format::NameRecord rec;
    if (Status ds = format::decode_name_record(value, &rec, name); !ds.ok()) {
      p.add("{}: {}", lpath, ds.message());
      return true;
    }
    if (rec.slot >= capacity) {
      p.add("lock {}: slot {} beyond the table's {} slots", quote_name(name), rec.slot, capacity);
      return true;
    }
    auto [it, fresh] = named->emplace(rec.slot, Named{name, rec.incarnation});
    if (!fresh) p.add("lock {}: slot {} also belongs to {}", quote_name(name), rec.slot, quote_name(it->second.name));
    format::Slot* sl = t.file.slot(rec.slot);
    if (sl == nullptr) return true;
    if (load_incarnation(sl) != rec.incarnation) {
      p.add("lock {}: incarnation {} in the name map, {} in slot {}", quote_name(name), rec.incarnation,
            load_incarnation(sl), rec.slot);
    }
    if (slot_is_retired(sl)) {
      p.add("lock {}: slot {} is marked removed but the name exists (interrupted removal; run recover)",
            quote_name(name), rec.slot);
    }
    return true;
  });
}

// The slot map (slot -> name) against the name map.
Status check_slot_map(const TableParts& t, const Txn& txn, Problems& p, const NamedSlots& named) {
  const std::string& lpath = t.lmdb.path();
  return txn.for_each(t.lmdb.dbi().slots, [&](std::string_view key, std::string_view value) {
    uint32_t slot = 0;
    format::SlotRecord rec;
    if (!format::decode_u32_key(key, &slot)) {
      p.add("{}: malformed key in the slot map", lpath);
      return true;
    }
    if (Status ds = format::decode_slot_record(value, &rec, slot); !ds.ok()) {
      p.add("{}: {}", lpath, ds.message());
      return true;
    }
    auto it = named.find(slot);
    if (it == named.end() || it->second.name != rec.name || it->second.incarnation != rec.incarnation) {
      p.add("slot {}: the slot map says {} (incarnation {}), the name map disagrees", slot, quote_name(rec.name),
            rec.incarnation);
    }
    return true;
  });
}

// next_slot and the free list against the name map.
Status check_free_slots(const TableParts& t, const Txn& txn, Problems& p, const NamedSlots& named) {
  const std::string& lpath = t.lmdb.path();
  const uint64_t capacity = t.file.slot_capacity();
  uint64_t next_slot = 0;
  if (Status s = txn.get_u64(format::kMetaNextSlot, &next_slot, 0); !s.ok()) {
    p.add("{}", s.message());
  } else if (next_slot > capacity) {
    p.add("{}: next free slot {} beyond the table's {} slots", lpath, next_slot, capacity);
  }
  return txn.for_each(t.lmdb.dbi().free, [&](std::string_view key, std::string_view) {
    uint32_t slot = 0;
    if (!format::decode_u32_key(key, &slot)) {
      p.add("{}: malformed key in the free-slot list", lpath);
      return true;
    }
    if (auto it = named.find(slot); it != named.end()) {
      p.add("slot {}: in the free list but named {}", slot, quote_name(it->second.name));
    }
    if (slot >= next_slot) p.add("slot {}: in the free list but never handed out", slot);
    return true;
  });
}

// Every slot against the name map, and shared counts against the reader records.
void check_slots(const TableParts& t, Problems& p, const NamedSlots& named) {
  const uint64_t capacity = t.file.slot_capacity();
  for (uint64_t i = 0; i < capacity; ++i) {
    format::Slot* sl = t.file.slot(i);
    if (sl == nullptr) break;
    SlotView v = inspect_slot(sl);
    const bool is_named = named.count(uint32_t(i)) != 0;
    if (!is_named && v.state != LockState::free) p.add("slot {}: held but has no name", i);
    if (v.readers == 0) continue;
    uint32_t at_least = 0, at_most = 0, counted = 0;
    for (int attempt = 0; attempt < 20; ++attempt) {  // the count may change under us: retry
      if (!count_readers(t.file, sl, uint32_t(i), &at_least, &at_most, &counted)) continue;
      if (counted < at_least || counted > at_most) {
        p.add("slot {}: {} readers counted, {} reader records{}", i, counted, at_least,
              at_most > at_least ? fmt::format(" (up to {} with those joining, leaving or dead)", at_most) : "");
      }
      break;
    }
  }
}

// History records decode, the name index agrees with them, and the drain
// position is not ahead of the ring.
Status check_history(const TableParts& t, const Txn& txn, Problems& p) {
  const std::string& lpath = t.lmdb.path();
  const Dbis& db = t.lmdb.dbi();
  Status s = txn.for_each(db.history, [&](std::string_view key, std::string_view value) {
    uint64_t seq = 0;
    format::HistoryRecord r;
    if (!format::decode_u64_key(key, &seq)) {
      p.add("{}: history key of {} bytes", lpath, key.size());
    } else if (Status ds = format::decode_history_record(value, &r, seq); !ds.ok()) {
      p.add("{}: {}", lpath, ds.message());
    }
    return true;
  });
  if (!s.ok()) return s;
  s = txn.for_each(db.history_by_name, [&](std::string_view name, std::string_view seq_key) {
    uint64_t seq = 0;
    std::string_view v;
    bool found = false;
    if (!format::decode_u64_key(seq_key, &seq) || !txn.get(db.history, seq_key, &v, &found).ok() || !found) {
      return true;  // retention may leave an index entry behind only on a corrupt record
    }
    format::HistoryRecord r;
    if (format::decode_history_record(v, &r, seq).ok() && r.name != name) {
      p.add("{}: history index says event {} is about {}, the record says {}", lpath, seq, quote_name(name),
            quote_name(r.name));
    }
    return true;
  });
  if (!s.ok()) return s;
  // Each ring segment's drain position is not ahead of what it holds.
  const uint32_t segments = format::ring_segments(t.file.header()->ring_entries);
  const uint64_t units = format::segment_units(t.file.header()->ring_entries);
  for (uint32_t k = 0; k < segments; ++k) {
    std::string_view v;
    bool found = false;
    if (!txn.get(db.meta, format::segment_state_key(k), &v, &found).ok() || !found) continue;
    format::SegmentState st;
    if (Status ds = format::decode_segment_state(v, &st, k); !ds.ok()) {
      p.add("{}: {}", lpath, ds.message());
      continue;
    }
    auto* h = reinterpret_cast<const format::SegmentHeader*>(t.file.ring() + uint64_t{k} * units);
    const uint64_t head = std::atomic_ref<const uint64_t>(h->head).load(std::memory_order_acquire);
    if (st.drained > head) {
      p.add("{}: history segment {} drained up to event {} but holds only {}", lpath, k, st.drained, head);
    }
  }
  return Status::OK();
}

}  // namespace

Status check_table(const TableParts& t, std::vector<std::string>* problems) {
  problems->clear();
  Problems p(problems);
  check_header(t, p);
  // A write transaction: no name is created or removed while we compare.
  Txn txn(t.lmdb, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  NamedSlots named;
  if (s = check_names(t, txn, p, &named); !s.ok()) return s;
  if (s = check_slot_map(t, txn, p, named); !s.ok()) return s;
  if (s = check_free_slots(t, txn, p, named); !s.ok()) return s;
  check_slots(t, p, named);
  return check_history(t, txn, p);
}

}  // namespace locktable::detail
