#include "name_map.h"

#include <algorithm>

#include <fmt/format.h>

#include "clock.h"
#include "crash_point.h"
#include "locktable/names.h"
#include "posix_error.h"
#include "slot_lifecycle.h"
#include "slot_state.h"

namespace locktable::detail {

Status NameMap::find(std::string_view name, bool* found, format::NameRecord* rec) {
  Txn txn(lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;
  std::string_view v;
  s = txn.get(lmdb_.dbi().names, name, &v, found);
  if (!s.ok() || !*found) return s;
  return with_context(lmdb_.path(), format::decode_name_record(v, rec, name));
}

Status NameMap::find_many(const std::vector<std::string>& names, std::vector<format::NameRecord>* recs,
                          std::vector<size_t>* missing) {
  recs->assign(names.size(), format::NameRecord{});
  missing->clear();
  Txn txn(lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;
  for (size_t i = 0; i < names.size(); ++i) {
    std::string_view v;
    bool found = false;
    if (s = txn.get(lmdb_.dbi().names, names[i], &v, &found); !s.ok()) return s;
    if (!found) {
      missing->push_back(i);
      continue;
    }
    if (s = format::decode_name_record(v, &(*recs)[i], names[i]); !s.ok()) return with_context(lmdb_.path(), s);
  }
  return Status::OK();
}

Status NameMap::take_slot(Txn& txn, uint64_t* next_slot, uint32_t* index) {
  const Dbis& db = lmdb_.dbi();
  bool reused = false;
  bool malformed = false;
  Status s = txn.for_each(db.free, [&](std::string_view key, std::string_view) {
    malformed = !format::decode_u32_key(key, index);
    reused = !malformed;
    return false;  // the first one
  });
  if (!s.ok()) return s;
  if (malformed) return Status(Code::corrupt, fmt::format("{}: malformed free-slot record", lmdb_.path()));
  if (reused) return txn.del(db.free, format::encode_u32_key(*index));
  if (*next_slot >= file_.header()->max_slots) {
    return Status(Code::capacity,
                  fmt::format("{}: table full: all {} slots are named", dir_, file_.header()->max_slots));
  }
  *index = uint32_t((*next_slot)++);
  return Status::OK();
}

Status NameMap::create(const std::vector<std::string_view>& names, std::vector<format::NameRecord>* recs) {
  const Dbis& db = lmdb_.dbi();
  recs->assign(names.size(), format::NameRecord{});
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  uint64_t next = 0;
  if (s = txn.get_u64(format::kMetaNextSlot, &next, 0); !s.ok()) return s;
  const uint64_t next_before = next;
  struct Created {
    uint32_t slot, incarnation, generation, ended;
  };
  std::vector<Created> created;  // for the events
  const uint64_t now = realtime_ns();
  for (size_t i = 0; i < names.size(); ++i) {
    std::string_view name = names[i];
    format::NameRecord& rec = (*recs)[i];
    std::string_view v;
    bool found = false;
    if (s = txn.get(db.names, name, &v, &found); !s.ok()) return s;
    if (found) {  // created by someone else meanwhile, or twice in this batch
      if (s = format::decode_name_record(v, &rec, name); !s.ok()) return with_context(lmdb_.path(), s);
      continue;
    }
    uint32_t index = 0;
    if (s = take_slot(txn, &next, &index); !s.ok()) return s;
    if (index >= file_.slot_capacity()) {
      // Grow for the rest of the batch at once (never past max_slots).
      uint64_t want = std::min<uint64_t>(std::max<uint64_t>(index + 1, next + (names.size() - i)),
                                         file_.header()->max_slots);
      uint32_t added = 0;
      if (s = file_.grow(want, 0, &added); !s.ok()) return s;
    }
    format::Slot* slot = file_.slot(index);
    if (slot == nullptr) return Status(Code::io_error, fmt::format("{}: slot {} not mapped", dir_, index));
    crash_point("create:before_prepare");
    rec.slot = index;
    uint32_t gen = 0;
    rec.incarnation = prepare_slot_for_new_name(slot, &gen);
    rec.created_ns = now;
    if (s = txn.put(db.names, name, format::encode_name_record(rec)); !s.ok()) return s;
    if (s = txn.put(db.slots, format::encode_u32_key(index),
                    format::encode_slot_record({rec.incarnation, std::string(name)}));
        !s.ok()) {
      return s;
    }
    created.push_back(Created{index, rec.incarnation, gen, format::readers_ended(load_readers(slot))});
  }
  if (next != next_before) {
    if (s = txn.put_u64(format::kMetaNextSlot, next); !s.ok()) return s;
  }
  crash_point("create:before_commit");
  if (s = txn.commit(); !s.ok()) return s;
  for (const Created& c : created) {
    ring_.record(RingEvent{format::kEventCreated, 0, 0, c.slot, c.incarnation, 0, 0, c.generation, 0, c.ended});
  }
  return Status::OK();
}

Status NameMap::remove(std::string_view name) {
  const Dbis& db = lmdb_.dbi();
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  std::string_view v;
  bool found = false;
  if (s = txn.get(db.names, name, &v, &found); !s.ok()) return s;
  if (!found) return Status(Code::not_found, fmt::format("{}: no lock named {}", dir_, quote_name(name)));
  format::NameRecord rec;
  if (s = format::decode_name_record(v, &rec, name); !s.ok()) return with_context(lmdb_.path(), s);
  format::Slot* slot = file_.slot(rec.slot);
  if (slot == nullptr) {
    return Status(Code::corrupt, fmt::format("{}: lock {} points at slot {} beyond the table", lmdb_.path(),
                                             quote_name(name), rec.slot));
  }
  uint32_t gen = 0, ended = 0;
  Code c = retire_slot(slot, rec.incarnation, &gen, &ended);
  if (c == Code::busy) {
    return Status(Code::busy,
                  fmt::format("{}: lock {} is held; release it before removing it", dir_, quote_name(name)));
  }
  if (c == Code::stale_handle) {
    return Status(Code::corrupt, fmt::format("{}: lock {} has incarnation {} in the name map but {} in slot {}", dir_,
                                             quote_name(name), rec.incarnation, load_incarnation(slot), rec.slot));
  }
  crash_point("remove:after_retire");
  auto undo = [&](Status err) {
    txn.abort();
    unretire_slot(slot, rec.incarnation);
    return err;
  };
  if (s = txn.del(db.names, name); !s.ok()) return undo(s);
  if (s = txn.del(db.slots, format::encode_u32_key(rec.slot)); !s.ok()) return undo(s);
  if (s = txn.put(db.free, format::encode_u32_key(rec.slot), ""); !s.ok()) return undo(s);
  if (s = txn.put(db.graveyard, format::encode_grave_key(rec.slot, rec.incarnation),
                  format::encode_grave_record({realtime_ns(), std::string(name)}));
      !s.ok()) {
    return undo(s);
  }
  crash_point("remove:before_commit");
  if (s = txn.commit(); !s.ok()) return undo(s);
  ring_.record(RingEvent{format::kEventRemoved, 0, 0, rec.slot, rec.incarnation, 0, 0, gen, 0, ended});
  return Status::OK();
}

Status NameMap::repair_interrupted_removal(std::string_view name, const format::NameRecord& rec) {
  // Holding the LMDB write lock means no removal is in progress: a removal
  // retires the slot inside its write transaction.
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  std::string_view v;
  bool found = false;
  if (s = txn.get(lmdb_.dbi().names, name, &v, &found); !s.ok()) return s;
  format::NameRecord now;
  if (found && format::decode_name_record(v, &now, name).ok() && now.slot == rec.slot &&
      now.incarnation == rec.incarnation) {
    if (format::Slot* slot = file_.slot(rec.slot)) unretire_slot(slot, rec.incarnation);
  }
  return Status::OK();
}

Status NameMap::reconcile_after_reboot() {
  Txn txn(lmdb_, true);  // excludes name changes while we compare
  Status s = txn.begin();
  if (!s.ok()) return s;
  return txn.for_each(lmdb_.dbi().names, [&](std::string_view name, std::string_view value) {
    format::NameRecord rec;
    if (!format::decode_name_record(value, &rec, name).ok()) return true;  // `check` reports it
    format::Slot* slot = file_.slot(rec.slot);
    if (slot == nullptr) return true;
    if (load_incarnation(slot) != rec.incarnation) {
      std::atomic_ref<uint32_t>(slot->incarnation).store(rec.incarnation, std::memory_order_release);
    }
    unretire_slot(slot, rec.incarnation);
    return true;
  });
}

Status NameMap::for_each(const Txn& txn, const Visit& visit, std::string_view prefix) {
  Status bad;
  // From the first key >= prefix (LMDB orders keys bytewise), to the first that does not begin with it.
  Status s = txn.for_each(lmdb_.dbi().names, [&](std::string_view name, std::string_view value) {
    if (!name.starts_with(prefix)) return false;
    format::NameRecord rec;
    bad = with_context(lmdb_.path(), format::decode_name_record(value, &rec, name));
    return bad.ok() && visit(name, rec);
  }, prefix);
  return s.ok() ? bad : s;
}

Status name_of_slot(const Txn& txn, uint32_t slot, uint32_t incarnation, std::string* name) {
  name->clear();
  const Dbis& db = txn.env().dbi();
  std::string_view v;
  bool found = false;
  Status s = txn.get(db.slots, format::encode_u32_key(slot), &v, &found);
  if (!s.ok()) return s;
  if (found) {
    format::SlotRecord rec;
    if (format::decode_slot_record(v, &rec, slot).ok() && rec.incarnation == incarnation) {
      *name = std::move(rec.name);
      return Status::OK();
    }
  }
  s = txn.get(db.graveyard, format::encode_grave_key(slot, incarnation), &v, &found);
  if (!s.ok()) return s;
  if (found) {
    format::GraveRecord g;
    if (format::decode_grave_record(v, &g).ok()) *name = std::move(g.name);
  }
  return Status::OK();
}

}  // namespace locktable::detail
