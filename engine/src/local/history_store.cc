#include "history_store.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "clock.h"
#include "crash_point.h"
#include "history_ring.h"
#include "liveness.h"
#include "lmdb_records.h"
#include "name_map.h"
#include "posix_error.h"

namespace locktable::detail {

namespace {

constexpr uint64_t kBatch = 8192;                   // ring entries per write transaction
constexpr uint64_t kStragglerGraceNs = 250'000'000;  // a ticket unwritten for this long is lost

uint64_t dead_identity(const format::RingEntry& e) { return (e.aux64 & 0xffffffff00000000u) | e.aux32; }

// Whether a `recovered` entry names a dead owner recently recovered from its
// slot (then it is a repeat), remembering it otherwise. A thread dies once,
// so an identity seen again on the slot is the same takeover, recorded twice.
Status first_recovery(Txn& txn, const format::RingEntry& e, bool* duplicate) {
  const std::string key = format::recent_recoveries_key(e.slot);
  std::string_view value;
  bool found = false;
  if (Status s = txn.get(txn.env().dbi().meta, key, &value, &found); !s.ok()) return s;
  format::RecentRecoveries recent;
  if (found) {
    if (Status s = format::decode_recent_recoveries(value, &recent, e.slot); !s.ok()) {
      return with_context(txn.env().path(), s);
    }
  }
  const uint64_t dead = dead_identity(e);
  *duplicate = std::find(recent.dead.begin(), recent.dead.end(), dead) != recent.dead.end();
  if (*duplicate) return Status::OK();
  recent.dead.push_back(dead);
  if (recent.dead.size() > format::kMaxRecentRecoveries) recent.dead.erase(recent.dead.begin());
  return txn.put(txn.env().dbi().meta, key, format::encode_recent_recoveries(recent));
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
  switch (r.kind) {
    case format::kEventAcquired:
    case format::kEventTimeout:
      e.wait_ns = r.aux64;
      break;
    case format::kEventReleased:
      e.hold_ns = r.aux64;
      break;
    case format::kEventRecovered:
      e.dead_owner = Owner{uint32_t(r.aux64 >> 32), r.aux32, uint32_t(r.aux64)};
      break;
    case format::kEventLost:
    case format::kEventGrown:
    case format::kEventReset:
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
  return kind != format::kEventGrown && kind != format::kEventReset && kind != format::kEventLost;
}

bool matches(const HistoryQuery& q, const Event& e) {
  if (q.kind && e.kind != *q.kind) return false;
  if (q.pid && e.pid != *q.pid) return false;
  if (q.name && e.name != *q.name) return false;
  if (e.time_ns < q.since_ns || e.time_ns >= q.until_ns) return false;
  if (e.seq <= q.after_seq) return false;
  return true;
}

// The `lost` events of one batch: consecutive lost tickets become one event
// (count = how many), stored at the first ticket of the run.
class LostRuns {
 public:
  LostRuns(Txn& txn, uint64_t lost_total) : txn_(txn), total_(lost_total) {}

  Status lose(uint64_t t, uint64_t n) {
    if (count_ != 0 && start_ + count_ != t) {
      if (Status e = flush(); !e.ok()) return e;
    }
    if (count_ == 0) start_ = t;
    count_ += n;
    return Status::OK();
  }

  Status flush() {
    if (count_ == 0) return Status::OK();
    const ThreadSelf& me = thread_self();
    format::HistoryRecord r;
    r.kind = format::kEventLost;
    r.pid = me.pid;
    r.tid = me.tid;
    r.time_ns = realtime_ns();
    r.aux64 = count_;
    r.comm.assign(me.comm, strnlen(me.comm, sizeof me.comm));
    total_ += count_;
    count_ = 0;
    return txn_.append(txn_.env().dbi().history, format::encode_u64_key(start_), format::encode_history_record(r));
  }

  uint64_t total() const { return total_; }

 private:
  Txn& txn_;
  uint64_t total_;
  uint64_t start_ = 0, count_ = 0;
};

// A ticket whose entry is not complete: its writer is being slow, or died in
// the middle. *give_up: count it lost; otherwise wait for it. Live writers
// complete within nanoseconds; the grace period is shared by all drainers
// through LMDB (stuck_ticket, stuck_since_ns).
Status judge_straggler(Txn& txn, uint64_t t, RingRead rr, uint32_t writer_pid, uint32_t writer_tid, bool* give_up) {
  *give_up = rr == RingRead::writing && thread_liveness(writer_pid, writer_tid, 0) == Liveness::dead;
  uint64_t stuck_ticket = 0, stuck_since = 0;
  if (Status s = txn.get_u64(format::kMetaStuckTicket, &stuck_ticket, 0); !s.ok()) return s;
  if (Status s = txn.get_u64(format::kMetaStuckSince, &stuck_since, 0); !s.ok()) return s;
  const uint64_t now = realtime_ns();
  if (!*give_up && stuck_ticket == t && now - stuck_since > kStragglerGraceNs) *give_up = true;
  if (*give_up || stuck_ticket == t) return Status::OK();
  if (Status s = txn.put_u64(format::kMetaStuckTicket, t); !s.ok()) return s;
  return txn.put_u64(format::kMetaStuckSince, now);
}

// Retention: by count, then by age, oldest first, with the name index.
Status apply_retention(Txn& txn) {
  const Dbis& db = txn.env().dbi();
  uint64_t keep = 0, age_s = 0, count = 0;
  if (Status s = txn.get_u64(format::kMetaRetentionCount, &keep, 0); !s.ok()) return s;
  if (Status s = txn.get_u64(format::kMetaRetentionAge, &age_s, 0); !s.ok()) return s;
  if (Status s = txn.entries(db.history, &count); !s.ok()) return s;
  const uint64_t now = realtime_ns();
  const uint64_t cutoff = age_s ? now - std::min<uint64_t>(now, age_s * 1'000'000'000u) : 0;
  Cursor cur(txn, db.history);
  for (bool more = cur.first(); more;) {
    format::HistoryRecord r;
    uint64_t seq = 0;
    format::decode_u64_key(cur.key(), &seq);
    const bool decodable = format::decode_history_record(cur.value(), &r, seq).ok();
    const bool over_count = keep != 0 && count > keep;
    const bool too_old = decodable && cutoff != 0 && r.time_ns < cutoff;
    if (!over_count && !too_old) break;
    if (decodable && !r.name.empty()) {
      std::string key(cur.key());
      std::string_view kv = key;
      if (Status s = txn.del(db.history_by_name, r.name, &kv); !s.ok()) return s;
    }
    more = cur.erase_and_next();
    --count;
  }
  return cur.status();
}

// Names of removed slots are kept until every event that may carry them has
// been through the ring: a grave older than a ring's worth of tickets goes.
Status prune_graveyard(Txn& txn, uint64_t drained_to, uint64_t ring_size) {
  Cursor cur(txn, txn.env().dbi().graveyard);
  for (bool more = cur.first(); more;) {
    format::GraveRecord g;
    bool stale = !format::decode_grave_record(cur.value(), &g).ok() || g.removed_seq + ring_size < drained_to;
    more = stale ? cur.erase_and_next() : cur.next();
  }
  return cur.status();
}

}  // namespace

Status HistoryStore::drain(uint64_t* drained, bool patient) {
  *drained = 0;
  format::Header* h = file_.header();
  if (__atomic_load_n(&h->history_level, __ATOMIC_RELAXED) != format::kHistoryPersisted) return Status::OK();
  std::lock_guard<std::mutex> guard(drain_mu_);
  const auto patience_end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kStragglerGraceNs * 2);
  // A pass drains up to the head it sees first, never chasing appends made
  // during it: under a tight locking loop a chasing drainer runs for as long as
  // the appends come, keeping a core (and the ring's cache lines) busy; what a
  // pass leaves waits for the next one, or is overwritten and counted lost.
  const uint64_t head = std::atomic_ref<uint64_t>(h->ring_head).load(std::memory_order_acquire);
  for (;;) {
    bool done = false, stuck = false;
    if (Status s = drain_batch(head, drained, &done, &stuck); !s.ok() || done) return s;
    if (stuck) {
      if (!patient || std::chrono::steady_clock::now() > patience_end) return Status::OK();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

Status HistoryStore::drain_batch(uint64_t head, uint64_t* drained_out, bool* done, bool* stuck) {
  const Dbis& db = lmdb_.dbi();
  const uint64_t ring_size = file_.header()->ring_entries;
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  uint64_t drained = 1, lost_total = 0;
  if (s = txn.get_u64(format::kMetaDrained, &drained, 1); !s.ok()) return s;
  if (s = txn.get_u64(format::kMetaLostTotal, &lost_total, 0); !s.ok()) return s;
  if (drained >= head) {
    *done = true;
    return Status::OK();
  }
  LostRuns lost(txn, lost_total);
  std::unordered_map<uint64_t, std::string> names;  // (slot << 32 | incarnation) -> name

  uint64_t t = drained;
  if (head - t > ring_size) {  // overwritten without being read
    if (s = lost.lose(t, head - ring_size - t); !s.ok()) return s;
    t = head - ring_size;
  }
  const uint64_t batch_end = std::min(head, t + kBatch);
  for (; t < batch_end; ++t) {
    format::RingEntry e;
    uint32_t wpid = 0, wtid = 0;
    RingRead rr = ring_read(file_.ring(), file_.ring_mask(), t, &e, &wpid, &wtid);
    if (rr == RingRead::overwritten) {
      // Lapped: everything older than the current head's ring is gone too.
      uint64_t now = std::atomic_ref<uint64_t>(file_.header()->ring_head).load(std::memory_order_acquire);
      uint64_t gone_to = std::clamp(now > ring_size ? now - ring_size : 0, t + 1, batch_end);
      if (s = lost.lose(t, gone_to - t); !s.ok()) return s;
      t = gone_to - 1;
      continue;
    }
    if (rr == RingRead::writing || rr == RingRead::not_started) {
      bool give_up = false;
      if (s = judge_straggler(txn, t, rr, wpid, wtid, &give_up); !s.ok()) return s;
      if (give_up) {
        if (s = lost.lose(t, 1); !s.ok()) return s;
        continue;
      }
      *stuck = true;
      break;
    }
    if (e.kind == format::kEventRecovered) {
      // A takeover is recorded before its CAS (DeathLog), so racing waiters
      // and retried CASes may record one death more than once: keep the first.
      bool duplicate = false;
      if (s = first_recovery(txn, e, &duplicate); !s.ok()) return s;
      if (duplicate) continue;
    }
    std::string name;
    if (names_a_lock(e.kind)) {
      const uint64_t key = (uint64_t{e.slot} << 32) | e.incarnation;
      auto it = names.find(key);
      if (it == names.end()) {
        if (s = name_of_slot(txn, e.slot, e.incarnation, &name); !s.ok()) return s;
        names.emplace(key, name);
      } else {
        name = it->second;
      }
    }
    if (s = lost.flush(); !s.ok()) return s;
    const std::string key = format::encode_u64_key(t);
    if (s = txn.append(db.history, key, format::encode_history_record(from_entry(e, name))); !s.ok()) return s;
    if (!name.empty()) {
      if (s = txn.append(db.history_by_name, name, key, MDB_APPENDDUP); !s.ok()) return s;
    }
    ++*drained_out;
  }
  if (s = lost.flush(); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaDrained, t); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaLostTotal, lost.total()); !s.ok()) return s;
  if (s = apply_retention(txn); !s.ok()) return s;
  if (s = prune_graveyard(txn, t, ring_size); !s.ok()) return s;
  crash_point("drain:before_commit");
  return txn.commit();
}

Status HistoryStore::query(const HistoryQuery& q, std::vector<Event>* events) {
  events->clear();
  format::Header* h = file_.header();
  const uint32_t level = __atomic_load_n(&h->history_level, __ATOMIC_RELAXED);
  if (level == format::kHistoryPersisted) {
    uint64_t n = 0;
    if (Status s = drain(&n, true); !s.ok()) return s;
  }
  const Dbis& db = lmdb_.dbi();
  Txn txn(lmdb_, false);
  Status s = txn.begin();
  if (!s.ok()) return s;

  std::vector<Event> out;
  Status bad;
  // Decodes one stored record; false (and `bad` set) when it is malformed.
  auto take = [&](std::string_view key, std::string_view value) {
    uint64_t seq = 0;
    if (!format::decode_u64_key(key, &seq)) {
      bad = Status(Code::corrupt, fmt::format("{}: history key of {} bytes", lmdb_.path(), key.size()));
      return false;
    }
    format::HistoryRecord r;
    bad = with_context(lmdb_.path(), format::decode_history_record(value, &r, seq));
    if (!bad.ok()) return false;
    Event e = to_event(seq, r);
    if (matches(q, e)) out.push_back(std::move(e));
    return true;
  };

  if (q.name) {  // through the name index
    s = txn.for_each_duplicate(db.history_by_name, *q.name, [&](std::string_view, std::string_view seq_key) {
      std::string_view v;
      bool found = false;
      if (bad = txn.get(db.history, seq_key, &v, &found); !bad.ok()) return false;
      return !found || take(seq_key, v);
    });
  } else {
    std::string from = q.after_seq > 0 ? format::encode_u64_key(q.after_seq + 1) : std::string();
    s = txn.for_each(db.history, take, from);
  }
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;

  // Level "ring": the events live only in the ring; read what it still holds.
  if (level == format::kHistoryRing) {
    uint64_t head = std::atomic_ref<uint64_t>(h->ring_head).load(std::memory_order_acquire);
    uint64_t first = head > h->ring_entries ? head - h->ring_entries : 1;
    for (uint64_t t = std::max<uint64_t>(first, 1); t < head; ++t) {
      format::RingEntry e;
      uint32_t wp = 0, wt = 0;
      if (ring_read(file_.ring(), file_.ring_mask(), t, &e, &wp, &wt) != RingRead::complete) continue;
      std::string name;
      if (names_a_lock(e.kind) && !(s = name_of_slot(txn, e.slot, e.incarnation, &name)).ok()) return s;
      Event ev = to_event(t, from_entry(e, std::move(name)));
      if (matches(q, ev)) out.push_back(std::move(ev));
    }
  }

  std::sort(out.begin(), out.end(), [](const Event& a, const Event& b) { return a.seq < b.seq; });
  if (q.limit > 0 && out.size() > q.limit) out.erase(out.begin(), out.end() - ptrdiff_t(q.limit));
  if (q.newest_first) std::reverse(out.begin(), out.end());
  *events = std::move(out);
  return Status::OK();
}

Status HistoryStore::set_level(HistoryLevel level) {
  if (uint32_t(level) > format::kMaxHistoryLevel) {
    return Status(Code::invalid_argument, "history level must be off, ring or persisted");
  }
  __atomic_store_n(&file_.header()->history_level, uint32_t(level), __ATOMIC_RELEASE);
  return Status::OK();
}

Status HistoryStore::set_retention(uint64_t count, uint64_t age_s) {
  Txn txn(lmdb_, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionCount, count); !s.ok()) return s;
  if (s = txn.put_u64(format::kMetaRetentionAge, age_s); !s.ok()) return s;
  return txn.commit();
}

void HistoryStore::start_background(std::chrono::milliseconds interval) {
  drainer_ = std::make_unique<std::thread>([this, interval] {
    std::unique_lock<std::mutex> lock(drainer_mu_);
    while (!drainer_stop_) {
      drainer_cv_.wait_for(lock, interval, [this] { return drainer_stop_; });
      if (drainer_stop_) break;
      lock.unlock();
      uint64_t n = 0;
      (void)drain(&n, false);
      lock.lock();
    }
  });
}

void HistoryStore::stop_background() {
  if (!drainer_ || !drainer_->joinable()) return;
  {
    std::lock_guard<std::mutex> lock(drainer_mu_);
    drainer_stop_ = true;
  }
  drainer_cv_.notify_all();
  drainer_->join();
  drainer_.reset();
  uint64_t n = 0;
  (void)drain(&n, false);  // what the last period left in the ring
}

}  // namespace locktable::detail
