// Draining the history ring into LMDB, retention, and reading history back.
//
// A drain pass reads the ring head once, then drains up to it in batches. Each
// batch is one LMDB write transaction: it reads the drain position ("drained",
// the first ticket not yet in LMDB) from LMDB, turns up to kBatch ring entries
// from there into history records (key: big-endian sequence number, appended),
// counts the ones it can no longer read as `lost` events, stores the new
// position, applies retention, and commits. LMDB admits one writer at a time,
// and the position moves inside the same transaction as the records, so two
// drainers never store an event twice or skip one, and a drainer killed
// mid-transaction changes nothing (the ring still holds its entries).
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "crash_point.h"
#include "liveness.h"
#include "lock_protocol.h"
#include "table_core.h"

namespace locktable::detail {

namespace {

constexpr uint64_t kBatch = 8192;                   // ring entries per write transaction
constexpr uint64_t kStragglerGraceNs = 250'000'000;  // a ticket unwritten for this long is lost
constexpr std::string_view kMetaStuckTicket = "stuck_ticket";
constexpr std::string_view kMetaStuckSince = "stuck_since_ns";

// Whether a `recovered` entry names a dead owner recently recovered from its
// slot (then it is a repeat), remembering it otherwise. Meta key
// "recovered/<slot>" holds the last kRecentRecoveries identities (dead pid << 32
// | dead tid, 8 bytes each, newest last): a thread dies once, so an identity
// seen again on the slot is the same takeover, recorded twice.
constexpr size_t kRecentRecoveries = 4;

Status first_recovery(Txn& txn, const format::RingEntry& e, bool* duplicate) {
  const std::string key = fmt::format("recovered/{}", e.slot);
  const uint64_t dead = (e.aux64 & 0xffffffff00000000u) | e.aux32;
  std::string_view value;
  bool found = false;
  if (Status s = txn.get(txn.env().dbi().meta, key, &value, &found); !s.ok()) return s;
  std::vector<uint64_t> recent;
  if (found) {
    for (size_t i = 0; i + 8 <= value.size(); i += 8) {
      uint64_t v;
      std::memcpy(&v, value.data() + i, 8);
      recent.push_back(v);
    }
  }
  *duplicate = std::find(recent.begin(), recent.end(), dead) != recent.end();
  if (*duplicate) return Status::OK();
  recent.push_back(dead);
  if (recent.size() > kRecentRecoveries) recent.erase(recent.begin());
  std::string out(recent.size() * 8, '\0');
  std::memcpy(out.data(), recent.data(), out.size());
  return txn.put(txn.env().dbi().meta, key, out);
}

Event to_event(uint64_t seq, const format::HistoryRecord& r) {
  Event e;
  e.seq = seq;
  e.time_ns = r.time_ns;
  e.kind = EventKind(r.kind);
  e.mode = Mode(r.mode);
  e.abandoned = (r.flags & format::kEventAbandoned) != 0;
  e.pid = r.pid;
  e.tid = r.tid;
  e.comm = r.comm;
  e.name = r.name;
  e.slot = r.slot;
  switch (e.kind) {
    case EventKind::acquired:
    case EventKind::timeout:
      e.wait_ns = r.aux64;
      break;
    case EventKind::released:
      e.hold_ns = r.aux64;
      break;
    case EventKind::recovered:
      e.dead_owner = Owner{uint32_t(r.aux64 >> 32), r.aux32, uint32_t(r.aux64)};
      break;
    case EventKind::lost:
    case EventKind::grown:
    case EventKind::reset:
      e.count = r.aux64;
      break;
    default:
      break;
  }
  return e;
}

format::HistoryRecord from_entry(const format::RingEntry& e, std::string name) {
  format::HistoryRecord r;
  r.kind = e.kind;
  r.mode = e.mode;
  r.flags = e.flags;
  r.pid = e.pid;
  r.tid = e.tid;
  r.slot = e.slot;
  r.incarnation = e.incarnation;
  r.time_ns = e.time_ns;
  r.aux64 = e.aux64;
  r.aux32 = e.aux32;
  r.comm.assign(e.comm, strnlen(e.comm, sizeof e.comm));
  r.name = std::move(name);
  return r;
}

bool names_a_lock(uint8_t kind) {
  switch (EventKind(kind)) {
    case EventKind::grown:
    case EventKind::reset:
    case EventKind::lost:
      return false;
    default:
      return true;
  }
}

bool matches(const HistoryQuery& q, const Event& e) {
  if (q.kind && e.kind != *q.kind) return false;
  if (q.pid && e.pid != *q.pid) return false;
  if (q.name && e.name != *q.name) return false;
  if (e.time_ns < q.since_ns || e.time_ns >= q.until_ns) return false;
  if (e.seq <= q.after_seq) return false;
  return true;
}

}  // namespace

Status TableCore::name_of_slot(Txn& txn, uint32_t slot, uint32_t incarnation, std::string* name) {
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

Status TableCore::drain(uint64_t* drained_out, bool patient) {
  *drained_out = 0;
  Status s = check_same_process();
  if (!s.ok()) return s;
  format::Header* h = file_->header();
  if (__atomic_load_n(&h->history_level, __ATOMIC_RELAXED) != uint32_t(HistoryLevel::persisted)) {
    return Status::OK();
  }
  std::lock_guard<std::mutex> guard(drain_mu_);
  const Dbis& db = lmdb_->dbi();
  const uint64_t ring_size = h->ring_entries;
  const ThreadSelf& me = thread_self();
  auto patience_end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kStragglerGraceNs * 2);
  // A pass drains up to the head it sees first, never chasing appends made
  // during it: under a tight locking loop a chasing drainer runs for as long as
  // the appends come, keeping a core (and the ring's cache lines) busy; what a
  // pass leaves waits for the next one, or is overwritten and counted lost.
  const uint64_t head = std::atomic_ref<uint64_t>(h->ring_head).load(std::memory_order_acquire);

  for (;;) {
    Txn txn(*lmdb_, true);
    if (s = txn.begin(); !s.ok()) return s;
    uint64_t drained = 1, lost_total = 0;
    if (s = txn.get_u64(format::kMetaDrained, &drained, 1); !s.ok()) return s;
    if (s = txn.get_u64(format::kMetaLostTotal, &lost_total, 0); !s.ok()) return s;
    if (drained >= head) return Status::OK();

    std::unordered_map<uint64_t, std::string> names;  // (slot << 32 | incarnation) -> name
    uint64_t lost_start = 0, lost_count = 0;
    auto flush_lost = [&]() -> Status {
      if (lost_count == 0) return Status::OK();
      format::HistoryRecord r;
      r.kind = uint8_t(EventKind::lost);
      r.pid = me.pid;
      r.tid = me.tid;
      r.time_ns = realtime_ns();
      r.aux64 = lost_count;
      r.comm.assign(me.comm, strnlen(me.comm, sizeof me.comm));
      lost_total += lost_count;
      lost_count = 0;
      return txn.append(db.history, format::encode_u64_key(lost_start), format::encode_history_record(r));
    };
    auto lose = [&](uint64_t t, uint64_t n) -> Status {
      if (lost_count != 0 && lost_start + lost_count != t) {
        if (Status e = flush_lost(); !e.ok()) return e;
      }
      if (lost_count == 0) lost_start = t;
      lost_count += n;
      return Status::OK();
    };

    uint64_t t = drained;
    if (head - t > ring_size) {  // overwritten without being read
      if (s = lose(t, head - ring_size - t); !s.ok()) return s;
      t = head - ring_size;
    }
    bool stuck = false;
    const uint64_t batch_end = std::min(head, t + kBatch);
    for (; t < batch_end; ++t) {
      format::RingEntry e;
      uint32_t wpid = 0, wtid = 0;
      RingRead rr = ring_read(file_->ring(), file_->ring_mask(), t, &e, &wpid, &wtid);
      if (rr == RingRead::overwritten) {
        // Lapped: everything older than the current head's ring is gone too.
        uint64_t now = std::atomic_ref<uint64_t>(h->ring_head).load(std::memory_order_acquire);
        uint64_t gone_to = std::clamp(now > ring_size ? now - ring_size : 0, t + 1, batch_end);
        if (s = lose(t, gone_to - t); !s.ok()) return s;
        t = gone_to - 1;
        continue;
      }
      if (rr == RingRead::writing || rr == RingRead::not_started) {
        // A writer killed mid-append never completes its entry; a live one
        // completes it within nanoseconds. Wait for live ones (grace period
        // shared by all drainers through LMDB), give up on dead ones.
        bool dead = rr == RingRead::writing && thread_liveness(wpid, wtid, 0) == Liveness::dead;
        uint64_t stuck_ticket = 0, stuck_since = 0;
        if (s = txn.get_u64(kMetaStuckTicket, &stuck_ticket, 0); !s.ok()) return s;
        if (s = txn.get_u64(kMetaStuckSince, &stuck_since, 0); !s.ok()) return s;
        uint64_t now = realtime_ns();
        if (!dead && stuck_ticket == t && now - stuck_since > kStragglerGraceNs) dead = true;
        if (dead) {
          if (s = lose(t, 1); !s.ok()) return s;
          continue;
        }
        if (stuck_ticket != t) {
          if (s = txn.put_u64(kMetaStuckTicket, t); !s.ok()) return s;
          if (s = txn.put_u64(kMetaStuckSince, now); !s.ok()) return s;
        }
        stuck = true;
        break;
      }
      if (e.kind == uint8_t(EventKind::recovered)) {
        // A takeover is recorded before its CAS (DeathLog), so racing
        // waiters and retried CASes may record one death more than once.
        // Keep the first of each dead owner.
        bool duplicate = false;
        if (s = first_recovery(txn, e, &duplicate); !s.ok()) return s;
        if (duplicate) continue;
      }
      std::string name;
      if (names_a_lock(e.kind)) {
        uint64_t key = (uint64_t{e.slot} << 32) | e.incarnation;
        auto it = names.find(key);
        if (it == names.end()) {
          if (s = name_of_slot(txn, e.slot, e.incarnation, &name); !s.ok()) return s;
          names.emplace(key, name);
        } else {
          name = it->second;
        }
      }
      if (s = flush_lost(); !s.ok()) return s;
      std::string key = format::encode_u64_key(t);
      if (s = txn.append(db.history, key, format::encode_history_record(from_entry(e, name))); !s.ok()) return s;
      if (!name.empty()) {
        if (s = txn.append(db.history_by_name, name, key, MDB_APPENDDUP); !s.ok()) return s;
      }
      ++*drained_out;
    }
    if (s = flush_lost(); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaDrained, t); !s.ok()) return s;
    if (s = txn.put_u64(format::kMetaLostTotal, lost_total); !s.ok()) return s;

    // Retention: by count, then by age, oldest first.
    uint64_t keep = 0, age_s = 0;
    if (s = txn.get_u64(format::kMetaRetentionCount, &keep, 0); !s.ok()) return s;
    if (s = txn.get_u64(format::kMetaRetentionAge, &age_s, 0); !s.ok()) return s;
    MDB_stat ms;
    mdb_stat(txn.get(), db.history, &ms);
    uint64_t count = ms.ms_entries;
    uint64_t cutoff = age_s ? realtime_ns() - std::min<uint64_t>(realtime_ns(), age_s * 1'000'000'000u) : 0;
    {
      Cursor cur(txn, db.history);
      if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
      MDB_val k, d;
      for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST); rc == 0;
           rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST)) {
        format::HistoryRecord r;
        uint64_t seq = 0;
        format::decode_u64_key(from_val(k), &seq);
        bool decodable = format::decode_history_record(from_val(d), &r, seq).ok();
        bool over_count = keep != 0 && count > keep;
        bool too_old = decodable && cutoff != 0 && r.time_ns < cutoff;
        if (!over_count && !too_old) break;
        std::string key(from_val(k));
        if (decodable && !r.name.empty()) {
          std::string_view kv = key;
          if (s = txn.del(db.history_by_name, r.name, &kv); !s.ok()) return s;
        }
        if (int rc2 = mdb_cursor_del(cur.get(), 0); rc2 != 0) return lmdb_->error(rc2, "delete history");
        --count;
      }
    }
    // Names of removed slots are kept until every event that may carry them
    // has been through the ring.
    {
      Cursor cur(txn, db.graveyard);
      if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
      MDB_val k, d;
      int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST);
      while (rc == 0) {
        format::GraveRecord g;
        bool stale = !format::decode_grave_record(from_val(d), &g).ok() || g.removed_seq + ring_size < t;
        if (stale) {
          if (int rc2 = mdb_cursor_del(cur.get(), 0); rc2 != 0) return lmdb_->error(rc2, "delete graveyard");
          rc = mdb_cursor_get(cur.get(), &k, &d, MDB_GET_CURRENT);
          if (rc != 0) rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT);
        } else {
          rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT);
        }
      }
    }
    crash_point("drain:before_commit");
    if (s = txn.commit(); !s.ok()) return s;
    if (stuck) {
      if (!patient || std::chrono::steady_clock::now() > patience_end) return Status::OK();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

Status TableCore::history(const HistoryQuery& q, std::vector<Event>* events) {
  events->clear();
  Status s = check_same_process();
  if (!s.ok()) return s;
  format::Header* h = file_->header();
  uint32_t level = __atomic_load_n(&h->history_level, __ATOMIC_RELAXED);
  if (level == uint32_t(HistoryLevel::persisted)) {
    uint64_t n = 0;
    if (s = drain(&n, true); !s.ok()) return s;
  }
  const Dbis& db = lmdb_->dbi();
  Txn txn(*lmdb_, false);
  if (s = txn.begin(); !s.ok()) return s;

  std::vector<Event> out;
  auto take = [&](Event e) {
    if (matches(q, e)) out.push_back(std::move(e));
  };

  // Persisted records: through the name index when filtering by name.
  if (q.name) {
    Cursor cur(txn, db.history_by_name);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k = to_val(*q.name), d;
    for (int rc = mdb_cursor_get(cur.get(), &k, &d, MDB_SET); rc == 0;
         rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT_DUP)) {
      uint64_t seq = 0;
      if (!format::decode_u64_key(from_val(d), &seq)) continue;
      std::string_view v;
      bool found = false;
      if (s = txn.get(db.history, from_val(d), &v, &found); !s.ok()) return s;
      if (!found) continue;
      format::HistoryRecord r;
      if (s = format::decode_history_record(v, &r, seq); !s.ok()) return Status(s.code(), lmdb_->path() + ": " + s.message());
      take(to_event(seq, r));
    }
  } else {
    Cursor cur(txn, db.history);
    if (!cur.ok()) return lmdb_->error(cur.rc(), "open cursor");
    MDB_val k, d;
    int rc;
    if (q.after_seq > 0) {
      std::string start = format::encode_u64_key(q.after_seq + 1);
      k = to_val(start);
      rc = mdb_cursor_get(cur.get(), &k, &d, MDB_SET_RANGE);
    } else {
      rc = mdb_cursor_get(cur.get(), &k, &d, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur.get(), &k, &d, MDB_NEXT)) {
      uint64_t seq = 0;
      if (!format::decode_u64_key(from_val(k), &seq)) {
        return Status(Code::corrupt, fmt::format("{}: history key of {} bytes", lmdb_->path(), k.mv_size));
      }
      format::HistoryRecord r;
      if (s = format::decode_history_record(from_val(d), &r, seq); !s.ok()) {
        return Status(s.code(), lmdb_->path() + ": " + s.message());
      }
      take(to_event(seq, r));
    }
  }

  // Level "ring": the events live only in the ring; read what it still holds.
  if (level == uint32_t(HistoryLevel::ring)) {
    uint64_t head = std::atomic_ref<uint64_t>(h->ring_head).load(std::memory_order_acquire);
    uint64_t first = head > h->ring_entries ? head - h->ring_entries : 1;
    for (uint64_t t = std::max<uint64_t>(first, 1); t < head; ++t) {
      format::RingEntry e;
      uint32_t wp = 0, wt = 0;
      if (ring_read(file_->ring(), file_->ring_mask(), t, &e, &wp, &wt) != RingRead::complete) continue;
      std::string name;
      if (names_a_lock(e.kind) && !(s = name_of_slot(txn, e.slot, e.incarnation, &name)).ok()) return s;
      take(to_event(t, from_entry(e, std::move(name))));
    }
  }

  std::sort(out.begin(), out.end(), [](const Event& a, const Event& b) { return a.seq < b.seq; });
  if (q.limit > 0 && out.size() > q.limit) out.erase(out.begin(), out.end() - ptrdiff_t(q.limit));
  if (q.newest_first) std::reverse(out.begin(), out.end());
  *events = std::move(out);
  return Status::OK();
}

Status TableCore::set_history_level(HistoryLevel level) {
  if (uint32_t(level) > uint32_t(HistoryLevel::persisted)) {
    return Status(Code::invalid_argument, "history level must be off, ring or persisted");
  }
  __atomic_store_n(&file_->header()->history_level, uint32_t(level), __ATOMIC_RELEASE);
  return Status::OK();
}

Status TableCore::set_retention(uint64_t count, uint64_t age_s) {
  Status s = check_same_process();
  if (!s.ok()) return s;
  Txn txn(*lmdb_, true);
  if (s = txn.begin(); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionCount, count); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionAge, age_s); !s.ok()) return s;
  return txn.commit();
}

}  // namespace locktable::detail
